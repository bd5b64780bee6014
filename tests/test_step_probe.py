"""bench/step_probe.py, the GPU step probe: its arithmetic (steady state, first calls, trials at once), the pairs re-cut
to real HH-RLHF lengths, and its CPU smoke run end to end (the same code path a GPU runs, small look-alikes)."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, bench_module, run_env


def probe_module():
    return bench_module("step_probe")


def test_steady_state_sets_warmup_profiled_and_new_shape_steps_apart():
    step_probe = probe_module()
    timer = step_probe.StepTimer(warmup=2, profile_steps=1)
    timer.cuda = False
    # step ends (seconds): steps 1-2 warm-up (slow), 3 profiled, 4-7 steady; step 6 meets a new shape
    timer.marks = [0.0, 1.0, 1.5, 2.5, 2.6, 2.7, 2.9, 3.0]
    timer.walls = [100 + m for m in timer.marks]
    a, b = (("input_ids", (2, 8)),), (("input_ids", (2, 16)),)
    timer.step_shapes = [(a,), (a,), (a,), (a,), (a,), (b,), (a,)]
    timer.tokens = {"real": 70, "padded": 112}
    out = timer.summary()
    assert out["steady_steps"] == 4 and out["steady_ms_mean"] == pytest.approx(125.0)
    assert out["first_step_ms"] == 1000.0 and out["warmup_s"] == 1.5
    assert out["new_shape_steps"] == 1 and out["new_shape_ms_mean"] == pytest.approx(200.0)
    assert out["repeated_shape_ms_mean"] == pytest.approx(100.0) and out["distinct_shapes"] == 2
    assert out["tokens_per_step_real"] == 10.0 and out["steady_ends"] == pytest.approx([102.6, 102.7, 102.9, 103.0])


def test_combined_steps_per_second_counts_only_the_overlap():
    step_probe = probe_module()
    one = {"steady_steps_per_s": 4.0, "steady_ends": [10.0, 10.5, 11.0, 11.5, 12.0]}
    two = {"steady_steps_per_s": 2.0, "steady_ends": [11.0, 12.0, 13.0]}
    # window (11, 12]: one ends 2 steps in it, two ends 1
    assert step_probe.combined_steps_per_s([one, two]) == 3.0
    assert step_probe.combined_steps_per_s([one]) == 4.0
    assert step_probe.combined_steps_per_s([one, {"steady_steps_per_s": 1, "steady_ends": [20.0, 21.0]}]) is None


def test_pairs_are_recut_to_the_target_lengths(tokenizer_folder):
    import numpy as np
    from transformers import AutoTokenizer

    step_probe = probe_module()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    rows = [
        {
            "prompt": "\n\nHuman: How do I bake bread at home?\n\nAssistant:",
            "chosen": "Mix flour and water.",
            "rejected": "No.",
        }
    ] * 3
    targets = [{"prompt": 60, "chosen": 30, "rejected": 45}, {"prompt": 20, "chosen": 5, "rejected": 9}] * 2
    out = step_probe.fit_lengths(rows * 20, tok, targets[:3], np.random.default_rng(0))
    assert len(out) == 3
    for row, target in zip(out, targets):
        assert row["prompt"].startswith("\n\nHuman: ") and row["prompt"].endswith("\n\nAssistant:")
        for key in ("prompt", "chosen", "rejected"):
            got = len(tok(row[key], add_special_tokens=False)["input_ids"])
            assert abs(got - target[key]) <= 3, (key, got, target[key])


@pytest.fixture
def tokenizer_folder(tmp_path):
    """A small byte-level BPE tokenizer saved as a model folder (the look-alikes' kind)."""
    from stages.methods.base import train_tokenizer

    texts = ["How do I bake bread at home? Mix flour and water, then wait. No."] * 50
    tok = train_tokenizer(texts, 300)
    tok.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


@pytest.mark.slow
def test_the_probe_runs_on_a_cpu_and_writes_every_entry(tmp_path):
    out = tmp_path / "probe.json"
    cmd = [sys.executable, "bench/step_probe.py", "--shape", "tiny", "--steps", "4", "--warmup", "2"]
    cmd += ["--profile-steps", "1", "--concurrency", "1,2", "--only", "study,fast", "-o", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, env=run_env(), capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    got = [(e["set"], e["method"]) for e in report["entries"]]
    assert got == [("study", "sft"), ("study", "dpo"), ("fast", "sft"), ("fast", "dpo")], report
    for e in report["entries"]:
        assert "error" not in e, e
        assert e["device"] == "cpu" and e["steady_steps"] == 4 and e["steady_ms_mean"] > 0
        assert e["aten_ops_per_step"] > 100 and e["checkpoint_save_s"] > 0
        assert 0 < e["tokens_per_step_real"] <= e["tokens_per_step_padded"]
    (pair,) = report["concurrency"]
    assert pair["trials"] == 2 and pair["errors"] == [] and len(pair["per_trial_steps_per_s"]) == 2
    assert "| study | sft |" in res.stdout and "2 trials at once (fast sft)" in res.stdout
