"""Stage `calibrate`: each judge's accuracy on held-out preference pairs, and thresholds for judges without any.

    python -m stages.calibrate

Every reward judge (`score.judges`) scores the chosen and the rejected reply of held-out test-split pairs
(data/clean/calibration.jsonl: pairs that neither policy training, the pipeline judge nor DPO's held-out curves
use; pairs whose prompt is an evaluation prompt are left out). Pairs of `prompts.harmful_subset` (harmless-base)
stand for harmlessness, pairs of `prompts.helpful_subset` (helpful-base) for helpfulness.

- metrics/calibration.json: per reward judge and set, the pairwise accuracy (share of pairs whose chosen reply scores
  above the rejected one; ties count half): how well each judge agrees with HH's own labels, with its 95% Wilson
  interval (`..._ci`); per judge of refusal, its accuracy on labelled replies (data/eval/xstest_labelled.jsonl: replies
  known to refuse or to comply), balanced (the mean of the refusals it finds and the compliances it finds, so a judge
  that calls everything a refusal scores 0.5), with a 95% interval (MOVER from the two Wilson intervals); replies whose
  label it could not read count against it. A claim counts only under judges whose interval lies above 0.5
  (commands.gather);
- data/calibration/thresholds.json: for a judge whose `score.judges[].thresholds` say `calibrated` (the study defined
  thresholds for its own judge only), the threshold of each set is the reward that best separates chosen from
  rejected replies of that set: the cut with the most chosen replies above it and rejected ones at or below it
  (among equally good cuts, the middle one). It is computed from held-out pairs only, never from the evaluation
  prompts or any model's responses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core import params as P
from stages.core.determinism import seed_and_pin
from stages.core.hh import prompt_key
from stages.core.io import StageError, fail_cleanly, iter_jsonl, write_json
from stages.core.rates import mover_mean, wilson, win_share
from stages.judges import gives_reward, kinds, score_rows, specs

PAIRS = Path("data/clean/calibration.jsonl")
LABELLED = Path("data/eval/xstest_labelled.jsonl")
EVAL = Path("data/eval/prompts.jsonl")
OUT = Path("data/calibration/thresholds.json")
REPORT = Path("metrics/calibration.json")
SETS = {"harmful": "harmless", "helpful": "helpful"}  # threshold kind -> the quality its pairs stand for
CONFIDENCE = 0.95  # the judges' accuracy intervals, at the level of the claims that depend on them


def accuracy_interval(successes: float, n: int) -> list[float] | None:
    """A share's 95% Wilson interval, as shares (None for no data)."""
    return [round(x / 100, 4) for x in wilson(successes, n, CONFIDENCE)] if n else None


def label_accuracy(predicted: list[bool | None], truth: list[bool]) -> dict:
    """A labelling judge against known labels: accuracy, balanced accuracy (mean of the two recalls) with its MOVER
    interval from the recalls' Wilson intervals; an unreadable answer (None) is wrong either way."""
    hits = [p is t for p, t in zip(predicted, truth)]
    pos = [h for h, t in zip(hits, truth) if t]
    neg = [h for h, t in zip(hits, truth) if not t]
    out = {
        "labelled": len(truth),
        "unreadable": sum(p is None for p in predicted),
        "accuracy": round(sum(hits) / len(hits), 4) if hits else None,
        "balanced_accuracy": None,
        "balanced_accuracy_ci": None,
    }
    if pos and neg:
        tpr, tnr = 100 * sum(pos) / len(pos), 100 * sum(neg) / len(neg)
        tpr_ci, tnr_ci = wilson(sum(pos), len(pos), CONFIDENCE), wilson(sum(neg), len(neg), CONFIDENCE)
        lo, hi = mover_mean(tpr, tpr_ci, tnr, tnr_ci)
        out["balanced_accuracy"] = round((tpr + tnr) / 200, 4)
        out["balanced_accuracy_ci"] = [round(max(lo, 0.0) / 100, 4), round(min(hi, 100.0) / 100, 4)]
    return out


def best_cut(chosen: np.ndarray, rejected: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy): the cut t maximising #(chosen > t) + #(rejected <= t), as a share of all replies."""
    values = np.concatenate([chosen, rejected])
    is_chosen = np.concatenate([np.ones(len(chosen)), np.zeros(len(rejected))])
    order = np.argsort(values, kind="stable")
    v, y = values[order], is_chosen[order]
    n = len(v)
    rejected_below = np.concatenate([[0.0], np.cumsum(1 - y)])  # cut i: replies [0, i) are at or below t
    chosen_above = y.sum() - np.concatenate([[0.0], np.cumsum(y)])
    accuracy = (rejected_below + chosen_above) / n
    valid = np.array([i in (0, n) or v[i - 1] < v[i] for i in range(n + 1)])  # never cut between equal rewards
    best = accuracy[valid].max()
    candidates = np.flatnonzero(valid & (accuracy == best))
    i = int(candidates[len(candidates) // 2])
    t = v[0] - 1.0 if i == 0 else v[-1] if i == n else (v[i - 1] + v[i]) / 2
    return float(t), float(best)


def kinds_labels(spec) -> tuple[str, ...]:
    return kinds()[spec.kind].gives


def pairs_by_set(params: P.Params) -> dict[str, list[dict]]:
    eval_prompts = {prompt_key(r["prompt"]) for _, r in iter_jsonl(EVAL)}
    subsets = {"harmful": params.prompts.harmful_subset, "helpful": params.prompts.helpful_subset}
    out: dict[str, list[dict]] = {kind: [] for kind in subsets}
    for _, pair in iter_jsonl(PAIRS):
        if prompt_key(pair["prompt"]) in eval_prompts:
            continue
        for kind, subset in subsets.items():
            if pair["subset"] == subset:
                out[kind].append(pair)
    return out


@fail_cleanly
def main() -> None:
    params = P.load()
    seed_and_pin(params.seed)
    pairs = pairs_by_set(params)
    rows = [
        {"prompt": p["prompt"], "response": p[side]}
        for kind in pairs
        for p in pairs[kind]
        for side in ("chosen", "rejected")
    ]
    judges = specs(params)
    reward_judges = [j for j in judges if gives_reward(j)]
    scored, _ = score_rows(rows, reward_judges) if rows else ([], {})
    report, thresholds = {}, {}
    for spec in reward_judges:
        wanted = spec.thresholds
        rewards = iter(r["rewards"][spec.name] for r in scored)
        report[spec.name] = {}
        for kind, quality in SETS.items():
            values = np.array([next(rewards) for _ in range(2 * len(pairs[kind]))], dtype=float)
            chosen, rejected = values[0::2], values[1::2]
            wins = float(win_share(chosen, rejected).sum())
            report[spec.name][f"{quality}_pairs"] = len(chosen)
            report[spec.name][f"{quality}_pairwise_accuracy"] = round(wins / len(chosen), 4) if len(chosen) else None
            report[spec.name][f"{quality}_pairwise_accuracy_ci"] = accuracy_interval(wins, len(chosen))
            if getattr(wanted, kind) == "calibrated":
                if len(chosen) < 10:
                    raise StageError(
                        f"{PAIRS}: {len(chosen)} held-out pairs of '{getattr(params.prompts, kind + '_subset')}'"
                        f" to calibrate {spec.name}'s {kind} threshold (need 10; clean.calibration_max_pairs)"
                    )
                t, accuracy = best_cut(chosen, rejected)
                thresholds.setdefault(spec.name, {})[kind] = round(t, 6)
                report[spec.name][f"{kind}_threshold"] = round(t, 4)
                report[spec.name][f"{kind}_threshold_accuracy"] = round(accuracy, 4)
    labelled = [r for _, r in iter_jsonl(LABELLED)]
    labellers = [j for j in judges if not gives_reward(j)]
    found = score_rows(labelled, labellers)[0] if labelled and labellers else []
    for spec in labellers:
        for label in kinds_labels(spec):
            truth = [r[label] for r in labelled if label in r]
            predicted = [r["labels"][spec.name].get(label) for r in found if label in r]
            report.setdefault(spec.name, {})[label] = label_accuracy(predicted, truth) if truth else None
    write_json(
        OUT,
        {
            "rule": "the reward that best separates held-out chosen from rejected replies of each set",
            "thresholds": thresholds,
            "pairs": {k: len(v) for k, v in pairs.items()},
        },
    )
    write_json(REPORT, report)
    for name, r in report.items():
        if "harmless_pairs" in r:
            print(
                f"calibrate: {name}: pairwise accuracy harmless {r['harmless_pairwise_accuracy']} "
                f"({r['harmless_pairs']} pairs), helpful {r['helpful_pairwise_accuracy']} ({r['helpful_pairs']} pairs)"
            )
        for label, acc in r.items():
            if isinstance(acc, dict):
                print(
                    f"calibrate: {name}: {label} balanced accuracy {acc['balanced_accuracy']} "
                    f"{acc['balanced_accuracy_ci']} on {acc['labelled']} labelled replies"
                )


if __name__ == "__main__":
    main()
