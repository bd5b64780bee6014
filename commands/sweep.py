"""Sweep a grid of params over a Ray cluster: each trial one DVC experiment, run in its own clone by a Ray task.

    python -m commands.sweep -S seed=1,2,3 -S dpo.beta=0.05,0.1,0.2,0.5 -S profile=study   # this machine, its GPUs
    python -m commands.sweep --list -S seed=1,2 -S dpo.beta=0.1,0.2      # the trials, which are finished; runs none
    python -m commands.sweep --address auto -S ...   # join a running cluster (`ray start`: Slurm, KubeRay)

The `-S` grammar is `dvc exp run`'s (Hydra overrides; DVC's own expansion makes the grid): a comma list sweeps, a
single value is fixed for every trial (`-S sft.max_steps=5`). Each trial is a Ray task asking for `--gpus-per-trial`
GPUs (Ray gives it its own through CUDA_VISIBLE_DEVICES) and `--cpus-per-trial` CPUs; it clones the committed HEAD
into a scratch folder on its worker, runs `dvc exp run -n <name> -S ...` there and returns the experiment with
`dvc exp push`:
- embedded cluster (the default, `ray.init()`: one machine): the clones use the workspace's own DVC cache, so their
  outputs and run cache land there directly, and push their experiments' Git refs to the workspace repository;
- `--address` (a cluster of several machines): clones come from the Git remote (`--git-remote`, push the commit
  first) and push experiment, outputs and run cache to it and to the DVC remote; the driver then `dvc exp pull`s
  them. With a DVC cache on a shared file system for every node, `--shared-cache DIR` works as on one machine.

Trials that would compute the same expensive stage (`train@sft` for every beta of one seed) wait for the first such
trial, so the others find the stage in DVC's run cache: `sft` trains once per seed. A failed trial is reported with
its params and its log's last lines and never stops the others; a trial lost with its node is retried once by Ray
(`max_retries`). `--gpus-per-trial 0.25` packs four trials on each GPU: each sees the same device, is capped to its
share of the GPU's memory (ALIGN_GPU_MEMORY_FRACTION, read by every stage) and allocates with expandable segments;
NVIDIA MPS, when its daemon runs, lets their kernels overlap (docs/experiments.md). Running the same command again
runs only the trials without a finished experiment of this commit (matched by their params, `dvc exp show`), so a
sweep killed half-way resumes. Logs: logs/sweep/<trial>.log and a summary, logs/sweep/sweep.json. Read the results
with `dvc exp show` and `python -m commands.gather` (the command line it needs is printed at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from commands.compose import composed, composed_nested
from stages.core import determinism
from stages.core.io import StageError

LOGS = Path("logs/sweep")
LOCK = Path(".dvc/tmp/sweep.lock")  # held by the running sweep (DVC's own tmp folder, never tracked)
TAIL = 15  # log lines shown for a failed trial
# DVC's lines that say what a trial computed and what it found in the run cache
RAN = re.compile(r"^Running stage '([^']+)'", re.M)
RESTORED = re.compile(r"^Stage '([^']+)' is cached - skipping run", re.M)
# Environment a trial passes on to its stages (the rest is the worker's): the CPU thread count changes the floats.
REAPER = "RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper"
PASSED_ENV = ("ALIGN_", "HF_", "TRANSFORMERS_", "PYTORCH_", "CUBLAS_", "TOKENIZERS_")


class SweepError(StageError):
    """A problem with the sweep itself (not with one trial): printed as one line."""


def sh(cmd: list[str], cwd: Path | str = ".", check: bool = True, env: dict | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and res.returncode:
        lines = (res.stderr or res.stdout).strip().splitlines() or ["(no output)"]
        raise SweepError(f"{' '.join(cmd[:4])}: {lines[-1]}")
    return res.stdout


# --- the grid -----------------------------------------------------------------------------------------------------


def expand(overrides: list[str]) -> list[list[str]]:
    """The trials' override lists, by DVC's own expansion of `dvc exp run -S` sweeps (Hydra's basic sweeper)."""
    from dvc.utils.hydra import get_hydra_sweeps

    plain = []
    for item in overrides:
        path, sep, rest = item.partition(":")
        if sep and "=" not in path:  # `params.yaml:key=value`, DVC's file prefix
            if path != "params.yaml":
                raise SweepError(f"-S {item}: only params.yaml is composed by this project")
            item = rest
        plain.append(item)
    try:
        return [trial["params.yaml"] for trial in get_hydra_sweeps({"params.yaml": plain})]
    except Exception as exc:  # Hydra's parser: a malformed override
        raise SweepError(f"-S: {str(exc).strip().splitlines()[0]}") from None


def split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def varied_keys(trials: list[list[str]]) -> list[str]:
    """The keys whose value differs between trials (the grid's axes), in the order given."""
    values: dict[str, set] = {}
    for trial in trials:
        for key, value in map(split, trial):
            values.setdefault(key, set()).add(value)
    return [k for k, v in values.items() if len(v) > 1]


def trial_name(trial: list[str], axes: list[str]) -> str:
    """A Git-ref-safe experiment name: the grid values, then a hash of every override (fixed ones too), so two sweeps
    with different fixed overrides never share a name."""
    values = dict(map(split, trial))
    readable = "-".join(f"{k.split('.')[-1]}{values[k]}" for k in axes) or "trial"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", readable)[:60].strip("._-") or "trial"
    digest = hashlib.sha1("\n".join(sorted(trial)).encode()).hexdigest()[:6]
    return f"{readable}-{digest}"


def validate_grid(trials: list[list[str]], names: list[str], axes: list[str]) -> None:
    """Every trial's composed params through the pipeline's own checks (stages/check.py: types, ranges, TRL configs,
    judges), before anything starts: a bad grid is refused in seconds, each bad trial named with its message."""
    from stages import check
    from stages.core import params as P

    bad = []
    for name, trial in zip(names, trials):
        try:
            with warnings.catch_warnings():  # (transformers' deprecation notes about fields we set: not the user's)
                warnings.simplefilter("ignore", FutureWarning)
                check.check(P.validate(composed_nested(trial)))
        except StageError as exc:
            grid = [o for o in trial if split(o)[0] in axes] or trial
            bad.append(f"  {name} (-S {' -S '.join(grid)}): {exc}")
    if bad:
        raise SweepError(f"{len(bad)} of {len(trials)} trials have bad params; nothing was started:\n" + "\n".join(bad))


@contextlib.contextmanager
def workspace_lock():
    """One sweep at a time on a workspace (a second one refuses, naming the first), and none while a DVC command holds
    the workspace (`dvc exp run`, `dvc repro`): the trials push their experiments and outputs into it."""
    import fcntl

    from dvc.lock import LockError
    from dvc.repo import Repo

    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SweepError(
                f"{LOCK}: another sweep is running on this workspace ({holder}); wait for it, or sweep from another "
                "clone"
            ) from None
        try:
            with Repo(".").lock:  # DVC's own workspace lock, held by a running dvc exp run / repro
                pass
        except LockError:
            raise SweepError(
                "a DVC command (dvc exp run, dvc repro, ...) holds this workspace; run the sweep when it has finished"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def finished(expected: list[dict]) -> list[str | None]:
    """For each trial's composed params, the revision of a finished experiment of HEAD with exactly those params."""
    from commands.gather import experiments

    _, done = experiments()
    return [next((r["rev"] for r in done if r["params"] == params), None) for params in expected]


# --- shared prefixes ----------------------------------------------------------------------------------------------


def stage_keys() -> tuple[dict[str, set], dict[str, set], set[str]]:
    """From dvc.yaml (DVC's own index): each stage's params keys, each stage's downstream stages, and the expensive
    stages (training with a method other than loading the base model)."""
    import networkx as nx
    import yaml
    from dvc.repo import Repo

    from stages import methods

    repo = Repo(".")
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    params = yaml.safe_load(Path("params.yaml").read_text())
    keys, downstream, expensive = {}, {}, set()
    for stage in repo.index.stages:
        name = stage.addressing
        keys[name] = {k for dep in stage.deps if hasattr(dep, "params") for k in (dep.params or [])}
        downstream[name] = {s.addressing for s in nx.ancestors(graph, stage)}
        kind, _, model = name.partition("@")
        method = params.get("models", {}).get(model, {}).get("method")
        if kind == "train" and method not in (None, "base"):
            expensive.add(name)
        if kind == "reference" and method and methods.load(method).stores_reference():  # DPO's reference pass
            expensive.add(name)
    return keys, downstream, expensive


def affected(key: str, keys: dict[str, set], downstream: dict[str, set]) -> set[str]:
    """Stages whose result a change of `key` can change: those that read it and everything after them. A config
    group (profile, models: a folder of conf/) can change any stage."""
    if (Path("conf") / key).is_dir():
        return set(keys)
    hit = {
        s for s, ks in keys.items() if any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in ks)
    }
    return hit.union(*(downstream[s] for s in hit)) if hit else set()


def plan(trials: list[list[str]], stage_info=None) -> list[tuple[int | None, set[str]]]:
    """For each trial, the first earlier trial that computes one of its expensive stages with the same inputs (it
    then runs once those stages are in the run cache and finds them there), or None; and those shared stages."""
    keys, downstream, expensive = stage_info or stage_keys()
    values = [dict(map(split, t)) for t in trials]
    out: list[tuple[int | None, set[str]]] = []
    for i, mine in enumerate(values):
        lead, shared = None, set()
        for j in range(i):
            differ = {k for k in mine.keys() | values[j].keys() if mine.get(k) != values[j].get(k)}
            changed = set().union(*(affected(k, keys, downstream) for k in differ)) if differ else set()
            if expensive - changed:
                lead = j if out[j][0] is None else out[j][0]  # the group's first trial
                if lead != j:
                    differ = {k for k in mine.keys() | values[lead].keys() if mine.get(k) != values[lead].get(k)}
                    changed = set().union(set(), *(affected(k, keys, downstream) for k in differ))
                shared = expensive - changed
                break
        out.append((lead, shared))
    return out


def leaders(trials: list[list[str]], stage_info=None) -> list[int | None]:
    """For each trial, the trial it waits for (plan()), or None."""
    return [lead for lead, _ in plan(trials, stage_info)]


class StageWatch:
    """Reads a trial's `dvc exp run` output line by line and tells when every stage of `wanted` is finished, its result
    in the run cache (DVC saves it there before it writes "Updating lock file"; a stage restored from the run cache
    or unchanged is finished too). A stage the experiment never reaches counts as finished when the run ends."""

    STAGE = re.compile(r"^(?:Running stage|Stage) '([^']+)'")

    def __init__(self, wanted):
        self.wanted, self.done, self.current = set(wanted), set(), None

    def feed(self, line: str) -> bool:
        """True once every wanted stage is finished."""
        m = self.STAGE.match(line)
        if m or line.startswith("Updating lock file"):
            if self.current:
                self.done.add(self.current)
            self.current = m.group(1) if m else None
            if m and "skipping run" not in line and not line.startswith("Running stage"):
                self.done.add(self.current)  # "didn't change, skipping": nothing to wait for
        return self.wanted <= self.done


def waits(lead: list[int | None], todo: list[int]) -> list[int | None]:
    """For each trial to run (positions in `todo`), the position of the trial to run first, or None. A trial whose
    first trial already has a finished experiment waits for nothing: that stage is in the run cache already (a
    resumed sweep does not queue again behind its finished trials)."""
    return [todo.index(lead[i]) if lead[i] is not None and lead[i] in todo else None for i in todo]


# --- the run cache through a DVC remote (cluster without a shared cache) ------------------------------------------


def pull_run_cache(remote: str | None) -> None:
    """The DVC remote's run-cache entries into this clone's cache (DVC's own transfer); `dvc exp run --pull` then
    fetches the outputs of each stage it restores."""
    from dvc.repo import Repo

    Repo(".").stage_cache.pull(remote or None)


def push_run_cache(remote: str | None) -> None:
    """This clone's run-cache entries to the DVC remote, with the objects of every output they name. DVC 3.67's
    `push --run-cache` sends the entries and the cached outputs but not the objects of `cache: false` outputs (the
    metrics JSON files), so another node could not restore a stage from them and would run it again."""
    from dvc.repo import Repo

    repo = Repo(".")
    remote = remote or None
    repo.stage_cache.push(remote)
    runs = Path(repo.cache.legacy.path) / "runs"
    entries = [(p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file()]
    for odb, objs in repo.stage_cache.get_used_objs(entries).items():
        here = [h for h in objs if repo.cache.local.exists(h.value)]  # restored entries' objects may be remote only
        repo.cloud.push(here, remote=remote, odb=odb)


def mps_running() -> bool:
    """Whether an NVIDIA MPS control daemon serves this machine (its pipe directory holds a `control` pipe): with it,
    trials packed on a GPU run their kernels at once instead of time-slicing. The sweep never starts it."""
    pipe = Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
    return (pipe / "control").exists()


# --- one trial (runs on a Ray worker) --------------------------------------------------------------------------


def run_trial(spec: dict, *after) -> dict:
    """Clone the commit, run the experiment, push it back. Never raises: a failure is returned with the log, so the
    trials waiting on this one still run."""
    started = time.time()
    log: list[str] = []
    # With Ray's subreaper on, its workers ignore SIGCHLD: a child's exit status is then lost (Python reads 0) and
    # the ignoring is inherited by dvc and the stages. The trial waits for its own children: default handling.
    if hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    try:
        import ray

        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    except Exception:
        gpu_ids = []
    log.append(f"# trial {spec['name']}: -S {' -S '.join(spec['overrides'])}")
    threads = spec["env"].get("ALIGN_CPU_THREADS", "(default)")
    share = spec["env"].get(determinism.GPU_SHARE)
    log.append(
        f"# host {os.uname().nodename}, CUDA_VISIBLE_DEVICES={gpus or '(none)'}, Ray GPU ids "
        f"{','.join(gpu_ids) or '(none)'}, ALIGN_CPU_THREADS={threads}"
        + (f", {determinism.GPU_SHARE}={share}" if share else "")
    )
    if spec.get("events") is not None:
        spec["events"].put(("started", spec["name"]))  # the driver's progress line (its end comes with the result)
    scratch = Path(spec["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{spec['name']}-", dir=scratch))
    env = {**os.environ, **spec["env"]}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # `python` of dvc.yaml
    env.pop("DVC_EXP_BASELINE_REV", None)
    result = {
        "name": spec["name"],
        "overrides": spec["overrides"],
        "host": os.uname().nodename,
        "cuda_visible_devices": gpus,
        "gpu_ids": gpu_ids,
        "status": "failed",
    }

    timings = result["step_seconds"] = {}

    watch = StageWatch(spec.get("signal") or ())
    signalled = not spec.get("signal")

    def shared_done() -> None:  # the trials that share this one's expensive stages may start (the driver submits them)
        nonlocal signalled
        if not signalled and spec.get("events") is not None:
            spec["events"].put(("shared", spec["name"]))
        signalled = True

    def step(*cmd: str) -> int:
        log.append(f"$ {' '.join(cmd)}")
        t0 = time.time()
        proc = subprocess.Popen(
            list(cmd), cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines = []
        for line in proc.stdout:  # streamed: a follower starts as soon as the stages it shares are cached
            lines.append(line)
            if not signalled and watch.feed(line):
                shared_done()
        res = subprocess.CompletedProcess(cmd, proc.wait(), "".join(lines))
        words = [c for c in cmd[:5] if not c.startswith("-") and c != sys.executable]
        what = (
            cmd[2].split(";")[0].split()[-1]
            if cmd[1] == "-c"
            else " ".join(words[:3] if words[0] == "dvc" else words[:2])
        )
        timings[what] = round(timings.get(what, 0) + time.time() - t0, 2)
        log.append(res.stdout.rstrip())
        if res.returncode:
            log.append(f"# exit status {res.returncode}")
        return res.returncode

    dvc = [sys.executable, "-m", "dvc"]

    def helper(name: str) -> list[str]:  # one of this module's run-cache functions, run in the clone
        return [sys.executable, "-c", f"from commands.sweep import {name}; {name}({spec.get('dvc_remote')!r})"]

    try:
        steps = [
            ["git", "clone", "--quiet", "--no-checkout", spec["source"], "."],
            ["git", "checkout", "--quiet", spec["commit"]],
        ]
        if spec.get("cache_dir"):  # one DVC cache for every trial: outputs and run cache shared directly
            steps.append([*dvc, "cache", "dir", "--local", spec["cache_dir"]])
            steps += [[*dvc, "config", "--local", *kv] for kv in spec.get("cache_config", [])]
        run = [*dvc, "exp", "run", "-n", spec["name"]] + [a for o in spec["overrides"] for a in ("-S", o)]
        remote = spec.get("dvc_remote")  # None: one shared cache; "" the default DVC remote; else its name
        if remote is not None:  # run cache from the DVC remote; outputs pulled as the restored stages need them
            steps.append(helper("pull_run_cache"))
            run.append("--pull")
        steps.append(run)
        push = [*dvc, "exp", "push", "--force", "origin", spec["name"]]
        if remote is None:
            steps.append(push + ["--no-cache"])  # the outputs are in the shared cache already
        else:
            steps.append(push + (["-r", remote] if remote else []))
            steps.append(helper("push_run_cache"))
        for cmd in steps:
            if step(*cmd):
                break
        else:
            result["status"] = "done"
    except Exception as exc:  # the worker's own trouble (disk full, no git): reported like a failed step
        log.append(f"# {type(exc).__name__}: {exc}")
    finally:
        shared_done()  # failed or done: its followers run either way (a failure of theirs is their own)
        if not spec.get("keep_clones"):
            shutil.rmtree(folder, ignore_errors=True)
    text = "\n".join(log) + "\n"
    result["ran"] = RAN.findall(text)
    result["restored"] = RESTORED.findall(text)
    result["seconds"] = round(time.time() - started, 1)
    result["started_at"], result["ended_at"] = round(started, 1), round(time.time(), 1)  # when (epoch seconds)
    result["log"] = text
    if result["status"] == "failed":
        # the stage's own one-line error (file, field) before DVC's "ERROR: failed to reproduce ..."
        lines = text.strip().splitlines()
        ours = [line for line in lines if line.startswith("error:")]
        dvcs = [line for line in lines if line.startswith("ERROR:")]
        result["message"] = (ours or dvcs or lines)[-1]
    return result


# --- the driver ---------------------------------------------------------------------------------------------------


class Progress:
    """One live line on a terminal (queued / running / done / failed, with the running trials' params); a plain
    line per change of state otherwise (a log)."""

    def __init__(self, trials: dict[str, list[str]], axes: list[str], stream=sys.stdout):
        self.trials, self.axes, self.stream = trials, axes, stream
        self.state = dict.fromkeys(trials, "queued")
        self.live = stream.isatty()

    def label(self, name: str) -> str:
        values = dict(map(split, self.trials[name]))
        return " ".join(f"{k}={values[k]}" for k in self.axes) or name

    def set(self, name: str, state: str, note: str = "") -> None:
        self.state[name] = state
        counts = {s: sum(v == s for v in self.state.values()) for s in ("queued", "running", "done", "failed")}
        summary = " · ".join(f"{s} {n}" for s, n in counts.items())
        if self.live:
            running = "; ".join(self.label(n) for n, s in self.state.items() if s == "running")
            line = f"{summary}" + (f" · running: {running}" if running else "")
            width = shutil.get_terminal_size().columns
            self.stream.write("\r\033[K" + line[: width - 1])
            if state in ("done", "failed"):
                self.stream.write(f"\r\033[K{state:7s} {self.label(name)}{note}\n" + line[: width - 1])
        else:
            self.stream.write(f"{time.strftime('%H:%M:%S')} {state:7s} {self.label(name)} ({name}){note} [{summary}]\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")


def workspace_checks() -> str:
    if not Path("dvc.yaml").exists():
        raise SweepError("dvc.yaml: not found (run the sweep from the repository's root)")
    changed = sh(["git", "status", "--porcelain", "--untracked-files=no"]).strip()
    if changed:
        raise SweepError(
            f"git status: uncommitted changes ({changed.splitlines()[0].strip()} ...); trials clone HEAD: commit first"
        )
    return sh(["git", "rev-parse", "HEAD"]).strip()


def start_ray(args):
    # Ray's own clean-up of what a dead worker leaves: its raylet then kills the trial's `dvc exp run` and the stage
    # it runs when the worker is lost (a retried trial must not race its first attempt). Set here for the embedded
    # cluster; `ray start` needs it in its environment (configs/ray/).
    os.environ.setdefault(REAPER, "true")
    # Ray 2.60's clusters require a token (`ray start` keeps it in ~/.ray/auth_token); a driver joining by an explicit
    # address reads it only when told that the cluster uses tokens (before Ray is imported)
    if args.address and (Path.home().joinpath(".ray", "auth_token").exists() or os.environ.get("RAY_AUTH_TOKEN")):
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:  # an embedded cluster on this machine, its own CPUs and GPUs (or the counts given)
        ray.init(num_cpus=args.num_cpus, num_gpus=args.num_gpus, include_dashboard=False, log_to_driver=False)
    return ray


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=V1[,V2...]",
        help="as `dvc exp run -S`: a comma list sweeps, a single value is fixed (repeatable)",
    )
    ap.add_argument(
        "--address",
        help="join this Ray cluster (`auto`: the one `ray start` began here) instead of starting an embedded one",
    )
    ap.add_argument(
        "--gpus-per-trial", type=float, help="GPUs per trial (default 1 where the cluster has GPUs, else 0)"
    )
    ap.add_argument("--cpus-per-trial", type=float, default=1)
    ap.add_argument("--num-cpus", type=int, help="embedded cluster: CPUs Ray may use (default: all)")
    ap.add_argument("--num-gpus", type=int, help="embedded cluster: GPUs Ray may use (default: all)")
    ap.add_argument(
        "--git-remote",
        default="origin",
        help="with --address: the Git remote trials clone from and push to (default origin)",
    )
    ap.add_argument(
        "--dvc-remote",
        default="",
        help="with --address: the DVC remote for outputs and run cache (default: the repository's default remote)",
    )
    ap.add_argument(
        "--shared-cache",
        type=Path,
        help="with --address: a DVC cache dir every node mounts (NFS); "
        "then no DVC remote is needed for the trials' outputs",
    )
    ap.add_argument(
        "--scratch",
        default=str(Path(tempfile.gettempdir()) / "align-sweep"),
        help="the folder on each worker where trials clone the repository (default: %(default)s)",
    )
    ap.add_argument("--keep-clones", action="store_true", help="keep each trial's clone (debugging)")
    ap.add_argument("--list", action="store_true", help="list the trials and which are finished; run nothing")
    args = ap.parse_args(argv)
    try:
        return sweep(args)
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def sweep(args) -> int:
    if not args.overrides:
        raise SweepError("-S: give at least one param, e.g. -S seed=1,2 -S dpo.beta=0.1,0.2")
    commit = workspace_checks()
    trials = expand(args.overrides)
    axes = varied_keys(trials)
    names = [trial_name(t, axes) for t in trials]
    validate_grid(trials, names, axes)
    if args.list:
        return run_grid(args, commit, trials, names, axes)
    with workspace_lock():
        return run_grid(args, commit, trials, names, axes)


def finished_revisions(trials: list[list[str]]) -> list[str | None]:
    try:
        return finished([composed(t) for t in trials])
    except StageError as exc:
        raise SweepError(str(exc)) from None


def run_grid(args, commit: str, trials: list[list[str]], names: list[str], axes: list[str]) -> int:
    done = finished_revisions(trials)
    todo = [i for i, rev in enumerate(done) if rev is None]
    plural = "s" * (len(trials) > 1)
    print(
        f"sweep: {len(trials)} trial{plural} ({' x '.join(axes) or 'no grid'}) of commit {commit[:7]}: "
        f"{len(trials) - len(todo)} finished, {len(todo)} to run"
    )
    fixed = [o for o in trials[0] if split(o)[0] not in axes]
    if args.list:
        for name, trial, rev in zip(names, trials, done):
            grid = [o for o in trial if split(o)[0] in axes]
            print(f"  {'done   ' if rev else 'to run '} {name}: -S {' -S '.join(grid)}")
        print(f"  fixed in every trial: -S {' -S '.join(fixed)}" if fixed else "")
        return 0
    failed = launch_todo(args, commit, trials, names, axes, todo)
    print(f"sweep: {len(trials) - len(failed)} of {len(trials)} trials finished; `dvc exp show` lists them")
    if axes:
        by = next((a for a in axes if a != "seed"), None)
        print("  python -m commands.gather" + (f" --by {by}" if by else "") + "".join(f" -S {o}" for o in fixed))
    return 1 if failed else 0


def launch_todo(args, commit, trials, names, axes, todo) -> list[dict]:
    failed = []
    if todo:
        planned = plan(trials)
        after = waits([lead for lead, _ in planned], todo)
        shared = [planned[i][1] if a is not None else None for i, a in zip(todo, after)]
        failed = launch(args, commit, [trials[i] for i in todo], [names[i] for i in todo], axes, after, shared)
    return failed


def launch(
    args,
    commit: str,
    trials: list[list[str]],
    names: list[str],
    axes: list[str],
    lead: list[int | None],
    shared: list[set[str] | None] | None = None,
) -> list[dict]:
    ray = start_ray(args)
    from ray.util.queue import Queue

    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
    if 0 < gpus < 1:  # trials packed on a GPU: each keeps to its share (stages/core/determinism.py) and frees what it
        env[determinism.GPU_SHARE] = f"{gpus:g}"  # does not use (expandable segments: less fragmentation)
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
        print(
            f"note: {1 / gpus:g} trials per GPU, each capped to {gpus:g} of its memory; NVIDIA MPS is "
            f"{'on' if mps_running() else 'off'} (docs/experiments.md: Packing trials on one GPU)"
        )
    threads = int(env.get("ALIGN_CPU_THREADS", 2))
    if threads > args.cpus_per_trial and not gpus:
        print(
            f"note: each trial's stages use ALIGN_CPU_THREADS={threads} threads on {args.cpus_per_trial:g} CPU(s); "
            "set ALIGN_CPU_THREADS to the CPUs per trial (it changes the floats: compare runs of one setting)"
        )
    cache_dir = sh(["dvc", "cache", "dir"]).strip()
    remote_mode = bool(args.address) and args.shared_cache is None
    if args.address and args.shared_cache is not None:
        cache_dir = str(args.shared_cache)
    source = sh(["git", "remote", "get-url", args.git_remote]).strip() if args.address else str(Path.cwd())
    events = Queue()
    base = {
        "commit": commit,
        "source": source,
        "scratch": args.scratch,
        "env": env,
        "events": events,
        "keep_clones": args.keep_clones,
    }
    if remote_mode:
        base["dvc_remote"] = args.dvc_remote
    else:
        base["cache_dir"] = cache_dir
        if args.shared_cache is not None:  # DVC's settings for a cache shared over NFS
            base["cache_config"] = [["cache.shared", "group"], ["core.hardlink_lock", "true"]]
    task = ray.remote(run_trial).options(
        num_cpus=args.cpus_per_trial, num_gpus=gpus, max_retries=1, retry_exceptions=False
    )
    # A trial that shares expensive stages with an earlier one (plan()) starts once that one says they are in the run
    # cache (on one machine or a shared cache: its stage lines, read as they come), or, through a DVC remote, whose
    # run cache it pushes at the end, once that one has finished.
    shared = [set() if s is None else s for s in (shared or [None] * len(trials))]
    signal = {i: set().union(*(shared[f] for f in range(len(trials)) if lead[f] == i)) for i in set(lead) - {None}}
    refs: dict[int, object] = {}

    def submit(i: int) -> None:
        spec = {**base, "name": names[i], "overrides": trials[i]}
        if i in signal and not remote_mode:
            spec["signal"] = sorted(signal[i])
        after = [refs[lead[i]]] if lead[i] is not None and remote_mode else []  # Ray starts it after that one
        refs[i] = task.remote(spec, *after)
        pending[refs[i]] = names[i]

    def release(i: int) -> None:  # trial i's shared stages are cached (or it ended): its followers may start
        for f in range(len(trials)):
            if lead[f] == i and f not in refs:
                submit(f)

    pending: dict = {}
    for i in range(len(trials)):
        if lead[i] is None or remote_mode:
            submit(i)
    progress = Progress(dict(zip(names, trials)), axes)
    LOGS.mkdir(parents=True, exist_ok=True)
    results = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            name = pending.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as exc:  # lost twice with its node (Ray retried it once)
                res = {
                    "name": name,
                    "overrides": trials[names.index(name)],
                    "status": "failed",
                    "log": "",
                    "message": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}",
                    "ran": [],
                    "restored": [],
                    "seconds": None,
                }
            results[name] = res
            release(names.index(name))
            (LOGS / f"{name}.log").write_text(res.get("log", ""))
            if res["status"] == "done":
                progress.set(name, "done", f" in {res['seconds']:.0f} s")
            else:
                tail = "\n".join("    " + line for line in res["log"].strip().splitlines()[-TAIL:])
                progress.set(name, "failed", f": {res['message']}")
                print(
                    f"  params: -S {' -S '.join(res['overrides'])}\n  log ({LOGS / (name + '.log')}), last lines:\n"
                    f"{tail}",
                    flush=True,
                )
        for what, name in events.get_nowait_batch(events.qsize()) if events.qsize() else []:
            if what == "shared":
                release(names.index(name))
            elif progress.state[name] == "queued":
                progress.set(name, "running")
    progress.close()
    summary = [{k: v for k, v in r.items() if k != "log"} for r in (results[n] for n in names)]
    (LOGS / "sweep.json").write_text(
        json.dumps(
            {"commit": commit, "gpus_per_trial": gpus, "cpus_per_trial": args.cpus_per_trial, "trials": summary},
            indent=1,
        )
    )
    if remote_mode:  # the experiments, from the Git remote, and their outputs, from the DVC remote
        ok = [r["name"] for r in summary if r["status"] == "done"]
        if ok:
            sh(
                ["dvc", "exp", "pull", "--force", args.git_remote, *ok]
                + (["-r", args.dvc_remote] if args.dvc_remote else [])
            )
    ray.shutdown()
    return [r for r in summary if r["status"] != "done"]


if __name__ == "__main__":
    raise SystemExit(main())
