"""clean: every named rule fires on a pair written to trigger it, and input = kept + drops."""

import json

from stages import clean, download, prompts
from stages.core import params as P

from .conftest import tiny_params, write_params


def pair(prompt_q, chosen, rejected, prompt_r=None, i=0, split="train"):
    pc = f"\n\nHuman: {prompt_q}\n\nAssistant:"
    pr = f"\n\nHuman: {prompt_r or prompt_q}\n\nAssistant:"
    return {
        "id": f"s/{split}/{i}",
        "subset": "s",
        "split": split,
        "line": i,
        "chosen": f"{pc} {chosen}",
        "rejected": f"{pr} {rejected}",
    }


def test_each_rule_is_counted():
    p = P.validate(tiny_params()).clean
    recs = [
        pair("ok?", "Yes, here is a good answer.", "No.", i=1),
        {"id": "s/train/2", "subset": "s", "split": "train", "line": 2, "error": "not valid JSON"},
        {"id": "s/train/3", "subset": "s", "split": "train", "line": 3, "chosen": "no turns", "rejected": "x"},
        pair("a?", "one", "two", prompt_r="b?", i=4),
        pair("e?", "   ", "something", i=5),
        pair("same?", "Same reply.", "Same reply.", i=6),
        pair("near?", "Cows mostly eat grass and hay.", "Cows mostly eat grass and hay!", i=7),
        pair("long?", "word " * 700, "short", i=8),
        pair("ok?", "Yes, here is a good answer.", "No.", i=9),  # duplicate of 1
        pair("What is the capital of France?", "Paris.", "Berlin.", i=10),
        pair("ends?", "Sure.\n\nHuman: and another question", "No.", i=11),  # the last turn is the human's
    ]
    eval_prompts = ["\n\nHuman: What is the capital of France?\n\nAssistant:"]
    kept, report = clean.clean(recs, p, eval_prompts)
    assert [k["id"] for k in kept] == ["s/train/1"]
    assert report["dropped"] == {
        "malformed": 2,
        "prompt_mismatch": 1,
        "ends_with_human_turn": 1,
        "empty_response": 1,
        "identical_responses": 1,
        "near_duplicate": 1,
        "too_long": 1,
        "duplicate_pair": 1,
        "eval_leak": 1,
    }
    assert report["input"] == report["kept"] + sum(report["dropped"].values())
    assert report["examples"]["malformed"] == ["s/train/2", "s/train/3"]


def test_rules_can_be_switched_off():
    raw = tiny_params()
    for rule in raw["clean"]["rules"]:
        raw["clean"]["rules"][rule] = False
    p = P.validate(raw).clean
    recs = [pair("same?", "Same.", "Same.", i=1), pair("same?", "Same.", "Same.", i=2)]
    kept, report = clean.clean(recs, p, [])
    assert len(kept) == 2 and report["dropped_total"] == 0


def test_each_pair_keeps_its_own_transcripts_when_no_rule_drops_it():
    """With the study's rules (none), a rejected side whose prompt differs, or an empty reply after "Assistant: ", is
    kept as written: DPO's common-prefix split and SFT's transcripts read the pair's own texts, not ones rebuilt from
    the chosen side's prompt (which rewrote the rejected transcript, and lost the space after "Assistant:")."""
    from stages.core import hh
    from stages.methods import dpo

    raw = tiny_params()
    for rule in raw["clean"]["rules"]:
        raw["clean"]["rules"][rule] = False
    p = P.validate(raw).clean
    mismatch, empty, plain = (
        pair("a?", "one", "two", prompt_r="b?", i=1),
        pair("e?", "", "no", i=2),
        pair("c?", "x", "y", i=3),
    )
    kept, _ = clean.clean([mismatch, empty, plain], p, [])
    assert [hh.transcripts(k) for k in kept] == [(r["chosen"], r["rejected"]) for r in (mismatch, empty, plain)]
    assert kept[0]["rejected_transcript"] == mismatch["rejected"] and "chosen_transcript" not in kept[0]
    assert kept[1]["chosen_transcript"].endswith("Assistant: ") and "rejected_transcript" not in kept[1]
    assert (
        "chosen_transcript" not in kept[2] and "rejected_transcript" not in kept[2]
    )  # rebuilt exactly: nothing stored
    prompt, chosen, rejected = dpo.split_pair(kept[0], "common_prefix")
    assert prompt + rejected == mismatch["rejected"] and prompt + chosen == mismatch["chosen"]


def test_stage_writes_train_heldout_and_report(in_tmp):
    download.main()
    prompts.main()
    clean.main()
    report = json.loads((in_tmp / "metrics/clean.json").read_text())
    assert report["input"] == report["kept"] + report["dropped_total"]
    assert report["kept"] == report["kept_train"] + report["kept_test"]
    rules = set(tiny_params()["clean"]["rules"]) | {"malformed"}
    assert set(report["dropped"]) == rules  # every rule counted, zero included
    assert sum(report["dropped"].values()) == report["dropped_total"] > 0
    train = [json.loads(x) for x in (in_tmp / "data/clean/train.jsonl").read_text().splitlines()]
    assert train and all(r["prompt"].endswith("\n\nAssistant:") for r in train)


def test_hh_slice_report_adds_up(in_tmp, hh_slice):
    """The real slice (../shared) when present, else the synthetic stand-in: every pair is kept or counted under a
    rule; the real slice's known faults are found."""
    folder, real = hh_slice
    p = tiny_params()
    p["download"].update(source="local", dataset=str(folder), subsets=["harmless-base"], splits=["test"])
    p["prompts"].update(helpful_subset="harmless-base", n_harmful=50, n_helpful=50)
    write_params(in_tmp / "params.yaml", p)
    download.main()
    prompts.main()
    clean.main()
    r = json.loads((in_tmp / "metrics/clean.json").read_text())
    assert r["input"] == 2312 == r["kept"] + r["dropped_total"]
    assert sum(r["dropped"].values()) == r["dropped_total"] > 0
    if real:
        assert r["dropped"]["empty_response"] >= 4  # the slice has 4 empty chosen responses
        assert r["dropped"]["prompt_mismatch"] >= 5
