"""Progress you can watch: a bar with an ETA on a terminal, plain periodic lines in CI logs and files."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def interactive() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def track(items: Iterable[T], total: int, what: str, unit: str = "batch", show: bool = True) -> Iterator[T]:
    """Yield `items`; on a terminal under a tqdm bar, otherwise with a line at every tenth of the way and the end."""
    if not show:
        yield from items
        return
    if interactive():
        from tqdm.auto import tqdm

        yield from tqdm(items, total=total, desc=what, unit=unit)
        return
    start, every = time.perf_counter(), max(1, total // 10)
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0 or i == total:
            spent = time.perf_counter() - start
            print(
                f"{what}: {i}/{total} {unit}es ({100 * i / total:.0f}%) | {duration(spent)} | "
                f"ETA {duration(spent / i * (total - i))}",
                flush=True,
            )
