"""A kill at any moment: training resumes from the last complete checkpoint (a partial one is set aside with a line
saying so), no stage leaves a partial output, and the finished outputs are the bytes of an uninterrupted run.

Kills land where they hurt on purpose (tests/killer.py): during a checkpoint save after the weights and optimizer
state are written, and half-way through writing trainer_state.json.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages.core.checkpoints import problem, safetensors_complete, torch_file_complete

from .conftest import ROOT, build_tiny_base, run_env, tiny_params, write_params

KILLER = str(ROOT / "tests" / "killer.py")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return build_tiny_base(tmp_path_factory.mktemp("resume"))


def workdir(source: Path, tmp_path: Path, **edits) -> Path:
    """A copy of the tiny data and base model, with params edited per section."""
    d = tmp_path / "work"
    shutil.copytree(source, d, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    p = tiny_params()
    for section, values in edits.items():
        p[section].update(values)
    write_params(d / "params.yaml", p)
    return d


def run(d: Path, *args: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, KILLER, kill[0], str(kill[1]), *args] if kill else [sys.executable, "-m", *args]
    env = run_env() | {"PYTHONHASHSEED": "0"}  # as a stage process runs (stages/core/determinism.py)
    return subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


SFT = {"max_steps": 40, "save_steps": 10, "logging_steps": 5}


@pytest.fixture(scope="module")
def uninterrupted_sft(base_model, tmp_path_factory):
    d = workdir(base_model, tmp_path_factory.mktemp("sft"), sft=SFT)
    assert run(d, "stages.train", "sft").returncode == 0
    return files(d / "models/sft")


@pytest.mark.parametrize("moment", ["checkpoint-save", "state-write"])
def test_sft_killed_while_saving_a_checkpoint_resumes_from_the_last_complete_one(
    base_model, tmp_path, moment, uninterrupted_sft
):
    d = workdir(base_model, tmp_path, sft=SFT)
    killed = run(d, "stages.train", "sft", kill=(moment, 2))  # during the save of checkpoint-20
    assert killed.returncode == -9
    partial = d / "checkpoints/sft/checkpoint-20"
    assert partial.is_dir() and problem(partial) is not None and problem(d / "checkpoints/sft/checkpoint-10") is None
    assert not (d / "models/sft").exists()  # nothing DVC could take as finished
    done = run(d, "stages.train", "sft")
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout
    why = "no trainer_state.json" if moment == "checkpoint-save" else "trainer_state.json is cut short"
    assert f"sft: checkpoints/sft/checkpoint-20 is incomplete ({why}" in log
    assert "set aside as checkpoints/sft/incomplete-checkpoint-20" in log
    assert "sft: resuming from checkpoints/sft/checkpoint-10" in log
    assert json.loads((d / "metrics/training/sft/train.json").read_text())["steps"] == 40
    assert files(d / "models/sft") == uninterrupted_sft  # the same bytes as a run never interrupted
    assert not (d / "checkpoints/sft").exists()


def test_base_killed_while_saving_resumes(base_model, tmp_path):
    d = workdir(
        base_model, tmp_path, base={"pretrain": tiny_params()["base"]["pretrain"] | {"max_steps": 12, "save_steps": 4}}
    )
    shutil.rmtree(d / "models/base")
    assert run(d, "stages.train", "base", kill=("checkpoint-save", 2)).returncode == -9
    done = run(d, "stages.train", "base")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "base: checkpoints/base/checkpoint-8 is incomplete" in done.stdout
    assert "base: resuming from checkpoints/base/checkpoint-4" in done.stdout
    assert json.loads((d / "metrics/training/base/train.json").read_text())["steps"] == 12


def test_dpo_killed_while_saving_resumes_to_the_uninterrupted_bytes(base_model, tmp_path):
    edits = {"dpo": {"max_steps": 8, "save_steps": 2, "eval_steps": 100}}
    clean = workdir(base_model, tmp_path / "a", **edits)
    assert run(clean, "stages.train", "dpo").returncode == 0
    d = workdir(base_model, tmp_path / "b", **edits)
    assert run(d, "stages.train", "dpo", kill=("checkpoint-save", 3)).returncode == -9
    assert not (d / "models/dpo").exists()
    done = run(d, "stages.train", "dpo")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dpo: checkpoints/dpo/checkpoint-6 is incomplete" in done.stdout
    assert "dpo: resuming from checkpoints/dpo/checkpoint-4" in done.stdout
    assert files(d / "models/dpo") == files(clean / "models/dpo")


@pytest.mark.parametrize(
    "stage, moment, out",
    [
        (("stages.sample", "base"), ("generate", 2), "data/samples/base.jsonl"),
        (("stages.score", "base"), ("judge", 1), "data/scores/base.jsonl"),
    ],
)
def test_sample_and_score_killed_leave_nothing_and_rerun_cleanly(base_model, tmp_path, stage, moment, out):
    d = workdir(base_model, tmp_path)
    if stage[0] == "stages.score":  # scoring needs samples and the judge
        assert run(d, "stages.sample", "base").returncode == 0
        assert run(d, "stages.reward_model").returncode == 0
    assert run(d, *stage, kill=moment).returncode == -9
    assert not (d / out).exists() and not list((d / out).parent.glob(".*tmp"))
    assert run(d, *stage).returncode == 0 and (d / out).stat().st_size > 0  # (same bytes on a re-run: test_pipeline)


def test_completeness_checks_catch_cut_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    st, pt = tmp_path / "w.safetensors", tmp_path / "o.pt"
    save_file({"w": torch.arange(1000.0)}, str(st))
    torch.save({"o": torch.arange(1000.0)}, pt)
    assert safetensors_complete(st) and torch_file_complete(pt)
    for f in (st, pt):
        f.write_bytes(f.read_bytes()[:-100])
    assert not safetensors_complete(st) and not torch_file_complete(pt)
