"""Fail in seconds: every value is checked for meaning before anything trains (stages/check.py, the pipeline's first
stage; stages/core/domains.py), a sweep checks its whole grid before it starts anything, two sweeps never share a
workspace, and an offline pin of a cached pickle is the user's explicit decision."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest

from commands import compose
from stages import check
from stages.core import params as P
from stages.core.io import StageError

from .conftest import copy_checkout, run_env, sh, tiny_params, write_params


def trl(cls_name: str, tmp: Path, **fields):
    """TRL's own config class built with `fields` (CPU settings): what TRL does with the value alone."""
    import trl

    if cls_name == "ORPOConfig":
        from trl.experimental.orpo import ORPOConfig as cls
    else:
        cls = getattr(trl, cls_name)
    return cls(output_dir=str(tmp), use_cpu=True, bf16=False, **fields)


def adamw(**kw):
    import torch

    return torch.optim.AdamW([torch.zeros(1, requires_grad=True)], **kw)


def dataloader(batch_size):
    import torch

    return torch.utils.data.DataLoader(list(range(4)), batch_size=batch_size)


# (section, key, bad value, what the one line says, what TRL or torch does with the value: `accepts` builds the
# config without a word, or the late failure the library raises)
BAD = [
    ("dpo", "beta", -0.1, "dpo.beta: -0.1 is out of range (allowed: a number > 0", ("DPOConfig", "accepts")),
    ("dpo", "beta", 0.0, "dpo.beta: 0.0 is out of range", ("DPOConfig", "accepts")),
    ("orpo", "beta", -1.0, "orpo.beta: -1.0 is out of range", ("ORPOConfig", "accepts")),
    (
        "dpo",
        "loss_type",
        "sigmoidd",
        "dpo.loss_type: 'sigmoidd' is out of range (allowed: one of sigmoid, hinge, ipo",
        ("DPOConfig", "accepts"),
    ),
    (
        "sft",
        "learning_rate",
        -0.001,
        "sft.learning_rate: -0.001 is out of range (allowed: a number > 0)",
        (adamw, {"lr": -0.001}, "Invalid learning rate"),
    ),
    (
        "base.pretrain",
        "learning_rate",
        0.0,
        "base.pretrain.learning_rate: 0.0 is out of range",
        ("SFTConfig", "accepts"),
    ),
    (
        "sft",
        "num_train_epochs",
        0.0,
        "sft.num_train_epochs: 0.0 is out of range (allowed: a number > 0 unless",
        ("SFTConfig", "accepts"),
    ),
    (
        "sft",
        "per_device_train_batch_size",
        0,
        "sft.per_device_train_batch_size: 0 is out of range",
        (dataloader, {"batch_size": 0}, "batch_size"),
    ),
    (
        "sft",
        "gradient_accumulation_steps",
        0,
        "sft.gradient_accumulation_steps: 0 is out of range",
        ("SFTConfig", "accepts"),
    ),
    (
        "sft",
        "weight_decay",
        -0.1,
        "sft.weight_decay: -0.1 is out of range",
        (adamw, {"weight_decay": -0.1}, "Invalid weight_decay"),
    ),
    ("sft", "max_grad_norm", -1.0, "sft.max_grad_norm: -1.0 is out of range", ("SFTConfig", "accepts")),
    (
        "sft",
        "lr_scheduler_type",
        "cosinee",
        "sft.lr_scheduler_type: 'cosinee' is out of range (allowed: one of linear",
        ("SFTConfig", "is not a valid SchedulerType"),
    ),
    ("sft", "optim", "adam", "sft.optim: 'adam' is out of range (allowed: one of adamw_torch", ("SFTConfig", "adam")),
    (
        "sft",
        "warmup_steps",
        1.5,
        "sft.warmup_steps: 1.5 is out of range (allowed: a share of the run in [0, 1) or a",
        ("SFTConfig", "accepts"),
    ),
    (
        "dpo",
        "warmup_steps",
        500,
        "dpo.warmup_steps: 500 is out of range (allowed: at most the run's max_steps (8))",
        ("DPOConfig", "accepts"),
    ),
    ("sft", "adam_beta2", 1.5, "sft.adam_beta2: 1.5 is out of range", (adamw, {"betas": (0.9, 1.5)}, "beta")),
    ("sft", "logging_steps", 0, "sft.logging_steps: 0 is out of range", ("SFTConfig", "logging_steps")),
    (
        "dpo",
        "max_prompt_length",
        64,
        "dpo.max_prompt_length: 64 leaves no room for a reply in dpo.max_length (64)",
        None,
    ),
]


def bad_params(section: str, key: str, value) -> dict:
    raw = copy.deepcopy(tiny_params(table="all"))
    node = raw
    for part in section.split("."):
        node = node[part]
    node[key] = value
    if key == "warmup_steps" and section == "dpo":
        node["max_steps"] = 8
    if key == "num_train_epochs":
        node["max_steps"] = -1  # (zero epochs are fine when max_steps says how long to train)
    return raw


@pytest.mark.parametrize("section, key, value, message, library", BAD, ids=[f"{r[0]}.{r[1]}={r[2]}" for r in BAD])
def test_a_value_without_meaning_is_refused_in_one_line_naming_it(section, key, value, message, library, tmp_path):
    with pytest.raises(StageError) as refused:
        check.check(P.validate(bad_params(section, key, value)))
    assert str(refused.value).startswith(f"params.yaml: {message}"), str(refused.value)
    assert "\n" not in str(refused.value)
    if library is None:  # a rule between two of the project's keys, no library value
        return
    # ...and without the check, TRL or torch takes the value silently, or fails only when it is used
    what, *rest = library
    if isinstance(what, str):
        expected = rest[0]
        if expected == "accepts":
            assert trl(what, tmp_path, **{key: value}) is not None
        else:
            with pytest.raises((ValueError, TypeError), match=expected):
                trl(what, tmp_path, **{key: value})
    else:
        kwargs, expected = rest
        with pytest.raises(ValueError, match=expected):
            what(**kwargs)


def test_the_choices_are_trls_own():
    """The loss types a DPO section may name are those TRL documents and its loss function knows (it refuses any other
    only at the first loss, after the model has loaded and SFT has trained)."""
    import inspect
    import re

    from trl import DPOConfig
    from trl.trainer import dpo_trainer

    from stages.core.domains import documented_choices

    choices = documented_choices(DPOConfig, "loss_type")
    known = re.search(
        r"Unknown loss type: \{loss_type\}\. Should be one of \[(.*?)\]", inspect.getsource(dpo_trainer), re.S
    ).group(1)
    assert set(choices) == set(re.findall(r"'([\w-]+)'", known)) and "sigmoid" in choices


def test_a_judge_threshold_must_be_finite():
    raw = tiny_params()
    raw["score"]["judges"][0]["thresholds"]["harmful"] = math.inf
    with pytest.raises(StageError, match=r"score.judges.0.thresholds.harmful: .*finite"):
        P.validate(raw)


def test_the_default_and_both_profiles_pass_every_check(monkeypatch):
    from commands.compose import compose

    from .conftest import ROOT

    monkeypatch.chdir(ROOT)
    for profile in ("cpu", "study", "improved"):
        check.check(P.validate(compose(profile)))
    check.check(P.validate(tiny_params(table="all")))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A git copy of the checkout (the CPU default, committed), no run: what `dvc repro` and the sweep start from."""
    dst = copy_checkout(tmp_path_factory.mktemp("checks") / "repo")
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", dst)
    return dst


@pytest.mark.parametrize(
    "key, value, named", [("beta", -0.1, "dpo.beta: -0.1"), ("loss_type", "sigmoidd", "dpo.loss_type: 'sigmoidd'")]
)
def test_dvc_repro_stops_before_any_stage_runs(workspace, key, value, named):
    import yaml

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["dpo"][key] = value
    write_params(workspace / "params.yaml", params)
    try:
        res = sh(["dvc", "repro"], workspace, check=False)
    finally:
        sh("git checkout -- params.yaml", workspace)
    assert res.returncode != 0 and f"error: params.yaml: {named}" in res.stderr + res.stdout, res.stderr
    assert "Running stage 'check'" in res.stdout and "Running stage 'download'" not in res.stdout
    assert not (workspace / "data/raw").exists() and not (workspace / "models").exists()


def test_a_sweep_refuses_a_bad_grid_before_ray_starts(workspace, tmp_path):
    scratch = tmp_path / "scratch"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "commands.sweep",
            "--scratch",
            str(scratch),
            "-S",
            "seed=1,2",
            "-S",
            "dpo.beta=0.1,-0.1",
            "-S",
            "sft.max_steps=4",
        ],
        cwd=workspace,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0] == "error: 2 of 4 trials have bad params; nothing was started:", lines
    assert all("dpo.beta=-0.1" in line and "params.yaml: dpo.beta: -0.1 is out of range" in line for line in lines[1:])
    assert len(lines) == 3 and {"seed=1", "seed=2"} == {w for line in lines[1:] for w in line.split() if "seed=" in w}
    assert not scratch.exists() and not (workspace / "logs/sweep").exists()  # no clone, no trial, no Ray session log
    assert "ray" not in res.stdout.lower()


def test_a_second_sweep_or_a_running_dvc_command_is_refused(workspace, monkeypatch):
    """The trials push into the workspace: one sweep at a time, and none while DVC holds the workspace."""
    from dvc.repo import Repo

    from commands import sweep

    monkeypatch.chdir(workspace)
    cmd = [sys.executable, "-m", "commands.sweep", "-S", "seed=1,2", "-S", "sft.max_steps=4"]
    with sweep.workspace_lock():  # a sweep running here
        res = subprocess.run(cmd, cwd=workspace, env=run_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "another sweep is running on this workspace (pid " in res.stderr, res.stderr
    with Repo(str(workspace)).lock:  # a dvc exp run / dvc repro running here
        res = subprocess.run(cmd, cwd=workspace, env=run_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "a DVC command (dvc exp run, dvc repro, ...) holds this workspace" in res.stderr
    assert not (workspace / "logs/sweep").exists()


def test_offline_a_cached_pickle_is_pinned_only_when_the_user_says_so(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from commands import pin

    (tmp_path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    from stages.core.io import sha256_file

    digest = sha256_file(tmp_path / "pytorch_model.bin")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(StageError, match=f"its sha256 is {digest}: .* run again with --trust-cached-pickle"):
        pin.trust_pickle("org/judge", "a" * 40, tmp_path)
    assert pin.trust_pickle("org/judge", "a" * 40, tmp_path, trust_cached=True) == digest
    assert f"--trust-cached-pickle, offline): sha256 {digest}" in capsys.readouterr().out


HH_TRAIN_PAIRS = 160_800  # HH-RLHF's train split, all four subsets (the study trained on all of it, uncleaned)


def study_scale_steps(section: dict, pairs: int = HH_TRAIN_PAIRS) -> int:
    """Optimizer steps of a method's run over the whole train split (its epochs, its effective batch of 8)."""
    if section.get("max_steps", -1) > 0:
        return section["max_steps"]
    batch = section["per_device_train_batch_size"] * section["gradient_accumulation_steps"]
    return math.ceil(pairs / batch) * int(section["num_train_epochs"])


@pytest.mark.parametrize("profile", ["study", "improved"])
def test_study_scale_profiles_save_and_evaluate_at_most_max_saves_times(profile):
    """Composed as `dvc exp run -S profile=...` composes them: every trained method of the table saves and evaluates
    at most speed.max_saves times over the whole train split (ORPO, with the CPU default's cadence, saved ~400)."""
    from stages.core.callbacks import events

    params = compose.compose(profile)
    limit = params["speed"]["max_saves"]
    methods = {entry["method"] for entry in params["models"].values()} - {"base"}
    assert methods >= {"sft", "dpo"} and (profile == "study") == ("orpo" not in methods)
    for method in sorted(methods):
        section = params[method]
        steps = study_scale_steps(section)
        assert steps > 10_000  # a study-scale run, not the CPU default's
        for key in ("save_steps", "eval_steps"):
            if key in section:
                assert 0 < events(section[key], "steps", steps) <= limit, (method, key, section[key], steps)
    assert events(100, "steps", 40_200) > limit  # the old cadence of ORPO in the improved profile


def test_a_cadence_firing_too_often_stops_training_before_step_1():
    from types import SimpleNamespace

    from stages.core.callbacks import CadenceCheck, events

    assert events(100, "steps", 1000) == 10 and events(0.25, "steps", 1000) == 4 and events(100, "epoch", 1000) == 0
    check = CadenceCheck("orpo", "orpo", 25).callback
    fine = SimpleNamespace(save_steps=2000, save_strategy="steps", eval_steps=2000, eval_strategy="steps")
    check.on_train_begin(fine, SimpleNamespace(max_steps=40_200), None)
    often = SimpleNamespace(save_steps=2000, save_strategy="steps", eval_steps=100, eval_strategy="steps")
    with pytest.raises(StageError) as err:
        check.on_train_begin(often, SimpleNamespace(max_steps=40_200), None)
    assert str(err.value) == (
        "params.yaml: orpo.eval_steps: 100 fires 402 times in this run's 40200 steps, more than speed.max_saves (25); "
        "set it to at least 1608 (orpo, before step 1)"
    )
