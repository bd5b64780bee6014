"""Benchmark: wall time and peak memory of each stage of the default pipeline (each stage's own process tree),
training throughput as the trainers logged it, the no-op re-run, and batched vs one-at-a-time sampling and scoring.
Prints a Markdown table; not a test.

    python bench/bench.py            # every stage, forced (about 6 minutes on 2 cores), then the extras
    python bench/bench.py --extras   # only sampling/scoring speed (needs a finished `dvc repro`)
    python bench/bench.py --experiments  # only `dvc exp run -S dpo.beta=0.2` and DPO precompute_ref_log_probs
    python bench/bench.py --inputs       # only what crafted input costs clean and download (bounded)

Run it on a quiet machine: a second busy process makes 2-thread torch several times slower.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pipeline_stages() -> list[str]:
    """dvc.yaml's stages in the order `dvc repro` runs them, each model of params.yaml's table expanded (DVC's own
    index and graph: no list of models here)."""
    import networkx as nx
    from dvc.repo import Repo

    index = Repo(str(ROOT)).index
    order = {s: i for i, s in enumerate(index.stages)}  # dvc.yaml's order where the graph leaves a choice
    graph = index.graph.reverse()  # DVC's edges point from a stage to the stages it depends on
    return [
        s.addressing
        for s in nx.lexicographical_topological_sort(graph, key=order.get)
        if not s.addressing.startswith("release@")
    ]


STAGES = pipeline_stages()
TRAINING = {s: s.partition("@")[2] for s in STAGES if s.startswith("train@")}  # stage -> logs/<model>.json


def timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak memory in MiB) of one command: the largest sum of resident memory over the command's own
    process tree (dvc, the stage, accelerate's children), sampled every 50 ms while it runs."""
    import psutil

    t = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc] + proc.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:  # a child ended between listing and reading
            pass
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - t, peak / 2**20


def trained(stage: str, root: Path = ROOT) -> str:
    """Throughput a training stage logged (logs/<stage>.json, from TRL's own token count)."""
    log = root / "logs" / f"{stage}.json"
    if not log.exists():
        return ""
    t = json.loads(log.read_text())
    return f"{t['tokens_per_s']:,.0f} tokens/s, {t['steps_per_s']} steps/s"


def stage_times() -> list[tuple[str, float, float]]:
    rows = []
    for stage in STAGES:
        secs, mem = timed(["dvc", "repro", "--force", "--single-item", stage])
        rows.append((stage, secs, mem))
        print(f"  {stage:16s} {secs:7.1f} s", file=sys.stderr)
    return rows


def sampling_speed() -> list[str]:
    from stages.core import params as P
    from stages.core.generation import generate
    from stages.core.io import read_jsonl
    from stages.core.modeling import load_causal_lm, load_tokenizer
    from stages.judges import load_judge, specs

    params = P.load()
    prompts = [r["prompt"] for r in read_jsonl("data/eval/prompts.jsonl")]
    tok, model = load_tokenizer("models/sft"), load_causal_lm("models/sft")
    out = []
    results = {}
    for bs in (1, params.sample.batch_size):
        s = params.sample.model_copy(update={"batch_size": bs})
        t = time.perf_counter()
        gens = generate(model, tok, prompts, s, params.seed)
        secs = time.perf_counter() - t
        results[bs] = gens
        n_tok = sum(g.n_tokens for g in gens)
        out.append(f"| sampling, batch {bs} | {secs:.1f} s | {n_tok / secs:.0f} tokens/s |")
    same = [g.response for g in results[1]] == [g.response for g in results[params.sample.batch_size]]
    out.append(f"| sampling outputs identical (batched vs one at a time) | {same} | |")
    judge_spec = specs(params)[0]
    responses = [g.response for g in results[1]]
    for bs in (1, judge_spec.batch_size):
        judge = load_judge(judge_spec.model_copy(update={"batch_size": bs}))
        t = time.perf_counter()
        if bs == 1:
            for p, r in zip(prompts, responses):
                judge([p], [r])
        else:
            judge(prompts, responses)
        secs = time.perf_counter() - t
        out.append(
            f"| scoring ({judge_spec.name}), batch {bs} | {secs:.2f} s | {len(prompts) / secs:.0f} responses/s |"
        )
    return out


def experiment_speed() -> list[str]:
    """In a throwaway clone sharing this repo's DVC cache: `dvc exp run -S dpo.beta=0.2` (time, stages run), then
    DPO with precompute_ref_log_probs off vs on (tokens/s). The workspace is not touched."""
    import re
    import shutil
    import tempfile

    import yaml

    out = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-exp-"))
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp / "repo")], check=True)
        repo = tmp / "repo"
        subprocess.run(["dvc", "cache", "dir", str(ROOT / ".dvc" / "cache")], cwd=repo, check=True)
        subprocess.run(["dvc", "checkout", "-q"], cwd=repo, check=True, capture_output=True)
        t = time.perf_counter()
        res = subprocess.run(
            ["dvc", "exp", "run", "-S", "dpo.beta=0.2"], cwd=repo, check=True, capture_output=True, text=True
        )
        secs = time.perf_counter() - t
        ran = re.findall(r"Running stage '([^']+)'", res.stdout)
        out.append(f"| `dvc exp run -S dpo.beta=0.2` | {secs:.0f} s | ran: {', '.join(ran)} |")
        for stage in ("sft", "dpo", "sft_dpo"):
            tr = json.loads((ROOT / "logs" / f"{stage}.json").read_text())
            out.append(f"| training {stage} (default run) | {tr['wall_time_s']} s | {trained(stage)} |")
        params = yaml.safe_load((repo / "params.yaml").read_text())
        for pre in (False, True):
            params["dpo"].update(precompute_ref_log_probs=pre, max_steps=60, eval_steps=1000)
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "stages.train", "dpo"], cwd=repo, check=True, capture_output=True)
            secs = time.perf_counter() - t
            out.append(
                f"| DPO 60 steps, precompute_ref_log_probs={pre} | {secs:.0f} s (stage) | {trained('dpo', repo)} |"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def crafted_input_costs() -> list[str]:
    """What crafted pairs cost `clean` and `download` now that both are bounded (issue: 40,000-word near-identical
    replies once kept `clean` busy for more than 10 minutes)."""
    import gzip
    import tempfile

    from stages import clean, download
    from stages.core import params as P
    from tests.conftest import tiny_params

    p = P.validate(tiny_params())
    words = " ".join(f"word{i}" for i in range(40_000))
    pair = {
        "id": "s/train/1",
        "subset": "s",
        "split": "train",
        "line": 1,
        "chosen": f"\n\nHuman: q?\n\nAssistant: {words}",
        "rejected": f"\n\nHuman: q?\n\nAssistant: {words} !",
    }
    rules = p.clean.model_copy(update={"rules": p.clean.rules.model_copy(update={"too_long": False})})
    t = time.perf_counter()
    rule, _ = clean.check_pair(pair, rules, set(), set())
    near = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test.jsonl.gz"
        with gzip.open(path, "wb") as fh:
            fh.write(b"\n" * 2_000_000)
        t = time.perf_counter()
        try:
            download.read_local_file(path, "s", "test", p.download.limits)
        except Exception as exc:  # a file of blank lines is an error, after a bounded read
            outcome = type(exc).__name__
        blank = time.perf_counter() - t
    return [
        f"| `clean`: one pair of 40,000-word near-identical replies (near_duplicate rule alone) | {near:.2f} s | "
        f"{rule}, {p.clean.near_duplicate_max_chars} characters compared |",
        f"| `download`: 2 MB of newlines in one .gz | {blank:.2f} s | {outcome}, 0 records kept |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", action="store_true", help="only sampling/scoring speed")
    ap.add_argument("--experiments", action="store_true", help="only the experiment re-run and DPO ref log-probs")
    ap.add_argument("--inputs", action="store_true", help="only the cost of crafted input (clean, download)")
    args = ap.parse_args()
    import os

    os.chdir(ROOT)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "",
        "| what | wall time | peak memory / rate |",
        "|---|---|---|",
    ]
    if args.experiments:
        print("\n".join(lines + experiment_speed()))
        return
    if args.inputs:
        print("\n".join(lines + crafted_input_costs()))
        return
    if not args.extras:
        rows = stage_times()
        lines += [
            f"| stage {s} | {secs:.1f} s | {mem:.0f} MiB{'; ' + trained(TRAINING[s]) if s in TRAINING else ''} |"
            for s, secs, mem in rows
        ]
        lines.append(
            f"| **whole pipeline (sum of stages)** | **{sum(r[1] for r in rows):.0f} s** | "
            f"largest: {max(r[2] for r in rows):.0f} MiB |"
        )
        secs, _ = timed(["dvc", "repro"])
        lines.append(f"| no-op `dvc repro` | {secs:.1f} s | |")
    lines += sampling_speed()
    if not args.extras:
        lines += experiment_speed()
    lines += crafted_input_costs()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
