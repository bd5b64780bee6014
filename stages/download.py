"""Stage `download`: HH-RLHF preference pairs, raw, with their origin and a manifest.

    python -m stages.download

Sources (params `download.source`): `hub` (Anthropic's `<subset>/<split>.jsonl.gz` files at the commit pinned by
`download.revision`, through the Hugging Face cache: works offline from a cache filled beforehand), `local` (a folder
laid out like Anthropic's repository), or `synthetic` (the built-in generator, the offline default).
Lines that cannot be read as a pair are kept with an `error` field, so `clean` counts them: nothing is lost.
Writes data/raw/pairs.jsonl and data/raw/manifest.json.
"""

from __future__ import annotations

import json
import os
import random
import stat
import zlib
from pathlib import Path
from typing import Iterator

from stages.core import hh, hub, synthetic
from stages.core import params as P
from stages.core.io import (
    StageError,
    fail_cleanly,
    open_input,
    sha256_file,
    unicode_problem,
    warn_if_untracked,
    write_json,
    write_jsonl,
)
from stages.core.runinfo import log_timing

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
        bad = unicode_problem(obj[field])
        if bad:
            return rec | {"error": f"field '{field}': {bad}"}
    return rec | {"chosen": obj["chosen"], "rejected": obj["rejected"]}


def regular_file(path: Path) -> None:
    """Only regular files are read: a FIFO would block forever, a device such as /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: open_input says which, in one line
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise StageError(f"{path}: not a regular file (a FIFO, device or socket); refusing to read it")


def numbered_lines(path: Path, limits: P.DownloadLimits) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a `.jsonl` or `.jsonl.gz` file, in bounded memory: a line longer than
    `limits.max_line_bytes` stops with its number. The gzip stream is decompressed as it is read (at most 4 MiB at a
    time), so a file cut short (or corrupt) is an error naming the first line it could not give."""
    regular_file(path)

    def too_long(line: int):
        return StageError(
            f"{path}: line {line}: longer than download.limits.max_line_bytes ({limits.max_line_bytes:,} "
            "bytes); not an HH-RLHF record"
        )

    with open_input(path, "rb") as fh:
        if path.suffix != ".gz":
            line = 0
            while raw := fh.readline(limits.max_line_bytes + 2):
                line += 1
                if len(raw.rstrip(b"\n")) > limits.max_line_bytes:
                    raise too_long(line)
                yield line, raw
            return
        stream = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer (CRC-32, length) checked
        pending, line, chunk = b"", 0, b""
        while True:
            chunk = stream.unconsumed_tail or fh.read(1 << 16)
            try:
                data = stream.decompress(chunk, 1 << 22) if chunk else stream.flush()
                while stream.eof and stream.unused_data:  # a file made of several gzip members
                    rest, stream = stream.unused_data, zlib.decompressobj(wbits=31)
                    data += stream.decompress(rest, 1 << 22)
            except zlib.error as exc:
                raise StageError(f"{path}: line {line + 1}: the gzip stream is corrupt ({exc})") from None
            *complete, pending = (pending + data).split(b"\n")
            for raw in complete:
                line += 1
                if len(raw) > limits.max_line_bytes:
                    raise too_long(line)
                yield line, raw
            if len(pending) > limits.max_line_bytes:
                raise too_long(line + 1)
            if not chunk:
                break
        if not stream.eof:
            raise StageError(f"{path}: line {line + 1}: the gzip stream is truncated (the file was cut short)")
        if pending:
            yield line + 1, pending


def read_local_file(path: Path, subset: str, split: str, limits: P.DownloadLimits) -> tuple[list[dict], int]:
    """Every non-blank line of one `<split>.jsonl.gz` (or `.jsonl`) file as a record, and the number of blank lines
    (skipped, counted in the manifest); unreadable files, and files over the limits, are fatal."""
    rows: list[dict] = []
    blank = 0
    for line, raw in numbered_lines(path, limits):
        if not raw.strip():
            blank += 1
            continue
        if len(rows) >= limits.max_lines_per_file:
            raise StageError(
                f"{path}: line {line}: more than download.limits.max_lines_per_file "
                f"({limits.max_lines_per_file:,}) records"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            rows.append(_record(subset, split, line, None) | {"error": f"not UTF-8 ({exc.reason} at byte {exc.start})"})
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            rows.append(_record(subset, split, line, None) | {"error": f"not valid JSON ({exc.msg})"})
            continue
        rows.append(_record(subset, split, line, obj))
    if not rows:
        raise StageError(f"{path}: the file holds no records" + (f" ({blank} blank lines)" if blank else ""))
    return rows, blank


def read_folder(root: Path, p: P.DownloadParams, origin: str = "") -> tuple[list[dict], list[dict]]:
    """Every `<subset>/<split>.jsonl.gz` (or `.jsonl`) file of a folder laid out like Anthropic's repository."""
    rows, files = [], []
    for subset in p.subsets:
        for split in p.splits:
            path = next(
                (c for c in (root / subset / f"{split}.jsonl.gz", root / subset / f"{split}.jsonl") if c.exists()), None
            )
            if path is None:
                raise StageError(
                    f"{root / subset / f'{split}.jsonl.gz'}: file not found (subset '{subset}', split '{split}')"
                )
            file_rows, blank = read_local_file(path, subset, split, p.limits)
            files.append(
                {
                    "subset": subset,
                    "split": split,
                    "path": origin + str(path.relative_to(root)) if origin else str(path),
                    "sha256": sha256_file(path),
                    "lines": len(file_rows),
                    **({"blank_lines": blank} if blank else {}),
                }
            )
            rows.extend(file_rows)
    return rows, files


def _local(p: P.DownloadParams) -> tuple[list[dict], list[dict]]:
    root = Path(p.dataset)
    if not root.is_dir():
        raise StageError(f"{root}: data directory not found (download.dataset)")
    warn_if_untracked(root, "download.dataset")
    return read_folder(root, p)


def _hub(p: P.DownloadParams) -> tuple[list[dict], list[dict]]:
    """The same files from the hub repository at the pinned commit, through the Hugging Face cache (offline: from
    a cache filled beforehand; docs/study-on-gpu.md)."""
    patterns = hh.dataset_files(p)
    folder = hub.dataset_snapshot(p.dataset, p.revision, patterns)
    rows, files = read_folder(folder, p, origin=f"hf://datasets/{p.dataset}@{folder.name}/")
    return rows, [f | {"revision": folder.name} for f in files]


def _synthetic(p: P.DownloadParams, seed: int) -> tuple[list[dict], list[dict]]:
    rows, files = [], []
    for subset in p.subsets:
        for split in p.splits:
            n = p.synthetic.train_pairs if split == "train" else p.synthetic.test_pairs
            pairs, noise = synthetic.generate(
                subset, split, n, seed, p.synthetic.noise_rate, p.synthetic.multi_turn_rate
            )
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
    write_json(
        OUT_DIR / "manifest.json",
        {
            "source": p.source,
            "dataset": p.dataset if p.source != "synthetic" else "synthetic (built-in generator)",
            "synthetic": p.source == "synthetic",
            "files": files,
            "pairs_written": len(rows),
            "unreadable_lines": sum("error" in r for r in rows),
        },
    )
    log_timing("download", {"pairs": len(rows)})
    print(f"download: {len(rows)} pairs from {len(files)} file(s) ({p.source})")


if __name__ == "__main__":
    main()
