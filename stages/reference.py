"""Stage `reference@<model>`: the frozen reference's log-probs of every training and held-out pair of one model of the
table, computed once from its start model so that its training reads them (DPO with `dpo.precompute_ref_log_probs:
true`) and a beta sweep computes them once per start model (DVC's run cache serves the other betas).

    python -m stages.reference sft_dpo

Its params are what changes the values (the start model, the pairs, their tokenization, batch layout and precision)
and nothing else: beta never re-runs it. The values are TRL's own precompute (the method's trainer, built as for
training). A model trained live, or by a method with no frozen reference, gets files that say so. Writes
data/reference/<model>.safetensors and data/reference/<model>.json (stages/core/reference.py).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from stages import methods
from stages.core import reference as reference_store
from stages.core.io import fail_cleanly
from stages.core.modeling import per_model_stage
from stages.core.runinfo import log_timing
from stages.core.training import Job


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    name, params = per_model_stage(argv, __doc__.splitlines()[0])
    method = methods.load(params.models[name].method)
    own, _ = method.parse(params)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:  # the trainer's output_dir: nothing is written there
        config = method.config(params, Path(scratch))
        rows = method.training_rows(own) if method.stores_reference() else []
        computed = method.reference(Job(name=name, params=params, own=own, config=config, rows=rows, run=None))
    if computed is None:
        why = (
            f"{name} ({method.name}) computes its reference live, in every step"
            if method.stores_reference()
            else f"{name}'s method, {method.name}, trains against no frozen reference"
        )
        reference_store.write(name, None, why=why)
        print(f"reference@{name}: none ({why})")
        return
    identity, splits = computed
    reference_store.write(name, identity, splits)
    seconds = round(time.perf_counter() - started, 1)
    log_timing(f"reference@{name}", {"wall_time_s": seconds})
    pairs = " + ".join(f"{int(chosen.numel())} {split}" for split, (chosen, _, _) in splits.items())
    print(
        f"reference@{name}: computed the reference's log-probs of {pairs} pairs from {identity['start']} in "
        f"{seconds} s (once per start model; its trainings read them)"
    )


if __name__ == "__main__":
    main()
