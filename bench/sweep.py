"""Benchmark of the Ray sweep on this machine: the 2 seeds x 2 betas grid of the CPU default scaled down by `-S` keys
(the tests' tiny settings), run by `commands.sweep` with 2 workers (one CPU and one thread each) and by DVC's queue
with one worker (two threads), each in a fresh copy of the repository; then what Ray itself adds per trial. Prints
figures; not a test (docs/benchmarks.md, Benchmark).

    python bench/sweep.py
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


def main() -> None:
    from tests.conftest import tiny_overrides

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
