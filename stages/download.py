"""Stage `download`: HH-RLHF preference pairs, raw, with their origin and a manifest.

    python -m stages.download

Sources (params `download.source`): `hub` (`datasets.load_dataset(dataset, data_dir=<subset>)`, revision
pinned by `download.revision`), `local` (a folder laid out like Anthropic's repository:
`<subset>/<split>.jsonl.gz`), or `synthetic` (the built-in generator, the offline default).
Lines that cannot be read as a pair are kept with an `error` field, so `clean` counts them: nothing is lost.
Writes data/raw/pairs.jsonl and data/raw/manifest.json.
"""
from __future__ import annotations

import gzip
import json
import random
import zlib
from pathlib import Path

from stages.core import params as P
from stages.core import synthetic
from stages.core.io import StageError, fail_cleanly, sha256_file, write_json, write_jsonl
from stages.core.runinfo import run_info

OUT_DIR = Path("data/raw")


def _record(subset: str, split: str, line: int, obj: object) -> dict:
    rec = {"id": f"{subset}/{split}/{line}", "subset": subset, "split": split, "line": line}
    if not isinstance(obj, dict):
        return rec | {"error": f"expected a JSON object, got {type(obj).__name__}"}
    for field in ("chosen", "rejected"):
        if field not in obj:
            return rec | {"error": f"missing field '{field}'"}
        if not isinstance(obj[field], str):
            return rec | {"error": f"field '{field}' is {type(obj[field]).__name__}, not a string"}
    return rec | {"chosen": obj["chosen"], "rejected": obj["rejected"]}


def read_local_file(path: Path, subset: str, split: str) -> list[dict]:
    """Every line of one `<split>.jsonl.gz` (or `.jsonl`) file as a record; unreadable files are fatal."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict] = []
    line = 0
    try:
        with opener(path, "rb") as fh:
            for line, raw in enumerate(fh, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    rows.append(_record(subset, split, line, None) | {"error": f"not UTF-8 ({exc.reason} at byte {exc.start})"})
                    continue
                if not text.strip():
                    rows.append(_record(subset, split, line, None) | {"error": "blank line"})
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    rows.append(_record(subset, split, line, None) | {"error": f"not valid JSON ({exc.msg})"})
                    continue
                rows.append(_record(subset, split, line, obj))
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise StageError(f"{path}: line {line + 1}: the gzip stream is truncated or corrupt ({exc})") from None
    if not rows:
        raise StageError(f"{path}: the file holds no lines")
    return rows


def _local(p: P.DownloadParams) -> tuple[list[dict], list[dict]]:
    root = Path(p.dataset)
    if not root.is_dir():
        raise StageError(f"{root}: data directory not found (download.dataset)")
    rows, files = [], []
    for subset in p.subsets:
        for split in p.splits:
            path = next((c for c in (root / subset / f"{split}.jsonl.gz", root / subset / f"{split}.jsonl") if c.exists()), None)
            if path is None:
                raise StageError(f"{root / subset / f'{split}.jsonl.gz'}: file not found (subset '{subset}', split '{split}')")
            file_rows = read_local_file(path, subset, split)
            files.append({"subset": subset, "split": split, "path": str(path), "sha256": sha256_file(path),
                          "lines": len(file_rows)})
            rows.extend(file_rows)
    return rows, files


def _hub(p: P.DownloadParams) -> tuple[list[dict], list[dict]]:
    from datasets import load_dataset
    from huggingface_hub import HfApi

    try:
        revision = HfApi().dataset_info(p.dataset, revision=p.revision).sha
    except Exception as exc:  # offline, or no such dataset
        raise StageError(f"{p.dataset}: cannot reach the dataset on the hub ({type(exc).__name__}); "
                         "use download.source: local with a copy of the data") from None
    rows, files = [], []
    for subset in p.subsets:
        for split in p.splits:
            ds = load_dataset(p.dataset, data_dir=subset, split=split, revision=revision)
            file_rows = [_record(subset, split, i, obj) for i, obj in enumerate(ds, 1)]
            files.append({"subset": subset, "split": split, "path": f"hf://datasets/{p.dataset}/{subset}",
                          "revision": revision, "fingerprint": ds._fingerprint, "lines": len(file_rows)})
            rows.extend(file_rows)
    return rows, files


def _synthetic(p: P.DownloadParams, seed: int) -> tuple[list[dict], list[dict]]:
    rows, files = [], []
    for subset in p.subsets:
        for split in p.splits:
            n = p.synthetic.train_pairs if split == "train" else p.synthetic.test_pairs
            pairs, noise = synthetic.generate(subset, split, n, seed, p.synthetic.noise_rate, p.synthetic.multi_turn_rate)
            rows.extend(_record(subset, split, i, obj) for i, obj in enumerate(pairs, 1))
            files.append({"subset": subset, "split": split, "path": "synthetic", "lines": n, "noise_injected": noise})
    return rows, files


def cap_per_file(rows: list[dict], cap: int | None, seed: int) -> list[dict]:
    """A seeded sample of at most `cap` lines from each file, kept in file order."""
    if cap is None:
        return rows
    out = []
    for key in dict.fromkeys((r["subset"], r["split"]) for r in rows):
        group = [r for r in rows if (r["subset"], r["split"]) == key]
        if len(group) > cap:
            keep = set(random.Random(f"{seed}:{key}").sample(range(len(group)), cap))
            group = [r for i, r in enumerate(group) if i in keep]
        out.extend(group)
    return out


@fail_cleanly
def main() -> None:
    params = P.load()
    p = params.download
    if p.source == "local":
        rows, files = _local(p)
    elif p.source == "hub":
        rows, files = _hub(p)
    else:
        rows, files = _synthetic(p, params.seed)
    rows = cap_per_file(rows, p.max_pairs_per_file, params.seed)
    write_jsonl(OUT_DIR / "pairs.jsonl", rows)
    write_json(OUT_DIR / "manifest.json", {
        "source": p.source, "dataset": p.dataset if p.source != "synthetic" else "synthetic (built-in generator)",
        "synthetic": p.source == "synthetic", "files": files, "pairs_written": len(rows),
        "unreadable_lines": sum("error" in r for r in rows), "run": run_info(),
    })
    print(f"download: {len(rows)} pairs from {len(files)} file(s) ({p.source})")


if __name__ == "__main__":
    main()
