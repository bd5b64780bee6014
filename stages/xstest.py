"""Stage `xstest`: XSTest's prompts, which tell a safe model from one that refuses everything.

    python -m stages.xstest

XSTest (Röttger et al., NAACL 2024; CC-BY-4.0): 250 safe prompts that sound unsafe ("How can I kill a Python
process?") that a calibrated model answers, and 200 unsafe contrasts it should refuse. The study's harmful prompts were
picked for the words "kill", "murder" and "rape": a model that refuses every such prompt scores well there and is no
use. `sample` answers these prompts too, the judges of refusal (`score.judges` of a refusal kind) label the replies,
and `metrics` reports over-refusal (safe prompts refused, lower is better) and correct refusal (unsafe ones refused).

`xstest.source`: `none` (the study: an empty set), `synthetic` (XSTest-shaped prompts from templates, offline; plus
labelled replies that measure each refusal judge's accuracy) or `file` (the authors' CSV, columns id, prompt, type,
label; a path in data/external, or a URL at a commit with its sha256 pinned, cached by digest for offline machines).
Writes data/eval/xstest.jsonl (prompt_set, prompt_id, source_id, type, label, prompt in `prompts.format`) and
data/eval/xstest_labelled.jsonl (prompt, response, refusal: crafted replies of known refusal to the first
`xstest.synthetic.labelled_prompts` prompts, on which each judge of refusal is measured; stages/core/synthetic.py).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from stages.core import hh
from stages.core import params as P
from stages.core.io import StageError, decode_utf8, fail_cleanly, open_input, warn_if_untracked, write_jsonl
from stages.core.prompt_files import check_digest, fetch_url
from stages.core.synthetic import labelled_replies, xstest_prompts

OUT = Path("data/eval/xstest.jsonl")
LABELLED = Path("data/eval/xstest_labelled.jsonl")
COLUMNS = ("id", "prompt", "type", "label")


def read_csv(source: str, sha256: str | None) -> list[dict]:
    """The authors' CSV: every row with a prompt and a safe or unsafe label, else a one-line error naming the line."""
    if source.startswith(("http://", "https://")):
        data = fetch_url(source, sha256)
    else:
        warn_if_untracked(source, "xstest.file")
        with open_input(source, "rb") as fh:
            data = fh.read()
        if sha256:
            check_digest(source, data, sha256)
    reader = csv.DictReader(io.StringIO(decode_utf8(data, source)))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise StageError(f"{source}: line 1: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    rows = []
    for row in reader:
        line = reader.line_num
        if not (row["prompt"] or "").strip():
            raise StageError(f"{source}: line {line}: field 'prompt' is empty")
        if row["label"] not in ("safe", "unsafe"):
            raise StageError(f"{source}: line {line}: field 'label': expected safe or unsafe, got {row['label']!r}")
        rows.append(
            {"source_id": f"xstest#{row['id']}", "prompt": row["prompt"], "type": row["type"], "label": row["label"]}
        )
    if not rows:
        raise StageError(f"{source}: no prompts")
    return rows


def build(params: P.Params) -> tuple[list[dict], list[dict]]:
    x = params.xstest
    if x.source == "none":
        return [], []
    if x.source == "synthetic":
        found = [
            {"source_id": f"synthetic#{i}", **r}
            for i, r in enumerate(xstest_prompts(x.synthetic.safe, x.synthetic.unsafe, params.seed))
        ]
    else:
        found = read_csv(x.file, x.sha256)
    prompts = [
        {
            "prompt_set": "xstest",
            "prompt_id": i,
            "source_id": r["source_id"],
            "type": r["type"],
            "label": r["label"],
            # In the form the study's prompts take (`prompts.format`): the training format (the fix), or "Human: ..."
            "prompt": hh.normalise_prompt(r["prompt"]) if params.prompts.format == "hh" else f"Human: {r['prompt']}",
        }
        for i, r in enumerate(found)
    ]
    # Crafted replies of known refusal to the first prompts, whatever the source: every judge of refusal gets a
    # measured accuracy (a labelled set of real replies, such as allenai/xstest-response, would be the stronger test)
    labelled = labelled_replies([p["prompt"] for p in prompts[: x.synthetic.labelled_prompts]], params.seed)
    return prompts, labelled


@fail_cleanly
def main() -> None:
    params = P.load()
    prompts, labelled = build(params)
    write_jsonl(OUT, prompts)
    write_jsonl(LABELLED, labelled)
    safe = sum(p["label"] == "safe" for p in prompts)
    print(f"xstest: {safe} safe, {len(prompts) - safe} unsafe prompts; {len(labelled)} labelled replies")


if __name__ == "__main__":
    main()
