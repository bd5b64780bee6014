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

import hashlib
import json
import random
import urllib.request
from pathlib import Path

from stages.core import hh
from stages.core import params as P
from stages.core.io import (StageError, decode_utf8, fail_cleanly, iter_jsonl, open_input, unicode_problem,
                            write_bytes, write_jsonl)

RAW = Path("data/raw/pairs.jsonl")
OUT = Path("data/eval/prompts.jsonl")


def url_cache(hf_home: Path | None = None) -> Path:
    """Files fetched by URL, stored by their sha256 next to the Hugging Face cache: $HF_HOME/url-cache/<sha256>."""
    from huggingface_hub import constants

    return Path(hf_home or constants.HF_HOME) / "url-cache"


def fetch_url(url: str, sha256: str | None) -> bytes:
    """The bytes at `url`: from the cache when a copy with the pinned digest is there (offline machines), else
    downloaded, checked against the digest and cached."""
    cached = url_cache() / sha256 if sha256 else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:  # plain JSON; nothing is executed
            data = resp.read()
    except OSError as exc:
        where = f"; or put a copy at {cached}" if cached else ""
        raise StageError(f"{url}: cannot download the prompt file ({exc}){where}") from None
    if sha256:
        check_digest(url, data, sha256)
        write_bytes(cached, data)
    return data


def check_digest(source: str, data: bytes, sha256: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise StageError(f"{source}: sha256 {digest} is not the {sha256} pinned in params (a different file)")


def load_prompt_file(source: str, sha256: str | None = None) -> list[str]:
    """A JSON list of prompt strings from a local path or an http(s) URL, checked against `sha256` when given."""
    if source.startswith(("http://", "https://")):
        data = fetch_url(source, sha256)
    else:
        with open_input(source, "rb") as fh:
            data = fh.read()
        if sha256:
            check_digest(source, data, sha256)
    try:
        parsed = json.loads(decode_utf8(data, source))
    except json.JSONDecodeError as exc:
        raise StageError(f"{source}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(parsed, list) or not parsed:
        raise StageError(f"{source}: expected a non-empty JSON list of prompt strings")
    for i, item in enumerate(parsed):
        if not isinstance(item, str) or not item.strip():
            raise StageError(f"{source}: item {i}: expected a non-empty string")
        bad = unicode_problem(item)
        if bad:
            raise StageError(f"{source}: item {i}: {bad}")
    return parsed


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


def select_harmful(cands, keywords: list[str], match_on: str, case_sensitive: bool = False) -> list[tuple[str, str, str]]:
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
            ("helpful", p.helpful_subset, p.helpful_file, p.helpful_sha256, p.n_helpful)):
        if file:
            chosen = [(f"{Path(file).name}#{i}", text) for i, text in enumerate(load_prompt_file(file, digest))]
        else:
            pool = candidates(rows, subset)
            if name == "harmful":
                pool = select_harmful(pool, p.harmful_keywords, p.match_on, p.keywords_case_sensitive)
            hint = f"test split of subset '{subset}'; is it in download.subsets and 'test' in download.splits?"
            chosen = [(c[0], c[1]) for c in _pick(pool, n, params.seed, name, hint)]
        for i, (source_id, text) in enumerate(chosen):
            out.append({"prompt_set": name, "prompt_id": i, "source_id": source_id,
                        "prompt": text if p.format == "verbatim" else hh.normalise_prompt(text)})
    write_jsonl(OUT, out)
    print(f"prompts: {sum(r['prompt_set'] == 'harmful' for r in out)} harmful, "
          f"{sum(r['prompt_set'] == 'helpful' for r in out)} helpful")


if __name__ == "__main__":
    main()
