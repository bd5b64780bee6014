"""Training checkpoints that survive a kill at any moment.

The Trainer writes `checkpoint-N/` in place: weights, then optimizer, scheduler and RNG states, then
`trainer_state.json`, and only then deletes the older checkpoint. A kill in between leaves a folder that looks like
the newest checkpoint but cannot be resumed from. A checkpoint counts here only when every file the Trainer needs is
there and complete; a partial one is set aside (renamed `incomplete-checkpoint-N`, with a line saying so) and the
run resumes from the newest complete one.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

STATE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def safetensors_complete(path: Path) -> bool:
    """The header parses and the file is as long as the tensors it declares."""
    try:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + header_len + end
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False


def torch_file_complete(path: Path) -> bool:
    """torch.save writes a zip archive; its central directory is written last, so a cut file does not open."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when it is complete."""
    try:
        step = json.loads((folder / STATE).read_text(encoding="utf-8"))["global_step"]
    except FileNotFoundError:
        return f"no {STATE}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{STATE} is cut short"
    if folder.name != f"checkpoint-{step}":
        return f"{STATE} says step {step}"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return "no weights (*.safetensors)"
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError):
            return f"{index.name} is cut short"
        missing = sorted(s for s in shards if not (folder / s).exists())
        if missing:
            return f"shard {missing[0]} is missing"
    for w in weights:
        if not safetensors_complete(w):
            return f"{w.name} is cut short"
    sharded_state = any(folder.glob("global_step*")) or any(folder.glob("*optimizer_0*"))  # DeepSpeed / FSDP
    needed = ["scheduler.pt"] + ([] if sharded_state else ["optimizer.pt"])
    rng = sorted(folder.glob("rng_state*.pth"))
    if not rng:
        return "no RNG state (rng_state*.pth)"
    for f in [folder / n for n in needed] + rng:
        if not f.exists():
            return f"no {f.name}"
        if not torch_file_complete(f):
            return f"{f.name} is cut short"
    return None


def last_complete(folder: Path, stage: str) -> Path | None:
    """The newest complete checkpoint in `folder`; partial ones are renamed aside, each with a line saying so."""
    found = (
        sorted(
            ((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()), reverse=True
        )
        if folder.is_dir()
        else []
    )
    for _, path in found:
        why = problem(path)
        if why is None:
            return path
        aside = path.with_name(f"incomplete-{path.name}")
        if aside.exists():
            shutil.rmtree(aside)
        path.rename(aside)
        print(f"{stage}: {path} is incomplete ({why}: the run was stopped while saving it); set aside as {aside}")
    return None
