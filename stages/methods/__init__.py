"""Training methods: one module each (base, sft, dpo, orpo, ...), each holding one `Method` subclass
(stages/core/training.py), used by the `train` stage (stages/train.py) and named by the table of models.

A method module reads top to bottom: what it trains and how (docstring), its own keys (`Params`: every other key of
its params section is a field of the TRL config class it names, read by that class, as alignment-handbook's recipes
are), the helpers that build its dataset and trainer, then the class: its declared members (name, description, tags,
curves, owned fields, config class; checked when the module loads) and `train(job)`, which builds the trainer from
`job` (rows, start model, the TRL config built and checked once) and trains. Load -> train -> guard -> save -> record
is the outline in `Method.run`, so a module holds only what differs.

A new method is a module here, a params section of its name, a row of the table of models (conf/models/), and its
test: the stages, dvc.yaml (`python -m commands.compose` writes its artifact and plots), the report, the metrics and
the gathering read the table.
"""

from __future__ import annotations

import importlib

from stages.core import params as P
from stages.core.io import StageError
from stages.core.training import Method


def load(method: str) -> Method:
    """The method named `method` (its module's Method subclass, whose members were checked when it loaded)."""
    if not (P.METHODS / f"{method}.py").is_file():
        raise StageError(f"params.yaml: no training method '{method}' (stages/methods/{method}.py)")
    module = importlib.import_module(f"stages.methods.{method}")
    found = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, Method) and c.__module__ == module.__name__
    ]
    if len(found) != 1 or found[0].name != method:
        raise StageError(
            f"stages/methods/{method}.py: expected one Method subclass named '{method}', found "
            f"{', '.join(f'{c.__name__} ({c.name})' for c in found) or 'none'}"
        )
    return found[0]()


def how_made(model: str, models: dict[str, P.ModelEntry]) -> tuple[str, list[str]]:
    """A model of the table in words, from its method's description and its start ("DPO (LoRA) from the SFT model": its
    card's and its DVC artifact's description), and its hub tags (sft_dpo: sft, dpo, lora)."""
    method = load(models[model].method)
    start = models[model].start
    start = None if start == P.BASE_START else start.removeprefix("models/")
    how = method.description + (f" from the {models[start].label} model" if start else "")
    return how, [*([start] if start and start != "base" else []), *method.tags]


def used(params: P.Params) -> list[Method]:
    """The methods the table of models uses, in its order (each loaded, so each declaration is checked)."""
    return [load(name) for name in dict.fromkeys(entry.method for entry in params.models.values())]
