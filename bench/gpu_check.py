"""GPU check of the study's path before a full run: opt-350m's real shape (random weights, 331M parameters), the study
profile's settings, a few hundred SFT and DPO steps under each switch set (`study`: fp32, batch 2 x 4, as the study
ran; `fast`: the improved profile's speed switches), 100 prompts sampled and scored; prints per stage and switch set
steps/s, tokens/s, MFU against the GPU's dense peak, peak GPU memory and the projected wall time of the full study,
projected from real HH-RLHF lengths (bench/hh_lengths.json). Not a test; the default run is sized for about 5 minutes
on one H100/H200-class GPU (docs/study-on-gpu.md, GPU check).

    python bench/gpu_check.py                       # on a machine with one GPU (offline: look-alikes, no hub)
    python bench/gpu_check.py --switch tf32         # also one run per named switch, each alone on the study's path
    python bench/gpu_check.py --shape tiny --sft-steps 4 --dpo-steps 2     # a CPU smoke run of the script itself

It builds a look-alike Hugging Face cache (`python -m commands.rehearse --shape real`, HH-RLHF's real text where
../shared/data/hh-rlhf has it, for realistic sequence lengths), runs the stages of the `study` profile in a scratch
copy of the repository with HF_HUB_OFFLINE=1, and reads the timings the stages log (logs/<stage>.json).
The study's own times (A100 40GB): SFT 3 h 02 m (40,200 steps), DPO 2 h 09 m and SFT+DPO 2 h 14 m (20,100 steps each).
"""

from __future__ import annotations

import argparse
import json
import math
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
LENGTHS = ROOT / "bench" / "hh_lengths.json"  # real HH-RLHF token lengths (python bench/hh_lengths.py)
# Dense (no sparsity) peak FLOP/s by precision, from NVIDIA's datasheets: H100 SXM and H200 SXM (the same compute:
# 989.4 TFLOPS BF16, 494.7 TF32, 66.9 FP32), A100 SXM (312, 156, 19.5).
PEAKS = {
    "H100": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H200": {"bf16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}
# The improved profile's speed switches (conf/profile/improved.yaml), each settable alone with --switch.
SWITCHES = {
    "per_device_batch": {"speed.per_device_batch": 8},
    "bf16": {"distributed.mixed_precision": "bf16"},
    "tf32": {"speed.tf32": True},
    "dataloader_workers": {"speed.dataloader_workers": 2},
    "precompute_ref_log_probs": {"dpo.precompute_ref_log_probs": True},
}


def checkout(dst: Path) -> None:
    """The project's files (git's view; a copy with no git folder: every file outside outputs and caches)."""
    res = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    )
    if res.returncode == 0:
        files = res.stdout.split()
    else:
        skip = {"data", "models", "checkpoints", "logs", "dvc_plots"}
        files = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not any(part.startswith(".") or part in skip for part in p.relative_to(ROOT).parts[:-1])
        ]
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
    return {
        **os.environ,
        **cache_env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")])),
    }


# The stages every switch set shares (the data and the base model), run once in the scratch repository
SHARED_STAGES = (["stages.download"], ["stages.prompts"], ["stages.xstest"], ["stages.clean"], ["stages.train", "base"])


def scratch_repository(scratch: Path, shape: str) -> tuple[Path, dict, dict]:
    """(work folder, stage environment, pinned digests) of a scratch copy of the repository over a look-alike Hugging
    Face cache of opt-350m's `shape`, the study's judge pinned as a user pins it."""
    from commands.rehearse import build

    manifest = build(scratch / "cache", shape=shape, real_everywhere=True)
    work = scratch / "work"
    checkout(work)
    env = stage_env(manifest["env"], work)
    # the user's one step: pins the judge's pickle (the look-alike cache is offline: trusted as told)
    run(work, env, "commands.pin", "--fetch", "--profile", "study", "--trust-cached-pickle")
    judge = yaml.safe_load((work / "conf/profile/study.yaml").read_text())["score"]["judges"][0]
    return work, env, {**manifest["overrides"], "score.judges.0.pickle_sha256": judge["pickle_sha256"]}


def run(work: Path, env: dict, *args: str) -> float:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", *args], cwd=work, env=env, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def apply(p: dict, settings: dict) -> dict:
    """Dotted params settings (`speed.tf32: true`) applied to a params dict."""
    for key, value in settings.items():
        node = p
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return p


def sample_rows(lengths: dict, n: int, rng) -> list[dict]:
    """n pairs' token lengths drawn from histograms (bench/hh_lengths.json) or from lists of measured lengths."""
    import numpy as np

    out = {}
    for key in ("transcript", "prompt", "chosen", "rejected"):
        values = lengths[key]
        if values and isinstance(values[0], list):  # a histogram: [[bin start, count], ...], lengths at the bin's end
            starts, counts = np.array(values).T
            out[key] = rng.choice(starts + lengths.get("bin", 8), size=n, p=counts / counts.sum())
        else:
            out[key] = rng.choice(np.array(values), size=n)
    return [{k: int(out[k][i]) for k in out} for i in range(n)]


def tokens_per_step(rows: list[dict], method: str, batch: int, accumulation: int) -> tuple[float, float]:
    """(real, padded) tokens per optimizer step at the study's cuts: SFT trains on the transcript cut at 512; DPO on
    prompt (its last 512) + each reply, cut at 1024, chosen and rejected padded together in each micro-batch."""
    real = padded = 0.0
    per_step = batch * accumulation
    steps = len(rows) // per_step
    for s in range(steps):
        for m in range(accumulation):
            micro = rows[s * per_step + m * batch : s * per_step + (m + 1) * batch]
            if method == "sft":
                lengths = [min(r["transcript"], 512) for r in micro]
            else:
                lengths = [min(min(r["prompt"], 512) + r[side], 1024) for r in micro for side in ("chosen", "rejected")]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
    return real / steps, padded / steps


def model_shape(folder: Path) -> dict:
    """Parameters, layers and width of a saved model, read from its config and safetensors header (no weights)."""
    from safetensors import safe_open

    config = json.loads((folder / "config.json").read_text())
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return {"params": params, "layers": config["num_hidden_layers"], "width": config["hidden_size"]}


def flops_per_token(shape: dict, sequence: float, method: str, precomputed: bool) -> float:
    """Training FLOPs per token: 6N for the forward and backward pass plus 12 x layers x width x sequence for
    attention (Kaplan et al. 2020; PaLM's MFU convention); DPO adds the reference model's forward pass (2N) unless its
    log-probs were computed before training."""
    flops = 6 * shape["params"] + 12 * shape["layers"] * shape["width"] * sequence
    return flops + (2 * shape["params"] if method == "dpo" and not precomputed else 0)


def peak(device: str, precision: str) -> float | None:
    return next((p[precision] for name, p in PEAKS.items() if name in device), None)


def measured_lengths(work: Path) -> dict:
    """Token lengths of the pairs this run trained on, with its own tokenizer (for the projection's ratio)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(work / "models" / "base"))
    out: dict = {"transcript": [], "prompt": [], "chosen": [], "rejected": []}
    for line in (work / "data/clean/train.jsonl").read_text().splitlines()[:2000]:
        r = json.loads(line)
        out["transcript"].append(len(tok(r["prompt"] + " " + r["chosen"])["input_ids"]))
        out["prompt"].append(len(tok(r["prompt"])["input_ids"]))
        out["chosen"].append(len(tok(" " + r["chosen"], add_special_tokens=False)["input_ids"]) + 1)
        out["rejected"].append(len(tok(" " + r["rejected"], add_special_tokens=False)["input_ids"]) + 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["real", "tiny"], default="real")
    ap.add_argument("--sft-steps", type=int, default=150)
    ap.add_argument("--dpo-steps", type=int, default=100)
    ap.add_argument(
        "--pad-to",
        type=int,
        metavar="N",
        help="pad every training batch to N tokens (an upper bound on the study's real sequence lengths)",
    )
    ap.add_argument(
        "--switch",
        action="append",
        default=[],
        choices=sorted(SWITCHES),
        help="also run the study's path with only this speed switch on (repeatable)",
    )
    ap.add_argument("--training-only", action="store_true", help="stop after SFT and DPO (no sampling, scoring)")
    ap.add_argument("--keep", type=Path, help="keep the scratch folder here")
    args = ap.parse_args()
    import numpy as np

    import commands.rehearse  # noqa: F401  (imports stages first: its CPU pin precedes NumPy and torch)

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    started = time.perf_counter()
    work, env, digests = scratch_repository(scratch, args.shape)
    study = params(args, digests)
    fast = apply(params(args, digests), {k: v for s in SWITCHES.values() for k, v in s.items()})
    sets = {
        "study": study,
        "fast": fast,
        **{name: apply(params(args, digests), SWITCHES[name]) for name in args.switch},
    }
    (work / "params.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    for stage in SHARED_STAGES:
        print(f"  {' '.join(stage):22s} {run(work, env, *stage):7.1f} s", file=sys.stderr, flush=True)
    logs: dict = {}
    references: dict = {}  # switch set: (seconds, pairs) of the stored reference's one pass
    for name, p in sets.items():  # the same data and base model; each switch set trains sft and dpo
        (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        # dpo's reference stage first (dvc.yaml's order): it stores the reference's log-probs where the set
        # precomputes them (a one-off cost per start model) and says "none" where DPO computes them live
        for stage in (["stages.train", "sft"], ["stages.reference", "dpo"], ["stages.train", "dpo"]):
            seconds = run(work, env, *stage)
            print(f"  {name:8s} {' '.join(stage):22s} {seconds:7.1f} s", file=sys.stderr, flush=True)
            if stage[0] == "stages.reference":
                about = json.loads((work / "data" / "reference" / "dpo.json").read_text())
                if about["identity"] is not None:
                    references[name] = (seconds, about["splits"]["train"]["pairs"] + about["splits"]["eval"]["pairs"])
                continue
            logs[(name, stage[1])] = json.loads((work / "logs" / f"{stage[1]}.json").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    if not args.training_only:
        for stage in (["stages.sample", "base"], ["stages.score", "base"]):
            run(work, env, *stage)
    evaluation = {p.stem: json.loads(p.read_text()) for p in (work / "logs").glob("*@base.json")}
    device = logs[("study", "sft")]["device"]
    rng = np.random.default_rng(0)
    real_lengths = json.loads(LENGTHS.read_text())
    shape = model_shape(work / "models" / "base")
    real_rows = sample_rows({**real_lengths["histograms"], "bin": real_lengths["bin"]}, 4000, rng)
    run_rows = sample_rows(measured_lengths(work), 4000, rng)
    lines = [
        f"GPU check, {time.strftime('%Y-%m-%d')}, {device}, opt-350m shape: {args.shape} "
        f"({shape['params'] / 1e6:.0f}M parameters); {hms(time.perf_counter() - started)} in all"
        + (f"; every training batch padded to {args.pad_to} tokens" if args.pad_to else ""),
        f"Real lengths: {real_lengths['source']} ({real_lengths['tokenizer']}; mean transcript "
        f"{real_lengths['mean']['transcript']} tokens). Peak: NVIDIA's dense figures (bench/gpu_check.py PEAKS).",
        "",
        "| switches | stage | measured | steps/s | tokens/s | MFU | peak GPU memory | projected for the study "
        "| the study (A100) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    projected: dict = {}
    for (name, method), t in logs.items():
        p = sets[name]
        batch = p["speed"]["per_device_batch"] or p[method]["per_device_train_batch_size"]
        accumulation = p[method]["per_device_train_batch_size"] * p[method]["gradient_accumulation_steps"] // batch
        steps_per_s = t["steps_per_s"] or float("nan")
        # tokens per optimizer step in this run and in the study's real data, at the same batch layout and cuts
        run_real, run_padded = tokens_per_step(run_rows, method, batch, accumulation)
        study_real, study_padded = tokens_per_step(real_rows, method, batch, accumulation)
        # projected: the slower of two bounds, per-step overhead (steps/s as measured) and arithmetic (time in
        # proportion to padded tokens per step)
        seconds = STUDY_STEPS[method] / steps_per_s * max(1.0, study_padded / run_padded)
        projected[(name, method)] = seconds
        precision = p["distributed"]["mixed_precision"]
        precision = "tf32" if precision == "fp32" and p["speed"]["tf32"] else precision
        top = peak(device, precision)
        flops = flops_per_token(
            shape,
            study_real / (batch * accumulation * (1 if method == "sft" else 2)),
            method,
            p["dpo"]["precompute_ref_log_probs"],
        )
        tokens_per_s = t["tokens_per_s"] or run_real * steps_per_s  # TRL's count where it logs one
        mfu = f"{100 * tokens_per_s * flops / top:.1f}% of {precision}" if top else "n/a (no GPU peak)"
        memory = t.get("peak_gpu_memory_gib", "-")
        steps = args.sft_steps if method == "sft" else args.dpo_steps
        tokens = f"{t['tokens_per_s']:,.0f}" if t["tokens_per_s"] else "-"
        lines.append(
            f"| {name} | {method} | {t['train_runtime_s']} s for {steps} steps | {t['steps_per_s']} | "
            f"{tokens} | {mfu} | {memory} GiB | {hms(seconds)} | {STUDY_TIME[method]} |"
        )
        if method == "dpo" and name in references:
            # the stored reference: one forward pass over every pair per start model (stage process included),
            # projected in proportion to the study's pairs (its training pairs plus as many held-out as here)
            once, pairs = references[name]
            study_pairs = (
                STUDY_STEPS["dpo"] * p["dpo"]["per_device_train_batch_size"] * p["dpo"]["gradient_accumulation_steps"]
                + p["dpo"]["eval_pairs"]
            )
            extra = once * study_pairs / pairs
            seconds += extra
            projected[(name, method)] = seconds
            lines.append(
                f"| {name} | reference@dpo | {once:.1f} s for {pairs} pairs | | | | | {hms(extra)} "
                "(once per start model, in dpo's) | |"
            )
        if method == "dpo":
            projected[(name, "sft_dpo")] = seconds
            lines.append(f"| {name} | sft_dpo | (as dpo) | | | | | {hms(seconds)} | {STUDY_TIME['sft_dpo']} |")
    for name in evaluation:
        t = evaluation[name]
        unit = "tokens_per_s" if name.startswith("sample") else "responses_per_s"
        lines.append(
            f"| study | {name} | {t['wall_time_s']} s for 100 prompts | | {t[unit]} {unit.split('_')[0]}/s | "
            f"| {t.get('peak_gpu_memory_gib', '-')} GiB | {hms(4 * t['wall_time_s'])} (4 models) | |"
        )
    lines.append("")
    for name in sets:
        total = sum(projected[(name, m)] for m in ("sft", "dpo", "sft_dpo"))
        # ORPO (improved profile) trains 2 epochs of SFT's settings on pairs: estimated at DPO's time per step
        orpo = projected[(name, "dpo")] * STUDY_STEPS["sft"] / STUDY_STEPS["dpo"]
        lines.append(
            f"- {name}: SFT + DPO + SFT+DPO projected {hms(total)}; with ORPO (estimated as DPO's steps/s "
            f"x 40,200 steps) {hms(total + orpo)}"
            + (" (goal for the improved profile: 45 min or less)" if name == "fast" else "")
        )
    print("\n".join(lines))
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
