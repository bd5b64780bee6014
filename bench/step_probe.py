"""Step probe: where an optimizer step's time goes on one GPU, for the study's path and the improved profile's speed
switches. opt-350m's real shape (random weights), pairs re-cut to real HH-RLHF token lengths (bench/hh_lengths.json),
the project's own trainers and callbacks. For each entry (a switch set and a method): steady-state ms per optimizer
step after warm-up (CUDA events on a GPU, the wall clock on a CPU), the warm-up and the steps that met a new batch
shape apart (first-call costs), kernels per step and the GPU's busy share over a few profiled steps (torch.profiler),
peak GPU memory, tokens per step, one checkpoint save, and 1, 2 and 4 trials at once on the GPU (combined steps/s, each
capped to its share of memory as `commands.sweep --gpus-per-trial` caps them). Entries run in order of value (the two
sets' steady state, then the most promising switches alone, then packing and concurrency) and each lands in the JSON
as it finishes, so a probe cut short still answers the first questions. Not a test; sized for about 5 minutes of one
H100/H200 (docs/study-on-gpu.md, Step probe). It changes no GPU setting and starts no MPS daemon: it says whether
one runs (docs/experiments.md).

    python bench/step_probe.py -o probe.json                  # on a machine with one GPU (offline: look-alikes)
    python bench/step_probe.py --budget 240 -o probe.json     # stop starting entries after 240 s
    python bench/step_probe.py --shape tiny --steps 4 --warmup 2 --profile-steps 1 --concurrency 1,2 -o p.json
                                                              # the CPU smoke run of the script itself (CI)

It builds the scratch repository as bench/gpu_check.py does (look-alike cache, the study profile, the stages up to
models/base) and runs each entry as its own process there (`--worker`), as a training stage would run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

LENGTHS = ROOT / "bench" / "hh_lengths.json"
# The entries, most valuable first: (name, settings over the study profile, methods). `fast` is every speed switch of
# the improved profile (bench/gpu_check.py SWITCHES); the switches alone follow, the likeliest to pay first.
PACKING = {
    "sft.packing": True
}  # TRL's packing (SFT only): fewer, fuller rows; OPT's sdpa mask lets them see each other


def entries(switches: dict) -> list[tuple[str, dict, tuple[str, ...]]]:
    every = {k: v for s in switches.values() for k, v in s.items()}
    return [
        ("study", {}, ("sft", "dpo")),
        ("fast", every, ("sft", "dpo")),
        ("bf16", switches["bf16"], ("sft", "dpo")),
        ("per_device_batch", switches["per_device_batch"], ("sft", "dpo")),
        ("precompute_ref_log_probs", switches["precompute_ref_log_probs"], ("dpo",)),
        ("tf32", switches["tf32"], ("sft", "dpo")),
        ("fast+packing", {**every, **PACKING}, ("sft",)),
        ("dataloader_workers", switches["dataloader_workers"], ("sft",)),
    ]


# --- the worker: one entry, in the scratch repository ---------------------------------------------------------------


def fit_lengths(rows: list[dict], tok, targets: list[dict], rng) -> list[dict]:
    """The pairs re-cut to `targets` token lengths (prompt, chosen, rejected): the HH-RLHF format kept, each part cut
    from the pairs' own text, tokenized as one stream (re-tokenizing a decoded slice gives its length within a token
    or two; the worker reports the lengths the trainer really saw)."""
    text = " ".join(r[k] for r in rows for k in ("prompt", "chosen", "rejected"))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    frame = len(tok("\n\nHuman: \n\nAssistant:", add_special_tokens=False)["input_ids"])

    def cut(n: int) -> str:
        n = max(1, min(n, len(ids) - 1))
        start = int(rng.integers(0, max(1, len(ids) - n)))
        return tok.decode(ids[start : start + n]).strip() or "ok"

    out = []
    for row, target in zip(rows, targets):
        prompt = f"\n\nHuman: {cut(target['prompt'] - frame)}\n\nAssistant:"
        out.append({**row, "prompt": prompt, "chosen": cut(target["chosen"]), "rejected": cut(target["rejected"])})
    return out


class StepTimer:
    """A TrainerCallback timing every optimizer step end to end (the time between consecutive step ends: data, the
    micro-batches, the optimizer, logging and callbacks), with CUDA events on a GPU (the stream's own clock, no sync
    in the loop), the batch shapes each step met, and torch.profiler over a few steps after warm-up."""

    def __init__(self, warmup: int, profile_steps: int):
        import torch
        from transformers import TrainerCallback

        self.torch, self.cuda = torch, torch.cuda.is_available()
        self.warmup, self.profile_steps = warmup, profile_steps
        self.marks, self.walls, self.step_shapes, self.current = [], [], [], []
        self.tokens = {"real": 0, "padded": 0}
        self.profiler = None
        self.kernels = None
        timer = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                timer.mark()

            def on_step_end(self, args, state, control, **kwargs):
                timer.mark()
                timer.step_shapes.append(tuple(timer.current))
                timer.current = []
                if state.global_step == timer.warmup and timer.profile_steps:
                    timer.start_profile()
                elif state.global_step == timer.warmup + timer.profile_steps and timer.profiler is not None:
                    timer.stop_profile()

        self.callback = Callback()

    def mark(self) -> None:
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())
        self.walls.append(time.time())

    def attach(self, trainer) -> None:
        """Record each micro-batch's tensor shapes and token counts as the trainer meets it."""
        step = trainer.training_step

        def training_step(model, inputs, *args, **kwargs):
            tensors = {k: v for k, v in inputs.items() if self.torch.is_tensor(v)}
            self.current.append(tuple(sorted((k, tuple(v.shape)) for k, v in tensors.items())))
            for key, mask in tensors.items():
                if key.endswith("attention_mask"):
                    self.tokens["real"] += int(mask.sum())
                    self.tokens["padded"] += mask.numel()
            return step(model, inputs, *args, **kwargs)

        trainer.training_step = training_step

    def start_profile(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.profiler = profile(activities=activities)
        self.profiler.__enter__()

    def stop_profile(self) -> None:
        self.profiler.__exit__(None, None, None)
        events = self.profiler.events()
        device = self.torch.autograd.DeviceType.CUDA if self.cuda else None
        if device is not None:
            spans = sorted((e.time_range.start, e.time_range.end) for e in events if e.device_type == device)
            busy, end = 0.0, float("-inf")
            for a, b in spans:  # the union of kernel intervals (streams may overlap)
                busy += max(0.0, b - max(a, end))
                end = max(end, b)
            self.kernels = {"kernels_per_step": len(spans) / self.profile_steps, "kernel_ms_per_step": busy / 1e3}
        else:  # a CPU: the operators torch ran (no kernels on a device)
            ops = [e for e in events if e.name.startswith("aten::")]
            self.kernels = {"aten_ops_per_step": len(ops) / self.profile_steps}
        self.profiler = None

    def intervals_ms(self) -> list[float]:
        if self.cuda:
            self.torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [1e3 * (b - a) for a, b in zip(self.marks, self.marks[1:])]

    def summary(self) -> dict:
        times = self.intervals_ms()  # times[i]: step i + 1
        profiled = range(self.warmup, self.warmup + self.profile_steps)
        seen: set = set()
        new = []
        for shapes in self.step_shapes:
            new.append(any(s not in seen for s in shapes))
            seen.update(shapes)
        steady = [t for i, t in enumerate(times) if i >= self.warmup and i not in profiled]
        if not steady:
            raise SystemExit("step probe: no steady steps measured (raise --steps)")
        repeated = [t for i, t in enumerate(times) if i >= self.warmup and i not in profiled and not new[i]]
        fresh = [t for i, t in enumerate(times) if i >= self.warmup and i not in profiled and new[i]]
        mean = statistics.fmean(steady)
        out = {
            "steady_ms_mean": round(mean, 2),
            "steady_ms_median": round(statistics.median(steady), 2),
            "steady_steps_per_s": round(1e3 / mean, 3),
            "steady_steps": len(steady),
            "first_step_ms": round(times[0], 1),
            "warmup_s": round(sum(times[: self.warmup]) / 1e3, 2),
            "warmup_extra_s": round(sum(t - mean for t in times[: self.warmup]) / 1e3, 2),
            "distinct_shapes": len(seen),
            "new_shape_steps": len(fresh),
            "new_shape_ms_mean": round(statistics.fmean(fresh), 2) if fresh else None,
            "repeated_shape_ms_mean": round(statistics.fmean(repeated), 2) if repeated else None,
            "tokens_per_step_real": round(self.tokens["real"] / len(times), 1),
            "tokens_per_step_padded": round(self.tokens["padded"] / len(times), 1),
            # the wall-clock ends of the steady steps (combined steps/s of trials running at once)
            "steady_ends": [w for i, w in enumerate(self.walls[1:]) if i >= self.warmup and i not in profiled],
        }
        if self.kernels:
            out.update({k: round(v, 2) for k, v in self.kernels.items()})
            if "kernel_ms_per_step" in self.kernels:
                out["gpu_busy_share"] = round(min(1.0, self.kernels["kernel_ms_per_step"] / mean), 3)
        return out


def worker(args) -> None:
    importlib.import_module("stages")  # pins CPU kernels and threads before torch loads, as a stage does
    import numpy as np
    import torch
    from gpu_check import sample_rows

    from stages import methods
    from stages.core import params as P
    from stages.core.determinism import seed_and_pin
    from stages.core.training import Job, TrainingRun

    params = P.load()
    method = methods.load(args.worker)
    own, _ = method.parse(params)
    seed_and_pin(params.seed)
    total = args.warmup + args.profile_steps + args.steps
    result: dict = {
        "method": args.worker,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = method.config(params, tmp / "checkpoints")
        save_every = config.save_steps  # the profile's cadence: the projection's number of saves
        config.max_steps, config.save_strategy = total, "no"  # one save is timed below, apart
        if hasattr(config, "eval_strategy"):
            config.eval_strategy = "no"
        run = TrainingRun(args.worker, tmp / "models" / args.worker, tmp / "live", ("probe",))
        job = Job(name=args.worker, params=params, own=own, config=config, rows=[], run=run)
        tok, model = job.load_start()
        per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps
        rng = np.random.default_rng(params.seed)
        lengths = json.loads(LENGTHS.read_text())
        targets = sample_rows({**lengths["histograms"], "bin": lengths["bin"]}, per_step * total, rng)
        rows = method.training_rows(own)
        rows = fit_lengths([rows[i % len(rows)] for i in range(len(targets))], tok, targets, rng)
        timer = StepTimer(args.warmup, args.profile_steps)
        started = time.perf_counter()
        callbacks = [*run.callbacks(resume=False), timer.callback]
        if args.worker == "sft":
            from stages.methods.sft import build_trainer

            trainer = build_trainer(own, config, model, tok, rows, callbacks)
        else:
            from stages.methods.dpo import build_trainer

            # with precompute_ref_log_probs, TRL's own precompute runs here: the one-off reference pass
            trainer = build_trainer(own, config, model, tok, rows, job.heldout(own.eval_pairs), callbacks)
        result["trainer_build_s"] = round(time.perf_counter() - started, 2)
        run.attach(trainer)
        timer.attach(trainer)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        result.update(timer.summary())
        if torch.cuda.is_available():
            result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        started = time.perf_counter()
        trainer._save_checkpoint(trainer.model, trial=None)  # the stage's checkpoint: weights, optimizer, RNG
        result["checkpoint_save_s"] = round(time.perf_counter() - started, 2)
        heldout = own.eval_pairs if args.worker == "dpo" else 0
        result["projection"] = projection(result, args.worker, save_every, per_step, len(rows), heldout, config)
    Path(args.output).write_text(json.dumps(result))


def projection(result: dict, method: str, save_every: int, per_step: int, pairs: int, heldout: int, config) -> dict:
    """The study's full training at this entry's figures: its optimizer steps at the steady state, plus the one-off
    costs measured here (warm-up beyond the steady state, a save at the profile's cadence, and DPO's precomputed
    reference in proportion to the study's pairs)."""
    from gpu_check import STUDY_STEPS

    steps = STUDY_STEPS[method]
    out = {
        "steps_s": steps * result["steady_ms_mean"] / 1e3,
        "warmup_extra_s": max(0.0, result["warmup_extra_s"]),
        "saves_s": steps // save_every * result["checkpoint_save_s"],
    }
    if method == "dpo" and getattr(config, "precompute_ref_log_probs", False):
        out["reference_s"] = result["trainer_build_s"] * (steps * per_step + heldout) / (pairs + heldout)
    out["total_s"] = sum(out.values())
    return {k: round(v, 1) for k, v in out.items()}


# --- the driver -----------------------------------------------------------------------------------------------------


def combined_steps_per_s(results: list[dict]) -> float | None:
    """Steps per second of trials running at once: steady step ends of all of them inside the window where every
    one was in its steady state."""
    if len(results) == 1:
        return results[0]["steady_steps_per_s"]
    start = max(r["steady_ends"][0] for r in results)
    end = min(r["steady_ends"][-1] for r in results)
    if end <= start:
        return None  # they did not overlap
    ends = sum(start < w <= end for r in results for w in r["steady_ends"])
    return round(ends / (end - start), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["real", "tiny"], default="real")
    ap.add_argument("--steps", type=int, default=30, help="steady optimizer steps measured per entry (default 30)")
    ap.add_argument("--warmup", type=int, default=8, help="warm-up steps, reported apart (default 8)")
    ap.add_argument("--profile-steps", type=int, default=3, help="steps under torch.profiler (default 3)")
    ap.add_argument("--concurrency", default="1,2,4", help="trials at once on the GPU, fast set's SFT (default 1,2,4)")
    ap.add_argument("--only", help="comma-separated entry names (default: every entry)")
    ap.add_argument("--budget", type=float, help="start no entry after this many seconds")
    ap.add_argument("-o", "--output", type=Path, default=Path("probe.json"))
    ap.add_argument("--keep", type=Path, help="keep the scratch folder here")
    ap.add_argument("--worker", choices=["sft", "dpo"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    import shutil

    import gpu_check

    started = time.perf_counter()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="step-probe-"))
    work, env, digests = gpu_check.scratch_repository(scratch, args.shape)
    sizing = argparse.Namespace(sft_steps=args.steps, dpo_steps=args.steps, pad_to=None)
    study = gpu_check.params(sizing, digests)
    (work / "params.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    for stage in gpu_check.SHARED_STAGES:
        gpu_check.run(work, env, *stage)
    from commands.sweep import mps_running

    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "shape": args.shape,
        "steps": {"warmup": args.warmup, "profiled": args.profile_steps, "steady": args.steps},
        "lengths": json.loads(LENGTHS.read_text())["source"],
        "mps": mps_running(),
        "setup_s": round(time.perf_counter() - started, 1),
        "entries": [],
        "concurrency": [],
        "skipped": [],
    }
    wanted = set(args.only.split(",")) if args.only else None
    plan = [e for e in entries(gpu_check.SWITCHES) if wanted is None or e[0] in wanted]
    levels = [int(n) for n in args.concurrency.split(",") if n.strip()]

    def save() -> None:
        args.output.write_text(json.dumps(report, indent=1) + "\n")

    def launch(name: str, settings: dict, method: str, trials: int) -> list[dict]:
        (work / "params.yaml").write_text(yaml.safe_dump(gpu_check.apply(json.loads(json.dumps(study)), settings)))
        trial_env = dict(env)
        if trials > 1:  # as commands.sweep --gpus-per-trial 1/N: a memory share each, expandable segments
            trial_env["ALIGN_GPU_MEMORY_FRACTION"] = f"{1 / trials:g}"
            trial_env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
            trial_env.setdefault("ALIGN_CPU_THREADS", "1")
        procs = []
        for i in range(trials):
            out = scratch / f"{name}.{method}.{trials}.{i}.json"
            cmd = [sys.executable, "bench/step_probe.py", "--worker", method, "-o", str(out)]
            cmd += [
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--profile-steps",
                str(args.profile_steps),
            ]
            procs.append((out, subprocess.Popen(cmd, cwd=work, env=trial_env, stderr=subprocess.PIPE, text=True)))
        results = []
        for out, proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                results.append({"error": (err or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]})
            else:
                results.append(json.loads(out.read_text()))
        return results

    def over_budget() -> bool:
        return args.budget is not None and time.perf_counter() - started > args.budget

    for name, settings, methods in plan:
        for method in methods:
            if over_budget():
                report["skipped"].append(f"{name} {method}")
                continue
            t = time.perf_counter()
            (result,) = launch(name, settings, method, 1)
            result.pop("steady_ends", None)
            report["entries"].append({"set": name, "settings": settings, "wall_s": round(time.perf_counter() - t, 1)})
            report["entries"][-1].update(result)
            print(f"  {name:26s} {method}: {result.get('steady_ms_mean', result.get('error'))} ms", file=sys.stderr)
            save()
        if name == "fast":  # the trials-at-once question right after the two sets' steady state
            for trials in (n for n in levels if n > 1):
                if over_budget():
                    report["skipped"].append(f"fast sft x{trials}")
                    continue
                results = launch("fast", settings, "sft", trials)
                ok = [r for r in results if "error" not in r]
                report["concurrency"].append(
                    {
                        "set": "fast",
                        "method": "sft",
                        "trials": trials,
                        "combined_steps_per_s": combined_steps_per_s(ok) if len(ok) == trials else None,
                        "per_trial_steps_per_s": [r.get("steady_steps_per_s") for r in results],
                        "peak_gpu_memory_gib": [r.get("peak_gpu_memory_gib") for r in results],
                        "errors": [r["error"] for r in results if "error" in r],
                    }
                )
                save()
    report["wall_s"] = round(time.perf_counter() - started, 1)
    save()
    print(table(report))
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


def table(report: dict) -> str:
    """The probe as Markdown (docs/benchmarks.md)."""
    from gpu_check import hms

    lines = [
        f"Step probe, {report['date']}, {report['entries'][0].get('device', '?') if report['entries'] else '?'}, "
        f"opt-350m shape {report['shape']}; {report['steps']}; MPS {'on' if report['mps'] else 'off'}",
        "",
        "| set | method | steady ms/step (median) | steps/s | warm-up s (extra) | new-shape steps: ms | kernels/step "
        "| GPU busy | tokens/step (padded) | peak GiB | save s | projected for the study |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report["entries"]:
        if "error" in e:
            lines.append(f"| {e['set']} | {e.get('method', '')} | failed: {e['error']} ||||||||||")
            continue
        kernels = e.get("kernels_per_step", e.get("aten_ops_per_step"))
        lines.append(
            f"| {e['set']} | {e['method']} | {e['steady_ms_mean']} ({e['steady_ms_median']}) | "
            f"{e['steady_steps_per_s']} | {e['warmup_s']} ({e['warmup_extra_s']}) | {e['new_shape_steps']}: "
            f"{e['new_shape_ms_mean']} | {kernels} | {e.get('gpu_busy_share', '-')} | {e['tokens_per_step_real']} "
            f"({e['tokens_per_step_padded']}) | {e.get('peak_gpu_memory_gib', '-')} | {e['checkpoint_save_s']} | "
            f"{hms(e['projection']['total_s'])} |"
        )
    for c in report["concurrency"]:
        lines.append(
            f"- {c['trials']} trials at once ({c['set']} {c['method']}): combined {c['combined_steps_per_s']} steps/s "
            f"(each {c['per_trial_steps_per_s']})" + (f"; errors {c['errors']}" if c["errors"] else "")
        )
    if report["skipped"]:
        lines.append(f"- not run (budget): {', '.join(report['skipped'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
