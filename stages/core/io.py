"""Small file helpers. Every write is atomic (temp file + rename) so an interrupted stage never leaves a
half-written output that DVC, or the next stage, could take as finished."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class StageError(Exception):
    """A problem the user must fix; stages print it as one line and exit with status 1."""


def fail_cleanly(main):
    """Run a stage's main(), turning StageError (and disk-full errors) into one readable line."""

    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except StageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except OSError as exc:
            if exc.errno in WRITE_FAULTS:  # from a library's own write (the project's writers name the file)
                where = f" while writing {exc.filename}" if exc.filename else ""
                print(f"error: {WRITE_FAULTS[exc.errno]}{where}: {exc.strerror}", file=sys.stderr)
                raise SystemExit(1) from None
            raise

    wrapper.__wrapped__ = main
    wrapper.__doc__ = main.__doc__
    return wrapper


WRITE_FAULTS = {
    errno.ENOSPC: "disk full",
    errno.EFBIG: "file too large for the file-size limit",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> None:
    """The one atomic writer: a temp file beside the target, flushed to disk, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; an output gets what any new file would (team caches)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno in WRITE_FAULTS:
            raise StageError(
                f"{path}: cannot write it ({WRITE_FAULTS[exc.errno]}); nothing was left half-written"
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    _atomic_text(Path(path), json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    _atomic_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def write_text(path: str | Path, text: str) -> None:
    _atomic_text(Path(path), text)


def open_input(path: str | Path, mode: str = "r"):
    """open() for a stage's input, with a one-line error for what a user can fix: a missing file, a folder where a
    file should be, a file the stage may not read."""
    path = Path(path)
    try:
        return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise StageError(f"{path}: is a folder, not a file") from None
    except PermissionError:
        raise StageError(f"{path}: permission denied (cannot read it)") from None


def decode_utf8(data: bytes, source: str | Path) -> str:
    """UTF-8 text of an input's bytes; undecodable bytes are an error naming the source and the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise StageError(f"{source}: line {line}: not UTF-8 ({exc.reason})") from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text input, read whole."""
    with open_input(path, "rb") as fh:
        return decode_utf8(fh.read(), path)


def unicode_problem(text: str) -> str | None:
    """Valid JSON can hold a lone surrogate ("\\ud800"), which no UTF-8 file can: say where, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"lone surrogate \\u{ord(text[exc.start]):04x} at character {exc.start} (not valid Unicode)"
    return None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise StageError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object); a bad line is a StageError naming file and line."""
    path = Path(path)
    with open_input(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StageError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise StageError(f"{path}: line {lineno}: expected a JSON object")
            yield lineno, obj


def read_jsonl(path: str | Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place, replacing any older one."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp_dir, final_dir)


def fresh_tmp_dir(final_dir: str | Path) -> Path:
    """A clean sibling folder to write a stage's output into before it is moved into place."""
    final_dir = Path(final_dir)
    tmp = final_dir.parent / f".{final_dir.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (library errors run on for pages), or its type."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


EXTERNAL = Path("data/external")  # local inputs live here, so DVC sees them (dvc.yaml: a dependency of the stages)


def warn_if_untracked(path: str | Path, what: str) -> None:
    """A local input outside data/external/ is invisible to DVC: changing it would leave results stale while
    `dvc status` says all is up to date. Say so, in one line (docs/experiments.md: Local data)."""
    try:
        inside = Path(path).resolve().is_relative_to(EXTERNAL.resolve())
    except OSError:
        inside = False
    if not inside:
        print(
            f"warning: {path} ({what}) is outside {EXTERNAL}/, so DVC does not see changes to it; move or "
            f"`dvc import-url` it into {EXTERNAL}/ (docs/experiments.md: Local data)",
            file=sys.stderr,
        )


def is_local(path: str) -> bool:
    """True for a folder on disk; a string like `facebook/opt-350m` that is not a folder is a hub id."""
    return Path(path).exists() or path.startswith((".", "/"))


def save_figure(fig, path: Path) -> None:
    """A matplotlib figure as a PNG, written whole (no version stamp: identical re-runs give identical bytes)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})  # no version stamp: identical re-runs
    plt.close(fig)
    tmp.replace(path)
