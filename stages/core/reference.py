"""A frozen reference model's log-probs of every training and held-out pair, stored once per model of the table by the
`reference@<model>` stage (stages/reference.py) and read by its training (DPO: `dpo.precompute_ref_log_probs`).

They depend on the start model, the pairs, their token ids and the batch layout and precision of the forward pass,
never on beta or the learning rate: a beta sweep computes them once per start model and DVC's run cache serves the
rest. data/reference/<model>.safetensors holds float32 tensors `<split>.chosen` and `<split>.rejected` (split:
train, eval), row i being the dataset's row i; data/reference/<model>.json says what they were computed from
(`identity`) and each split's token-id hash. A training whose identity differs stops naming the field: a stored
reference is never used for other inputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .io import StageError, read_json, write_json

FOLDER = Path("data/reference")


@dataclass(frozen=True)
class Stored:
    """A model's stored reference as read: its description file (named in errors) and {split: (chosen, rejected,
    token hash)}."""

    file: Path
    splits: dict


def paths(model: str) -> tuple[Path, Path]:
    """(tensors, description) of a model's stored reference."""
    return FOLDER / f"{model}.safetensors", FOLDER / f"{model}.json"


def token_hash(dataset) -> str:
    """sha256 of a tokenized preference dataset's ids, row by row (what the reference's forward passes read)."""
    digest = hashlib.sha256()
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        for ids in dataset[column]:
            digest.update(json.dumps(ids, separators=(",", ":")).encode())
            digest.update(b";")
        digest.update(column.encode())
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    from .io import sha256_file

    return sha256_file(path) if path.is_file() else "none"


def stamp(model: str) -> str:
    """The sha256 of a model's stored tensors ("none" when it has none): part of its checkpoints' fingerprint."""
    return file_hash(paths(model)[0])


def write(model: str, identity: dict | None, splits: dict | None = None, why: str = "") -> None:
    """Write a model's stored reference. `identity` None: its training uses no stored reference (`why`), and the
    files say so (DVC needs the outputs either way)."""
    from safetensors.torch import save_file

    tensors_path, about_path = paths(model)
    FOLDER.mkdir(parents=True, exist_ok=True)
    tensors = {}
    about = {"model": model, "identity": identity, "why": why, "splits": {}}
    for split, (chosen, rejected, tokens) in (splits or {}).items():
        tensors[f"{split}.chosen"] = chosen.float().contiguous()
        tensors[f"{split}.rejected"] = rejected.float().contiguous()
        about["splits"][split] = {"pairs": int(chosen.numel()), "tokens": tokens}
    save_file(tensors, str(tensors_path), metadata={"model": model})
    write_json(about_path, about)


def read(model: str, identity: dict) -> Stored:
    """A model's stored reference, refused unless it was computed from `identity`."""
    from safetensors.torch import load_file

    tensors_path, about_path = paths(model)
    if not about_path.is_file() or not tensors_path.is_file():
        raise StageError(f"{about_path}: no stored reference (run `dvc repro reference@{model}` first)")
    about = read_json(about_path)
    stored = about.get("identity")
    if stored is None:
        raise StageError(
            f"{about_path}: computed with no reference ({about.get('why')}); `dvc repro reference@{model}`"
        )
    for key in sorted(identity.keys() | stored.keys()):
        if identity.get(key) != stored.get(key):
            raise StageError(
                f"{about_path}: identity.{key}: the stored reference was computed with {stored.get(key)!r}, this "
                f"training has {identity.get(key)!r} (dvc.yaml's reference stage lacks a param it reads?)"
            )
    tensors = load_file(str(tensors_path))
    splits = {
        split: (tensors[f"{split}.chosen"], tensors[f"{split}.rejected"], entry["tokens"])
        for split, entry in about["splits"].items()
    }
    return Stored(about_path, splits)


def columns(dataset, split: str, stored: Stored):
    """`dataset` (tokenized) with TRL's `ref_chosen_logps` / `ref_rejected_logps` columns from the stored split, as
    TRL's own precompute adds them (float32, row by row); refused when the token ids differ."""
    from datasets import Dataset, concatenate_datasets

    if split not in stored.splits:
        raise StageError(f"{stored.file}: no stored reference for the {split} pairs")
    chosen, rejected, tokens = stored.splits[split]
    if len(dataset) != chosen.numel() or token_hash(dataset) != tokens:
        raise StageError(
            f"{stored.file}: the {split} pairs' token ids differ from those the stored reference was computed on "
            f"({len(dataset)} pairs against {chosen.numel()}); `dvc repro` its reference stage"
        )
    refs = Dataset.from_dict({"ref_chosen_logps": chosen.numpy(), "ref_rejected_logps": rejected.numpy()})
    return concatenate_datasets([dataset, refs], axis=1)
