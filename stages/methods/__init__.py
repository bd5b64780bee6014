"""Training methods: one module each (base, sft, dpo, ...), used by the `train` stage (stages/train.py).

A method module holds everything about one way of training and nothing else:
- `Params`: a pydantic class of the project's own keys in its params section (e.g. sft.loss_on); every other key of
  the section is a field of the TRL config class the module names, read by that class (as alignment-handbook's
  recipes are);
- `config_class()`: that TRL class (SFTConfig, DPOConfig, ...), and `OWNED`: TRL fields it sets from its own keys;
- `train(job)`: build the trainer from `job` (rows, start model, TRL config) and train; returns a `Trained`
  (how to write the model, its metrics and run record). Load -> train -> guard -> save -> record is the shared outline
  in stages/core/training.py (`run_method`), so a module holds only what differs.

A new method is a module here, a params section of its name, and a row of the table of models (conf/models/): the
stages, dvc.yaml, the report, the metrics and the gathering read the table.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from stages.core import params as P
from stages.core.io import StageError


def load(method: str) -> ModuleType:
    if not (P.METHODS / f"{method}.py").is_file():
        raise StageError(f"params.yaml: no training method '{method}' (stages/methods/{method}.py)")
    return importlib.import_module(f"stages.methods.{method}")


def used(params: P.Params) -> list[str]:
    """The methods the table of models uses, in its order."""
    return list(dict.fromkeys(entry.method for entry in params.models.values()))
