"""How a model is trained: a training method is a class (`Method`, one per module of stages/methods/) whose
`run` is the outline every model follows: its section parsed into the project's keys and a checked TRL config (built
once), training pairs read, the run's checkpoints set up (resume after a kill), the method's `train` (guards and
curves attached by the run), then the model saved atomically with its run record and metrics.

The TRL field rules are stages/core/trl_fields.py; the callbacks (guard, progress, curves) stages/core/callbacks.py;
complete checkpoints stages/core/checkpoints.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
import typing
from pathlib import Path
from typing import Any, ClassVar

from . import distributed as dist
from . import params as P
from . import reference as reference_store
from .callbacks import CadenceCheck, FiniteGuard, ProgressLines, curves
from .checkpoints import last_complete
from .io import StageError, first_line, fresh_tmp_dir, replace_dir, write_json, write_text
from .modeling import load_causal_lm, load_tokenizer
from .progress import interactive
from .runinfo import log_timing, run_info
from .trl_fields import pipeline_fields, speed_fields, split_section, trl_config

CHECKPOINTS = Path("checkpoints")  # outside every DVC out, so an interrupted stage can resume (gitignored)
TRAIN = Path("data/clean/train.jsonl")
HELDOUT = Path("data/clean/heldout.jsonl")
TRAINING_METRICS = Path("metrics/training")  # <model>/train.json and <model>/live/ (DVCLive curves), per model


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe_writable(folder: Path) -> None:
    """Fail before training, not after it, when the output folder cannot be written (a real write: root passes
    permission checks that a read-only mount still refuses)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise StageError(
            f"{folder}: cannot write the trained model there ({exc.strerror}); checked before training"
        ) from None


class TrainingRun:
    """Checkpoint folder, resume decision, callbacks (DVCLive curves, guards, progress) and atomic save for one
    training stage.

    Checkpoints live in `checkpoints/<stage>/` (outside DVC's outs, which DVC deletes before a run), tagged with
    a fingerprint of the params and inputs: a re-run after an interruption resumes only when nothing changed, and
    only from a complete checkpoint (stages/core/checkpoints.py).
    """

    def __init__(
        self,
        stage: str,
        out_dir: str | Path,
        live_dir: str | Path,
        fingerprint_parts: tuple,
        cadence: tuple[str, int] | None = None,
    ):
        self.stage = stage
        self.cadence = cadence  # (the method's params section, speed.max_saves): CadenceCheck
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
        self.guard = FiniteGuard(self.stage)
        out = [self.guard.callback]
        if self.cadence:
            out.append(CadenceCheck(self.stage, *self.cadence).callback)
        if dist.is_main():
            out.append(curves(self.live_dir, resume))
            if not interactive():
                out.append(ProgressLines(self.stage).callback)
        return out

    def attach(self, trainer) -> None:
        """The guard reads the Trainer's own gradient norm (stages/core/callbacks.py); plain progress lines replace the
        Trainer's printing of raw log dicts when there is no terminal."""
        from transformers.trainer_callback import PrinterCallback

        guard = getattr(self, "guard", None)
        if guard is not None:
            guard.attach(trainer)
        if not interactive():
            trainer.remove_callback(PrinterCallback)

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
            raise StageError(
                f"{self.out_dir}: cannot save the model ({type(exc).__name__}: {first_line(exc)}); "
                "nothing was left half-written"
            ) from None
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
    return {
        "train_runtime_s": round(runtime, 1),
        "trained_tokens": int(tokens),
        "tokens_per_s": round(tokens / runtime, 1),
        "steps_per_s": round(out.metrics.get("train_steps_per_second", 0.0), 3),
    }


def effective_batch_size(args) -> int:
    """Sequences per optimizer step: per-device batch x gradient accumulation x processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


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


@dataclasses.dataclass
class Trained:
    """What a method's `train` hands back: how to write the model into a folder, the stage's metrics (numbers a change
    can move: metrics/training/<name>/train.json), its run record (models/<name>/run.json) and timings (logs/)."""

    write: typing.Callable[[Path], None]
    metrics: dict
    record: dict | None = None
    timing: dict | None = None


@dataclasses.dataclass
class Job:
    """One model of the table being trained: everything a method's `train(job)` reads."""

    name: str  # the model: models/<name>, metrics/training/<name>
    params: P.Params  # the whole params.yaml
    own: P.Section  # the method's own keys (its Params), validated
    config: Any  # the method's TRL config (SFTConfig, DPOConfig, ...), checked and built once
    rows: list  # training pairs (data/clean/train.jsonl, cut to max_train_pairs when the method has it)
    run: TrainingRun | None  # None: no training (the reference stage)

    @property
    def start(self) -> Path | None:
        """The folder of the model this one trains from (None for the base model)."""
        start = self.params.start_model(self.name)
        return Path("models") / start if start else None

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


class Method:
    """A training method. A subclass (one per module of stages/methods/) declares what it is, checked when its module
    is loaded, and implements `train`; the outline around it is `run`, here.

    Declared members:
    - `name`: the method's name in the table of models and its params section (`base` reads `base.pretrain`);
    - `description`, `tags`: its model card's words ("DPO (LoRA)") and hub tags; dvc.yaml's artifacts use them too;
    - `curves`: the DVCLive metrics it logs beyond loss and learning rate (its plots in dvc.yaml);
    - `Params`: its own keys (pydantic: types, ranges, unknown keys refused); every other key of its section is a field
      of its TRL config class, checked against that class (stages/core/trl_fields.py);
    - `owned`: TRL fields it sets from its own keys (a section may not set them directly);
    - `config_class()`: the TRL config class (SFTConfig, DPOConfig, ...); `managed(own)`: the fields it sets;
    - `check(own, config)`, optionally: rules between its own keys and its TRL fields.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    tags: ClassVar[tuple[str, ...]]
    curves: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[P.Section]]
    owned: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        where = f"{cls.__module__}.{cls.__name__}"
        for member, kind in (("name", str), ("description", str), ("tags", tuple), ("curves", tuple), ("owned", dict)):
            if not isinstance(getattr(cls, member, None), kind):
                raise TypeError(f"{where}: the method declares no {member} ({kind.__name__})")
        if not cls.description or not all(isinstance(t, str) for t in (*cls.tags, *cls.curves)):
            raise TypeError(f"{where}: description must be words, tags and curves strings")
        if not (isinstance(getattr(cls, "Params", None), type) and issubclass(cls.Params, P.Section)):
            raise TypeError(f"{where}: Params must be a stages.core.params.Section (the method's own keys)")
        unknown = sorted(set(cls.owned.values()) - set(cls.Params.model_fields))
        if unknown:
            raise TypeError(f"{where}: owned names keys its Params lacks: {', '.join(unknown)}")

    @property
    def key(self) -> str:
        """Where its section is in params.yaml."""
        return "base.pretrain" if self.name == "base" else self.name

    @staticmethod
    def config_class() -> type:
        raise NotImplementedError

    def managed(self, own) -> dict:
        """TRL fields the method sets from its own keys (and fixed choices of its trainer)."""
        return {}

    def train(self, job: Job) -> Trained:
        raise NotImplementedError

    # the outline, shared by every method

    def parse(self, params: P.Params):
        """(own keys validated, TRL fields as written) of the method's section."""
        return split_section(self.Params, params.section(self.name), self.key)

    def config(self, params: P.Params, output_dir: Path, processes: bool = True):
        """The TRL config it trains with (checkpoints in `output_dir`). `processes=False` leaves out the division of
        accumulation among processes (checked when the method's own stage runs)."""
        own, fields = self.parse(params)
        d = params.distributed if processes else None
        managed = {
            **pipeline_fields(output_dir, params.seed, params.distributed),
            **speed_fields(params.speed),
            **self.managed(own),
        }
        config = trl_config(self.config_class(), fields, managed, self.key, self.owned, d, params.speed)
        self.check(own, config)
        return config

    def check(self, own, config) -> None:
        """Rules between the method's own keys and its TRL fields (a StageError naming the key); none by default."""

    def reference(self, job: Job) -> tuple[dict, dict] | None:
        """(identity, {split: (chosen, rejected, token hash)}): a frozen reference model's log-probs of the training
        and held-out pairs, computed once by the `reference@<model>` stage and read by `train` (stages/core/
        reference.py); None when the method trains against no stored reference (the default)."""
        return None

    @classmethod
    def stores_reference(cls) -> bool:
        """Whether the method can train against a stored reference (it has its own `reference`)."""
        return cls.reference is not Method.reference

    @staticmethod
    def training_rows(own) -> list[dict]:
        """The training pairs (data/clean/train.jsonl), cut to the section's max_train_pairs when it has one."""
        from .io import read_jsonl

        rows = read_jsonl(TRAIN)
        limit = getattr(own, "max_train_pairs", None)
        rows = rows[:limit] if limit else rows
        if not rows:
            raise StageError(f"{TRAIN}: no training pairs (is 'train' in download.splits?)")
        return rows

    def run(self, model: str, params: P.Params) -> None:
        """Train `model` of the table (every method of the table was checked first by the `check` stage)."""
        from .determinism import seed_and_pin

        own, _ = self.parse(params)
        config = self.config(params, CHECKPOINTS / model)  # the run's checkpoints (TrainingRun: the same folder)
        seed_and_pin(params.seed)
        rows = self.training_rows(own)
        start = params.start_model(model)
        start_record = (Path("models") / start / "run.json").read_text() if start else ""
        run = TrainingRun(
            model,
            Path("models") / model,
            TRAINING_METRICS / model / "live",
            # a stored reference (stages/core/reference.py) that changed makes the checkpoints stale too
            (params.section(self.name), params.seed, len(rows), start_record, reference_store.stamp(model)),
            cadence=(self.key, params.speed.max_saves),
        )
        trained = self.train(Job(name=model, params=params, own=own, config=config, rows=rows, run=run))
        run.save(trained.write, trained.metrics, record=trained.record, timing=trained.timing)
        print(f"{model}: saved {run.out_dir}")


def check_configs(methods: list[Method], params: P.Params) -> None:
    """Each method's section parses and its TRL config builds (no model is loaded); the division of accumulation among
    processes is left to each method's own stage."""
    for method in methods:
        with tempfile.TemporaryDirectory() as tmp:
            method.config(params, Path(tmp), processes=False)
