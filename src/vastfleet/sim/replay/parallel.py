"""The bound's per-job dynamic programs on every core: they are independent, and each takes 0.1–2 s.

`map_ordered(fn, items, n, cells)` returns `[fn(x) for x in items]` in order (`n` items), computed by a pool
of `forkserver` worker processes when that pays (enough cells of work, several cores), else in this process. Workers
get `fn` and each item by pickling: a module-level function and plain data. `items` may be a generator:
only twice as many items as workers are built and in flight at a time, so memory stays that of a few jobs.
Same inputs, same output: the pool changes where the arithmetic runs, not what it computes.
`VASTFLEET_BENCH_WORKERS` sets the pool size (1: never a pool).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_ITEMS = 4
MIN_CELLS = 200_000  # (tick, offer) cells over all items: below this, starting workers costs more than it saves
MAX_WORKERS = 16


def workers_for(n_items: int, cells: int) -> int:
    raw = os.environ.get("VASTFLEET_BENCH_WORKERS", "")
    if raw.strip():
        try:
            wanted = int(raw)
        except ValueError:
            wanted = 1
        return max(1, min(wanted, n_items))
    if n_items < MIN_ITEMS or cells < MIN_CELLS or "forkserver" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                      n_items, MAX_WORKERS))


def map_ordered(fn: Callable[[T], R], items: Iterable[T], n_items: int, cells: int,
                on_each: Callable[[int], None] | None = None, workers: int | None = None) -> list[R]:
    """`[fn(x) for x in items]` for `n_items` items of `cells` (tick, offer) cells in all; `on_each(k)` after
    the k-th result, in order."""
    n = workers_for(n_items, cells) if workers is None else max(1, min(workers, n_items))
    out: list[R] = []

    def done(result: R) -> None:
        out.append(result)
        if on_each is not None:
            on_each(len(out) - 1)

    if n <= 1:
        for item in items:
            done(fn(item))
        return out
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        pending: deque[Future[R]] = deque()
        source = iter(items)
        for item in source:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * n:
                break
        while pending:
            done(pending.popleft().result())
            for item in source:
                pending.append(pool.submit(fn, item))
                break
    return out
