"""The fidelity table: every setting of the study, its value, and the `study` and `improved` profiles' values, made
from conf/fidelity.yaml and the profiles themselves (one source of truth). Not a DVC stage.

    python -m commands.fidelity            # print the table
    python -m commands.fidelity --write    # refresh it in docs/fidelity.md (between the fidelity markers)
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

TABLE = Path("conf/fidelity.yaml")
DOC = Path("docs/fidelity.md")
MARK = re.compile(r"(<!-- fidelity:begin -->\n).*?(<!-- fidelity:end -->)", re.S)


def rows() -> list[dict]:
    return yaml.safe_load(TABLE.read_text(encoding="utf-8"))


def get(params: dict, key: str):
    """params["a"]["b"][0]["c"] for "a.b.0.c"."""
    value = params
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def show(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return "null" if value is None else str(value).replace("\n", "\\n")


def fix_value(improved: dict, fix: str, keys: list[str]) -> str:
    """The improved profile's value of a fix: `clean.rules.*` shows the rules' common value, a list of judges
    their names."""
    if fix.endswith(".*"):
        values = {show(get(improved, k)) for k in keys if k.startswith(fix[:-1])}
        return f"`{fix}: {values.pop()}`" if len(values) == 1 else ", ".join(sorted(values))
    value = get(improved, fix)
    if isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value):
        value = [v["name"] for v in value]
    return f"`{fix}: {show(value)}`"


def fixes(row: dict) -> list[str]:
    """The params keys a row's fix switches: one key, or a list of keys switched together (`fix: [a, b]`)."""
    fix = row.get("fix") or []
    return [fix] if isinstance(fix, str) else list(fix)


def render() -> str:
    from commands.compose import compose

    study, improved = compose("study"), compose("improved")
    lines = [
        "| setting | the study (its code; paper-notes section) | `study` profile | `improved` profile | why the fix |",
        "|---|---|---|---|---|",
    ]
    for row in rows():
        keys = list(row.get("study_params", {}))
        cells = [f"`{k}: {show(get(study, k))}`" for k in keys]
        study_cell = "<br>".join(cells) if len(cells) <= 3 else "<br>".join(cells[:2]) + f" (+{len(cells) - 2})"
        improved_cell = "<br>".join(fix_value(improved, f, keys) for f in fixes(row)) or "as the study"
        lines.append(
            f"| {row['setting']} | {row['study']} | {study_cell or '-'} | {improved_cell} | {row.get('why', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"refresh the table in {DOC}")
    args = ap.parse_args(argv)
    table = render()
    if args.write:
        text = DOC.read_text(encoding="utf-8")
        DOC.write_text(MARK.sub(lambda m: m.group(1) + table + m.group(2), text), encoding="utf-8")
        print(f"fidelity: refreshed {DOC}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
