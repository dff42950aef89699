"""Interruption hazard: a prior from host reliability and the bid's margin, learned per host and per GPU model.

Gamma–Poisson: a rate with prior Gamma(a, b) after n events in x hours of exposure has posterior mean
(a + n) / (b + x). Losses (host offline, offer rented away) and outbids (the lowest running bid rising) are
learned apart; outbids are counted by their size over min_bid, so the hazard of a bid falls with its margin.
`FleetStats` is plain data the live loop fills from what the fleet sees; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# thresholds at which outbid sizes are counted (relative jump of the lowest running bid)
MARGIN_BINS = np.array([0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0])


@dataclass
class _Counts:
    since_h: float  # fleet clock when first seen
    losses: float = 0.0
    offline: float = 0.0
    outbid: np.ndarray = field(default_factory=lambda: np.zeros(len(MARGIN_BINS)))


@dataclass
class FleetStats:
    """What this fleet has seen, per host and per GPU model. `clock_h` is observed hours so far."""

    clock_h: float = 0.0
    hosts: dict[int, _Counts] = field(default_factory=dict)
    gpus: dict[str, _Counts] = field(default_factory=dict)
    gpu_hosts: dict[str, set[int]] = field(default_factory=dict)

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

    def see(self, host: int, gpu: str) -> None:
        """Start counting exposure for a host (it is listed now)."""
        self._host(host, gpu)

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

    def exposure(self, host: int) -> float:
        h = self.hosts.get(host)
        return 0.0 if h is None else max(self.clock_h - h.since_h, 0.0)

    def gpu_exposure(self, gpu: str) -> float:
        return sum(self.exposure(h) for h in self.gpu_hosts.get(gpu, ()))


def reliability_prior(reliability: np.ndarray) -> np.ndarray:
    """Loss rate per hour before any observation: 1 - reliability per hour, floored (0.99 -> MTBI 100 h)."""
    return np.maximum(1.0 - np.clip(reliability, 0.0, 1.0), 0.002)


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

    The host's prior mean blends its reliability prior with its GPU model's posterior; the host's own
    exposure then moves it (Gamma–Poisson with `prior_strength` pseudo-events).
    """
    n = len(hosts)
    a = prior_strength
    rel_prior = reliability_prior(np.asarray(reliability, dtype=float))
    idx = np.clip(np.searchsorted(MARGIN_BINS, margins, side="right") - 1, 0, len(MARGIN_BINS) - 1)
    prior_ob = np.broadcast_to(_outbid_prior(np.asarray(margins, float), outbid_rate, outbid_scale),
                               (n, len(margins))).copy()
    p_loss = rel_prior.copy()
    p_off = 0.5 * rel_prior
    p_ob = prior_ob
    for gname in np.unique(gpus.astype(str)) if n else ():
        g = stats.gpus.get(gname)
        x = stats.gpu_exposure(gname)
        if g is None or x <= 0:
            continue
        sel = gpus == gname
        p_loss[sel] = 0.5 * (rel_prior[sel] + _gp(a, rel_prior[sel].mean(), g.losses, x))
        p_off[sel] = 0.5 * (0.5 * rel_prior[sel] + _gp(a, 0.5 * rel_prior[sel].mean(), g.offline, x))
        p_ob[sel] = _gp(a, prior_ob[0], g.outbid[idx], x)[None, :]
    if not stats.hosts:
        return p_loss, p_off, p_ob
    order = list(stats.hosts)
    pos = {h: i for i, h in enumerate(order)}
    where = np.array([pos.get(int(h), -1) for h in hosts], dtype=np.int64)
    known = where >= 0
    if not known.any():
        return p_loss, p_off, p_ob
    w = where[known]
    losses = np.array([stats.hosts[h].losses for h in order])[w]
    offline = np.array([stats.hosts[h].offline for h in order])[w]
    outb = np.stack([stats.hosts[h].outbid for h in order])[w][:, idx]
    expo = np.array([stats.exposure(h) for h in order])[w]
    p_loss[known] = _gp(a, p_loss[known], losses, expo)
    p_off[known] = _gp(a, p_off[known], offline, expo)
    p_ob[known] = _gp(a, p_ob[known], outb, expo[:, None])
    return p_loss, p_off, p_ob
