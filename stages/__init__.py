"""The pipeline's stages (`python -m stages.<name>`, one module per dvc.yaml stage), with shared code in stages.core
and the training methods (one module each) in stages.methods.

Importing the package fixes Python's string hashing for stage processes and pins the CPU kernels and thread count
before torch or NumPy loads (stages/core/determinism.py), so every stage process, accelerate's child processes
included, gives the same bytes on any x86-64 machine.
"""

import sys

from .core.determinism import fix_hash_seed, pin_environment

fix_hash_seed()
pin_environment()
# Stage output reaches `dvc repro` (and CI logs) line by line, not in blocks at exit.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(line_buffering=True)
