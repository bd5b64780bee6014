"""Running a stage on several processes (GPUs or CPU processes) through Hugging Face accelerate.

`python -m stages.launch <stage> [args]` (the command in dvc.yaml) runs the stage in this process when
`distributed.num_processes` is 1, and otherwise under `accelerate launch` with the number of processes, config file
(DDP / FSDP / DeepSpeed ZeRO, see configs/) and mixed precision from params. Trainers (TRL) use the processes
themselves; sampling and scoring split the prompts across them and gather the results in prompt order.
Only the main process writes outputs.
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def state():
    """accelerate's process state; on a machine without a GPU the processes join with gloo."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    if world_size() > 1:
        state().wait_for_everyone()


def accumulation_steps(accum: int, d) -> int:
    """Gradient accumulation per process, so that per-device batch x accumulation x processes stays what params say
    when `distributed.keep_effective_batch` is on (the study's profiles keep its 8 at any process count)."""
    n = max(world_size(), 1)
    accum = int(accum)
    if d is None or not d.keep_effective_batch or n == 1:
        return accum
    if accum % n:
        from .io import StageError

        raise StageError(
            f"distributed.keep_effective_batch: gradient_accumulation_steps {accum} is not a multiple "
            f"of the {n} processes; change one of them"
        )
    return accum // n


def map_in_order(items: list, fn) -> list:
    """fn(list_of_items) -> list of results, run on each process's contiguous share; gathered in input order."""
    if world_size() == 1:
        return fn(items)
    from accelerate.utils import gather_object

    with state().split_between_processes(list(range(len(items)))) as mine:
        local = list(zip(mine, fn([items[i] for i in mine])))
    merged = gather_object(local)
    return [r for _, r in sorted(merged, key=lambda pair: pair[0])]
