"""Stage `clean`: noisy pairs removed by named rules, every drop counted in a report.

    python -m stages.clean

Each pair is parsed into `prompt` (up to and including the last "\\n\\nAssistant:"), `chosen` and `rejected`.
Rules, in order (the first that fires names the drop), each switchable under `clean.rules` except `malformed`,
which always applies because such a pair cannot be used at all:
malformed, prompt_mismatch, ends_with_human_turn, empty_response, identical_responses, near_duplicate, too_long,
duplicate_pair, eval_leak.
Writes data/clean/train.jsonl (train split: SFT uses the chosen responses, DPO the pairs),
data/clean/heldout.jsonl (test-split pairs never used for policy training: judge training and DPO's held-out
accuracy), data/clean/calibration.jsonl (other test-split pairs: judge thresholds, `calibrate` stage),
metrics/clean.json (counts) and data/clean/report.json (rules in force, example ids per rule).
Always: input = kept + sum of drops.
"""

from __future__ import annotations

import difflib
import random
from pathlib import Path

from stages.core import hh
from stages.core import params as P
from stages.core.io import StageError, fail_cleanly, iter_jsonl, write_json, write_jsonl

RAW = Path("data/raw/pairs.jsonl")
EVAL = Path("data/eval/prompts.jsonl")
OUT_DIR = Path("data/clean")
REPORT = Path("metrics/clean.json")
RULES = [
    "malformed",
    "prompt_mismatch",
    "ends_with_human_turn",
    "empty_response",
    "identical_responses",
    "near_duplicate",
    "too_long",
    "duplicate_pair",
    "eval_leak",
]


def similarity(a: str, b: str, max_chars: int) -> float:
    """difflib's ratio of the two replies' first `max_chars` characters: its cost grows with the product of the
    lengths, so it is bounded here (a 40,000-word pair once took over 10 minutes)."""
    return difflib.SequenceMatcher(None, a[:max_chars], b[:max_chars], autojunk=False).ratio()


def check_pair(rec: dict, p: P.CleanParams, eval_keys: set[str], seen: set) -> tuple[str | None, dict | None]:
    """(rule that drops the pair or None, parsed pair)."""
    on = p.rules
    if "error" in rec:
        return "malformed", None
    try:
        prompt, chosen = hh.split_transcript(rec["chosen"])
        prompt_r, rejected = hh.split_transcript(rec["rejected"])
    except hh.Malformed:
        return "malformed", None
    pair = {"id": rec["id"], "subset": rec["subset"], "prompt": prompt, "chosen": chosen, "rejected": rejected}
    # each side's own transcript, when the parsed pair would not rebuild it (the study trained on the raw texts)
    for side, response in (("chosen", chosen), ("rejected", rejected)):
        if hh.join(prompt, response) != rec[side]:
            pair[f"{side}_transcript"] = rec[side]
    if on.prompt_mismatch and prompt != prompt_r:
        return "prompt_mismatch", pair
    # a transcript whose last turn is the human's: its "response" would teach the model to write Human turns
    if on.ends_with_human_turn and (hh.HUMAN in chosen or hh.HUMAN in rejected):
        return "ends_with_human_turn", pair
    if on.empty_response and (not chosen.strip() or not rejected.strip()):
        return "empty_response", pair
    if on.identical_responses and chosen.strip() == rejected.strip():
        return "identical_responses", pair
    # cheap rules before costly ones: a 50 MB pair is dropped as too long before any similarity is computed
    if on.too_long and (
        len(prompt.split()) > p.max_prompt_tokens
        or max(len(chosen.split()), len(rejected.split())) > p.max_response_tokens
    ):
        return "too_long", pair
    if on.near_duplicate:
        a, b = (
            chosen.strip().lower()[: p.near_duplicate_max_chars],
            rejected.strip().lower()[: p.near_duplicate_max_chars],
        )
        if (
            difflib.SequenceMatcher(None, a, b).quick_ratio() >= p.near_duplicate_threshold
            and similarity(a, b, p.near_duplicate_max_chars) >= p.near_duplicate_threshold
        ):
            return "near_duplicate", pair
    key = (prompt, chosen, rejected)
    if on.duplicate_pair and key in seen:
        return "duplicate_pair", pair
    seen.add(key)
    if on.eval_leak and hh.prompt_key(prompt) in eval_keys:
        return "eval_leak", pair
    return None, pair


def clean(records: list[dict], p: P.CleanParams, eval_prompts: list[str]) -> tuple[list[dict], dict]:
    eval_keys = {hh.prompt_key(t) for t in eval_prompts}
    seen: set = set()
    kept: list[dict] = []
    dropped = {r: 0 for r in RULES}
    examples: dict[str, list[str]] = {r: [] for r in RULES}
    for rec in records:
        rule, pair = check_pair(rec, p, eval_keys, seen)
        if rule is None:
            kept.append(pair | {"split": rec["split"]})
        else:
            dropped[rule] += 1
            if len(examples[rule]) < p.examples_per_rule:
                examples[rule].append(rec["id"])
    report = {
        "input": len(records),
        "kept": len(kept),
        "dropped": dropped,
        "dropped_total": sum(dropped.values()),
        "rules_on": {r: (r == "malformed" or getattr(p.rules, r)) for r in RULES},
        "examples": examples,
    }
    assert report["input"] == report["kept"] + report["dropped_total"]
    return kept, report


@fail_cleanly
def main() -> None:
    params = P.load()
    p = params.clean
    records = [r for _, r in iter_jsonl(RAW)]
    eval_prompts = [r["prompt"] for _, r in iter_jsonl(EVAL)]
    kept, report = clean(records, p, eval_prompts)
    train = [{k: v for k, v in r.items() if k != "split"} for r in kept if r["split"] == "train"]
    test = [{k: v for k, v in r.items() if k != "split"} for r in kept if r["split"] == "test"]
    heldout = random.Random(f"{params.seed}:heldout").sample(test, min(len(test), p.heldout_max_pairs))
    # calibration pairs: test-split pairs the pipeline judge and DPO's held-out curves never see
    used = {r["id"] for r in heldout}
    rest = [r for r in test if r["id"] not in used]
    calibration = random.Random(f"{params.seed}:calibration").sample(rest, min(len(rest), p.calibration_max_pairs))
    if not kept or (not train and any(r.get("split") == "train" for r in records)):
        # the rules dropped everything there was to train on: stop here, not in `base` with a hint about splits
        drops = ", ".join(f"{k} {v}" for k, v in report["dropped"].items() if v) or "none"
        raise StageError(
            f"clean: no training pairs left ({report['input']} in, {len(test)} test pairs kept; dropped: "
            f"{drops}); check the data or switch rules off in clean.rules"
        )
    write_jsonl(OUT_DIR / "train.jsonl", train)
    write_jsonl(OUT_DIR / "heldout.jsonl", heldout)
    write_jsonl(OUT_DIR / "calibration.jsonl", calibration)
    # the rules in force and example ids are a record (data/clean/report.json); the counts are the metrics
    write_json(OUT_DIR / "report.json", {"rules_on": report.pop("rules_on"), "examples": report.pop("examples")})
    report |= {
        "kept_train": len(train),
        "kept_test": len(test),
        "heldout_written": len(heldout),
        "calibration_written": len(calibration),
    }
    write_json(REPORT, report)
    drops = ", ".join(f"{k} {v}" for k, v in report["dropped"].items() if v)
    print(
        f"clean: {report['input']} in, {report['kept']} kept ({len(train)} train, {len(test)} test); "
        f"dropped: {drops or 'none'}"
    )


if __name__ == "__main__":
    main()
