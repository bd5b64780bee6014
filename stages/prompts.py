"""Stage `prompts`: the harmful and helpful evaluation prompt sets that `sample` reads.

    python -m stages.prompts

As in the study by default: harmful prompts are test-split prompts of `prompts.harmful_subset` containing one of
`prompts.harmful_keywords` ("kill", "murder", "rape"; case-insensitive substring, as the study's code matched),
looked for in the prompt (our default) or in the whole chosen transcript (`match_on: chosen`, the study); helpful
prompts are sampled from the test split of `prompts.helpful_subset`. Seeded, distinct, stable across runs.
An explicit JSON list of "Human: ..." transcripts (the format the study published; local path or URL) replaces
the selection for its set. Every prompt is normalised to end with "\\n\\nAssistant:" unless
`prompts.end_with_assistant` is false. Writes data/eval/prompts.jsonl.
"""
from __future__ import annotations

import json
import random
import urllib.request
from pathlib import Path

from stages.core import hh
from stages.core import params as P
from stages.core.io import StageError, fail_cleanly, iter_jsonl, write_jsonl

RAW = Path("data/raw/pairs.jsonl")
OUT = Path("data/eval/prompts.jsonl")


def load_prompt_file(source: str) -> list[str]:
    """A JSON list of prompt strings from a local path or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=60) as resp:  # plain JSON; nothing is executed
                text = resp.read().decode("utf-8")
        except OSError as exc:
            raise StageError(f"{source}: cannot download the prompt file ({exc})") from None
    else:
        path = Path(source)
        if not path.exists():
            raise StageError(f"{path}: prompt file not found")
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StageError(f"{source}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list) or not data:
        raise StageError(f"{source}: expected a non-empty JSON list of prompt strings")
    for i, item in enumerate(data):
        if not isinstance(item, str) or not item.strip():
            raise StageError(f"{source}: item {i}: expected a non-empty string")
    return data


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


def select_harmful(cands, keywords: list[str], match_on: str) -> list[tuple[str, str, str]]:
    keys = [k.lower() for k in keywords]
    field = 1 if match_on == "prompt" else 2
    return [c for c in cands if any(k in c[field].lower() for k in keys)]


def _pick(pool, n: int, seed: int, name: str, hint: str) -> list:
    if len(pool) < n:
        raise StageError(f"prompts.n_{name}: asked for {n} prompts but only {len(pool)} match ({hint})")
    return random.Random(f"{seed}:{name}").sample(pool, n)


@fail_cleanly
def main() -> None:
    params = P.load()
    p = params.prompts
    rows = [r for _, r in iter_jsonl(RAW)]
    out = []
    for name, subset, file, n in (("harmful", p.harmful_subset, p.harmful_file, p.n_harmful),
                                  ("helpful", p.helpful_subset, p.helpful_file, p.n_helpful)):
        if file:
            chosen = [(f"{Path(file).name}#{i}", text) for i, text in enumerate(load_prompt_file(file))]
        else:
            pool = candidates(rows, subset)
            if name == "harmful":
                pool = select_harmful(pool, p.harmful_keywords, p.match_on)
            hint = f"test split of subset '{subset}'; is it in download.subsets and 'test' in download.splits?"
            chosen = [(c[0], c[1]) for c in _pick(pool, n, params.seed, name, hint)]
        for i, (source_id, text) in enumerate(chosen):
            out.append({"prompt_set": name, "prompt_id": i, "source_id": source_id,
                        "prompt": hh.normalise_prompt(text, p.end_with_assistant)})
    write_jsonl(OUT, out)
    print(f"prompts: {sum(r['prompt_set'] == 'harmful' for r in out)} harmful, "
          f"{sum(r['prompt_set'] == 'helpful' for r in out)} helpful")


if __name__ == "__main__":
    main()
