"""Stage `check`: every value of params.yaml checked for meaning before any other stage does work.

    python -m stages.check

The pipeline's first stage: `download`, which every other stage follows, depends on its output, and its params are
the whole of params.yaml, so a changed value is checked first whichever stages are up to date: a negative `dpo.beta`
or a misspelt `dpo.loss_type` stops `dvc repro` (and `dvc exp run`) in seconds, before the data are read and long
before SFT. What it checks, no model loaded: the whole file's types and ranges (stages/core/params.py), each training
method of the table as its TRL config (field types, ranges and documented choices: stages/core/domains.py; the
method's own cross-checks), and each judge entry by its kind (stages/judges/). The stages run the same checks where
they read the values, with the same messages; `python -m commands.sweep` runs them on every trial of a grid before
it starts anything. Writes data/checked.txt, whose bytes never depend on the params: a valid change re-runs nothing
else because of it.
"""

from __future__ import annotations

from pathlib import Path

from stages import judges, methods
from stages.core import params as P
from stages.core.io import fail_cleanly, write_text
from stages.core.training import check_configs

OUT = Path("data/checked.txt")


def check(params: P.Params) -> None:
    """Every check that needs more than the params file's own schema (which P.validate applies)."""
    check_configs(methods.used(params), params)
    judges.specs(params)


@fail_cleanly
def main() -> None:
    check(P.load())
    write_text(OUT, "params.yaml: every value checked (stages/check.py)\n")
    print(f"check: params.yaml is valid; wrote {OUT}")


if __name__ == "__main__":
    main()
