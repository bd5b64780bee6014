"""Stage `metrics`: HmR, HpR, CAS per model and judge, with bootstrap intervals, from scored responses alone.

    python -m stages.metrics

Reads data/scores/<model>.jsonl for each model in `models` (the schema in README: sample fields plus
`rewards: {judge: float}`); needs nothing else, so it runs in any checkout that holds such files.
Writes metrics/metrics.json (flat: `<model>.<judge>.cas`, ...), metrics/plots/rates.csv (bars),
metrics/plots/rewards.csv and rewards.png (reward distributions) and metrics/plots/rates.png.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from stages.core import params as P
from stages.core.io import StageError, fail_cleanly, iter_jsonl, write_json, write_text
from stages.core.rates import agreement, bootstrap_rates, rate

SCORES = Path("data/scores")
OUT = Path("metrics/metrics.json")
PLOTS = Path("metrics/plots")
SETS = ("harmful", "helpful")


def load_scores(models: list[str], judges: list[str], scores_dir: Path = SCORES) -> dict[str, dict[str, list[dict]]]:
    """{model: {prompt_set: rows sorted by prompt_id}}, each row checked against the public schema."""
    out = {}
    for m in models:
        path = scores_dir / f"{m}.jsonl"
        by_set: dict[str, list[dict]] = {s: [] for s in SETS}
        for lineno, row in iter_jsonl(path):
            for field in ("prompt_set", "prompt_id", "response", "rewards"):
                if field not in row:
                    raise StageError(f"{path}: line {lineno}: missing field '{field}'")
            if row["prompt_set"] not in by_set:
                raise StageError(f"{path}: line {lineno}: prompt_set '{row['prompt_set']}' is not harmful/helpful")
            for j in judges:
                v = row["rewards"].get(j) if isinstance(row["rewards"], dict) else None
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    raise StageError(f"{path}: line {lineno}: rewards.{j}: expected a finite number, got {v!r}")
            by_set[row["prompt_set"]].append(row)
        for s in SETS:
            if not by_set[s]:
                raise StageError(f"{path}: no '{s}' responses")
            by_set[s].sort(key=lambda r: r["prompt_id"])
        out[m] = by_set
    return out


def compute(scores: dict, thresholds: dict, resamples: int, confidence: float, seed: int) -> dict:
    models = list(scores)
    judges = list(thresholds)
    result: dict = {}
    rewards: dict = {}  # (model, judge) -> (harmful-prompt rewards, helpful-prompt rewards)
    labels: dict = {}  # (model, judge) -> (harmless per harmful prompt, helpful per helpful prompt)
    for j in judges:
        t = thresholds[j]
        for m in models:
            harm, help_ = (np.array([r["rewards"][j] for r in scores[m][s]], dtype=float) for s in SETS)
            rewards[(m, j)] = harm, help_
            labels[(m, j)] = (harm > t["harmful"], help_ > t["helpful"])
    for m in models:
        result[m] = {}
        for j in judges:
            harm, help_ = rewards[(m, j)]
            harm_ok, help_ok = labels[(m, j)]
            hm, hp = rate(harm, thresholds[j]["harmful"]), rate(help_, thresholds[j]["helpful"])
            # One generator per (model, judge), seeded from the one seed: results do not depend on the order.
            rng = np.random.default_rng([seed, models.index(m), judges.index(j)])
            base = labels.get(("base", j)) if m != "base" and "base" in models else None
            ci = bootstrap_rates(harm_ok.astype(float), help_ok.astype(float), resamples, confidence, rng,
                                 *(x.astype(float) for x in base) if base else (None, None))
            deltas = {}
            if base:
                b_hm, b_hp = 100 * base[0].mean(), 100 * base[1].mean()
                deltas = {"delta_harmless_rate": hm - b_hm, "delta_helpful_rate": hp - b_hp,
                          "delta_cas": (hm + hp) / 2 - (b_hm + b_hp) / 2}
            entry = {"harmless_rate": hm, "helpful_rate": hp, "cas": (hm + hp) / 2}
            for k, (lo, hi) in ci.items():
                if k in deltas:
                    entry[k] = deltas[k]
                entry[f"{k}_ci_low"], entry[f"{k}_ci_high"] = lo, hi
            for s, vals in (("harmful", harm), ("helpful", help_)):
                entry[f"mean_reward_{s}"] = float(np.mean(vals))
                entry[f"median_reward_{s}"] = float(np.median(vals))
                entry[f"empty_share_{s}"] = 100.0 * float(np.mean([not r["response"].strip() for r in scores[m][s]]))
            entry["n_harmful"], entry["n_helpful"] = len(harm), len(help_)
            result[m][j] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}
    if len(judges) > 1:
        def every_model(judge: str, prompt_set: int):  # one judge's labels of all models' responses to a set
            return np.concatenate([labels[(m, judge)][prompt_set] for m in models])

        agree = {}
        for a_i, a in enumerate(judges):
            for b in judges[a_i + 1:]:
                agree[f"{a}_vs_{b}"] = {"harmless_label": round(agreement(every_model(a, 0), every_model(b, 0)), 4),
                                        "helpful_label": round(agreement(every_model(a, 1), every_model(b, 1)), 4)}
        result["judge_agreement"] = agree
    return result


def write_plots(result: dict, scores: dict, judges: list[str]) -> None:
    rows = ["model,judge,harmless_rate,helpful_rate,cas"]
    for m, per_judge in result.items():
        if m == "judge_agreement":
            continue
        for j in judges:
            r = per_judge[j]
            rows.append(f"{m} ({j}),{j},{r['harmless_rate']},{r['helpful_rate']},{r['cas']}")
    write_text(PLOTS / "rates.csv", "\n".join(rows) + "\n")
    rew = ["model,judge,prompt_set,prompt_id,reward"]
    for m, by_set in scores.items():
        for s in SETS:
            for r in by_set[s]:
                for j in judges:
                    rew.append(f"{m},{j},{s},{r['prompt_id']},{r['rewards'][j]!r}")
    write_text(PLOTS / "rewards.csv", "\n".join(rew) + "\n")
    _bar_chart(result, judges)
    _reward_histograms(scores, judges)


def _bar_chart(result: dict, judges: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in result if m != "judge_agreement"]
    fig, axes = plt.subplots(1, len(judges), figsize=(5 * len(judges), 3.6), squeeze=False)
    keys = [("harmless_rate", "HmR"), ("helpful_rate", "HpR"), ("cas", "CAS")]
    for ax, j in zip(axes[0], judges):
        x = np.arange(len(models))
        for i, (k, label) in enumerate(keys):
            vals = [result[m][j][k] for m in models]
            lo = [result[m][j][k] - result[m][j][f"{k}_ci_low"] for m in models]
            hi = [result[m][j][f"{k}_ci_high"] - result[m][j][k] for m in models]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, yerr=[lo, hi], capsize=2, label=label)
        ax.set_xticks(x, models)
        ax.set_ylim(0, 100)
        ax.set_title(f"judge: {j}")
        ax.set_ylabel("% (95% bootstrap CI)")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    _save(fig, "rates.png")


def _save(fig, name: str) -> None:
    import matplotlib.pyplot as plt

    PLOTS.mkdir(parents=True, exist_ok=True)
    tmp = PLOTS / f".{name}.tmp"
    fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})  # no version stamp: identical re-runs
    plt.close(fig)
    tmp.replace(PLOTS / name)


def _reward_histograms(scores: dict, judges: list[str]) -> None:
    """Reward distributions per model, one panel per (judge, prompt set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(judges), 2, figsize=(10, 3.2 * len(judges)), squeeze=False)
    for row, j in zip(axes, judges):
        for ax, s in zip(row, SETS):
            values = {m: [r["rewards"][j] for r in by_set[s]] for m, by_set in scores.items()}
            lo = min(min(v) for v in values.values())
            hi = max(max(v) for v in values.values())
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 21)
            for m, v in values.items():
                ax.hist(v, bins=bins, histtype="step", linewidth=1.5, label=m)
            ax.set_title(f"{j}: {s} prompts")
            ax.set_xlabel("reward")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, "rewards.png")


@fail_cleanly
def main() -> None:
    params = P.load()
    m = params.metrics
    judges = [j.name for j in params.score.judges]
    thresholds = {j: m.thresholds[j].model_dump() for j in judges}
    scores = load_scores(params.models, judges)
    result = compute(scores, thresholds, m.bootstrap_resamples, m.confidence, params.seed)
    write_plots(result, scores, judges)
    write_json(OUT, result)  # last: a metrics file only ever comes from complete inputs
    for model in params.models:
        r = result[model][judges[0]]
        print(f"{model:8s} {judges[0]}: HmR {r['harmless_rate']:5.1f}  HpR {r['helpful_rate']:5.1f}  CAS {r['cas']:5.1f}")


if __name__ == "__main__":
    main()
