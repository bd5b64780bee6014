"""bench/gpu_check.py, the one-command GPU check of the study's path, runs end to end (here on a CPU with small
look-alikes; on a GPU with opt-350m's real shape) and prints its projection table."""

import os
import subprocess
import sys

import pytest

from .conftest import ROOT, bench_module, run_env


@pytest.mark.slow
def test_gpu_check_runs_and_projects_the_study(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "bench/gpu_check.py",
            "--shape",
            "tiny",
            "--sft-steps",
            "4",
            "--dpo-steps",
            "2",
            "--keep",
            str(tmp_path / "check"),
        ],
        cwd=ROOT,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    table = res.stdout
    assert (
        "| switches | stage | measured | steps/s | tokens/s | MFU | peak GPU memory | projected for the study |"
        in table
    )
    for row in (
        "| study | sft | ",
        "| study | dpo | ",
        "| study | sft_dpo | ",
        "| fast | sft | ",
        "| fast | dpo | ",
        "| study | sample@base | ",
        "| study | score@base | ",
    ):
        assert row in table
    assert "| 3h02m |" in table  # the study's own SFT time, beside the projection
    assert "n/a (no GPU peak)" in table  # MFU needs a GPU's peak
    assert "Real lengths: Anthropic/hh-rlhf harmless-base test" in table  # projected from bench/hh_lengths.json
    assert "- fast: SFT + DPO + SFT+DPO projected " in table and "goal for the improved profile" in table


def test_projection_arithmetic():
    """Tokens per optimizer step at the study's cuts, FLOPs per token, and the peak looked up by GPU name."""
    gpu_check = gpu_check_module()
    rows = [{"transcript": 600, "prompt": 700, "chosen": 100, "rejected": 500}] * 4 + [
        {"transcript": 100, "prompt": 10, "chosen": 10, "rejected": 20}
    ] * 4
    # SFT, 2 x 4: 4 long (cut at 512) and 4 short transcripts; micro-batches pad to their longest
    assert gpu_check.tokens_per_step(rows, "sft", 2, 4) == (4 * 512 + 4 * 100, 4 * 512 + 4 * 100)
    assert gpu_check.tokens_per_step(rows, "sft", 8, 1) == (4 * 512 + 4 * 100, 8 * 512)
    # DPO: prompt's last 512 + reply, cut at 1024; chosen and rejected of a micro-batch padded together
    real, padded = gpu_check.tokens_per_step(rows[:2], "dpo", 2, 1)
    assert (real, padded) == (2 * (612 + 1012), 4 * 1012)
    shape = {"params": 331e6, "layers": 24, "width": 1024}
    assert gpu_check.flops_per_token(shape, 160, "sft", False) == 6 * 331e6 + 12 * 24 * 1024 * 160
    assert (
        gpu_check.flops_per_token(shape, 160, "dpo", False) - gpu_check.flops_per_token(shape, 160, "dpo", True)
        == 2 * 331e6
    )
    assert (
        gpu_check.peak("NVIDIA H200 (1 GPU)", "bf16") == 989.4e12 and gpu_check.peak("cpu (2 threads)", "bf16") is None
    )


def gpu_check_module():
    return bench_module("gpu_check")


def test_padding_reaches_both_trainers_and_the_path_keeps_installed_packages(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from stages import methods
    from stages.core import params as P

    gpu_check = gpu_check_module()
    monkeypatch.chdir(ROOT)
    args = SimpleNamespace(sft_steps=4, dpo_steps=2, pad_to=512)
    digests = {"base.pickle_sha256": "0" * 64, "score.judges.0.pickle_sha256": "1" * 64}
    study = P.validate(gpu_check.params(args, digests))
    assert methods.load("sft").config(study, tmp_path).pad_to_multiple_of == 512
    assert methods.load("dpo").config(study, tmp_path).pad_to_multiple_of == 512
    unpadded = P.validate(gpu_check.params(SimpleNamespace(sft_steps=4, dpo_steps=2, pad_to=None), digests))
    assert methods.load("sft").config(unpadded, tmp_path).pad_to_multiple_of is None

    monkeypatch.setenv("PYTHONPATH", "/tmp/site")  # packages installed with pip --target on the GPU machine
    env = gpu_check.stage_env({"HF_HUB_OFFLINE": "1"}, tmp_path / "work")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "work"), "/tmp/site"]
    assert env["HF_HUB_OFFLINE"] == "1"


def test_checkout_without_a_git_folder(tmp_path):
    """The device machine receives a copy of the working tree that may have no .git: the scratch copy still holds
    every stage, and no outputs or caches."""
    gpu_check = gpu_check_module()
    copy = tmp_path / "copy"
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    copy.mkdir()
    subprocess.run(["tar", "x", "-C", str(copy)], input=archive, check=True)
    (copy / "models" / "sft").mkdir(parents=True)
    (copy / "models" / "sft" / "model.safetensors").write_bytes(b"x")
    gpu_check.ROOT = copy
    try:
        gpu_check.checkout(tmp_path / "work")
    finally:
        gpu_check.ROOT = ROOT
    got = {p.relative_to(tmp_path / "work").as_posix() for p in (tmp_path / "work").rglob("*") if p.is_file()}
    assert {
        "stages/train.py",
        "stages/methods/sft.py",
        "stages/core/training.py",
        "conf/config.yaml",
        "params.yaml",
    } <= got
    assert not any(g.startswith("models/") for g in got)
