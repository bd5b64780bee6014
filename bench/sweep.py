"""Benchmark of the Ray sweep on this machine: the 2 seeds x 2 betas grid of the CPU default scaled down by `-S` keys
(the tests' tiny settings), run by `commands.sweep` with 2 workers (one CPU and one thread each) and by DVC's queue
with one worker (two threads), each in a fresh copy of the repository; then what Ray itself adds per trial. Prints
figures; not a test (docs/benchmarks.md, Benchmark).

    python bench/sweep.py              # Ray against DVC's queue
    python bench/sweep.py --reference  # a 4-beta sweep, the DPO reference live in every step or stored once

`--reference`: one seed, 4 betas, DPO for a whole epoch, run twice by the sweep command: with the reference's
log-probs computed live in every DPO step (`dpo.precompute_ref_log_probs=false`, the study) and stored once per start
model by the reference stage (`true`). Each trial's clone is kept, so each stage's own timing (logs/<stage>.json)
is read from the clones where it ran; a stage restored from the run cache left none.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID = ["seed=1,2", "dpo.beta=0.1,0.2"]


def sh(cmd, cwd, env=None) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str))
    if res.returncode:
        raise SystemExit(f"{cmd} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res.stdout


def workspace(parent: Path) -> Path:
    from tests.conftest import copy_checkout

    dst = copy_checkout(parent / "repo")
    sh("git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm bench", dst)
    return dst


def env(threads: int) -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "ALIGN_CPU_THREADS": str(threads), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}


def ray_overhead() -> dict:
    """ray.init of an embedded cluster, and the round trip of an empty one-CPU task (what a trial pays to Ray)."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - t0

    @ray.remote(num_cpus=1, max_retries=1)
    def empty():
        return None

    ray.get(empty.remote())  # the first task starts a worker process
    trips = []
    for _ in range(20):
        t0 = time.perf_counter()
        ray.get(empty.remote())
        trips.append(time.perf_counter() - t0)
    ray.shutdown()
    return {"init_s": init, "task_ms": 1000 * statistics.median(trips)}


BETAS = "dpo.beta=0.05,0.1,0.2,0.5"
DPO_STAGES = ("dpo", "sft_dpo")


def reference_saving() -> None:
    """The 4-beta sweep with the reference live and stored: where DPO's time goes (see the module docstring)."""
    from tests.conftest import tiny_overrides

    fixed = [a for o in tiny_overrides() if not o.startswith("dpo.max_steps=") for a in ("-S", o)]
    runs = {}
    for stored in ("false", "true"):
        with tempfile.TemporaryDirectory() as tmp:
            ws, clones = workspace(Path(tmp) / "ws"), Path(tmp) / "clones"
            t0 = time.perf_counter()
            grid = [
                "-S",
                "seed=1",
                "-S",
                BETAS,
                "-S",
                f"dpo.precompute_ref_log_probs={stored}",
                "-S",
                "dpo.max_steps=-1",
            ]
            cmd = [sys.executable, "-m", "commands.sweep", "--num-cpus", "2", "--keep-clones", "--scratch", str(clones)]
            sh([*cmd, *grid, *fixed], ws, env(1))
            wall = time.perf_counter() - t0
            stages: dict[str, list[float]] = {}
            for timing in clones.glob("*/logs/*.json"):
                record = json.loads(timing.read_text())
                if "wall_time_s" in record:  # the stages that time themselves (training, reference, sampling)
                    stages.setdefault(record["stage"], []).append(record["wall_time_s"])
            trials = json.loads((ws / "logs/sweep/sweep.json").read_text())["trials"]
            runs[stored] = wall, stages, trials
    print(f"1 seed x 4 betas ({BETAS}), CPU default scaled down, DPO one epoch, 2 workers, {os.cpu_count()} cores")
    for stored, (wall, stages, trials) in runs.items():
        how = "stored once per start model" if stored == "true" else "live, in every DPO step"
        dpo_s = sum(sum(stages.get(m, [])) for m in DPO_STAGES)
        ref = {m: stages.get(f"reference@{m}", []) for m in DPO_STAGES}
        print(f"  reference {how}: sweep {wall:.1f} s")
        print(
            "    DPO trainings (dpo, sft_dpo): "
            + ", ".join(
                f"{m} {len(stages.get(m, []))} x mean {statistics.mean(stages.get(m) or [0]):.1f} s" for m in DPO_STAGES
            )
            + f"; together {dpo_s:.1f} s"
        )
        print(
            "    reference stages computed: "
            + ", ".join(f"reference@{m} {len(v)} time(s), {sum(v):.1f} s" for m, v in ref.items())
        )
        print("    trials (s): " + ", ".join(f"{t['name']} {t['seconds']}" for t in trials))
    live = sum(sum(runs["false"][1].get(m, [])) for m in DPO_STAGES)
    stored = sum(sum(runs["true"][1].get(m, [])) for m in DPO_STAGES)
    refs = sum(sum(runs["true"][1].get(f"reference@{m}", [])) for m in DPO_STAGES)
    print(
        f"  DPO's time: {live:.1f} s live against {stored:.1f} s stored + {refs:.1f} s computing the references once: "
        f"{100 * (1 - (stored + refs) / live):.0f}% less"
    )


def main() -> None:
    from tests.conftest import tiny_overrides

    if "--reference" in sys.argv[1:]:
        reference_saving()
        return
    fixed = [a for o in tiny_overrides() for a in ("-S", o)]
    grid = [a for o in GRID for a in ("-S", o)]
    with tempfile.TemporaryDirectory() as tmp:
        a = workspace(Path(tmp) / "sweep")
        t0 = time.perf_counter()
        sh([sys.executable, "-m", "commands.sweep", "--num-cpus", "2", *grid, *fixed], a, env(1))
        sweep_s = time.perf_counter() - t0
        trials = json.loads((a / "logs/sweep/sweep.json").read_text())["trials"]

        b = workspace(Path(tmp) / "queue")
        t0 = time.perf_counter()
        sh(["dvc", "exp", "run", "--queue", *grid, *fixed], b, env(2))
        sh(["dvc", "queue", "start", "-j", "1"], b, env(2))
        while True:
            status = sh(["dvc", "queue", "status"], b, env(2))
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        queue_s = time.perf_counter() - t0
        if "Failed" in status:
            raise SystemExit(f"dvc queue: a run failed\n{status}")
    ray = ray_overhead()
    steps: dict = {}
    for t in trials:
        for what, seconds in t["step_seconds"].items():
            steps.setdefault(what, []).append(seconds)
    print(f"2 seeds x 2 betas, CPU default scaled down (tests' tiny settings), {os.cpu_count()} cores")
    print(f"  sweep, Ray, 2 workers x 1 thread:      {sweep_s:6.1f} s")
    print(f"  dvc queue, 1 worker x 2 threads:       {queue_s:6.1f} s")
    print(f"  ratio (queue / sweep):                 {queue_s / sweep_s:6.2f}")
    print("  trials (s): " + ", ".join(f"{t['name']} {t['seconds']}" for t in trials))
    print("  per trial, mean s: " + ", ".join(f"{k} {statistics.mean(v):.1f}" for k, v in steps.items()))
    print(
        f"  Ray: embedded cluster start {ray['init_s']:.1f} s; an empty one-CPU task's round trip "
        f"{ray['task_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
