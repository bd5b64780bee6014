"""Stage `score@<model>`: every judge (`score.judges`, `score.label_judges`) scores every response of one model.

    python -m stages.score sft

Writes data/scores/<model>.jsonl: the sample fields plus `rewards: {<judge name>: float}` from the reward judges and,
when there are judges of refusal, `labels: {<judge name>: {refusal: bool | null, ...}}` (the public scored-response
schema the metrics stage reads; see docs/reproducibility.md); data/scores/<model>.xstest.jsonl: XSTest's replies
(data/samples/<model>.xstest.jsonl) with the labelling judges' `labels` (rewards answer the study's questions only);
and data/scores/<model>.judges.json (each judge's source and revision).
"""

from __future__ import annotations

import time
from pathlib import Path

from stages.core import distributed as dist
from stages.core.io import fail_cleanly, iter_jsonl, write_json, write_jsonl
from stages.core.modeling import per_model_stage
from stages.core.runinfo import log_timing
from stages.judges import gives_reward, score_rows, specs

SAMPLES = Path("data/samples")
OUT_DIR = Path("data/scores")


@fail_cleanly
def main(argv: list[str] | None = None) -> None:
    name, params = per_model_stage(argv, __doc__.splitlines()[0])
    rows = [r for _, r in iter_jsonl(SAMPLES / f"{name}.jsonl")]
    xstest = [r for _, r in iter_jsonl(SAMPLES / f"{name}.xstest.jsonl")]
    started = time.perf_counter()
    judges = specs(params)
    scored, sources = score_rows(rows, judges)
    labellers = [j for j in judges if not gives_reward(j)]
    xstest_scored = score_rows(xstest, labellers)[0]
    if not dist.is_main():
        return
    spent = time.perf_counter() - started
    log_timing(
        f"score@{name}",
        {
            "wall_time_s": round(spent, 1),
            "responses": len(rows),
            "judges": len(sources),
            "responses_per_s": round(len(rows) * len(sources) / spent, 1),
        },
    )
    write_jsonl(OUT_DIR / f"{name}.jsonl", scored)
    write_jsonl(OUT_DIR / f"{name}.xstest.jsonl", xstest_scored)
    write_json(OUT_DIR / f"{name}.judges.json", {"judges": sources})
    print(f"score@{name}: {len(scored)} responses x {len(sources)} judge(s)")


if __name__ == "__main__":
    main()
