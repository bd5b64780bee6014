"""A training method's params section as its TRL config: which fields a section may set, their types checked
against TRL's own config class, and the fields the pipeline sets itself (checkpoints, seed, logging, precision,
speed).

A method's params section is its TRL config (as alignment-handbook's recipes are), less the project's own keys the
method declares (its `Params`); each field is checked against TRL's class (unknown, mistyped, set by the pipeline or
by another param, or refused for safety) before any model loads, in one line naming it.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path

from . import distributed as dist
from .domains import check_fields
from .io import StageError, first_line
from .progress import interactive

# TRL/Trainer fields set from the top of params.yaml, never in a method's section.
SET_BY_TOP_LEVEL = {
    "seed": "seed",
    "data_seed": "seed",
    "bf16": "distributed.mixed_precision",
    "fp16": "distributed.mixed_precision",
}
OWNED = {
    "output_dir",
    "report_to",
    "save_strategy",
    "save_total_limit",
    "save_only_model",
    "disable_tqdm",
    "use_cpu",
    "eval_strategy",
    "push_to_hub",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "dataset_num_proc",
    "dataloader_pin_memory",
}
SET_BY_SPEED = {
    "tf32": "speed.tf32",
    "torch_compile": "speed.torch_compile",
    "dataloader_num_workers": "speed.dataloader_workers",
}
NEVER = {
    "trust_remote_code",
    "model_init_kwargs",
}  # no code from a model repository runs here (docs/reproducibility.md: Safety)
# Fields that make TRL or transformers fetch from (or push to) the hub with no pinned commit or digest: a hub id as
# chat_template_path would replace the tokenizer and resize the model. A local chat template file is allowed.
HUB = {
    "chat_template_path",
    "hub_model_id",
    "hub_token",
    "hub_strategy",
    "hub_private_repo",
    "hub_always_push",
    "hub_revision",
}
# The study's Trainer defaults, written out (a default of a newer library version must not change a run); a section
# may set them.
DEFAULTS = {
    "optim": "adamw_torch",
    "max_grad_norm": 1.0,
    "gradient_checkpointing": False,
    "logging_nan_inf_filter": False,
}  # the filter hides a NaN loss behind the running mean


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
            raise StageError(
                f"params.yaml: {key}.{name}: set it with {SET_BY_TOP_LEVEL.get(name) or SET_BY_SPEED[name]}"
            )
        if owned and name in owned:
            raise StageError(f"params.yaml: {key}.{name}: set it with {key}.{owned[name]}")
        if name in OWNED:
            raise StageError(f"params.yaml: {key}.{name}: set by the pipeline itself (checkpoints, logging, data)")
        if name in NEVER:
            raise StageError(
                f"params.yaml: {key}.{name}: refused (models load without remote code: docs/reproducibility.md, Safety)"
            )
        if name in HUB and not (name == "chat_template_path" and Path(str(value)).is_file()):
            raise StageError(
                f"params.yaml: {key}.{name}: refused (it makes TRL fetch from or push to the hub outside "
                "the pinned downloads; a chat template must be a local file: docs/reproducibility.md, Safety)"
            )
        hint = hints.get(name)
        if hint is not None and not type_matches(value, hint):
            raise StageError(
                f"params.yaml: {key}.{name}: expected {type_name(hint)}, got {type(value).__name__} {value!r}"
            )
        values[name] = float(value) if hint is float and isinstance(value, int) else value
    check_fields(cls, {n: fields[n] for n in values}, key)  # what each value may mean, as written
    values |= batch_for_speed(values, speed, key)
    batch = values.get("per_device_train_batch_size", 8)
    values["gradient_accumulation_steps"] = dist.accumulation_steps(values.get("gradient_accumulation_steps", 1), d)
    try:
        return cls(
            **{**DEFAULTS, "per_device_eval_batch_size": batch, **managed, **values}
        )  # refused fields never reach values
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
        raise StageError(
            f"params.yaml: speed.per_device_batch: {speed.per_device_batch} does not divide {key}'s "
            f"effective batch ({batch} x {accumulation} = {effective})"
        )
    return {
        "per_device_train_batch_size": speed.per_device_batch,
        "gradient_accumulation_steps": effective // speed.per_device_batch,
    }


def speed_fields(speed) -> dict:
    """TrainingArguments fields of params.speed: TF32 only where a CUDA GPU runs the matmuls."""
    import torch

    if speed is None:
        return {}
    return {
        "tf32": True if speed.tf32 and torch.cuda.is_available() else None,
        "torch_compile": speed.torch_compile,
        "dataloader_num_workers": speed.dataloader_workers,
    }


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
