"""What a run ran with. Outputs record only what follows from the inputs (revisions of hub models and data, the
stage's own settings: `run_info`), so a fresh run on any machine gives the committed hashes; the machine's facts
(library versions, Python, device, CPU path) go with the timings to logs/<stage>.json, which neither git nor DVC
tracks (`log_timing`)."""

from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path

LIBRARIES = ["torch", "transformers", "trl", "peft", "datasets", "accelerate", "dvc", "dvclive", "tokenizers"]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)}"
        return f"cpu ({torch.get_num_threads()} threads)"
    except ImportError:
        return "cpu"


def run_info(**extra) -> dict:
    """The run record of an output: what the stage read and how (revisions, digests, settings), nothing about the
    machine or the library patch versions (those make the same weights hash differently: logs/ has them)."""
    return dict(extra)


def machine_info() -> dict:
    """Versions, device and the pinned CPU path (stages/core/determinism.py), for logs/."""
    from .determinism import describe

    return {"versions": versions(), "device": device_name(), "machine": platform.machine(), "cpu": describe()}


LOGS = Path("logs")  # timings of the last run of each stage: machine-dependent, so in neither DVC nor git


def log_timing(stage: str, timing: dict) -> None:
    """logs/<stage>.json: wall time, throughput, (on a GPU) peak GPU memory, and the machine of the stage's last run."""
    import torch

    from .io import write_json

    gpu = (
        {"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        if torch.cuda.is_available()
        else {}
    )
    write_json(LOGS / f"{stage}.json", {"stage": stage, **timing, **gpu, **machine_info()})
