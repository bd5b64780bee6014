"""Several processes through accelerate, checked on the CPU (gloo): training completes and loads, sampling and
scoring with 2 processes give the same files as with 1, and only the main process writes."""

import json
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from stages import launch
from stages.core import distributed as dist
from stages.core import params as P
from stages.core.io import StageError
from stages.core.modeling import load_causal_lm

from .conftest import build_tiny_base, run_env, tiny_params, write_params


def test_launch_command_from_params():
    d = P.validate(tiny_params()).distributed.model_copy(
        update={"num_processes": 4, "config_file": "configs/ddp.yaml", "main_process_port": 29611}
    )
    cmd = launch.command("train", ["sft_dpo"], d, cuda=False)
    assert cmd[1:] == [
        "launch",
        "--num_processes",
        "4",
        "--mixed_precision",
        "no",
        "--config_file",
        "configs/ddp.yaml",
        "--main_process_port",
        "29611",
        "-m",
        "stages.train",
        "sft_dpo",
    ]
    assert "--multi_gpu" in launch.command("train", ["sft"], d.model_copy(update={"config_file": None}), cuda=False)
    with pytest.raises(StageError, match="nowhere.yaml: accelerate config file not found"):
        launch.command("train", ["sft"], d.model_copy(update={"config_file": "nowhere.yaml"}), cuda=True)


def test_effective_batch_is_kept(monkeypatch):
    d = SimpleNamespace(keep_effective_batch=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert dist.accumulation_steps(4, d) == 2  # 2 per device x 2 x 2 processes = the study's 8
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(StageError, match="not a multiple of the 3 processes"):
        dist.accumulation_steps(4, d)
    assert dist.accumulation_steps(4, SimpleNamespace(keep_effective_batch=False)) == 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stage(d, *args, procs=1):
    p = tiny_params()
    p["distributed"].update(num_processes=procs, main_process_port=free_port())
    p["sft"]["gradient_accumulation_steps"] = p["dpo"]["gradient_accumulation_steps"] = 2
    write_params(d / "params.yaml", p)
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "stages.launch", *args],
        cwd=d,
        capture_output=True,
        text=True,
        env=run_env() | {"ALIGN_CPU_THREADS": "1"},
    )  # two processes share the 2 cores
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return time.perf_counter() - t, res.stdout + res.stderr


@pytest.mark.slow
def test_two_cpu_processes(tmp_path):
    build_tiny_base(tmp_path)
    times = {}
    for procs in (1, 2):
        times[("sft", procs)], log = run_stage(tmp_path, "train", "sft", procs=procs)
        if procs == 2:
            assert "accelerate" in log and "--num_processes 2" in log
        assert json.loads((tmp_path / "models/sft/run.json").read_text())["processes"] == procs
        load_causal_lm(str(tmp_path / "models/sft"))
        times[("dpo", procs)], _ = run_stage(tmp_path, "train", "sft_dpo", procs=procs)
        t = json.loads((tmp_path / "metrics/training/sft_dpo/train.json").read_text())
        assert t["effective_batch_size"] == 16  # 8 x 2 x 1 = 8 x 1 x 2
        assert json.loads((tmp_path / "models/sft_dpo/run.json").read_text())["processes"] == procs
        load_causal_lm(str(tmp_path / "models/sft_dpo"))
    # sampling: the same model, 1 vs 2 processes, same file
    run_stage(tmp_path, "sample", "sft_dpo", procs=1)
    one = (tmp_path / "data/samples/sft_dpo.jsonl").read_bytes()
    times[("sample", 2)], _ = run_stage(tmp_path, "sample", "sft_dpo", procs=2)
    assert (tmp_path / "data/samples/sft_dpo.jsonl").read_bytes() == one
    # scoring: the same responses, 1 vs 2 processes, same file (each process scores a share; the main one writes)
    subprocess.run(
        [sys.executable, "-m", "stages.reward_model"], cwd=tmp_path, env=run_env(), check=True, capture_output=True
    )
    run_stage(tmp_path, "score", "sft_dpo", procs=1)
    one = (tmp_path / "data/scores/sft_dpo.jsonl").read_bytes()
    times[("score", 2)], _ = run_stage(tmp_path, "score", "sft_dpo", procs=2)
    assert (tmp_path / "data/scores/sft_dpo.jsonl").read_bytes() == one
    print("\nwall time (s), 1 vs 2 CPU processes:", {f"{k[0]}@{k[1]}": round(v, 1) for k, v in times.items()})
