"""Loading models and tokenizers safely, building TRL configs from params, and the training-stage plumbing
(resume from checkpoints, DVCLive curves, atomic saving) that `base`, `sft` and `dpo` share.

Safety: `trust_remote_code` is never set; weights load from safetensors. A pickle checkpoint is refused, with one
exception the user states in params: a `pytorch_model.bin` whose sha256 equals a digest given there (`base.pickle_sha256`,
`score.judges[].pickle_sha256`), for hub models that were never published as safetensors (facebook/opt-350m). Even
then it is read with torch's weights-only unpickler, which builds tensors and never runs code from the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from . import distributed as dist
from .io import StageError, first_line, fresh_tmp_dir, is_local, replace_dir, sha256_file, write_json
from .runinfo import run_info

CHECKPOINTS = Path("checkpoints")  # outside every DVC out, so an interrupted stage can resume (gitignored)


PICKLE_WEIGHTS = "pytorch_model.bin"


def check_model_dir(path: str | Path, pickle_sha256: str | None = None) -> bool:
    """A clear one-line error for a missing, incomplete or pickle-only model folder. True if it holds safetensors,
    False if only the pickle that `pickle_sha256` may vouch for (load_pretrained checks the digest)."""
    path = Path(path)
    if not path.is_dir():
        raise StageError(f"{path}: model folder not found (run the stage that makes it: dvc repro)")
    if not (path / "config.json").exists():
        raise StageError(f"{path}: not a model folder (no config.json)")
    if any(path.glob("*.safetensors")):
        return True
    if pickle_sha256 and (path / PICKLE_WEIGHTS).is_file():
        return False
    pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
    if pickles:
        raise StageError(f"{path}: only pickle weights ({', '.join(sorted(pickles))}); refusing to load them, "
                         "convert to safetensors (or give the file's sha256 as pickle_sha256 in params)")
    raise StageError(f"{path}: no model weights (*.safetensors)")


def _no_safetensors(exc: Exception) -> bool:
    return "model.safetensors" in str(exc) and "does not appear to have" in str(exc)


def _trusted_pickle(path: str, revision: str | None, pickle_sha256: str) -> dict:
    """Fetch `pytorch_model.bin` (hub) or find it (folder) and check its sha256 against the digest in params."""
    if is_local(path):
        file = Path(path) / PICKLE_WEIGHTS
    else:
        from huggingface_hub import hf_hub_download

        try:
            file = Path(hf_hub_download(path, PICKLE_WEIGHTS, revision=revision))
        except Exception as exc:  # offline, no such file, no such revision
            raise StageError(f"{path}: no safetensors weights, and cannot fetch {PICKLE_WEIGHTS} "
                             f"({first_line(exc)})") from None
    if not file.is_file():
        raise StageError(f"{file}: not found (a sharded pickle checkpoint is not supported; convert to safetensors)")
    digest = sha256_file(file)
    if digest != pickle_sha256:
        raise StageError(f"{file}: sha256 {digest} is not the trusted {pickle_sha256} given in params; "
                         "refusing to unpickle it")
    return {"file": PICKLE_WEIGHTS, "sha256": digest}


def load_pretrained(cls, path: str, revision: str | None = None, pickle_sha256: str | None = None,
                    what: str = "model", **kwargs):
    """`cls.from_pretrained` the safe way: safetensors, or a pickle checkpoint only when its digest is the trusted one.

    Returns (model, weights): `weights` says what was read (safetensors, or the pickle file and its sha256).
    `what` names the model in errors ("<path>: cannot load the <what> (...)")."""
    # transformers would otherwise, for a hub model without safetensors, load weights from a conversion bot's
    # unreviewed pull request (refs/pr/N) or ask the bot to open one: neither belongs in a pinned, reproducible run
    os.environ["DISABLE_SAFETENSORS_CONVERSION"] = "1"
    common = dict(revision=revision, trust_remote_code=False, **kwargs)
    # a hub id may lack safetensors too: then from_pretrained says so and the trusted pickle is tried
    has_safetensors = check_model_dir(path, pickle_sha256) if is_local(path) else True
    if has_safetensors:
        try:
            return cls.from_pretrained(path, use_safetensors=True, **common), {"format": "safetensors"}
        except Exception as exc:  # OSError, ValueError, SafetensorError (corrupt file), offline hub, ...
            if not (pickle_sha256 and _no_safetensors(exc)):
                raise StageError(f"{path}: cannot load the {what} ({first_line(exc)})") from None
    weights = {"format": "pickle", **_trusted_pickle(path, revision, pickle_sha256)}
    try:  # transformers reads .bin files with torch.load(weights_only=True): tensors only, no code
        return cls.from_pretrained(path, use_safetensors=False, weights_only=True, **common), weights
    except Exception as exc:
        raise StageError(f"{path}: cannot load the {what} ({first_line(exc)})") from None


def load_tokenizer(path: str, revision: str | None = None, padding_side: str = "right"):
    from transformers import AutoTokenizer

    if is_local(path) and not Path(path).is_dir():
        raise StageError(f"{path}: tokenizer folder not found")
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=False)
    except OSError as exc:
        raise StageError(f"{path}: cannot load the tokenizer ({first_line(exc)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(path: str, revision: str | None = None, dtype=None):
    """A causal LM from safetensors only (every model the pipeline writes is saved so)."""
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, path, revision, dtype=dtype)[0]


def model_revision(model) -> str | None:
    """The hub commit a model was loaded from (None for a local folder)."""
    return getattr(model.config, "_commit_hash", None)


def device_flags() -> dict:
    """Per-device settings TRL 1.x would otherwise default wrongly on a CPU (bf16=True fails there)."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "fp16": False,
        "use_cpu": not cuda,
        "dataloader_pin_memory": cuda,
    }


def training_kwargs(section, output_dir: Path, seed: int, d=None) -> dict:
    """TrainingArguments fields shared by SFT/DPO/pre-training, from a params section (floats cast).

    `d` (params.distributed) keeps per-device batch x accumulation x processes at what params say.
    """
    accum = dist.accumulation_steps(section, d) if d is not None else int(section.gradient_accumulation_steps)
    return {
        "output_dir": str(output_dir),
        "learning_rate": float(section.learning_rate),
        "num_train_epochs": float(section.num_train_epochs),
        "max_steps": int(section.max_steps),
        "per_device_train_batch_size": int(section.per_device_train_batch_size),
        "per_device_eval_batch_size": int(section.per_device_train_batch_size),
        "gradient_accumulation_steps": accum,
        "lr_scheduler_type": section.lr_scheduler_type,
        "warmup_steps": float(section.warmup_ratio),  # transformers 5: a float < 1 is a ratio of the steps
        "weight_decay": float(section.weight_decay),
        "optim": "adamw_torch",
        "max_grad_norm": 1.0,
        "logging_steps": int(section.logging_steps),
        "save_strategy": "steps",
        "save_steps": int(section.save_steps),
        "save_total_limit": 1,
        "save_only_model": False,  # keep optimizer state in checkpoints so a resume is exact
        "seed": int(seed),
        "data_seed": int(seed),
        "report_to": "none",  # DVCLive is attached as a callback with dvcyaml=False
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        **device_flags(),
    }


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TrainingRun:
    """Checkpoint folder, resume decision, DVCLive logger and atomic save for one training stage.

    Checkpoints live in `checkpoints/<stage>/` (outside DVC's outs, which DVC deletes before a run), tagged with
    a fingerprint of the params and inputs: a re-run after an interruption resumes only when nothing changed.
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
            if self.ckpt_dir.exists() and (not stamp.exists() or stamp.read_text().strip() != self.fp):
                shutil.rmtree(self.ckpt_dir)  # stale checkpoints of other params: start over
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            stamp.write_text(self.fp)
        dist.barrier()

    def resume_from(self) -> str | None:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(self.ckpt_dir))
        if last:
            print(f"{self.stage}: resuming from {last}")
        return last

    def callbacks(self, resume: bool) -> list:
        """DVCLive curves, from the main process only (others would write the same files)."""
        return [self.live_callback(resume)] if dist.is_main() else []

    def live_callback(self, resume: bool):
        from dvclive import Live
        from transformers.integrations import DVCLiveCallback

        # dvcyaml=False: never rewrite the root dvc.yaml; the plots are declared there by hand.
        live = Live(str(self.live_dir), resume=resume, dvcyaml=False, save_dvc_exp=False, report=None)
        return DVCLiveCallback(live=live)

    def save(self, write_fn, metrics: dict, record: dict | None = None) -> None:
        """write_fn(tmp_dir) writes the model; it is moved into place only when complete. Then the
        stage metrics are written and the checkpoints removed (no optimizer state is left behind).
        Only the main process writes; the others wait for it."""
        dist.barrier()
        if not dist.is_main():
            return
        tmp = fresh_tmp_dir(self.out_dir)
        write_fn(tmp)
        for leftover in ("optimizer.pt", "scheduler.pt", "training_args.bin", "rng_state.pth"):
            (tmp / leftover).unlink(missing_ok=True)
        replace_dir(tmp, self.out_dir)
        metrics = {**metrics, "processes": dist.world_size(), "wall_time_s": round(time.perf_counter() - self.started, 1)}
        write_json(self.live_dir.parent / "train.json", metrics)
        write_json(self.out_dir / "run.json", run_info(stage=self.stage, **(record or {})))
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def tokens_per_s(trainer, out, epochs: float, columns: tuple[str, ...] = ("input_ids",)) -> float:
    """Training throughput: the tokens of the tokenized train set's `columns`, times the epochs, per second of
    `trainer.train()` (`out`). Overstated when max_steps stops an epoch early."""
    data = trainer.train_dataset
    n_tokens = sum(len(x) for c in columns if c in data.column_names for x in data[c])
    return round(n_tokens * epochs / max(out.metrics["train_runtime"], 1e-9), 1)


def effective_batch_size(args) -> int:
    """Sequences per optimizer step: per-device batch x gradient accumulation x processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def per_model_stage(argv: list[str] | None, description: str):
    """The shared start of the per-model stages (sample, score): the model argument, validated params, seed, threads."""
    import argparse

    from . import params as P

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("model", choices=P.MODEL_NAMES)
    name = ap.parse_args(argv).model
    params = P.load()
    P.seed_everything(params.seed)
    set_threads()
    return name, params


def set_threads() -> None:
    """On a CPU, torch uses every core; honour OMP_NUM_THREADS when a caller set it (tests that overlap)."""
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))


def fit_prompt(tok, prompt: str, responses: list[str], max_length: int, max_prompt_length: int | None = None) -> str:
    """Truncate a prompt from the left so that prompt + the longest response fit in `max_length` tokens.

    TRL 1.x has no max_prompt_length and cuts prompt+completion at the end, which can remove the response
    entirely (chosen and rejected then look identical to the trainer). The response is never cut here; at least
    one quarter of `max_length` stays for the prompt.
    """
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in responses)
    budget = max(max_length - longest - 2, max_length // 4)
    if max_prompt_length:
        budget = min(budget, max_prompt_length)
    if len(ids) <= budget:
        return prompt
    return tok.decode(ids[-budget:])
