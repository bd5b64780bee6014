"""Same bytes on every x86-64 CPU: pin what makes floating-point results depend on the machine.

Measured on an AVX-512 machine (see docs/reproducibility.md): torch, MKL, oneDNN, OpenBLAS and NumPy each pick
their CPU kernels by instruction set at run time, and the thread count changes how torch and OpenBLAS split sums.
Each choice moves the low bits of a model's weights, so after a few hundred training steps two machines write
different models, samples and metrics from the same commit. Pinned here, before torch or NumPy is imported:

- every library's kernels to one code path that every x86-64 CPU with AVX2 runs alike (MKL's vendor-neutral one);
- the CPU thread count (torch, OpenMP, MKL, OpenBLAS) to `ALIGN_CPU_THREADS` (default 2), whatever the core count.

`ALIGN_CPU_PIN=off` runs with each library's own choice (faster on large CPUs; results then depend on the machine).
A GPU's kernels are not covered: CUDA results depend on the GPU model and library versions (docs/reproducibility.md).
"""

from __future__ import annotations

import os
import platform
import sys
import warnings

DEFAULT_THREADS = 2
# variable -> value; each must be in the environment before the library that reads it is loaded
KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels (softmax, layer norm, element-wise ops, reductions)
    # MKL's GEMM path (torch's matmul). MKL documents COMPATIBLE as the one branch that gives the same results on
    # Intel and other CPUs (AVX2 is Intel-only: elsewhere it silently falls back to the CPU's own choice)
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (torch's mkldnn ops)
    "OPENBLAS_CORETYPE": "Haswell",  # NumPy/SciPy's OpenBLAS GEMM (the judge's logistic regression)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's AVX-512 exp/log/tanh loops
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def enabled() -> bool:
    return os.environ.get("ALIGN_CPU_PIN", "on").lower() not in ("off", "0", "false", "no")


def threads() -> int:
    value = os.environ.get("ALIGN_CPU_THREADS", str(DEFAULT_THREADS))
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"error: ALIGN_CPU_THREADS={value!r}: expected a whole number >= 1")
    return int(value)


def cpu_has_avx2() -> bool:
    """True on an x86-64 CPU with AVX2 (Linux reads /proc/cpuinfo; elsewhere x86-64 is assumed to have it)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return "avx2" in line.split()
    except OSError:
        pass
    return True


def fix_hash_seed() -> None:
    """Re-start a stage process (`python -m stages.<name>`) once with PYTHONHASHSEED=0.

    Python randomises string hashing per process, so a set of strings iterates in a different order on every run:
    PEFT writes LoRA's `target_modules` set into adapter_config.json in that order, and two runs of the same
    stage wrote different bytes. The seed can only be chosen before the interpreter starts, hence the re-exec
    (before torch is imported, so it costs milliseconds)."""
    argv = getattr(sys, "orig_argv", None) or []
    if os.environ.get("PYTHONHASHSEED") == "0" or "-m" not in argv:
        return
    module = argv[argv.index("-m") + 1] if argv.index("-m") + 1 < len(argv) else ""
    if module.startswith("stages."):
        os.execve(sys.executable, argv, {**os.environ, "PYTHONHASHSEED": "0"})


def pin_environment() -> None:
    """Set the kernel and thread variables (overriding any inherited value) for this process and its children."""
    if not enabled():
        return
    late = [name for name in ("torch", "numpy") if name in sys.modules]
    if late:
        warnings.warn(f"{', '.join(late)} imported before stages: its CPU kernels are not pinned in this process")
    if cpu_has_avx2():
        os.environ.update(KERNELS)
    else:  # the thread count is still pinned: runs on this machine agree with each other at any core count
        warnings.warn("this CPU has no AVX2 (or is not x86-64): CPU results will differ from AVX2 machines'")
    n = str(threads())
    os.environ.update({name: n for name in THREAD_VARIABLES})


def pin_torch() -> None:
    """torch reads OMP_NUM_THREADS but caps it at the core count; set the pinned count explicitly."""
    if enabled():
        import torch

        torch.set_num_threads(threads())


def seed_and_pin(seed: int) -> None:
    """The start of every stage that uses torch: one seed drives Python, NumPy and torch; CPU threads pinned; a GPU
    shared with other trials capped to this process's share."""
    import random

    from transformers import set_seed

    random.seed(seed)
    set_seed(seed)
    pin_torch()
    cap_gpu_memory()


GPU_SHARE = "ALIGN_GPU_MEMORY_FRACTION"  # set by commands.sweep when trials share a GPU (--gpus-per-trial < 1)


def gpu_share() -> float | None:
    value = os.environ.get(GPU_SHARE)
    if not value:
        return None
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise SystemExit(f"error: {GPU_SHARE}={value!r}: expected a fraction of the GPU's memory in (0, 1]")
    return fraction


def cap_gpu_memory() -> float | None:
    """A trial sharing a GPU keeps to its share of the GPU's memory, so one trial's peak cannot starve the others (an
    environment variable, not a param: it changes no result, and a param would change the trial's identity and its
    run-cache matches). Without a GPU, or unset: nothing."""
    fraction = gpu_share()
    if fraction is None:
        return None
    import torch

    if torch.cuda.is_available():
        for device in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def describe() -> dict:
    """What this process ran with: recorded in run records (never in metrics files)."""
    out = {
        "cpu_pin": enabled(),
        "kernels_pinned": enabled() and cpu_has_avx2(),
        "cpu_threads": None,
        "cpu_capability": None,
    }
    if "torch" in sys.modules:
        import torch

        out["cpu_threads"] = torch.get_num_threads()
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out
