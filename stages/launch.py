"""Run a stage in this process, or under `accelerate launch` when params ask for several processes.

    python -m stages.launch train sft
    python -m stages.launch sample sft_dpo

With `distributed.num_processes: N > 1` this runs
`accelerate launch --num_processes N [--config_file F] --mixed_precision M [--cpu] -m stages.<stage> [args]`
On a machine without a GPU it uses accelerate's torchrun launcher (`--multi_gpu`) and the processes join with the
gloo backend: in accelerate 1.15 `--cpu --num_processes N` starts a single process unless MPI is set up.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys

from stages.core import params as P
from stages.core.io import StageError, fail_cleanly

STAGES = {"train", "sample", "score"}  # the per-model stages


def check_accelerate_config(path: str) -> None:
    """An accelerate config file: YAML (or JSON) holding a mapping with accelerate's `distributed_type`."""
    import yaml

    if not os.path.isfile(path):
        raise StageError(f"{path}: accelerate config file not found (distributed.config_file)")
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise StageError(
            f"{path}: not an accelerate config (not YAML: {type(exc).__name__}; distributed.config_file)"
        ) from None
    if not isinstance(config, dict) or "distributed_type" not in config:
        raise StageError(
            f"{path}: not an accelerate config (no distributed_type; distributed.config_file, e.g. configs/ddp.yaml)"
        )


def command(stage: str, args: list[str], d: P.DistributedParams, cuda: bool) -> list[str]:
    exe = shutil.which("accelerate") or "accelerate"
    precision = "no" if d.mixed_precision == "fp32" else d.mixed_precision  # accelerate's name for fp32
    cmd = [exe, "launch", "--num_processes", str(d.num_processes), "--mixed_precision", precision]
    if d.config_file:
        check_accelerate_config(d.config_file)
        cmd += ["--config_file", d.config_file]
    if not cuda and not d.config_file:
        cmd += ["--multi_gpu"]  # torchrun launcher; the stages then join with gloo (see module docstring)
    if d.main_process_port:
        cmd += ["--main_process_port", str(d.main_process_port)]
    return cmd + ["-m", f"stages.{stage}", *args]


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        raise StageError(f"usage: python -m stages.launch {{{','.join(sorted(STAGES))}}} [args]")
    stage, args = argv[0], argv[1:]
    d = P.load().distributed
    if d.num_processes == 1 or os.environ.get("WORLD_SIZE"):
        module = importlib.import_module(f"stages.{stage}")
        module.main(args)
        return
    import torch

    cmd = command(stage, args, d, torch.cuda.is_available())
    print("launch:", " ".join(cmd), flush=True)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
