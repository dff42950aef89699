"""Feasibility as a chain of small named filters over an `OfferTable` (Nomad's stack: cheap first).

Each filter returns a boolean mask; `feasible` ANDs them in order and counts, per filter, how many offers it
was the first to reject (the `--explain` view). Never ranks, never does I/O.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vastfleet.scheduler.policy.types import JobView, OfferTable

Filter = Callable[[JobView, OfferTable, float], np.ndarray]


def gpu_model(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return np.isin(t.gpu, np.array(job.gpu_names, dtype=object))


def gpu_count(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return t.num_gpus >= job.num_gpus


def vram(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return t.gpu_ram >= job.min_gpu_ram_gb


def cuda(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return t.cuda >= job.min_cuda


def disk(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return t.disk >= job.disk_gb


def verified(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return t.verified | (not job.verified)


def reliability_floor(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return t.reliability >= job.min_reliability


def direct_ports(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return t.ports >= job.direct_ports


def bandwidth(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    return t.inet_down >= job.min_inet_down_mbps


def price_cap(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    # an offer passes when at least its bid price fits the cap; the cost model drops on-demand above it
    return np.minimum(t.dph, t.min_bid) <= job.max_price_per_hour


def region(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    if not job.regions:
        return np.ones(len(t), dtype=bool)
    geo = np.array([str(g) for g in t.geo], dtype=object)
    ok = np.zeros(len(t), dtype=bool)
    for r in job.regions:
        ok |= np.array([g.endswith(r) or g.startswith(r) for g in geo], dtype=bool) if len(geo) else ok
    return ok


def excluded_hosts(job: JobView, t: OfferTable, now: float) -> np.ndarray:
    if not job.excluded_hosts:
        return np.ones(len(t), dtype=bool)
    return ~np.isin(t.host, np.fromiter(job.excluded_hosts, dtype=np.int64))


# The chain reads top to bottom, cheapest and most selective first.
CHAIN: tuple[tuple[str, Filter], ...] = (
    ("gpu_model", gpu_model),
    ("gpu_count", gpu_count),
    ("vram", vram),
    ("cuda", cuda),
    ("disk", disk),
    ("verified", verified),
    ("reliability_floor", reliability_floor),
    ("direct_ports", direct_ports),
    ("bandwidth", bandwidth),
    ("price_cap", price_cap),
    ("region", region),
    ("excluded_host", excluded_hosts),
)


def feasible(job: JobView, table: OfferTable, now: float = 0.0,
             rejections: dict[str, int] | None = None) -> np.ndarray:
    """Mask of offers that pass every filter; `rejections[name]` counts offers each filter removed first."""
    mask = np.ones(len(table), dtype=bool)
    for name, fn in CHAIN:
        passed = fn(job, table, now)
        if rejections is not None:
            rejections[name] = rejections.get(name, 0) + int(np.count_nonzero(mask & ~passed))
        mask &= passed
        if rejections is None and not mask.any():
            break
    return mask
