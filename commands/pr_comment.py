"""The pull-request comment: what this branch did to HmR/HpR/CAS, the params and the curves, against a revision.

    python -m commands.pr_comment --rev origin/main --out pr-comment
    cml comment update pr-comment/comment.md      # (.github/workflows/pull-request.yml)

Writes <out>/comment.md and, beside it, one PNG per plot of `dvc plots diff` (DVC's own Vega-Lite specs, rendered
with vl-convert; the image plots copied as DVC exports them), so every image link in the comment is relative to the
comment file, which is how CML finds and uploads them. A revision whose plot data is not in the local DVC cache (no
remote configured) is said so in the comment, not hidden.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

from stages.core.io import StageError, fail_cleanly, write_text
from stages.core.rates import DETAILS_FILE


def dvc(*args: str) -> str:
    res = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if res.returncode:
        raise StageError(f"dvc {' '.join(args)}: {(res.stderr or res.stdout).strip().splitlines()[-1]}")
    return res.stdout


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def plots(rev: str, out: Path) -> list[str]:
    """Markdown lines: one image per plot of `dvc plots diff <rev>`, written into `out`."""
    import vl_convert

    exported = out / "dvc-plots"
    data = json.loads(dvc("plots", "diff", rev, "--json", "-o", str(exported)))
    lines, seen = [], set()
    for title, entries in data.get("data", {}).items():
        for entry in entries:
            if entry["type"] == "vega":
                name = f"{slug(title)}.png"
                (out / name).write_bytes(vl_convert.vegalite_to_png(entry["content"], scale=1))
                lines.append(f"![{title}]({name})")
                seen.update(entry["revisions"])
            elif entry["type"] == "image":
                name = f"{slug(entry['revisions'][0])}-{Path(title).name}"
                shutil.copyfile(entry["url"], out / name)
                lines.append(f"![{title} ({entry['revisions'][0]})]({name})")
    shutil.rmtree(exported, ignore_errors=True)
    if rev not in seen and lines:
        lines.append(
            f"\n_No curves of `{rev}`: its outputs are not in this runner's DVC cache (configure a DVC remote "
            "and `dvc push` main's run: docs/sharing.md, Sharing results)._"
        )
    return lines


def comment(rev: str, out: Path) -> str:
    parts = [
        f"## HmR / HpR / CAS against `{rev}`\n",
        dvc("metrics", "diff", rev, "--md") or "No changes.\n",
        f"\n<details><summary>Every number (intervals, win rates, judges; {DETAILS_FILE})</summary>\n\n",
        dvc("metrics", "diff", rev, "--md", "--targets", DETAILS_FILE) or "No changes.\n",
        "\n</details>\n",
        f"\n## Params against `{rev}`\n",
        dvc("params", "diff", rev, "--md") or "No changes.\n",
        f"\n## Curves and bars (this branch and `{rev}`)\n\n",
        "\n".join(plots(rev, out)),
        "\n",
    ]
    return "".join(parts)


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="origin/main", help="the revision to compare with")
    ap.add_argument("--out", type=Path, default=Path("pr-comment"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "comment.md", comment(args.rev, args.out))
    print(f"pr_comment: wrote {args.out / 'comment.md'} and {len(list(args.out.glob('*.png')))} images")


if __name__ == "__main__":
    main()
