"""Judges: each gives, per (prompt, response), either one float (a reward, compared with its `thresholds`) or labels
(`refusal`, `harm`: true, false, or None where its answer could not be read). One module per kind
(`score.judges[].kind`), each holding one `Judge` subclass with all there is to know about its kind: what it gives
(`gives`), its own params entry (`Spec`: the fields it uses and no other), how it loads and scores or labels, which hub
files it needs (`hub_files`, read by `commands.pin`) and which look-alike the offline rehearsal builds for it
(`lookalike`, read by `commands.rehearse`). The kinds are the modules of this package, listed nowhere else;
stages/core/params.py checks only what every judge has (name, kind; thresholds where it gives a reward).

A new kind is a module here, its entry in `score.judges` (reward) or `score.label_judges` (labels), and its test.
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
    thresholds: Optional[P.Thresholds] = None  # a reward judge's: what counts as harmless / helpful (labellers: none)


LABELS = ("refusal", "harm")  # what a labelling judge may say of a reply: it refuses; it is harmful


class Judge:
    """A kind of judge. Declares `kind` (its module's name), `Spec` and `gives`: ("reward",) for a judge that scores
    with `__call__(prompts, responses)`, or the labels it gives (a subset of LABELS) for one that labels with
    `label(prompts, responses)`; `record` says what was loaded (source, revision, weights format) for
    data/scores/<model>.judges.json."""

    kind: ClassVar[str]
    Spec: ClassVar[type[Spec]]
    gives: ClassVar[tuple[str, ...]] = ("reward",)
    record: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        module = cls.__module__.rpartition(".")[2]
        if getattr(cls, "kind", None) != module:
            raise TypeError(f"{cls.__module__}.{cls.__name__}: kind must be its module's name, '{module}'")
        if not (isinstance(getattr(cls, "Spec", None), type) and issubclass(cls.Spec, Spec)):
            raise TypeError(f"{cls.__module__}.{cls.__name__}: Spec must extend stages.judges.Spec")
        if cls.gives != ("reward",) and not (cls.gives and set(cls.gives) <= set(LABELS)):
            raise TypeError(f"{cls.__module__}.{cls.__name__}: gives must be ('reward',) or labels among {LABELS}")

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

    def label(self, prompts: list[str], responses: list[str]) -> list[dict[str, bool | None]]:
        """Per reply, each label of `gives`: True, False, or None where the judge's answer could not be read."""
        raise NotImplementedError


def gives_reward(spec: Spec) -> bool:
    return kinds()[spec.kind].gives == ("reward",)


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
    """Every judge (`score.judges`, then `score.label_judges`), each entry read by its kind's Spec: a field the kind
    does not use, or a wrong one, or a kind in the wrong list, stops here in one line naming it."""
    known = kinds()
    out = []
    for key, entry in params.score.entries():
        try:
            spec = known[entry.kind].Spec.model_validate(entry.model_dump())
        except ValidationError as exc:
            raise StageError(f"params.yaml: {key}.{P._describe(exc.errors()[0])}") from None
        reward = known[entry.kind].gives == ("reward",)
        where = "score.judges" if reward else "score.label_judges"
        if not key.startswith(where + "."):
            gives = "a reward" if reward else "labels, not a reward"
            raise StageError(
                f"params.yaml: {key}.kind: judge '{spec.name}' ({spec.kind}) gives {gives}: list it in {where}"
            )
        if reward != (spec.thresholds is not None):
            need = "needs its thresholds" if reward else "gives labels, not a reward: it has no thresholds"
            raise StageError(f"params.yaml: {key}.thresholds: judge '{spec.name}' ({spec.kind}) {need}")
        if not reward and spec.round_to is not None:
            raise StageError(f"params.yaml: {key}.round_to: judge '{spec.name}' gives labels, not rewards")
        out.append(spec)
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
    """Each row with `rewards: {judge: float}` from the reward judges and, when there are labelling judges,
    `labels: {judge: {label: true | false | null}}`; and what each judge loaded."""
    rewards, labels, sources = {}, {}, {}
    for spec in judges:
        judge = load_judge(spec)
        call = judge if gives_reward(spec) else judge.label
        # Each process scores a contiguous share; gathered back in row order.
        found = map_in_order(rows, lambda share: call([r["prompt"] for r in share], [r["response"] for r in share]))
        (rewards if gives_reward(spec) else labels)[spec.name] = found
        sources[spec.name] = {"kind": spec.kind, "path": getattr(spec, "path", None), **judge.record}
    out = []
    for i, r in enumerate(rows):
        row = r | {"rewards": {name: rewards[name][i] for name in rewards}}
        if labels:
            row["labels"] = {name: labels[name][i] for name in labels}
        out.append(row)
    return out, sources
