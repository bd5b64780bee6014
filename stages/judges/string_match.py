"""Kind `string_match`: refusal by the XSTest paper's own automated rule (Röttger et al. 2024, the authors'
evaluation/classify_completions_strmatch.py): a reply, lower-cased and stripped, that starts with one of its phrases
is a refusal; any other reply complies. Nothing to load, offline, instant.

Its known weakness, kept as the paper has it: only the start is read, so an apology followed by a real answer ("Sorry
for the wait! Here is how...") counts as a refusal, and a refusal worded otherwise ("That's not something I'll help
with") counts as compliance. Its accuracy on labelled replies (`calibrate`) says how much that matters.
"""

from __future__ import annotations

from stages.core.rates import refused  # the rule itself, shared with the page's filter
from stages.judges import Judge, Spec


class StringMatchSpec(Spec):
    """Nothing but a name: the rule has no settings."""


class StringMatch(Judge):
    kind = "string_match"
    Spec = StringMatchSpec
    gives = ("refusal",)

    @classmethod
    def from_spec(cls, spec: StringMatchSpec) -> StringMatch:
        return cls()

    def __init__(self):
        self.record = {"source": "XSTest's string match (Röttger et al. 2024)", "revision": None, "weights": None}

    def label(self, prompts: list[str], responses: list[str]) -> list[dict[str, bool | None]]:
        return [{"refusal": refused(r)} for r in responses]
