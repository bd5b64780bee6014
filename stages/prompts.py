"""Stage `prompts`: the harmful and helpful evaluation prompt sets that `sample` reads.

    python -m stages.prompts

Selection: harmful prompts are test-split prompts of `prompts.harmful_subset` containing one of
`prompts.harmful_keywords` ("kill", "murder", "rape"), looked for in the prompt (`match_on: prompt`) or in the whole
chosen transcript (`match_on: chosen`), case-sensitive or not (the study's code: chosen transcript, case-sensitive);
helpful prompts are sampled from the test split of `prompts.helpful_subset`. Seeded, distinct, stable across runs;
`n_harmful: all` keeps every match. An explicit JSON list of "Human: ..." transcripts (the format the study
published: a local path, or a URL with its sha256 pinned in `harmful_sha256`/`helpful_sha256`, cached by digest
under $HF_HOME/url-cache for offline machines) replaces the selection for its set.
`prompts.format: hh` (the fix) writes each prompt in the training format, "\\n\\nHuman: ...\\n\\nAssistant:";
`verbatim` (the study) keeps the text as given. Writes data/eval/prompts.jsonl.
"""

from __future__ import annotations

import random
from pathlib import Path

from stages.core import hh
from stages.core import params as P
from stages.core.io import StageError, fail_cleanly, iter_jsonl, warn_if_untracked, write_jsonl
from stages.core.prompt_files import load_prompt_file

RAW = Path("data/raw/pairs.jsonl")
OUT = Path("data/eval/prompts.jsonl")


def candidates(rows: list[dict], subset: str) -> list[tuple[str, str, str]]:
    """(id, prompt, chosen transcript) of the parseable test pairs of a subset, first occurrence of each prompt."""
    seen, out = set(), []
    for r in rows:
        if r["subset"] != subset or r["split"] != "test" or "error" in r:
            continue
        try:
            prompt, _ = hh.split_transcript(r["chosen"])
        except hh.Malformed:
            continue
        if prompt not in seen:
            seen.add(prompt)
            out.append((r["id"], prompt, r["chosen"]))
    return out


def select_harmful(
    cands, keywords: list[str], match_on: str, case_sensitive: bool = False
) -> list[tuple[str, str, str]]:
    """Candidates whose prompt (or whole chosen transcript) contains a keyword (the study: case-sensitive substring
    of the chosen transcript, which matched 192 rows of harmless-base test)."""
    field = 1 if match_on == "prompt" else 2
    if case_sensitive:
        return [c for c in cands if any(k in c[field] for k in keywords)]
    keys = [k.lower() for k in keywords]
    return [c for c in cands if any(k in c[field].lower() for k in keys)]


def _pick(pool, n: int, seed: int, name: str, hint: str) -> list:
    if n == "all":
        return list(pool)
    if len(pool) < n:
        raise StageError(f"prompts.n_{name}: asked for {n} prompts but only {len(pool)} match ({hint})")
    return random.Random(f"{seed}:{name}").sample(pool, n)


@fail_cleanly
def main() -> None:
    params = P.load()
    p = params.prompts
    rows = [r for _, r in iter_jsonl(RAW)]
    out = []
    for name, subset, file, digest, n in (
        ("harmful", p.harmful_subset, p.harmful_file, p.harmful_sha256, p.n_harmful),
        ("helpful", p.helpful_subset, p.helpful_file, p.helpful_sha256, p.n_helpful),
    ):
        if file:
            if not file.startswith(("http://", "https://")):  # a URL's file is pinned by its sha256 in params
                warn_if_untracked(file, f"prompts.{name}_file")
            chosen = [(f"{Path(file).name}#{i}", text) for i, text in enumerate(load_prompt_file(file, digest))]
        else:
            pool = candidates(rows, subset)
            if name == "harmful":
                pool = select_harmful(pool, p.harmful_keywords, p.match_on, p.keywords_case_sensitive)
            hint = f"test split of subset '{subset}'; is it in download.subsets and 'test' in download.splits?"
            chosen = [(c[0], c[1]) for c in _pick(pool, n, params.seed, name, hint)]
        for i, (source_id, text) in enumerate(chosen):
            out.append(
                {
                    "prompt_set": name,
                    "prompt_id": i,
                    "source_id": source_id,
                    "prompt": text if p.format == "verbatim" else hh.normalise_prompt(text),
                }
            )
    write_jsonl(OUT, out)
    print(
        f"prompts: {sum(r['prompt_set'] == 'harmful' for r in out)} harmful, "
        f"{sum(r['prompt_set'] == 'helpful' for r in out)} helpful"
    )


if __name__ == "__main__":
    main()
