"""Same bytes on any x86-64 machine: stages run under the settings another machine would bring (another instruction
set capability, one core, other thread and BLAS variables) write the same files as under this machine's own.

Without the pin (ALIGN_CPU_PIN=off) the same comparison fails on any machine, through the thread count alone; that
control run keeps this test honest.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

from stages.core import determinism

from .conftest import run_env, tiny_params, write_params


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return {f for line in fh if line.startswith("flags") for f in line.split()}
    except OSError:  # not Linux: no flags to read
        return set()


# What a different machine brings: one core, inherited thread variables and, where this CPU has AVX2 (the pin's
# kernels), the widest kernels torch knows (avx512 where the CPU has it, else the generic ones) and MKL's and
# OpenBLAS's own choices. Without AVX2 the kernels are this machine's own (the pin then covers threads only, and
# the test checks that much).
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
OTHER_MACHINE = THREADS | (
    {
        "ATEN_CPU_CAPABILITY": "avx512" if "avx512f" in cpu_flags() else "default",
        "MKL_CBWR": "AUTO",
        "OPENBLAS_CORETYPE": "Prescott",
        "NPY_DISABLE_CPU_FEATURES": "",
    }
    if determinism.cpu_has_avx2()
    else {}
)
OUTPUTS = [
    "models/base/model.safetensors",
    "models/judge/head.safetensors",
    "data/samples/base.jsonl",
    "data/scores/base.jsonl",
    "data/calibration/thresholds.json",
    "metrics/calibration.json",
]
STAGES = [
    ["stages.download"],
    ["stages.prompts"],
    ["stages.xstest"],
    ["stages.clean"],
    ["stages.train", "base"],
    ["stages.reward_model"],
    ["stages.calibrate"],
    ["stages.sample", "base"],
    ["stages.score", "base"],
]


def one_core():
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the thread variables alone stand for one core
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_pipeline(folder, extra_env: dict, single_core: bool, stages=STAGES) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    p = tiny_params()
    p["score"]["judges"][0]["thresholds"] = {"harmful": "calibrated", "helpful": 0.0}  # calibration in the chain
    write_params(folder / "params.yaml", p)
    env = {k: v for k, v in run_env().items() if k not in determinism.KERNELS and k != "ALIGN_CPU_THREADS"}
    env |= extra_env
    for args in stages:
        res = subprocess.run(
            [sys.executable, "-m", *args],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=one_core if single_core else None,
        )
        assert res.returncode == 0, f"{args}: {res.stderr[-2000:]}"
    return {o: hashlib.sha256((folder / o).read_bytes()).hexdigest() for o in OUTPUTS if (folder / o).exists()}


def side_by_side(*runs):
    """Run pipelines at once (one thread each waits on its stage processes): the bytes cannot depend on what else
    runs, and the two halves of a comparison take the time of one."""
    with ThreadPoolExecutor(len(runs)) as pool:
        return [f.result() for f in [pool.submit(run_pipeline, *args) for args in runs]]


def test_another_machines_settings_give_the_same_bytes(tmp_path):
    here, other = side_by_side((tmp_path / "here", {}, False), (tmp_path / "other", OTHER_MACHINE, True))
    assert set(here) == set(OUTPUTS)
    assert here == other


def test_without_the_pin_the_same_comparison_fails(tmp_path):
    """The control: unpinned, one core instead of two changes how torch splits its sums, and the model differs."""
    upto_base = STAGES[: STAGES.index(["stages.train", "base"]) + 1]
    here, other = side_by_side(
        (tmp_path / "here", {"ALIGN_CPU_PIN": "off", "OMP_NUM_THREADS": "2"}, False, upto_base),
        (tmp_path / "other", {"ALIGN_CPU_PIN": "off", **OTHER_MACHINE}, True, upto_base),
    )
    assert here["models/base/model.safetensors"] != other["models/base/model.safetensors"]


def test_pin_overrides_inherited_settings(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("ALIGN_CPU_PIN", raising=False)
    monkeypatch.setattr(determinism, "cpu_has_avx2", lambda: True)
    with pytest.warns(UserWarning, match="imported before stages"):  # (this test process has them loaded)
        determinism.pin_environment()
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["MKL_CBWR"] == "COMPATIBLE"
    assert os.environ["OMP_NUM_THREADS"] == str(determinism.DEFAULT_THREADS)


def test_without_avx2_threads_are_still_pinned_and_kernels_left_alone(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("ALIGN_CPU_PIN", raising=False)
    monkeypatch.setattr(determinism, "cpu_has_avx2", lambda: False)
    with warnings.catch_warnings(record=True) as caught:  # (with the one about torch loaded in this test process)
        warnings.simplefilter("always")
        determinism.pin_environment()
    assert any("no AVX2" in str(w.message) for w in caught)
    assert os.environ["ATEN_CPU_CAPABILITY"] == "default"  # AVX2 kernels would not run here
    assert os.environ["OMP_NUM_THREADS"] == str(determinism.DEFAULT_THREADS)


def test_a_stage_process_hashes_strings_the_same_way_every_time(tmp_path):
    """PEFT writes LoRA's target_modules set in set order: a stage process must not depend on hash randomisation."""
    (tmp_path / "stages").mkdir()
    shutil.copy(determinism.__file__.replace("core/determinism.py", "__init__.py"), tmp_path / "stages" / "__init__.py")
    shutil.copytree(os.path.dirname(determinism.__file__), tmp_path / "stages" / "core")
    (tmp_path / "stages" / "probe.py").write_text(
        "import os\nprint(os.environ.get('PYTHONHASHSEED'), list({'q_proj', 'v_proj', 'k_proj', 'o_proj'}))\n"
    )
    env = {k: v for k, v in run_env().items() if k != "PYTHONHASHSEED"} | {"PYTHONPATH": str(tmp_path)}
    outs = {
        subprocess.run(
            [sys.executable, "-m", "stages.probe"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(4)
    }
    assert len(outs) == 1 and outs.pop().startswith("0 ")


def outs_of(lock: dict) -> dict[str, str]:
    """Every output path and its hash in a dvc.lock."""
    return {o["path"]: o.get("md5") for stage in lock["stages"].values() for o in stage.get("outs", [])}


@pytest.mark.slow
def test_every_output_in_dvc_lock_is_the_same_under_another_machines_settings(request, tmp_path):
    """`dvc repro` of the whole (tiny) pipeline, here (the session's tiny_repo, the same tiny params) and under another
    machine's settings on one core: every output hash dvc.lock records is the same, model folders and data manifests
    included (their run records hold no machine facts: those are in logs/). The other machine's run starts first, so
    the session's tiny_repo (shared with tests/test_pipeline.py) is built beside it when this test comes first."""
    import yaml

    from .conftest import copy_checkout, sh

    repo = copy_checkout(tmp_path / "other")
    write_params(repo / "params.yaml", tiny_params())
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo)
    env = {k: v for k, v in run_env().items() if k not in determinism.KERNELS and k != "ALIGN_CPU_THREADS"}
    log = tmp_path / "other.log"  # a file, not a pipe: nobody reads while tiny_repo is built
    with log.open("w") as out:
        other = subprocess.Popen(
            ["dvc", "repro"], cwd=repo, env=env | OTHER_MACHINE, stdout=out, stderr=out, preexec_fn=one_core
        )
        try:
            first, _ = request.getfixturevalue("tiny_repo")
        finally:
            other.wait()
    assert other.returncode == 0, log.read_text()[-2000:]
    run_commit = sh("git log --format=%H --grep=^run$", first).stdout.split()[-1]  # its first `dvc repro`
    here = outs_of(yaml.safe_load(sh(["git", "show", f"{run_commit}:dvc.lock"], first).stdout))
    there = outs_of(yaml.safe_load((repo / "dvc.lock").read_text()))
    assert len(here) >= 30 and "models/sft" in here and "data/raw/pairs.jsonl" in here
    assert {k for k in here if here[k] != there.get(k)} == set()
