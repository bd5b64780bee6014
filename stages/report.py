"""Stage `report`: a short Markdown report of the current metrics (table + bars), for readers without DVC.

    python -m stages.report            # writes metrics/report.md
    python -m stages.report --readme   # also refreshes the results table in README.md

Reads only metrics/*.json and data/raw/manifest.json.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from stages.core.io import fail_cleanly, read_json, write_text

OUT = Path("metrics/report.md")
README = Path("README.md")
MARK = re.compile(r"(<!-- results:begin -->\n).*?(<!-- results:end -->)", re.S)


def results_table(metrics: dict, synthetic: bool) -> str:
    lines = []
    if synthetic:
        lines.append("_Data: **synthetic** (built-in generator), tiny OPT trained here: these numbers test the "
                     "pipeline, they say nothing about OPT-350M._\n")
    lines.append("| model | judge | HmR % [95% CI] | HpR % [95% CI] | CAS % [95% CI] | CAS change vs base [95% CI] |")
    lines.append("|---|---|---|---|---|---|")
    for model, per_judge in metrics.items():
        if model == "judge_agreement":
            continue
        for judge, r in per_judge.items():
            def cell(k):
                return f"{r[k]:.1f} [{r[k + '_ci_low']:.1f}, {r[k + '_ci_high']:.1f}]"
            delta = cell("delta_cas") if "delta_cas" in r else "-"
            lines.append(f"| {model} | {judge} | {cell('harmless_rate')} | {cell('helpful_rate')} | {cell('cas')} | {delta} |")
    return "\n".join(lines) + "\n"


def render() -> tuple[str, str]:
    metrics = read_json("metrics/metrics.json")
    manifest = read_json("data/raw/manifest.json") if Path("data/raw/manifest.json").exists() else {}
    table = results_table(metrics, manifest.get("synthetic", False))
    parts = ["# Results\n", table, "\n![HmR, HpR and CAS by model](plots/rates.png)\n",
             "\n![Reward distributions](plots/rewards.png)\n"]
    clean = Path("metrics/clean.json")
    if clean.exists():
        c = read_json(clean)
        drops = ", ".join(f"{k}: {v}" for k, v in c["dropped"].items())
        parts.append(f"\n## Cleaning\n{c['input']} pairs in, {c['kept']} kept; dropped by rule: {drops}.\n")
    train = []
    for stage in ("base", "sft", "dpo", "sft_dpo"):
        p = Path("metrics") / stage / "train.json"
        if p.exists():
            t = read_json(p)
            extra = (f", held-out reward accuracy {t['heldout_reward_accuracy']}, margin {t['heldout_reward_margin']}"
                     if "heldout_reward_accuracy" in t else "")
            train.append(f"- {stage}: final loss {t.get('final_loss')}, {t.get('steps')} steps{extra}")
    if train:
        parts.append("\n## Training\n" + "\n".join(train) + "\n")
    if "judge_agreement" in metrics:
        parts.append("\n## Judge agreement (% of responses labelled alike)\n")
        for pair, a in metrics["judge_agreement"].items():
            parts.append(f"- {pair}: harmless label {a['harmless_label']}%, helpful label {a['helpful_label']}%\n")
    return "".join(parts), table


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="store_true", help="refresh the results table in README.md")
    args = ap.parse_args(argv)
    report, table = render()
    write_text(OUT, report)
    if args.readme and README.exists():
        text = README.read_text(encoding="utf-8")
        write_text(README, MARK.sub(lambda m: m.group(1) + table + m.group(2), text))
    print(f"report: wrote {OUT}")


if __name__ == "__main__":
    main()
