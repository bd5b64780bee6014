"""The non-finite guard reads the Trainer's own gradient norm (issue 30, less work per step): no second norm and no wait
for the device between logging steps, the same weights bit for bit, and a non-finite step still stops the run before
anything is saved."""

from __future__ import annotations

import shutil
import subprocess
import sys

from safetensors.torch import load_file, save_file

from .conftest import build_tiny_base, run_env, tiny_params, write_params

# The guard's per-step norm made to fail: a run that passes never took that path (it read the Trainer's norm).
NO_PER_STEP = """
from stages.core import callbacks
def per_step(self, model, step):
    raise SystemExit("the per-step norm ran")
callbacks.FiniteGuard.check_gradients = per_step
from stages import train
train.main(["sft"])
"""
# The guard left unattached: today's per-step norm before every optimizer step.
UNATTACHED = """
from stages.core import callbacks
callbacks.FiniteGuard.attach = lambda self, trainer: None
from stages import train
train.main(["sft"])
"""


def train_sft(folder, code: str, params: dict):
    write_params(folder / "params.yaml", params)
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=run_env(), capture_output=True, text=True)


def test_the_guard_reuses_the_trainers_norm_and_the_weights_are_the_same_bit_for_bit(tmp_path):
    (tmp_path / "attached").mkdir()
    base = build_tiny_base(tmp_path / "attached")
    shutil.copytree(base, tmp_path / "unattached")
    p = tiny_params()
    p["sft"].update(max_steps=6, logging_steps=3, save_steps=3)  # two logging steps and two saves, guard read at each
    attached = train_sft(base, NO_PER_STEP, p)
    assert attached.returncode == 0, attached.stderr[-2000:]
    unattached = train_sft(tmp_path / "unattached", UNATTACHED, p)
    assert unattached.returncode == 0, unattached.stderr[-2000:]
    a = (base / "models/sft/model.safetensors").read_bytes()
    assert a == (tmp_path / "unattached/models/sft/model.safetensors").read_bytes()


def test_a_non_finite_gradient_stops_training_before_its_first_checkpoint(tmp_path):
    folder = build_tiny_base(tmp_path)
    weights = load_file(str(folder / "models/base/model.safetensors"))
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name][0, 0] = float("nan")  # non-finite from step 1
    save_file(weights, str(folder / "models/base/model.safetensors"), metadata={"format": "pt"})
    p = tiny_params()
    p["sft"].update(max_steps=8, logging_steps=8, save_steps=2)  # the first save comes before the first log
    write_params(folder / "params.yaml", p)
    res = subprocess.run(
        [sys.executable, "-m", "stages.train", "sft"], cwd=folder, env=run_env(), capture_output=True, text=True
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr
    error = res.stderr.strip().splitlines()[-1]
    assert error.startswith("error: sft: step 1: non-finite gradient norm; stopping at step 2 before anything is saved")
    assert "weights now non-finite from " in error
    assert not list(folder.glob("checkpoints/**/checkpoint-*")) and not (folder / "models/sft").exists()
