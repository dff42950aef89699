"""The one cost model: expected dollars to finish a job's remaining work on each offer.

Work is in hours at the job's reference DLPerf, so an offer runs it at speed dlperf / ref_dlperf. With
hazard h (interruptions per hour), checkpoint every tau seconds costing C seconds, restart overhead R:
  productive fraction per cycle   tau / (tau + C)
  expected loss per interruption  R + (tau + C) / 2       (restart + half a cycle of work lost)
  expected wall hours             T = W/s * (1 + C/tau) / (1 - h * (R + (tau + C)/2) / 3600)
  expected dollars                (price + storage) * (T + R0/3600) + launch bandwidth * (1 + h*T)
Cost is linear in W (A*W + B), so the allocator ranks 20,000 offers with two array operations per job.
Pure numpy; never does I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from vastfleet.scheduler.policy.hazard import FleetStats, hazards
from vastfleet.scheduler.policy.types import OfferTable, PolicyParams

_MAX_LOSS_SHARE = 0.9  # beyond this an offer cannot finish in expectation: its cost is infinite


@dataclass
class Terms:
    """Per offer, for one group of alike jobs: expected cost = a * work_hours + b, for each kind."""

    a_bid: np.ndarray
    b_bid: np.ndarray
    bid: np.ndarray  # chosen bid $/h
    margin: np.ndarray
    h_bid: np.ndarray
    tau_bid: np.ndarray
    a_od: np.ndarray
    b_od: np.ndarray
    h_od: np.ndarray
    tau_od: np.ndarray
    speed: np.ndarray
    factor_bid: np.ndarray  # expected wall hours per work-hour at speed 1
    factor_od: np.ndarray

    @functools.cached_property
    def typical_tau_bid(self) -> float | None:
        """The median checkpoint interval as a bid (None without offers): read per job, computed per group."""
        return float(np.median(self.tau_bid)) if len(self.tau_bid) else None


def young_daly(ckpt_s: float, h: np.ndarray, p: PolicyParams, fixed_s: float | None = None) -> np.ndarray:
    """Seconds between checkpoints per hazard; `fixed_s`, the job's own interval, is what it will do."""
    if fixed_s is not None:
        return np.full(np.shape(h), float(fixed_s))
    with np.errstate(divide="ignore"):
        tau = np.sqrt(2.0 * ckpt_s * 3600.0 / np.maximum(h, 1e-12))
    return np.clip(tau, p.min_ckpt_interval_s, p.max_ckpt_interval_s)


def wall_factor(h: np.ndarray, tau: np.ndarray, ckpt_s: float, overhead_s: float,
                checkpoints: bool, work_h: float = 1.0) -> np.ndarray:
    """Expected wall hours per hour of work (speed 1), including checkpoints and interruptions."""
    if checkpoints:
        productive = 1.0 + ckpt_s / tau
        loss_s = overhead_s + (tau + ckpt_s) / 2.0
    else:
        productive = np.ones_like(h)
        loss_s = np.full_like(h, overhead_s + work_h * 3600.0 / 2.0)
    share = h * loss_s / 3600.0
    with np.errstate(divide="ignore"):
        return np.where(share < _MAX_LOSS_SHARE, productive / (1.0 - np.minimum(share, _MAX_LOSS_SHARE)), np.inf)


def option_terms(table: OfferTable, stats: FleetStats, params: PolicyParams, *, ref_dlperf: float,
                 ckpt_s: float, checkpoints: bool = True, work_h: float = 1.0, first_overhead_s: float | None = None,
                 bandwidth: bool = True, price_cap: float = float("inf"), interval_s: float | None = None) -> Terms:
    """Expected-cost terms for bidding (best margin) and on demand on every offer of `table`.

    No price above the fleet's ceiling or `price_cap` (the job's) is ever chosen, and no bid above the
    offer's on-demand price: such options cost infinity, so whatever arithmetic made min_bid, the bid stays
    bounded. `interval_s`: the job's own checkpoint interval (None: Young/Daly on each offer's hazard)."""
    p = params
    margins = np.asarray(p.margins, dtype=float)
    loss, off, outbid = hazards(stats, table.host, table.gpu, table.reliability, margins, p.prior_strength,
                                p.outbid_prior_rate, p.outbid_prior_scale)
    speed = np.maximum(table.dlperf / max(ref_dlperf, 1e-9), 1e-9)
    r0 = p.restart_overhead_s if first_overhead_s is None else first_overhead_s
    bw = table.inet_down_cost * p.launch_gb if bandwidth else np.zeros(len(table))
    relaunch_bw = table.inet_down_cost * p.launch_gb

    def per_kind(price: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        tau = young_daly(ckpt_s, h, p, interval_s)
        f = wall_factor(h, tau, ckpt_s, p.restart_overhead_s, checkpoints, work_h)
        rate = price + table.storage_dph if price.ndim == 1 else price + table.storage_dph[:, None]
        sp = speed if price.ndim == 1 else speed[:, None]
        rb = relaunch_bw if price.ndim == 1 else relaunch_bw[:, None]
        a = (rate * f + rb * h * f) / sp
        return a, tau, f, rate

    ceiling = np.minimum(table.ceiling(p), price_cap)
    bids = table.min_bid[:, None] * (1.0 + margins[None, :])
    h_all = loss[:, None] + outbid
    a_all, tau_all, f_all, _ = per_kind(bids, h_all)
    bid_cap = np.minimum(ceiling, table.dph)[:, None] * (1.0 + 1e-9)
    a_all = np.where((bids <= bid_cap) & np.isfinite(bids) & (bids > 0), a_all, np.inf)
    best = np.argmin(a_all, axis=1) if len(table) else np.zeros(0, dtype=np.int64)
    rows = np.arange(len(table))
    bid = bids[rows, best]
    a_bid = a_all[rows, best]
    b_bid = (bid + table.storage_dph) * r0 / 3600.0 + bw
    a_od, tau_od, f_od, _ = per_kind(table.dph, off)
    a_od = np.where((table.dph <= ceiling * (1.0 + 1e-9)) & np.isfinite(table.dph), a_od, np.inf)
    b_od = (table.dph + table.storage_dph) * r0 / 3600.0 + bw
    return Terms(a_bid=a_bid, b_bid=b_bid, bid=bid, margin=margins[best], h_bid=h_all[rows, best],
                 tau_bid=tau_all[rows, best], a_od=a_od, b_od=b_od, h_od=off, tau_od=tau_od, speed=speed,
                 factor_bid=f_all[rows, best], factor_od=f_od)
