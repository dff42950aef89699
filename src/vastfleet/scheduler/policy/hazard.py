"""Interruption hazard: a prior from host reliability and the bid's margin, learned per host and per GPU model.

Gamma–Poisson: a rate with prior Gamma(a, b) after n events in x hours of exposure has posterior mean
(a + n) / (a + b x). Three causes are learned apart:
  - host offline: proportional to 1 - reliability, with the scale learned over the whole fleet (what
    "0.95 reliable" means in events per hour depends on the market), then per host;
  - rented away on demand (`gone`, kills a bid): per GPU model, then per host;
  - outbid (the lowest running bid rising): counted by the size of the rise, per GPU model then per host,
    so the hazard of a bid falls with its margin over min_bid.
`FleetStats` is plain data the live loop fills from what the fleet sees; nothing here does I/O.
Exposure is what the events are counted against, so it must match what is watched: the replay sees every
listed host's events and counts each host from when it is first seen (`watch_all`); the live loop sees
losses and outbids only on its own rentals, so it counts only the hours they ran (`expose`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# thresholds at which outbid sizes are counted (relative jump of the lowest running bid)
MARGIN_BINS = np.array([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0])
GONE_PRIOR_RATE = 0.005  # offers rented away per hour before any observation
DOWNTIME_PRIOR_H = 3.0  # how long an offer that went away stays away, before any observation
RELIABILITY_FLOOR = 0.002  # 1 - reliability is floored: even a 1.0 host fails now and then


@dataclass
class _Counts:
    since_h: float  # fleet clock when first seen
    losses: float = 0.0
    offline: float = 0.0
    outbid: np.ndarray = field(default_factory=lambda: np.zeros(len(MARGIN_BINS)))
    reliability: float | None = None  # hosts only: as listed when first seen
    exposed_h: float = 0.0  # hosts only: hours watched through `expose` (when not `watch_all`)


@dataclass
class FleetStats:
    """What this fleet has seen, per host and per GPU model. `clock_h` is observed hours so far."""

    clock_h: float = 0.0
    hosts: dict[int, _Counts] = field(default_factory=dict)
    gpus: dict[str, _Counts] = field(default_factory=dict)
    gpu_hosts: dict[str, set[int]] = field(default_factory=dict)
    downtime: dict[str, tuple[float, int]] = field(default_factory=dict)  # cause -> (hours, episodes)
    watch_all: bool = True  # every seen host's events are observed; False: only the hours `expose` adds

    def advance(self, hours: float) -> None:
        self.clock_h += max(hours, 0.0)

    def _host(self, host: int, gpu: str) -> tuple[_Counts, _Counts]:
        h = self.hosts.get(host)
        if h is None:
            h = self.hosts[host] = _Counts(since_h=self.clock_h)
            self.gpu_hosts.setdefault(gpu, set()).add(host)
        g = self.gpus.get(gpu)
        if g is None:
            g = self.gpus[gpu] = _Counts(since_h=self.clock_h)
        return h, g

    def see(self, host: int, gpu: str, reliability: float | None = None) -> None:
        """Start counting exposure for a host (it is listed now)."""
        h, _ = self._host(host, gpu)
        if reliability is not None and h.reliability is None:
            h.reliability = float(reliability)

    def expose(self, host: int, gpu: str, hours: float) -> None:
        """`hours` more of watching `host` for losses and outbids (one of our rentals ran there)."""
        h, _ = self._host(host, gpu)
        h.exposed_h += max(hours, 0.0)

    def observe_loss(self, host: int, gpu: str, offline: bool) -> None:
        """The host went offline (offline=True) or the offer was rented away on demand."""
        h, g = self._host(host, gpu)
        h.losses += 1
        g.losses += 1
        if offline:
            h.offline += 1
            g.offline += 1

    def observe_outbid(self, host: int, gpu: str, relative_jump: float) -> None:
        """The lowest running bid rose by `relative_jump` (0.1 = +10%): bids with less margin were paused."""
        h, g = self._host(host, gpu)
        hit = MARGIN_BINS < relative_jump
        h.outbid[hit] += 1
        g.outbid[hit] += 1

    def observe_back(self, cause: str, hours: float) -> None:
        """An offer that went away (`offline`, `gone`) is back after `hours`."""
        total, n = self.downtime.get(cause, (0.0, 0))
        self.downtime[cause] = (total + max(hours, 0.0), n + 1)

    def expected_downtime_h(self, cause: str) -> float:
        """Mean hours an offer stays away for `cause`, with one pseudo-episode of the prior."""
        total, n = self.downtime.get(cause, (0.0, 0))
        return (DOWNTIME_PRIOR_H + total) / (1 + n)

    def exposure(self, host: int) -> float:
        h = self.hosts.get(host)
        if h is None:
            return 0.0
        return max(self.clock_h - h.since_h, 0.0) if self.watch_all else h.exposed_h

    def gpu_exposure(self, gpu: str) -> float:
        return sum(self.exposure(h) for h in self.gpu_hosts.get(gpu, ()))

    def to_json(self) -> dict[str, Any]:
        """What is worth keeping across a restart: hosts with something observed (a host only listed is seen
        again at the next listing), every GPU model, how long offers stay away."""
        def counts(c: _Counts) -> dict[str, Any]:
            return {"since_h": c.since_h, "losses": c.losses, "offline": c.offline, "outbid": c.outbid.tolist(),
                    "reliability": c.reliability, "exposed_h": c.exposed_h}

        kept = {h: c for h, c in self.hosts.items()
                if self.watch_all or c.exposed_h > 0 or c.losses > 0 or c.outbid.any()}
        return {"v": 1, "clock_h": self.clock_h, "watch_all": self.watch_all,
                "hosts": {str(h): counts(c) for h, c in kept.items()},
                "gpus": {g: counts(c) for g, c in self.gpus.items()},
                "gpu_hosts": {g: sorted(h for h in hs if h in kept) for g, hs in self.gpu_hosts.items()},
                "downtime": {k: list(v) for k, v in self.downtime.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetStats:
        """The inverse of `to_json`; raises ValueError (or KeyError/TypeError) on anything else."""
        if data.get("v") != 1:
            raise ValueError(f"unknown fleet stats version {data.get('v')!r}")

        def counts(d: dict[str, Any]) -> _Counts:
            outbid = np.asarray(d["outbid"], dtype=float)
            if outbid.shape != MARGIN_BINS.shape:
                raise ValueError("outbid counts do not match the margin bins")
            rel = d.get("reliability")
            return _Counts(float(d["since_h"]), float(d["losses"]), float(d["offline"]), outbid,
                           None if rel is None else float(rel), float(d.get("exposed_h", 0.0)))

        return cls(clock_h=float(data["clock_h"]), watch_all=bool(data["watch_all"]),
                   hosts={int(h): counts(c) for h, c in data["hosts"].items()},
                   gpus={str(g): counts(c) for g, c in data["gpus"].items()},
                   gpu_hosts={str(g): {int(h) for h in hs} for g, hs in data["gpu_hosts"].items()},
                   downtime={str(k): (float(v[0]), int(v[1])) for k, v in data["downtime"].items()})

    def offline_scale(self, a: float) -> float:
        """Offline events per unit of (1 - reliability) x hour over the fleet; 1 before any exposure."""
        known = [c for c in self.hosts.values() if c.reliability is not None]
        if not known:
            return 1.0
        rel = np.array([c.reliability for c in known], dtype=float)
        if self.watch_all:
            expo = np.maximum(self.clock_h - np.array([c.since_h for c in known]), 0.0)
        else:
            expo = np.array([c.exposed_h for c in known])
        expected = float(reliability_prior(rel) @ expo)
        return (a + sum(c.offline for c in known)) / (a + expected)


def reliability_prior(reliability: np.ndarray) -> np.ndarray:
    """Offline rate per hour before any observation: 1 - reliability per hour, floored (0.99 -> MTBI 100 h)."""
    return np.maximum(1.0 - np.clip(reliability, 0.0, 1.0), RELIABILITY_FLOOR)


def _outbid_prior(margins: np.ndarray, rate: float, scale: float) -> np.ndarray:
    return rate * np.exp(-np.maximum(margins, 0.0) / scale)


def _gp(a: float, mean: np.ndarray | float, n: np.ndarray | float, x: np.ndarray | float) -> np.ndarray:
    """Posterior mean of a Gamma(a, a/mean) prior after n events in x hours."""
    m = np.maximum(mean, 1e-9)
    return np.asarray((a + n) / (a / m + x), dtype=float)


def hazards(stats: FleetStats, hosts: np.ndarray, gpus: np.ndarray, reliability: np.ndarray,
            margins: np.ndarray, prior_strength: float = 2.0, outbid_rate: float = 0.02,
            outbid_scale: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per offer: (loss rate while bidding, offline rate on demand, outbid rate at each margin [n, m]).

    A bid is lost when its host goes offline or the offer is rented away; an on-demand rental only in the
    first case. Each rate starts from the fleet's (or the GPU model's) estimate and moves with the host's
    own exposure.
    """
    n = len(hosts)
    a = prior_strength
    margins = np.asarray(margins, float)
    idx = np.clip(np.searchsorted(MARGIN_BINS, margins, side="right") - 1, 0, len(MARGIN_BINS) - 1)
    p_off = stats.offline_scale(a) * reliability_prior(np.asarray(reliability, dtype=float))
    p_gone = np.full(n, GONE_PRIOR_RATE)
    p_ob = np.broadcast_to(_outbid_prior(margins, outbid_rate, outbid_scale), (n, len(margins))).copy()
    for gname in np.unique(gpus.astype(str)) if n else ():
        g = stats.gpus.get(gname)
        x = stats.gpu_exposure(gname)
        if g is None or x <= 0:
            continue
        sel = gpus == gname
        p_gone[sel] = _gp(a, GONE_PRIOR_RATE, g.losses - g.offline, x)
        p_ob[sel] = _gp(a, p_ob[sel][0], g.outbid[idx], x)[None, :]
    if stats.hosts and n:
        order = list(stats.hosts)
        pos = {h: i for i, h in enumerate(order)}
        where = np.array([pos.get(int(h), -1) for h in hosts], dtype=np.int64)
        known = where >= 0
        if known.any():
            w = where[known]
            counts = [stats.hosts[order[i]] for i in w]
            expo = np.array([stats.exposure(order[i]) for i in w])
            offline = np.array([c.offline for c in counts])
            gone = np.array([c.losses - c.offline for c in counts])
            outb = np.stack([c.outbid for c in counts])[:, idx]
            p_off[known] = _gp(a, p_off[known], offline, expo)
            p_gone[known] = _gp(a, p_gone[known], gone, expo)
            p_ob[known] = _gp(a, p_ob[known], outb, expo[:, None])
    return p_off + p_gone, p_off, p_ob


def rental_hazards(stats: FleetStats, hosts: np.ndarray, gpus: np.ndarray, reliability: np.ndarray,
                   margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Per rental: (interruptions per hour as a bid at `margin` over min_bid, as on demand). A bid is lost or
    outbid; an on-demand rental only goes down with its host."""
    loss, offline, outbid = hazards(stats, np.asarray(hosts), np.asarray(gpus, dtype=object),
                                    np.asarray(reliability, dtype=float), np.array([margin]))
    return loss + outbid[:, 0], offline
