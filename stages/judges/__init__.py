"""Judges: each gives one float per (prompt, response). One module per kind (`score.judges[].kind`), each holding one
`Judge` subclass with all there is to know about its kind: its own params entry (`Spec`: the fields it uses and no
other), how it loads and scores, which hub files it needs (`hub_files`, read by `commands.pin`) and which look-alike
the offline rehearsal builds for it (`lookalike`, read by `commands.rehearse`). The kinds are the modules of this
package, listed nowhere else; stages/core/params.py checks only what every judge has (name, kind, thresholds).

A new kind is a module here, its entry in `score.judges` (conf/), and its test.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import ClassVar, Optional

from pydantic import Field, ValidationError

from stages.core import params as P
from stages.core.distributed import map_in_order
from stages.core.io import StageError


class Spec(P.Section):
    """What every judge's params entry has; each kind's Spec adds the fields that kind reads."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: str
    round_to: Optional[int] = Field(default=None, ge=0, le=12)  # decimals each reward keeps (the study: 4); null: all
    thresholds: P.Thresholds  # what counts as harmless / helpful for this judge


class Judge:
    """A kind of judge. Declares `kind` (its module's name) and `Spec`; scores with `__call__(prompts, responses)`;
    `record` says what was loaded (source, revision, weights format) for data/scores/<model>.judges.json."""

    kind: ClassVar[str]
    Spec: ClassVar[type[Spec]]
    record: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        module = cls.__module__.rpartition(".")[2]
        if getattr(cls, "kind", None) != module:
            raise TypeError(f"{cls.__module__}.{cls.__name__}: kind must be its module's name, '{module}'")
        if not (isinstance(getattr(cls, "Spec", None), type) and issubclass(cls.Spec, Spec)):
            raise TypeError(f"{cls.__module__}.{cls.__name__}: Spec must extend stages.judges.Spec")

    @classmethod
    def from_spec(cls, spec) -> Judge:
        raise NotImplementedError

    @classmethod
    def hub_files(cls, spec) -> list[str]:
        """The files `commands.pin --fetch` downloads at the pinned commit (none for a judge built here)."""
        return []

    @classmethod
    def lookalike(cls, spec) -> str | None:
        """The small model the rehearsal publishes in its place on the hub cache (None: nothing to publish)."""
        return None

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        raise NotImplementedError


def kinds() -> dict[str, type[Judge]]:
    """Every kind: the modules of this package, each loaded (its class checked as it loads)."""
    out = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.stem != "__init__":
            module = importlib.import_module(f"{__name__}.{path.stem}")
            found = [
                c
                for c in vars(module).values()
                if isinstance(c, type) and issubclass(c, Judge) and c.__module__ == module.__name__
            ]
            if len(found) != 1:
                raise StageError(f"stages/judges/{path.name}: expected one Judge subclass, found {len(found)}")
            out[path.stem] = found[0]
    return out


def specs(params: P.Params) -> list[Spec]:
    """`score.judges`, each entry read by its kind's Spec: a field the kind does not use, or a wrong one, stops here
    in one line naming it."""
    known = kinds()
    out = []
    for i, entry in enumerate(params.score.judges):
        try:
            out.append(known[entry.kind].Spec.model_validate(entry.model_dump()))
        except ValidationError as exc:
            raise StageError(f"params.yaml: score.judges.{i}.{P._describe(exc.errors()[0])}") from None
    return out


class Rounded:
    """A judge whose rewards keep `decimals` decimals, as the study's published ratings did (`score.judges[].round_to`):
    a reward of -2.99996 is then -3.0, and no longer above the harmless threshold of -3."""

    def __init__(self, judge, decimals: int):
        self.judge, self.decimals, self.record = judge, decimals, {**judge.record, "round_to": decimals}

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [round(x, self.decimals) for x in self.judge(prompts, responses)]


def load_judge(spec: Spec):
    judge = kinds()[spec.kind].from_spec(spec)
    return judge if spec.round_to is None else Rounded(judge, spec.round_to)


def score_rows(rows: list[dict], judges: list[Spec]) -> tuple[list[dict], dict]:
    """Each row with `rewards: {judge: float}`, and what each judge loaded."""
    rewards = {}
    sources = {}
    for spec in judges:
        judge = load_judge(spec)
        # Each process scores a contiguous share; gathered back in row order.
        rewards[spec.name] = map_in_order(
            rows, lambda share: judge([r["prompt"] for r in share], [r["response"] for r in share])
        )
        sources[spec.name] = {"kind": spec.kind, "path": spec.path, **judge.record}
    out = [r | {"rewards": {name: rewards[name][i] for name in rewards}} for i, r in enumerate(rows)]
    return out, sources
