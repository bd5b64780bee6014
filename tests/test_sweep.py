"""The Ray sweep (commands/sweep.py): the grid, names, shared prefixes and resume matching (fast), then real sweeps on
an embedded Ray cluster (`ray.init(num_cpus=2)`, one CPU per trial, ALIGN_CPU_THREADS=1) of the CPU default scaled
down by `-S` keys only (slow: about 10 minutes on 2 cores)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from commands import sweep
from stages.core.io import StageError

from .browser import Page, browser
from .conftest import ROOT, default_params, fresh_clone, run_env, sh, tiny_overrides

GRID = ["-S", "seed=1,2", "-S", "dpo.beta=0.1,0.2"]


def test_the_grid_is_dvcs_expansion_of_exp_run_overrides():
    trials = sweep.expand(["seed=1,2", "params.yaml:dpo.beta=0.1,0.2", "sft.max_steps=5"])
    assert trials == [
        ["seed=1", "dpo.beta=0.1", "sft.max_steps=5"],
        ["seed=1", "dpo.beta=0.2", "sft.max_steps=5"],
        ["seed=2", "dpo.beta=0.1", "sft.max_steps=5"],
        ["seed=2", "dpo.beta=0.2", "sft.max_steps=5"],
    ]
    assert sweep.varied_keys(trials) == ["seed", "dpo.beta"]
    with pytest.raises(sweep.SweepError, match="only params.yaml"):
        sweep.expand(["other.yaml:a=1"])


def test_trial_names_are_ref_safe_readable_and_differ_with_fixed_overrides():
    a = sweep.trial_name(["seed=1", "dpo.beta=0.1", "sft.max_steps=5"], ["seed", "dpo.beta"])
    b = sweep.trial_name(["seed=1", "dpo.beta=0.1", "sft.max_steps=6"], ["seed", "dpo.beta"])
    assert a.startswith("seed1-beta0.1-") and a != b
    assert a == sweep.trial_name(["sft.max_steps=5", "dpo.beta=0.1", "seed=1"], ["seed", "dpo.beta"])
    odd = sweep.trial_name(["prompts.harmful_file='a b/c'"], ["prompts.harmful_file"])
    assert all(c.isalnum() or c in "._-" for c in odd)


@pytest.mark.parametrize(
    "grid, expected",
    [
        (["seed=1,2", "dpo.beta=0.1,0.2"], [None, 0, None, 2]),  # the betas of a seed share train@sft
        (["dpo.beta=0.1,0.2,0.3"], [None, 0, 0]),  # every later trial waits for the first only, then they run together
        (["seed=1,2,3"], [None, None, None]),  # the seed reaches every training stage: nothing is shared
        (["sample.max_new_tokens=5,6"], [None, 0]),  # an evaluation param shares all training
        (["profile=cpu,study"], [None, None]),  # a config group can change any stage
    ],
)
def test_trials_wait_only_for_a_trial_that_computes_their_training(grid, expected, monkeypatch):
    monkeypatch.chdir(ROOT)  # the committed dvc.yaml and params.yaml, read through DVC's index
    assert sweep.leaders(sweep.expand(grid)) == expected


def test_a_resumed_sweep_waits_only_for_trials_still_to_run():
    lead = [None, 0, 0, 0, None, 4]  # two groups: 0 (1, 2, 3 wait for it) and 4 (5 waits for it)
    assert sweep.waits(lead, [0, 1, 2, 3, 4, 5]) == [None, 0, 0, 0, None, 4]
    assert sweep.waits(lead, [1, 2, 3, 5]) == [None, None, None, None]  # 0 and 4 finished: their stages are cached
    assert sweep.waits(lead, [2, 4, 5]) == [None, None, 1]


def test_a_trial_is_matched_to_its_experiment_by_the_params_dvc_composes(monkeypatch):
    """What the resume compares: conf/ composed as `dvc exp run -S` composes it, flattened like `dvc exp show`."""
    monkeypatch.chdir(ROOT)
    params = sweep.composed(["seed=3", "dpo.beta=0.3", "profile=study"])
    assert params["seed"] == 3 and params["dpo.beta"] == 0.3 and params["profile"] == "study"
    assert sweep.composed(["sft.max_steps=8"])["orpo.max_steps"] == 8  # interpolations resolved, as Hydra does
    with pytest.raises(StageError, match="nosuchsection"):
        sweep.composed(["nosuchsection.key=1"])


def test_the_sweep_refuses_uncommitted_changes_its_trials_would_not_see(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert len(sweep.workspace_checks()) == 40  # the commit the trials clone
    (tmp_path / "dvc.yaml").write_text("stages: {a: {cmd: echo}}\n")
    with pytest.raises(sweep.SweepError, match="uncommitted changes .*dvc.yaml.*commit first"):
        sweep.workspace_checks()


def test_progress_is_one_plain_line_per_change_without_a_terminal(tmp_path):
    log = tmp_path / "log"
    with log.open("w") as stream:
        progress = sweep.Progress({"a-1": ["seed=1"], "b-2": ["seed=2"]}, ["seed"], stream)
        progress.set("a-1", "running")
        progress.set("a-1", "failed", ": error: bad")
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and "running seed=1 (a-1)" in lines[0] and "queued 1 · running 1" in lines[0]
    assert "failed  seed=1 (a-1): error: bad" in lines[1] and "failed 1" in lines[1]


# --- real sweeps (slow) ---------------------------------------------------------------------------------------------


def sweep_env() -> dict:
    return {**run_env(), "ALIGN_CPU_THREADS": "1"}  # two trials share two cores; the thread count changes the bytes


def sweep_cmd(*args: str, cluster: list[str] = ("--num-cpus", "2")) -> list[str]:
    """The sweep command (an embedded cluster of 2 CPUs unless `cluster` says otherwise) with the CPU default scaled
    down by `-S` keys (those the args set themselves left out)."""
    given = {a.split("=")[0] for a in args if "=" in a}
    scaled = [a for o in tiny_overrides() if o.split("=")[0] not in given for a in ("-S", o)]
    return [sys.executable, "-m", "commands.sweep", *cluster, *args, *scaled]


def experiments(dst: Path) -> dict[str, dict]:
    """{experiment name: flattened params} of the finished experiments `dvc exp show` lists."""
    from commands.compose import flat

    out = {}
    for rev in json.loads(sh(["dvc", "exp", "show", "--json"], dst).stdout):
        for exp in rev.get("experiments") or []:
            for run in exp.get("revs") or []:
                data = run.get("data") or {}
                if (data.get("metrics") or {}).get("metrics/metrics.json"):
                    out[run["name"]] = flat(data["params"]["params.yaml"]["data"])
    return out


def trial_logs(dst: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in (dst / "logs/sweep").glob("*.log")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A fresh `git clone` of the project, as a new user starts a sweep: the committed dvc.lock (the CPU default's
    outputs, seed 42), an empty DVC cache, no run and no DVC remote."""
    dst = fresh_clone(tmp_path_factory.mktemp("sweep"))
    assert (dst / "dvc.lock").exists() and not (dst / ".dvc/cache").exists()
    return dst


@pytest.mark.slow
def test_sweep_runs_the_grid_as_experiments_sharing_sft_per_seed(workspace, tmp_path):
    dst = workspace
    out = sh(sweep_cmd(*GRID), dst, env=sweep_env()).stdout
    assert "4 trials (seed x dpo.beta)" in out and "4 of 4 trials finished" in out, out
    found = experiments(dst)
    assert sorted((p["seed"], p["dpo.beta"]) for p in found.values()) == [(1, 0.1), (1, 0.2), (2, 0.1), (2, 0.2)]
    assert all(p["sft.max_steps"] == 8 for p in found.values())  # the fixed overrides, in every trial
    logs = trial_logs(dst)
    assert set(logs) == set(found)
    # sft trained once per seed; the other beta of the seed restored it from the run cache
    assert sum(log.count("Running stage 'train@sft'") for log in logs.values()) == 2
    assert sum("Stage 'train@sft' is cached - skipping run" in log for log in logs.values()) == 2
    summary = json.loads((dst / "logs/sweep/sweep.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["done"] * 4 and summary["gpus_per_trial"] == 0

    # the same command again: every trial is matched to its experiment, none runs
    again = sh(sweep_cmd(*GRID), dst, env=sweep_env()).stdout
    assert "4 finished, 0 to run" in again and "running" not in again

    # the gather command reads them (the fixed overrides the sweep printed select the runs)
    gather = next(line.split() for line in out.splitlines() if "commands.gather" in line)
    sh(gather[:3] + ["--resamples", "100"] + gather[3:], dst)
    rows = (dst / "metrics/sweeps/dpo.beta/sft_dpo.judge.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["0.1", "2"], ["0.2", "2"]]
    # and pools the seeds of one beta to test the study's claims (commands.gather without --by)
    fixed = [a for a in gather[3:] if a not in ("--by", "dpo.beta")]
    claims_out = sh(gather[:3] + ["--resamples", "100", *fixed, "-S", "dpo.beta=0.1"], dst).stdout
    seeds = json.loads((dst / "metrics/seeds.json").read_text())
    assert sorted(seeds["seeds"]) == [1, 2] and seeds["runs"] == 2
    claims = seeds["judges"]["judge"]["claims"]
    assert len(claims) == 14 and {c["status"] for c in claims} <= {"supported", "not supported", "contradicted"}
    # the claim that matters, from the runs' own XSTest labels and each judge's measured accuracy
    (over,) = [c for c in claims if "without raising over-refusal (string_match)" in c["claim"]]
    assert over["counts"] == (over["status"] if over["judge_valid"] else "not counted")
    assert [d["metric"] for d in over["differences"]] == ["harm_lowered", "over_refusal"]
    cas = seeds["judges"]["judge"]["rates"]["sft_dpo"]["cas"]
    assert len(cas["per_run"]) == 2 and cas["ci"][0] <= cas["mean"] <= cas["ci"][1]
    table = (dst / "metrics/seeds.md").read_text()
    assert "| SFT+DPO > SFT in CAS | holds |" in table and "SFT+DPO is best in HmR, HpR and CAS" in table
    assert "judge: SFT+DPO > SFT in CAS:" in claims_out
    sh("git checkout -- metrics", dst)  # gathered results are committed by hand; the sweep refuses a dirty workspace

    # the page over the sweep's experiments (filtered as gather is: the fixed overrides), opened in Chromium
    view = tmp_path / "view.html"
    printed = sh(["python", "-m", "commands.view", "-o", str(view), "-S", "sft.max_steps=8", "--resamples", "100"], dst)
    assert "view: 4 runs" in printed.stdout
    with browser() as chromium:
        shown = Page(chromium, view)
        assert shown.errors == [] and shown.requests == []
        assert sorted(shown.visible_rows()) == sorted(found)  # one row per experiment
        assert shown.page.locator('#sweep figure[data-param="dpo.beta"] svg').count() == 1
        assert shown.page.locator("#claims-table tbody tr").count() > 2  # a claims row per beta (seeds 1, 2)
        assert shown.page.locator("#reply-grid .reply").count() == len(default_params()["models"])

    # a trial that restored sft from the run cache holds its seed's own sft (the one the other beta trained), not the
    # other seed's: the same hashes in both experiments' dvc.lock. (That a restored run has the bytes of a run alone
    # follows from the determinism tests: every output of a run is the same on any machine.)
    baseline = sh(["git", "rev-parse", "HEAD"], dst).stdout.strip()

    def sft_hash(name: str) -> str:
        ref = f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"
        lock = yaml.safe_load(sh(["git", "show", f"{ref}:dvc.lock"], dst).stdout)
        return next(o["md5"] for o in lock["stages"]["train@sft"]["outs"] if o["path"] == "models/sft")

    by_trial = {(p["seed"], p["dpo.beta"]): sft_hash(n) for n, p in found.items()}
    assert by_trial[(1, 0.1)] == by_trial[(1, 0.2)] != by_trial[(2, 0.1)] == by_trial[(2, 0.2)]


@pytest.mark.slow
def test_a_killed_sweep_resumes(workspace):
    """Runs after the grid above (the seed's training is in the run cache). Grid: max_prompt_length 32, 24; the driver
    is killed once the first experiment is back, then run again. (A param out of range never reaches Ray: the
    grid is refused first, tests/test_checks.py; a trial failing at run time: the logical-GPU test below.)"""
    dst = workspace
    grid = ["-S", "seed=1", "-S", "dpo.max_prompt_length=32,24"]
    before = set(experiments(dst))
    refs = lambda: sh(["git", "for-each-ref", "refs/exps"], dst).stdout.count("\n")  # noqa: E731
    start = refs()
    with open(dst / "first.log", "w") as log:
        driver = subprocess.Popen(
            sweep_cmd(*grid), cwd=dst, env=sweep_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 600
        while refs() == start and driver.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver, its embedded Ray cluster and the running trials
        driver.wait()
    assert refs() == start + 1, (dst / "first.log").read_text()
    res = sh(sweep_cmd(*grid), dst, env=sweep_env(), check=False)
    out = res.stdout
    assert "2 trials (dpo.max_prompt_length) of commit" in out and "1 finished, 1 to run" in out, out
    assert res.returncode == 0
    new = {n: p for n, p in experiments(dst).items() if n not in before}
    assert sorted(p["dpo.max_prompt_length"] for p in new.values()) == [24, 32]
    summary = json.loads((dst / "logs/sweep/sweep.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["done"]
    # the resumed trial ran no training that an earlier trial had done (its stages were in the run cache already);
    # that resumed trials do not wait for one another: test_a_resumed_sweep_waits_only_for_trials_still_to_run
    ran = [s for t in summary["trials"] for s in t["ran"]]
    assert "train@sft" not in ran and "train@base" not in ran


@pytest.mark.slow
def test_each_trial_gets_its_own_gpu(workspace):
    """Logical GPUs (`ray.init(num_gpus=2)`): two trials running at once record different CUDA_VISIBLE_DEVICES; then
    four packed on one GPU (`--gpus-per-trial 0.25`) share GPU 0, each with its memory share. All fail early at run
    time (a prompt file that is not there: valid params, found missing by the `prompts` stage): quick, and each failure
    is reported with its params, its error line and its log's last lines."""
    dst = workspace
    res = sh(
        sweep_cmd("--num-gpus", "2", "-S", "seed=11,12", "-S", "prompts.harmful_file=nosuch.json"),
        dst,
        env=sweep_env(),
        check=False,
    )
    assert res.returncode == 1 and "2 trials (seed)" in res.stdout
    summary = json.loads((dst / "logs/sweep/sweep.json").read_text())
    assert summary["gpus_per_trial"] == 1  # the default where the cluster has GPUs
    devices = sorted(t["cuda_visible_devices"] for t in summary["trials"])
    assert devices == ["0", "1"], devices
    for trial in summary["trials"]:
        log = (dst / "logs/sweep" / f"{trial['name']}.log").read_text()
        assert f"CUDA_VISIBLE_DEVICES={trial['cuda_visible_devices']}" in log
        assert trial["message"] == "error: nosuch.json: file not found", trial["message"]
    lines = res.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if re.match(r"\d\d:\d\d:\d\d failed ", line))
    assert "seed=1" in lines[at] and "error: nosuch.json: file not found" in lines[at], lines[at]
    failed = "\n".join(lines[at:])
    assert "params: -S seed=1" in failed and "-S prompts.harmful_file=nosuch.json" in failed and "last lines:" in failed

    # packed: four trials on the one logical GPU, each seeing GPU 0 and capped to its quarter of the memory
    packed = ["--num-gpus", "1", "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5"]
    res = sh(sweep_cmd(*packed, "-S", "seed=21,22,23,24", "-S", "prompts.harmful_file=nosuch.json"), dst, check=False)
    assert "4 trials per GPU, each capped to 0.25 of its memory; NVIDIA MPS is off" in res.stdout, res.stdout
    summary = json.loads((dst / "logs/sweep/sweep.json").read_text())
    assert summary["gpus_per_trial"] == 0.25 and len(summary["trials"]) == 4
    assert [t["cuda_visible_devices"] for t in summary["trials"]] == ["0"] * 4
    for trial in summary["trials"]:
        log = (dst / "logs/sweep" / f"{trial['name']}.log").read_text()
        assert "CUDA_VISIBLE_DEVICES=0," in log and "ALIGN_GPU_MEMORY_FRACTION=0.25" in log
        assert trial["message"] == "error: nosuch.json: file not found", trial["message"]


@pytest.mark.slow
def test_a_trial_lost_with_its_worker_is_retried_once_and_its_processes_are_reaped(workspace):
    """The Ray worker running a trial is killed (as when its node is lost): Ray runs the trial again (max_retries=1),
    the first attempt's `dvc exp run` is killed by Ray's raylet (subreaper), and the experiment comes back once."""
    import psutil

    dst = workspace
    grid = ["-S", "seed=1", "-S", "dpo.max_prompt_length=20"]
    with open(dst / "retry.log", "w") as log:
        driver = subprocess.Popen(
            sweep_cmd(*grid), cwd=dst, env=sweep_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        first = None
        deadline = time.time() + 300
        while first is None and driver.poll() is None and time.time() < deadline:
            first = next(
                (
                    p
                    for p in psutil.process_iter(["cmdline"])
                    if "exp" in (p.info["cmdline"] or []) and "dpo.max_prompt_length=20" in (p.info["cmdline"] or [])
                ),
                None,
            )
            time.sleep(0.2)
        assert first is not None, (dst / "retry.log").read_text()
        first.parent().kill()  # the Ray worker process running the trial
        first.wait(timeout=30)  # reaped by the raylet within its 10 s
        assert driver.wait(timeout=600) == 0, (dst / "retry.log").read_text()
    summary = json.loads((dst / "logs/sweep/sweep.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["done"]
    assert sorted(p["dpo.max_prompt_length"] for p in experiments(dst).values()).count(20) == 1


@pytest.mark.slow
def test_a_cluster_sweep_returns_through_the_git_and_dvc_remotes(workspace, tmp_path):
    """`--address`: a cluster started with `ray start` (here one local node), trials cloning from a Git remote and
    returning through it and a DVC remote. The DVC remote holds the workspace's run cache (as an earlier sweep on the
    cluster leaves it), so the trial restores SFT from it instead of training. Runs last: it commits the remote."""
    dst = workspace
    git_remote, dvc_remote = tmp_path / "git.git", tmp_path / "dvc"
    sh(["git", "init", "-q", "--bare", str(git_remote)], tmp_path)
    sh(
        f"git remote set-url origin {git_remote} && dvc remote add -d store {dvc_remote} && git add .dvc/config && "
        "git -c user.email=t@t -c user.name=t commit -qm remote && git push -q origin HEAD:refs/heads/main",
        dst,
    )
    sh([sys.executable, "-c", "from commands.sweep import push_run_cache; push_run_cache('')"], dst)
    env = {**sweep_env(), sweep.REAPER: "true"}
    sh(
        [
            "ray",
            "start",
            "--head",
            "--port",
            "6391",
            "--num-cpus",
            "2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        dst,
        env=env,
    )
    try:
        out = sh(sweep_cmd("-S", "seed=1", "-S", "dpo.beta=0.5", cluster=["--address", "auto"]), dst, env=env).stdout
    finally:
        sh(["ray", "stop", "--force"], dst, check=False)
    assert "1 of 1 trials finished" in out, out
    trial = json.loads((dst / "logs/sweep/sweep.json").read_text())["trials"][0]
    assert trial["status"] == "done" and "train@sft" in trial["restored"] and "train@sft" not in trial["ran"]
    assert "train@dpo" in trial["ran"]
    # the experiment is on the Git remote and, pulled back by the driver, in the workspace's `dvc exp show`
    assert trial["name"] in sh(["git", "for-each-ref", "refs/exps"], git_remote).stdout
    assert any(p["dpo.beta"] == 0.5 for p in experiments(dst).values())


def test_the_sweep_says_whether_mps_serves_packed_trials(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert not sweep.mps_running()
    (tmp_path / "control").touch()  # the daemon's control pipe
    assert sweep.mps_running()


def test_a_trial_watch_sees_its_shared_stages_cached_from_dvcs_lines():
    watch = sweep.StageWatch({"train@sft", "reference@sft_dpo"})
    lines = [
        "Running stage 'train@base':",
        "Updating lock file 'dvc.lock'",
        "Running stage 'train@sft':",
        "sft: saved models/sft",
    ]
    assert not any(watch.feed(line) for line in lines)  # sft still running: its result is not in the run cache yet
    assert not watch.feed("Updating lock file 'dvc.lock'")  # sft saved to the run cache; its reference not yet
    assert not watch.feed("Stage 'reference@sft_dpo' is cached - skipping run, checking out outputs")
    assert watch.feed("Updating lock file 'dvc.lock'")
    unchanged = sweep.StageWatch({"train@sft"})
    assert unchanged.feed("Stage 'train@sft' didn't change, skipping")


@pytest.mark.slow
def test_a_follower_starts_once_the_stages_it_shares_are_cached(workspace):
    """One seed, two betas, the reference stored: the second trial starts as soon as the first has sft and both
    references in the run cache, not when the first ends; sft and each reference are computed once."""
    dst = workspace
    grid = ["-S", "seed=3", "-S", "dpo.beta=0.3,0.4", "-S", "dpo.precompute_ref_log_probs=true"]
    out = sh(sweep_cmd(*grid), dst, env=sweep_env()).stdout
    assert "2 of 2 trials finished" in out, out
    lead, follower = json.loads((dst / "logs/sweep/sweep.json").read_text())["trials"]
    assert follower["started_at"] < lead["ended_at"] - 10, (lead, follower)
    logs = [lead["ran"], follower["ran"]], [lead["restored"], follower["restored"]]
    for stage in ("train@sft", "reference@dpo", "reference@sft_dpo"):
        assert [stage in ran for ran in logs[0]] == [True, False], stage
        assert [stage in restored for restored in logs[1]] == [False, True], stage
    text = (dst / "logs/sweep" / f"{follower['name']}.log").read_text()
    assert "dpo: the reference's log-probs of" in text and "sft_dpo: the reference's log-probs of" in text
