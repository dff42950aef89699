"""Seeded market traces of a vast-like marketplace, and seeded workloads that fit a market.

Same seed, same bytes. Volatility scales the rates of competing bids, host outages and offers rented away,
and the size of competing bids over min_bid. Events sit on a 300 s grid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vastfleet.errors import BadInput
from vastfleet.sim.replay.trace import Market
from vastfleet.sim.replay.workload import WorkJob
from vastfleet.spec.gpus import gpu_model

TICK = 300
VOLATILITY: dict[str, dict[str, float]] = {
    # competing bids per offer-hour, their size over min_bid, outage multiplier, rented-away per hour
    "low": {"bid_rate": 0.01, "bid_scale": 0.05, "offline_k": 0.5, "gone_rate": 0.005},
    "mid": {"bid_rate": 0.03, "bid_scale": 0.10, "offline_k": 1.0, "gone_rate": 0.01},
    "high": {"bid_rate": 0.08, "bid_scale": 0.20, "offline_k": 2.0, "gone_rate": 0.02},
}
GPUS = ("RTX 4090", "RTX 3090", "A100 SXM4", "L40S")


def _exp_ticks(rng: np.random.Generator, mean_h: float) -> int:
    return max(1, math.ceil(rng.exponential(mean_h) * 3600 / TICK))


def make_trace(seed: int, hours: float = 168.0, hosts: int = 60, volatility: str = "mid") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if volatility not in VOLATILITY:
        raise BadInput(f"volatility must be one of {', '.join(VOLATILITY)}")
    if hours <= 0 or hosts <= 0:
        raise BadInput("hours and hosts must be positive")
    v = VOLATILITY[volatility]
    rng = np.random.default_rng(seed)
    T = int(hours * 3600 // TICK)
    events: list[dict[str, Any]] = []
    for h in range(hosts):
        g = gpu_model(GPUS[h % len(GPUS)])
        n = 1 if rng.random() < 0.8 else 2
        dph = round(g.dph * n * float(rng.uniform(0.8, 1.3)), 4)
        floor = round(dph * float(rng.uniform(0.3, 0.55)), 4)
        rel = float(rng.uniform(0.95, 0.999)) if rng.random() < 0.8 else float(rng.uniform(0.85, 0.95))
        oid = f"o{h}"
        events.append({"t": 0, "type": "offer", "id": oid, "host": h, "gpu_name": g.name, "num_gpus": n,
                       "dph_total": dph, "min_bid": floor, "reliability": round(rel, 4),
                       "dlperf": round(g.dlperf * n * float(rng.uniform(0.85, 1.1)), 2),
                       "storage_dph": round(0.004 * n, 4), "inet_down_cost": round(float(rng.uniform(0, 0.01)), 4)})
        p = {"bid": v["bid_rate"] * TICK / 3600, "off": (1 - rel) * v["offline_k"] * TICK / 3600,
             "gone": v["gone_rate"] * TICK / 3600, "price": TICK / 3600 / 24}
        bid_end = off_end = gone_end = -1
        cur_floor = floor
        for k in range(1, T):
            t = k * TICK
            if k == bid_end:
                events.append({"t": t, "type": "bid_end", "id": oid})
            if k == off_end:
                events.append({"t": t, "type": "online", "host": h})
            if k == gone_end:
                events.append({"t": t, "type": "back", "id": oid})
            if rng.random() < p["price"]:
                cur_floor = round(min(max(cur_floor * float(rng.uniform(0.9, 1.1)), floor * 0.7), floor * 1.4), 4)
                events.append({"t": t, "type": "price", "id": oid, "min_bid": cur_floor})
            if k > bid_end and rng.random() < p["bid"]:
                price = round(cur_floor * (1 + float(rng.exponential(v["bid_scale"]))), 4)
                events.append({"t": t, "type": "bid", "id": oid, "price": min(price, dph)})
                bid_end = k + _exp_ticks(rng, 3.0)
            if k > off_end and rng.random() < p["off"]:
                events.append({"t": t, "type": "offline", "host": h})
                off_end = k + _exp_ticks(rng, 2.0)
            if k > gone_end and rng.random() < p["gone"]:
                events.append({"t": t, "type": "gone", "id": oid})
                gone_end = k + _exp_ticks(rng, 6.0)
    events.sort(key=lambda e: (e["t"], str(e.get("id", e.get("host")))))
    meta = {"tick": TICK, "horizon": T * TICK, "name": f"vast-{volatility}-s{seed}", "seed": seed,
            "volatility": volatility}
    return meta, events


def make_workload(market: Market, seed: int, jobs: int = 40, work_hours: tuple[float, float] = (2.0, 24.0),
                  slack_factor: tuple[float, float] = (1.5, 3.0), restart_s: float = 300.0) -> list[WorkJob]:
    """Jobs over the market's GPUs; every deadline leaves on-demand from submit time to spare."""
    rng = np.random.default_rng(seed)
    horizon = market.n_ticks * market.tick
    names = sorted({str(g) for g in market.gpu})
    out: list[WorkJob] = []
    for i in range(jobs):
        first = names[i % len(names)]
        accept = [first] + [x for x in names if x != first and rng.random() < 0.3]
        mask = np.isin(market.gpu, np.array(accept, dtype=object))
        nmin = int(market.num_gpus[mask].min())
        ref = float(np.median(market.dlperf[mask & (market.num_gpus == nmin)]))
        work = round(float(rng.uniform(*work_hours)), 3)
        best_speed = float((market.dlperf[mask] / ref).max())
        od_s = work * 3600 / min(best_speed, 1.0) + restart_s
        deadline = math.ceil(od_s * float(rng.uniform(*slack_factor)) + 3600)
        latest = horizon - deadline * 1.3 - 6 * 3600
        if latest <= 0:
            raise BadInput("the market trace is too short for this workload; ask for fewer work hours")
        submit = int(rng.uniform(0, latest) // market.tick * market.tick)
        out.append(WorkJob(f"j{i}", float(submit), work, round(ref, 3), tuple(accept), nmin, float(deadline)))
    return sorted(out, key=lambda j: (j.submit, j.id))
