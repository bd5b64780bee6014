"""GPU check of the study's path before a full run: opt-350m's real shape (random weights, 331M parameters), the study
profile's settings, a few hundred SFT and DPO steps, 100 prompts sampled and scored; prints steps/s, tokens/s, peak
GPU memory and the projected wall time of the full study per stage. Not a test; about 6 minutes on one H200
(README, GPU check: measured 5 min 03 s with --sft-steps 200 --dpo-steps 100).

    python bench/gpu_check.py                       # on a machine with one GPU (offline: look-alikes, no hub)
    python bench/gpu_check.py --shape tiny --sft-steps 4 --dpo-steps 2     # a CPU smoke run of the script itself

It builds a look-alike Hugging Face cache (`python -m commands.rehearse --shape real`, HH-RLHF's real text where
../shared/data/hh-rlhf has it, for realistic sequence lengths), runs the stages of the `study` profile in a scratch
copy of the repository with HF_HUB_OFFLINE=1, and reads the timings the stages log (logs/<stage>.json).
The study's own times (A100 40GB): SFT 3 h 02 m (40,200 steps), DPO 2 h 09 m and SFT+DPO 2 h 14 m (20,100 steps each).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDY_STEPS = {"sft": 40_200, "dpo": 20_100, "sft_dpo": 20_100}  # the study's optimizer steps (paper-notes 1.2)
STUDY_TIME = {"sft": "3h02m", "dpo": "2h09m", "sft_dpo": "2h14m"}


def checkout(dst: Path) -> None:
    """The project's files (git's view; a copy with no git folder: every file outside outputs and caches)."""
    res = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True)
    if res.returncode == 0:
        files = res.stdout.split()
    else:
        skip = {"data", "models", "checkpoints", "logs", "dvc_plots"}
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and not any(part.startswith(".") or part in skip
                                            for part in p.relative_to(ROOT).parts[:-1])]
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)


def params(args, digests: dict) -> dict:
    from commands.compose import compose

    p = compose("study")
    p["download"]["max_pairs_per_file"] = max(args.sft_steps, args.dpo_steps) * 8 // 4 + 50
    p["clean"].update(heldout_max_pairs=64, calibration_max_pairs=20)
    p["sft"].update(max_steps=args.sft_steps, logging_steps=25, save_steps=10**6)
    p["dpo"].update(max_steps=args.dpo_steps, logging_steps=25, save_steps=10**6, eval_pairs=64, eval_steps=10**6)
    if args.pad_to:  # every batch padded to this length: an upper bound on the study's real sequence lengths
        for stage in ("sft", "dpo"):
            p[stage]["pad_to_multiple_of"] = args.pad_to  # any TRL field goes straight into the method's section
    p["sample"]["device"] = "auto"  # the GPU's decoding speed (the study decoded on a CPU: sample.device=cpu)
    p["base"]["pickle_sha256"] = digests["base.pickle_sha256"]
    p["score"]["judges"][0]["pickle_sha256"] = digests["score.judges.0.pickle_sha256"]  # pinned by commands.pin --fetch
    for key, value in digests.items():
        if key.startswith("prompts."):
            p["prompts"][key.split(".", 1)[1]] = value
    return p


def stage_env(cache_env: dict, work: Path) -> dict:
    """The stages' environment: the look-alike cache, offline; the scratch copy first on the path, and an existing
    PYTHONPATH (packages installed with `pip --target`, as on a machine whose own packages are older) after it."""
    return {**os.environ, **cache_env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))}


def run(work: Path, env: dict, *args: str) -> float:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", *args], cwd=work, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["real", "tiny"], default="real")
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--dpo-steps", type=int, default=200)
    ap.add_argument("--pad-to", type=int, metavar="N",
                    help="pad every training batch to N tokens (the look-alike data's dialogues are shorter than "
                         "HH-RLHF's: without it the projection is a lower bound, with N = max_length an upper one)")
    ap.add_argument("--training-only", action="store_true", help="stop after SFT and DPO (no sampling, scoring)")
    ap.add_argument("--keep", type=Path, help="keep the scratch folder here")
    args = ap.parse_args()
    from commands.rehearse import build

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    started = time.perf_counter()
    manifest = build(scratch / "cache", shape=args.shape, real_everywhere=True)
    work = scratch / "work"
    checkout(work)
    env = stage_env(manifest["env"], work)
    run(work, env, "commands.pin", "--fetch", "--profile", "study")  # the user's one step: pins the judge's pickle
    judge = yaml.safe_load((work / "conf/profile/study.yaml").read_text())["score"]["judges"][0]
    digests = {**manifest["overrides"], "score.judges.0.pickle_sha256": judge["pickle_sha256"]}
    (work / "params.yaml").write_text(yaml.safe_dump(params(args, digests), sort_keys=False))
    wall = {}
    for stage in (["stages.download"], ["stages.prompts"], ["stages.clean"], ["stages.train", "base"], ["stages.train", "sft"],
                  ["stages.train", "dpo"], ["stages.sample", "base"], ["stages.score", "base"]):
        if args.training_only and stage[0] in ("stages.sample", "stages.score"):
            continue
        wall[" ".join(stage)] = run(work, env, *stage)
        print(f"  {' '.join(stage):22s} {wall[' '.join(stage)]:7.1f} s", file=sys.stderr, flush=True)
    logs = {p.stem: json.loads(p.read_text()) for p in (work / "logs").glob("*.json")}
    device = logs["sft"]["device"]
    lines = [f"GPU check, {time.strftime('%Y-%m-%d')}, {device}, opt-350m shape: {args.shape}; "
             f"{hms(time.perf_counter() - started)} in all"
             + (f"; every training batch padded to {args.pad_to} tokens" if args.pad_to else ""), "",
             "| stage | measured | steps/s | tokens/s | peak GPU memory | projected for the study | the study (A100) |",
             "|---|---|---|---|---|---|---|"]
    for name in ("sft", "dpo"):
        t = logs[name]
        projected = STUDY_STEPS[name] / t["steps_per_s"] if t["steps_per_s"] else float("nan")
        tokens = f"{t['tokens_per_s']:,.0f}" if t["tokens_per_s"] else "-"  # TRL logs num_tokens every logging_steps
        lines.append(f"| {name} | {t['train_runtime_s']} s for {args.sft_steps if name == 'sft' else args.dpo_steps} "
                     f"steps | {t['steps_per_s']} | {tokens} | {t.get('peak_gpu_memory_gib', '-')} GiB "
                     f"| {hms(projected)} | {STUDY_TIME[name]} |")
        if name == "dpo":
            lines.append(f"| sft_dpo | (as dpo) | | | | {hms(projected)} | {STUDY_TIME['sft_dpo']} |")
    for name, unit in (("sample@base", "tokens_per_s"), ("score@base", "responses_per_s")):
        if name not in logs:
            continue
        t = logs[name]
        lines.append(f"| {name} | {t['wall_time_s']} s for 100 prompts | | {t[unit]} {unit.split('_')[0]}/s | "
                     f"{t.get('peak_gpu_memory_gib', '-')} GiB | {hms(4 * t['wall_time_s'])} (4 models) | |")
    print("\n".join(lines))
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
