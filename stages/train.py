"""Stage `train@<model>`: one model of the table (`models:` in params.yaml), trained by its method from its start.

    python -m stages.train sft         # (dvc.yaml runs it through stages.launch, for several processes)

The method is the class of a module of stages/methods/ named by the table; the outline every method shares (checked
section, training pairs, resumable checkpoints, guards, curves, atomic save with a run record) is its `run`
(stages/core/training.py's `Method`); every method of the table was checked by the `check` stage first. Writes
models/<model>, metrics/training/<model>/train.json and DVCLive curves in metrics/training/<model>/live.
"""

from __future__ import annotations

from stages import methods
from stages.core.io import fail_cleanly
from stages.core.modeling import per_model_stage


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    name, params = per_model_stage(argv, __doc__.splitlines()[0])  # the model argument, checked against the table
    methods.load(params.models[name].method).run(name, params)


if __name__ == "__main__":
    main()
