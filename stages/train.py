"""Stage `train@<model>`: one model of the table (`models:` in params.yaml), trained by its method from its start.

    python -m stages.train sft         # (dvc.yaml runs it through stages.launch, for several processes)

The method is the class of a module of stages/methods/ named by the table; the outline every method shares (checked
section, training pairs, resumable checkpoints, guards, curves, atomic save with a run record) is its `run`
(stages/core/training.py's `Method`). Every method of the table is checked first. Writes models/<model>,
metrics/training/<model>/train.json and DVCLive curves in metrics/training/<model>/live.
"""

from __future__ import annotations

from stages import methods
from stages.core.io import fail_cleanly
from stages.core.modeling import per_model_stage


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    name, params = per_model_stage(argv, __doc__.splitlines()[0])  # the model argument, checked against the table
    table = methods.used(params)  # every method of the table, each declaration checked as it loads
    method = next(m for m in table if m.name == params.models[name].method)
    method.run(name, params, others=[m for m in table if m is not method])


if __name__ == "__main__":
    main()
