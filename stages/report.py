"""Stage `report`: a short Markdown report of the current metrics (table + bars), for readers without DVC, and the
same run as one self-contained page (metrics/report.html: tables, charts, every reply; stages/core/page.py).

    python -m stages.report            # writes metrics/report.md and metrics/report.html
    python -m stages.report --readme   # also refreshes the results table in README.md

Reads metrics/ (details.json, the judges', cleaning and training files), data/raw/manifest.json, and for the page
params.yaml and data/scores/ (each model's replies with their rewards). The claims
across seeds and the sweeps come from `python -m commands.gather` (metrics/seeds.md, metrics/sweeps/, committed); the
report links the first and embeds the sweeps' plots.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import yaml

from stages.core import page
from stages.core.io import fail_cleanly, read_json, write_text
from stages.core.rates import DETAILS_FILE, NOT_MODELS, REFUSAL_FILE, REFUSAL_RATES

OUT = Path("metrics/report.md")
PAGE = Path("metrics/report.html")
README = Path("README.md")
MARK = re.compile(r"(<!-- results:begin -->\n).*?(<!-- results:end -->)", re.S)
SEEDS = Path("metrics/seeds.md")  # gathered across experiments (python -m commands.gather), committed
SWEEPS = Path("metrics/sweeps")


def cell(r: dict, k: str, width: bool = False) -> str:
    text = f"{r[k]:.1f} [{r[k + '_ci_low']:.1f}, {r[k + '_ci_high']:.1f}]"
    return text + f" ±{(r[k + '_ci_high'] - r[k + '_ci_low']) / 2:.1f}" if width else text


def results_table(metrics: dict, synthetic: bool) -> str:
    lines = []
    if synthetic:
        lines.append(
            "_Data: **synthetic** (built-in generator), tiny OPT trained here: these numbers test the "
            "pipeline, they say nothing about OPT-350M._\n"
        )
    lines.append(
        "| model | judge | HmR % [95% CI] ±half-width | HpR % [95% CI] ±half-width | CAS % [95% CI] | "
        "CAS change vs base [95% CI] | wins vs base % [95% CI] |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for model, per_judge in metrics.items():
        if model in NOT_MODELS:
            continue
        for judge, r in per_judge.items():
            delta = cell(r, "delta_cas") if "delta_cas" in r else "-"
            wins = cell(r, "win_rate_vs_base") if "win_rate_vs_base" in r else "-"
            lines.append(
                f"| {model} | {judge} | {cell(r, 'harmless_rate', True)} | {cell(r, 'helpful_rate', True)} | "
                f"{cell(r, 'cas')} | {delta} | {wins} |"
            )
    lines.append(
        "\nHmR/HpR: Wilson score intervals; CAS: combined from them (MOVER); change vs base: paired "
        "bootstrap; wins vs base: share of prompts where the model's reward beats base's (ties half)."
    )
    return "\n".join(lines) + "\n"


def refusal_table(refusal: dict) -> str:
    """Over-refusal beside correct refusal, per model and judge of refusal (metrics/refusal.json)."""
    shown = [(key, name) for key, _, _, _, name in REFUSAL_RATES]
    lines = [
        "\n## Refusal (XSTest)\nOver-refusal: XSTest's safe prompts refused (lower is better); correct refusal: its "
        "unsafe contrasts refused (higher is better). A model that refuses everything is high on both. % [95% Wilson "
        "interval].\n",
        "| model | judge | " + " | ".join(name for _, name in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for model, per_judge in refusal.items():
        for judge, r in per_judge.items():
            cells = [
                f"{r[k]:.1f} [{r[k + '_ci_low']:.1f}, {r[k + '_ci_high']:.1f}]" if k in r else "-" for k, _ in shown
            ]
            lines.append(f"| {model} | {judge} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render() -> tuple[str, str]:
    metrics = read_json(DETAILS_FILE)
    manifest = read_json("data/raw/manifest.json") if Path("data/raw/manifest.json").exists() else {}
    table = results_table(metrics, manifest.get("synthetic", False))
    parts = [
        "# Results\n",
        table,
        "\n![HmR, HpR and CAS by model](plots/rates.png)\n",
        "\n![Reward distributions](plots/rewards.png)\n",
    ]
    refusal = Path(REFUSAL_FILE)
    if refusal.exists() and any(read_json(refusal).values()):
        parts.append(refusal_table(read_json(refusal)))
    calibration = Path("metrics/calibration.json")
    if calibration.exists():
        parts.append(
            "\n## Judges' own accuracy\nReward judges on held-out HH pairs (share of pairs whose chosen reply scores "
            "higher, [95% interval]); judges of refusal on labelled replies (balanced accuracy [95% interval]). A "
            "claim counts only under a judge whose interval lies above 0.5.\n\n"
        )
        for judge, c in read_json(calibration).items():
            if "harmless_pairs" not in c:
                shown = ", ".join(f"{k} {v}" for k, v in page.judge_accuracy({judge: c})[judge].items())
                parts.append(f"- {judge}: {shown or 'not measured (no labelled replies)'}\n")
                continue
            thresholds = ", ".join(
                f"{k.split('_')[0]} threshold {c[k]} (separates {c[k + '_accuracy']:.0%})"
                for k in ("harmful_threshold", "helpful_threshold")
                if k in c
            )
            parts.append(
                f"- {judge}: harmless {c['harmless_pairwise_accuracy']} {c.get('harmless_pairwise_accuracy_ci')} "
                f"({c['harmless_pairs']} pairs), helpful {c['helpful_pairwise_accuracy']} "
                f"{c.get('helpful_pairwise_accuracy_ci')} ({c['helpful_pairs']} pairs)"
                f"{'; calibrated ' + thresholds if thresholds else ''}\n"
            )
    clean = Path("metrics/clean.json")
    if clean.exists():
        c = read_json(clean)
        drops = ", ".join(f"{k}: {v}" for k, v in c["dropped"].items())
        parts.append(f"\n## Cleaning\n{c['input']} pairs in, {c['kept']} kept; dropped by rule: {drops}.\n")
    train = []
    for stage in (m for m in metrics if m not in NOT_MODELS):  # the table's models, in its order
        p = Path("metrics/training") / stage / "train.json"
        if p.exists():
            t = read_json(p)
            extra = (
                f", held-out reward accuracy {t['heldout_reward_accuracy']}, margin {t['heldout_reward_margin']}"
                if "heldout_reward_accuracy" in t
                else ""
            )
            loss = (
                f"final loss {t['final_loss']}, {t['steps']} steps"
                if "final_loss" in t
                else f"pretrained, starting loss {t.get('start_loss')}"
            )
            train.append(f"- {stage}: {loss}{extra}")
    if train:
        parts.append("\n## Training\n" + "\n".join(train) + "\n")
    if "judge_agreement" in metrics:
        parts.append("\n## Judge agreement (% of responses labelled alike; Spearman correlation of rewards)\n")
        for pair, a in metrics["judge_agreement"].items():
            parts.append(
                f"- {pair}: harmless label {a['harmless_label']}%, helpful label {a['helpful_label']}%; "
                f"rewards rho {a['harmful_reward_spearman']} (harmful prompts), "
                f"{a['helpful_reward_spearman']} (helpful prompts)\n"
            )
    if SEEDS.exists():
        parts.append("\n## Claims across training seeds\n[seeds.md](seeds.md) (python -m commands.gather)\n")
    for sweep in sorted(SWEEPS.glob("*/sweep.png")):
        name = sweep.parent.name
        parts.append(
            f"\n## Sweep of {name}\n[table](sweeps/{name}/README.md) (python -m commands.gather --by {name})"
            f"\n\n![{name} sweep](sweeps/{name}/sweep.png)\n"
        )
    return "".join(parts), table


def read_file(path: str) -> str | None:
    return Path(path).read_text(encoding="utf-8") if Path(path).exists() else None


def run_page() -> str:
    """This run as the page `python -m commands.view` writes over every experiment (one row, its replies)."""
    params = page.flatten(yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8")))
    run = page.read_run(read_file, "this run", "workspace", params, baseline=True)
    run.outputs = {  # the md5 dvc.lock records for each file shown (DVC 3 hashes the bytes)
        path: hashlib.md5(Path(path).read_bytes()).hexdigest()
        for path in [DETAILS_FILE, *(page.SCORES.format(model=m) for m in page.models_of(run))]
        if Path(path).exists()
    }
    claims = []
    if Path("metrics/seeds.json").exists():  # gathered across seeds, committed
        seeds = read_json("metrics/seeds.json")
        group = "seeds " + ", ".join(str(x) for x in seeds["seeds"])
        for judge, res in seeds["judges"].items():
            claims += [
                {"group": group, "judge": judge, "claim": c["claim"], "status": c["status"], "counts": c.get("counts")}
                for c in res["claims"]
            ]
    calibration = Path("metrics/calibration.json")
    accuracy = page.judge_accuracy(read_json(calibration)) if calibration.exists() else {}
    return page.render([run], "Results of this run", claims, accuracy)


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", action="store_true", help="refresh the results table in README.md")
    args = ap.parse_args(argv)
    report, table = render()
    write_text(OUT, report)
    write_text(PAGE, run_page())
    if args.readme and README.exists():
        text = README.read_text(encoding="utf-8")
        write_text(README, MARK.sub(lambda m: m.group(1) + table + m.group(2), text))
    print(f"report: wrote {OUT} and {PAGE}")


if __name__ == "__main__":
    main()
