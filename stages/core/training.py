"""What every training method (stages/methods/) shares: the outline load -> train -> guard -> save -> record
(`run_method`), TRL configs from params, the run's checkpoints, curves, guards and progress, and the atomic save of
the trained model with its run record.

TRL configs: a method's params section is its TRL config (as alignment-handbook recipes are), less the project's own
keys the method's module names; each field is checked against TRL's own config class (unknown, mistyped, set by the
pipeline or by another param, or refused for safety) before any model loads, in one line naming it.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import shutil
import tempfile
import time
import types
import typing
from pathlib import Path
from typing import Any

from . import distributed as dist
from .checkpoints import last_complete
from .io import StageError, first_line, fresh_tmp_dir, replace_dir, write_json, write_text
from .modeling import load_causal_lm, load_tokenizer
from .progress import duration, interactive
from .runinfo import log_timing, run_info

CHECKPOINTS = Path("checkpoints")  # outside every DVC out, so an interrupted stage can resume (gitignored)

# TRL/Trainer fields set from the top of params.yaml, never in a method's section.
SET_BY_TOP_LEVEL = {"seed": "seed", "data_seed": "seed", "bf16": "distributed.mixed_precision",
                    "fp16": "distributed.mixed_precision"}
OWNED = {"output_dir", "report_to", "save_strategy", "save_total_limit", "save_only_model", "disable_tqdm",
         "use_cpu", "eval_strategy", "push_to_hub", "resume_from_checkpoint", "overwrite_output_dir",
         "dataset_num_proc", "dataloader_pin_memory"}
SET_BY_SPEED = {"tf32": "speed.tf32", "torch_compile": "speed.torch_compile",
                "dataloader_num_workers": "speed.dataloader_workers"}
NEVER = {"trust_remote_code", "model_init_kwargs"}  # no code from a model repository runs here (README: Safety)
# Fields that make TRL or transformers fetch from (or push to) the hub with no pinned commit or digest: a hub id as
# chat_template_path would replace the tokenizer and resize the model. A local chat template file is allowed.
HUB = {"chat_template_path", "hub_model_id", "hub_token", "hub_strategy", "hub_private_repo", "hub_always_push",
       "hub_revision"}
WALL_CLOCK = ("runtime", "per_second", "_time")  # log keys that measure the machine, not the model: kept out of curves
# The study's Trainer defaults, written out (a default of a newer library version must not change a run); a section
# may set them.
DEFAULTS = {"optim": "adamw_torch", "max_grad_norm": 1.0, "gradient_checkpointing": False,
            "logging_nan_inf_filter": False}  # the filter hides a NaN loss behind the running mean


def precision_flags(d) -> dict:
    """The compute precision params name (distributed.mixed_precision), never a property of the machine: fp32 keeps
    the study's full precision; bf16 / fp16 are autocast over float32 weights (fp16 with loss scaling)."""
    import torch

    cuda = torch.cuda.is_available()
    mp = d.mixed_precision if d is not None else "fp32"
    return {"bf16": mp == "bf16", "fp16": mp == "fp16", "use_cpu": not cuda, "dataloader_pin_memory": cuda}


def split_section(own_cls, section: dict, key: str):
    """A method's params section: (its project keys, validated by the method's pydantic `own_cls`; the rest, fields
    of the method's TRL config class)."""
    own = {k: v for k, v in section.items() if k in own_cls.model_fields}
    fields = {k: v for k, v in section.items() if k not in own_cls.model_fields}
    return validate_section(own_cls, own, key), fields


def validate_section(cls, values: dict, key: str):
    from pydantic import ValidationError

    from .params import _describe

    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise StageError(f"params.yaml: {key}.{_describe(exc.errors()[0])}") from None


def trl_config(cls, fields: dict, managed: dict, key: str, owned: dict | None = None, d=None, speed=None):
    """cls(**fields, **managed): `fields` are the TRL fields of the params section `key`, each checked against cls
    (unknown, refused and mistyped fields stop here with their name, before any model loads); `managed` are the
    fields the pipeline sets; `owned` maps fields a method sets from its own keys to those keys. The study's Trainer
    defaults (DEFAULTS) apply unless the section sets them; `d` (params.distributed) keeps per-device batch x
    accumulation x processes at what the section says; `speed` (params.speed) may move per-device batch into
    accumulation's place, keeping their product."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in fields.items():
        if name not in names:
            raise StageError(f"params.yaml: {key}.{name}: not a field of trl.{cls.__name__} (typo?)")
        if name in SET_BY_TOP_LEVEL or name in SET_BY_SPEED:
            raise StageError(f"params.yaml: {key}.{name}: set it with "
                             f"{SET_BY_TOP_LEVEL.get(name) or SET_BY_SPEED[name]}")
        if owned and name in owned:
            raise StageError(f"params.yaml: {key}.{name}: set it with {key}.{owned[name]}")
        if name in OWNED:
            raise StageError(f"params.yaml: {key}.{name}: set by the pipeline itself (checkpoints, logging, data)")
        if name in NEVER:
            raise StageError(f"params.yaml: {key}.{name}: refused (models load without remote code: README, Safety)")
        if name in HUB and not (name == "chat_template_path" and Path(str(value)).is_file()):
            raise StageError(f"params.yaml: {key}.{name}: refused (it makes TRL fetch from or push to the hub outside "
                             "the pinned downloads; a chat template must be a local file: README, Safety)")
        hint = hints.get(name)
        if hint is not None and not type_matches(value, hint):
            raise StageError(f"params.yaml: {key}.{name}: expected {type_name(hint)}, got "
                             f"{type(value).__name__} {value!r}")
        values[name] = float(value) if hint is float and isinstance(value, int) else value
    values |= batch_for_speed(values, speed, key)
    batch = values.get("per_device_train_batch_size", 8)
    values["gradient_accumulation_steps"] = dist.accumulation_steps(values.get("gradient_accumulation_steps", 1), d)
    try:
        return cls(**{**DEFAULTS, "per_device_eval_batch_size": batch, **managed, **values})  # refused fields never reach values
    except (TypeError, ValueError) as exc:
        raise StageError(f"params.yaml: {key}: {first_line(exc)}") from None


def batch_for_speed(values: dict, speed, key: str) -> dict:
    """`speed.per_device_batch: N`: N sequences per device and the accumulation divided so that their product (the
    effective batch) is what the section says: the same examples in each optimizer step."""
    if speed is None or speed.per_device_batch is None:
        return {}
    batch, accumulation = values.get("per_device_train_batch_size", 8), values.get("gradient_accumulation_steps", 1)
    effective = batch * accumulation
    if effective % speed.per_device_batch:
        raise StageError(f"params.yaml: speed.per_device_batch: {speed.per_device_batch} does not divide {key}'s "
                         f"effective batch ({batch} x {accumulation} = {effective})")
    return {"per_device_train_batch_size": speed.per_device_batch,
            "gradient_accumulation_steps": effective // speed.per_device_batch}


def speed_fields(speed) -> dict:
    """TrainingArguments fields of params.speed: TF32 only where a CUDA GPU runs the matmuls."""
    import torch

    if speed is None:
        return {}
    return {"tf32": True if speed.tf32 and torch.cuda.is_available() else None,
            "torch_compile": speed.torch_compile, "dataloader_num_workers": speed.dataloader_workers}


def pipeline_fields(output_dir: Path, seed: int, d=None) -> dict:
    """The TrainingArguments fields every method gets from the pipeline: checkpoints, seed, logging, precision."""
    return {
        "output_dir": str(output_dir),
        "save_strategy": "steps",
        "save_total_limit": 1,
        "save_only_model": False,  # keep optimizer state in checkpoints so a resume is exact
        "seed": int(seed),
        "data_seed": int(seed),
        "report_to": "none",  # DVCLive is attached as a callback with dvcyaml=False
        "disable_tqdm": not interactive(),
        "dataset_num_proc": None,
        **precision_flags(d),
    }


def type_matches(value, hint) -> bool:
    """Whether a params value fits a config field's annotation, for the plain types a YAML file can hold (TRL's and
    transformers' configs do not check types: `max_grad_norm: "abc"` would fail only after the model loads)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return isinstance(value, str)
    if origin is list:  # TRL's list fields (DPOConfig.loss_type) take one value too
        return isinstance(value, list) or any(type_matches(value, arg) for arg in typing.get_args(hint))
    if origin is dict:
        return isinstance(value, dict)
    return True  # anything else (callables, objects): TRL's own check


def type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class FiniteGuard:
    """Stop training at the first non-finite loss or gradient, with one line naming the stage and the step.

    Without it a float16 model (or a too-high learning rate) trains on in NaN: the Trainer's logged loss hides it
    and the stage saves NaN weights that later stages turn into empty responses and a metrics file that looks valid.
    """

    def __init__(self, stage: str):
        from transformers import TrainerCallback

        guard = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                if model is not None:
                    guard.check_dtype(model)

            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                if args.fp16 or model is None:  # fp16's loss scaler skips steps with inf gradients by design
                    return
                guard.check_gradients(model, state.global_step + 1)

            def on_log(self, args, state, control, logs=None, **kwargs):
                for k in ("loss", "grad_norm"):
                    v = (logs or {}).get(k)
                    if isinstance(v, float) and not math.isfinite(v):
                        raise StageError(f"{guard.stage}: step {state.global_step}: {k} is {v}; stopping (check the "
                                         "model's dtype and the learning rate)")

        self.stage, self.callback = stage, Callback()

    def check_dtype(self, model) -> None:
        """Trainable weights are float32 whatever the precision (bf16/fp16 are autocast over float32 weights)."""
        import torch

        low = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()
                      if p.requires_grad and p.dtype != torch.float32})
        if low:
            raise StageError(f"{self.stage}: trainable weights in {', '.join(low)}; stopping before step 1 (AdamW's "
                             "updates underflow there: load the model in float32)")

    def check_gradients(self, model, step: int) -> None:
        import torch

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:  # DeepSpeed / FSDP keep gradients elsewhere: the logged loss is still checked
            return
        norm = torch.nn.utils.get_total_norm(grads)
        if not torch.isfinite(norm):
            first = next(n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all())
            dtype = next(model.parameters()).dtype
            raise StageError(f"{self.stage}: step {step}: non-finite gradient ({float(norm)}) in {first}; stopping "
                             f"(weights are {str(dtype).replace('torch.', '')}; check the precision and learning rate)")


class ProgressLines:
    """In logs (no terminal), a plain line per logging step: step, share done, loss, speed, ETA."""

    def __init__(self, stage: str):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                self.start, self.start_step = time.perf_counter(), state.global_step

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not dist.is_main() or not state.max_steps:
                    return
                done = state.global_step - self.start_step
                rate = done / max(time.perf_counter() - self.start, 1e-9)
                left = (state.max_steps - state.global_step) / rate if rate else 0.0
                shown = {k: v for k, v in (logs or {}).items() if k in ("loss", "eval_loss", "rewards/margins",
                                                                         "eval_rewards/accuracies")}
                values = " ".join(f"{k} {v:.4g}" for k, v in shown.items() if isinstance(v, (int, float)))
                print(f"{stage}: step {state.global_step}/{state.max_steps} "
                      f"({100 * state.global_step / state.max_steps:.1f}%) {values} | {rate:.2f} steps/s | "
                      f"ETA {duration(left)}", flush=True)

        self.callback = Callback()


def probe_writable(folder: Path) -> None:
    """Fail before training, not after it, when the output folder cannot be written (a real write: root passes
    permission checks that a read-only mount still refuses)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise StageError(f"{folder}: cannot write the trained model there ({exc.strerror}); checked before "
                         "training") from None


class TrainingRun:
    """Checkpoint folder, resume decision, callbacks (DVCLive curves, guards, progress) and atomic save for one
    training stage.

    Checkpoints live in `checkpoints/<stage>/` (outside DVC's outs, which DVC deletes before a run), tagged with
    a fingerprint of the params and inputs: a re-run after an interruption resumes only when nothing changed, and
    only from a complete checkpoint (stages/core/checkpoints.py).
    """

    def __init__(self, stage: str, out_dir: str | Path, live_dir: str | Path, fingerprint_parts: tuple):
        self.stage = stage
        self.out_dir = Path(out_dir)
        self.live_dir = Path(live_dir)
        self.ckpt_dir = CHECKPOINTS / stage
        self.fp = fingerprint(*fingerprint_parts)
        self.started = time.perf_counter()
        stamp = self.ckpt_dir / "fingerprint.txt"
        if dist.is_main():
            probe_writable(self.out_dir.parent)
            if self.ckpt_dir.exists() and (not stamp.exists() or stamp.read_text().strip() != self.fp):
                shutil.rmtree(self.ckpt_dir)  # stale checkpoints of other params: start over
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_text(stamp, self.fp)
        dist.barrier()

    def resume_from(self) -> str | None:
        """The newest complete checkpoint (partial ones, from a kill during a save, are set aside), or None."""
        if dist.is_main():
            last_complete(self.ckpt_dir, self.stage)
        dist.barrier()
        last = last_complete(self.ckpt_dir, self.stage)  # every process agrees once the main one has sorted them
        if last:
            print(f"{self.stage}: resuming from {last}")
        return str(last) if last else None

    def callbacks(self, resume: bool) -> list:
        """Non-finite guard (every process); DVCLive curves and progress lines from the main process only."""
        out = [FiniteGuard(self.stage).callback]
        if dist.is_main():
            out.append(self.live_callback(resume))
            if not interactive():
                out.append(ProgressLines(self.stage).callback)
        return out

    def attach(self, trainer) -> None:
        """Plain progress lines replace the Trainer's printing of raw log dicts when there is no terminal."""
        from transformers.trainer_callback import PrinterCallback

        if not interactive():
            trainer.remove_callback(PrinterCallback)

    def live_callback(self, resume: bool):
        from dvclive import Live
        from transformers.integrations import DVCLiveCallback

        class Curves(DVCLiveCallback):
            """DVCLive's callback without wall-clock figures (runtime, samples or steps per second): the curves are
            then the same bytes on every run; timings go to logs/."""

            def on_log(self, args, state, control, model=None, logs=None, **kwargs):
                logs = {k: v for k, v in (logs or {}).items() if not k.endswith(WALL_CLOCK)}
                super().on_log(args, state, control, model=model, logs=logs, **kwargs)

        # dvcyaml=False: never rewrite the root dvc.yaml; the plots are declared there by hand.
        live = Live(str(self.live_dir), resume=resume, dvcyaml=False, save_dvc_exp=False, report=None)
        return Curves(live=live)

    def save(self, write_fn, metrics: dict, record: dict | None = None, timing: dict | None = None) -> None:
        """write_fn(tmp_dir) writes the model; with its run record (`run.json`: sources, revisions, versions; the
        same bytes on every run) it is moved into place only when complete. Then the stage's metrics (numbers a
        change of code, data or params can move) are written, timings go to logs/ (neither DVC nor git tracks them)
        and the checkpoints are removed. Only the main process writes; the others wait for it."""
        dist.barrier()
        if not dist.is_main():
            return
        tmp = fresh_tmp_dir(self.out_dir)
        try:
            write_fn(tmp)
        except Exception as exc:  # disk full (SafetensorError, OSError), file-size limit, ...: nothing half-written
            shutil.rmtree(tmp, ignore_errors=True)
            raise StageError(f"{self.out_dir}: cannot save the model ({type(exc).__name__}: {first_line(exc)}); "
                             "nothing was left half-written") from None
        for leftover in ("optimizer.pt", "scheduler.pt", "training_args.bin", "rng_state.pth"):
            (tmp / leftover).unlink(missing_ok=True)
        write_json(tmp / "run.json", run_info(stage=self.stage, processes=dist.world_size(), **(record or {})))
        replace_dir(tmp, self.out_dir)
        write_json(self.live_dir.parent / "train.json", metrics)
        log_timing(self.stage, {"wall_time_s": round(time.perf_counter() - self.started, 1), **(timing or {})})
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)


def throughput(trainer, out) -> dict:
    """Tokens and steps per second of `trainer.train()`, from what TRL logs (`num_tokens`), for run records."""
    runtime = max(out.metrics.get("train_runtime", 0.0), 1e-9)
    tokens = max((h.get("num_tokens", 0) for h in trainer.state.log_history), default=0)
    return {"train_runtime_s": round(runtime, 1), "trained_tokens": int(tokens),
            "tokens_per_s": round(tokens / runtime, 1), "steps_per_s": round(out.metrics.get("train_steps_per_second",
                                                                                            0.0), 3)}


def effective_batch_size(args) -> int:
    """Sequences per optimizer step: per-device batch x gradient accumulation x processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


TRAIN = Path("data/clean/train.jsonl")
HELDOUT = Path("data/clean/heldout.jsonl")
TRAINING_METRICS = Path("metrics/training")  # <model>/train.json and <model>/live/ (DVCLive curves), per model


@dataclasses.dataclass
class Trained:
    """What a method hands back to the outline: how to write the model into a folder, the stage's metrics (numbers a
    change can move: metrics/training/<name>/train.json), its run record (models/<name>/run.json) and timings (logs/)."""
    write: typing.Callable[[Path], None]
    metrics: dict
    record: dict | None = None
    timing: dict | None = None


@dataclasses.dataclass
class Job:
    """One model of the table being trained by its method: everything the method's `train(job)` reads."""
    name: str  # the model: models/<name>, metrics/<name>
    module: Any  # the method's module (stages/methods/<method>.py)
    params: Any  # the whole params.yaml (stages/core/params.py)
    own: Any  # the method's project keys (its module's Params)
    fields: dict  # the section's TRL config fields
    key: str  # where the section is in params.yaml (sft, dpo, base.pretrain)
    rows: list  # training pairs (data/clean/train.jsonl, cut to max_train_pairs when the method has it)
    run: "TrainingRun"

    @property
    def start(self) -> Path | None:
        """The folder of the model this one trains from (None for the base model)."""
        start = self.params.start_model(self.name)
        return Path("models") / start if start else None

    def config(self):
        """The method's TRL config: the section's fields, the pipeline's (checkpoints in the run's folder, seed,
        precision, speed) and the ones the method sets from its own keys."""
        return build_config(self.module, self.own, self.fields, self.key, self.params, self.run.ckpt_dir)

    def heldout(self, pairs: int) -> list[dict]:
        """The first `pairs` held-out preference pairs (test split, never trained on), for evaluation curves."""
        from .io import read_jsonl

        rows = read_jsonl(HELDOUT)[:pairs]
        if not rows:
            raise StageError(f"{HELDOUT}: no preference pairs")
        return rows

    def load_start(self):
        """(tokenizer, model) of the start model, with the attention kernel params.speed names."""
        tok = load_tokenizer(str(self.start))
        return tok, load_causal_lm(str(self.start), attn_implementation=self.params.speed.attn_implementation)


def parse_method(module, params, method: str):
    """(project keys, TRL fields, params key) of a method's section, the project keys validated."""
    key = "base.pretrain" if method == "base" else method
    own, fields = split_section(module.Params, params.section(method), key)
    return own, fields, key


def build_config(module, own, fields: dict, key: str, params, output_dir: Path, processes: bool = True):
    """A method's TRL config from its parsed section (checkpoints in `output_dir`). `processes=False` leaves out the
    division of accumulation among processes (checked when that method's own stage runs)."""
    d = params.distributed if processes else None
    return trl_config(module.config_class(), fields, {**pipeline_fields(output_dir, params.seed, params.distributed),
                                                      **speed_fields(params.speed), **module.managed(own)},
                      key, module.OWNED, d, params.speed)


def method_config(module, params, method: str, output_dir: Path, processes: bool = True):
    """The TRL config a method trains with (checkpoints in `output_dir`), from its params section."""
    return build_config(module, *parse_method(module, params, method), params, output_dir, processes)


def model_writer(saver, tok):
    """write(folder) for Trained: the model (a trainer's save_model, or a model's safetensors save_pretrained, float32)
    and its tokenizer."""
    def write(folder: Path):
        if hasattr(saver, "save_model"):
            saver.save_model(str(folder))
        else:
            saver.save_pretrained(folder)
        tok.save_pretrained(folder)

    return write


def check_methods(params, load) -> None:
    """Every method the table uses: its section parses and its TRL config builds (no model is loaded), so a typo in
    dpo's section stops the first training stage, not the one after hours of SFT."""
    for method in dict.fromkeys(e.method for e in params.models.values()):
        with tempfile.TemporaryDirectory() as tmp:  # (this process's count divides only its own method's accumulation)
            method_config(load(method), params, method, Path(tmp), processes=False)


def run_method(name: str, params, load) -> None:
    """The outline every model's training follows: its method's section checked, training pairs read, the run's
    checkpoints set up (resume after a kill), the method trains (guards and curves attached by the run), then the
    model is saved atomically with its run record and metrics."""
    from .determinism import seed_and_pin
    from .io import read_jsonl

    method = params.models[name].method
    module = load(method)
    check_methods(params, load)
    own, fields, key = parse_method(module, params, method)
    seed_and_pin(params.seed)
    rows = read_jsonl(TRAIN)
    limit = getattr(own, "max_train_pairs", None)
    rows = rows[:limit] if limit else rows
    if not rows:
        raise StageError(f"{TRAIN}: no training pairs (is 'train' in download.splits?)")
    start = params.start_model(name)
    start_record = (Path("models") / start / "run.json").read_text() if start else ""
    run = TrainingRun(name, Path("models") / name, TRAINING_METRICS / name / "live",
                      (params.section(method), params.seed, len(rows), start_record))
    job = Job(name=name, module=module, params=params, own=own, fields=fields, key=key, rows=rows, run=run)
    trained = module.train(job)
    run.save(trained.write, trained.metrics, record=trained.record, timing=trained.timing)
    print(f"{name}: saved {run.out_dir}")
