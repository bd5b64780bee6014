"""What a training value may mean, beyond its type: the ranges and choices of the TRL and transformers fields a method's
section sets, in one place. TRL's config classes take a negative learning rate, zero epochs or a beta of 0 without a
word, and check a loss type only at the first loss, hours into a run; these rules refuse such values in one line
naming the key, the value and what is allowed, before anything trains (stages/check.py runs them first).

Choices come from TRL's and transformers' own declarations where they have them: a field's `choices` metadata, the
values its help text documents (`'sigmoid'`, `'hinge'`, ...), or its enum type (SchedulerType, OptimizerNames). The
project's own keys are bounded by their pydantic classes (stages/core/params.py, each method's Params).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import typing

from .io import StageError


def positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def non_negative(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def at_least_one(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def steps_or_share(v) -> bool:
    """Logging, saving and evaluation intervals: a step count >= 1, or a share of the run in (0, 1)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return (v >= 1 and float(v).is_integer()) or 0 < v < 1  # (transformers reads them as floats: 10 is 10.0)


def optional(rule):
    return lambda v: v is None or rule(v)


# field -> (rule, what is allowed), for every method's section; a field a method's TRL class lacks is never looked up
RULES: dict[str, tuple[typing.Callable, str]] = {
    "learning_rate": (positive, "a number > 0"),
    "num_train_epochs": (non_negative, "a number >= 0 (and > 0 unless max_steps > 0)"),
    "max_steps": (lambda v: v == -1 or at_least_one(v), "-1 (train for num_train_epochs) or a step count >= 1"),
    "per_device_train_batch_size": (at_least_one, "an integer >= 1"),
    "per_device_eval_batch_size": (at_least_one, "an integer >= 1"),
    "gradient_accumulation_steps": (at_least_one, "an integer >= 1"),
    "beta": (positive, "a number > 0 (0 gives no preference gradient; < 0 prefers the rejected replies)"),
    "weight_decay": (non_negative, "a number >= 0"),
    "max_grad_norm": (non_negative, "a number >= 0 (0: no clipping)"),
    "warmup_steps": (non_negative, "a share of the run in [0, 1) or a step count >= 0"),
    "adam_beta1": (lambda v: non_negative(v) and v < 1, "a number in [0, 1)"),
    "adam_beta2": (lambda v: non_negative(v) and v < 1, "a number in [0, 1)"),
    "adam_epsilon": (positive, "a number > 0"),
    "logging_steps": (steps_or_share, "a step count >= 1 or a share of the run in (0, 1)"),
    "save_steps": (steps_or_share, "a step count >= 1 or a share of the run in (0, 1)"),
    "eval_steps": (optional(steps_or_share), "a step count >= 1 or a share of the run in (0, 1)"),
    "max_length": (optional(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 16), "an integer >= 16"),
}
# the `'value'`s a help text lists after "Possible values" (DPOConfig.loss_type)
HELP_CHOICES = re.compile(r"`'([\w-]+)'`")


def documented_choices(cls, name: str) -> list[str] | None:
    """The values TRL or transformers declare for a field: its `choices` metadata, its enum type's values, or the
    `'value'`s its help text lists after "Possible values"; None when it declares none."""
    field = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if field is None:
        return None
    if field.metadata.get("choices"):
        return [str(c) for c in field.metadata["choices"]]
    hint = typing.get_type_hints(cls).get(name)
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [str(e.value) for e in arg]
    help_text = field.metadata.get("help", "")
    if "Possible values" in help_text:
        return HELP_CHOICES.findall(help_text.split("Possible values", 1)[1].split(". ", 1)[0]) or None
    return None


def refuse(key: str, name: str, value, allowed: str) -> None:
    raise StageError(f"params.yaml: {key}.{name}: {value!r} is out of range (allowed: {allowed})")


def check_fields(cls, values: dict, key: str) -> None:
    """Every TRL field `values` sets for the section `key` (a method's, read by TRL's `cls`), checked for meaning."""
    fields = {f.name for f in dataclasses.fields(cls)}
    for name, value in values.items():
        if name in RULES and name in fields:
            rule, allowed = RULES[name]
            if not rule(value):
                refuse(key, name, value, allowed)
        if isinstance(value, (str, list)) and name in fields:
            choices = documented_choices(cls, name)
            given = value if isinstance(value, list) else [value]
            wrong = [v for v in given if choices and v not in choices]
            if wrong:
                refuse(key, name, wrong[0] if len(given) == 1 else value, f"one of {', '.join(choices)}")
    epochs, steps = values.get("num_train_epochs"), values.get("max_steps", -1)
    if epochs is not None and epochs <= 0 and not (isinstance(steps, int) and steps > 0):
        refuse(key, "num_train_epochs", epochs, "a number > 0 unless max_steps > 0 (zero epochs train nothing)")
    warmup = values.get("warmup_steps")
    if isinstance(warmup, float) and warmup >= 1 and not warmup.is_integer():
        refuse(key, "warmup_steps", warmup, "a share of the run in [0, 1) or a whole number of steps")
    if isinstance(steps, int) and steps > 0 and isinstance(warmup, (int, float)) and warmup >= 1 and warmup > steps:
        refuse(key, "warmup_steps", warmup, f"at most the run's max_steps ({steps})")
