"""What a run ran with: library versions, device, and the revisions of hub models and data, recorded in outputs."""
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
    """Versions, device and the pinned CPU path (stages/core/determinism.py). No timestamps or host names: the
    record is the same bytes on every run, on any x86-64 machine with AVX2."""
    from .determinism import describe

    return {"versions": versions(), "device": device_name(), "machine": platform.machine(), "cpu": describe(),
            **extra}


LOGS = Path("logs")  # timings of the last run of each stage: machine-dependent, so in neither DVC nor git


def log_timing(stage: str, timing: dict) -> None:
    """logs/<stage>.json: wall time, throughput, device and (on a GPU) peak GPU memory of the stage's last run."""
    import torch

    from .io import write_json

    gpu = {"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)} if torch.cuda.is_available() else {}
    write_json(LOGS / f"{stage}.json", {"stage": stage, **timing, **gpu, "device": device_name()})
