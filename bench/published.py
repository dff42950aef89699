"""Published baselines on the published inputs, then ours beside them (issue 13, "figures against published tables").

Run: .venv/bin/python bench/published.py [--quick] [--json] [--data ../shared/data/traces/skynomad-artifact]

Two settings, both on the AWS p3.2xlarge (1x V100) traces of the SkyNomad artifact (docs/bench.md, "Published
settings", says how each maps onto the replay and what differs):
- cbl: Can't Be Late (NSDI '24) single zone: a 48 h job, deadline 60 h (job fraction 0.8), changeover 0.2 h, one
  zone at a time (us-west-2a, us-west-2b: the V100 zones of the Can't Be Late simulator), spot at the simulator's
  constant $0.9731/h against $3.06/h on demand; costs as a fraction of running the job on demand.
- skynomad: SkyNomad's V100 cross-area case (its `--config v100`, Figure 9b): zones us-east-1c, us-east-2b,
  us-west-2a; deadline 59.908 h (1,106 ticks), job = deadline / 1.5; windows 3, 5, 7, 8 and 14 of the sequential
  tiling by the deadline; restart 0.2 h; a 50 GB checkpoint whose S3 egress is paid on every move across regions;
  per-tick spot prices; mean dollars over the five windows.
Every run uses the replay engine with cloud-spot billing (`Options.spot_pays_market`), the baselines of
`sim/replay/baselines.py` and the product's policy through its translator (`sim/replay/ours.py`); the omniscient
figure is the replay's optimum (`sim/replay/optimum.py`), a lower bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from vastfleet.scheduler.policy import PolicyParams
from vastfleet.sim.replay.baselines import GreedySpot, OnDemand, UniformProgress
from vastfleet.sim.replay.convert import V100_DLPERF, V100_OD, convert_v100
from vastfleet.sim.replay.engine import Action, JobRun, Options, Replay, ReplayPolicy
from vastfleet.sim.replay.optimum import job_bound
from vastfleet.sim.replay.ours import Ours
from vastfleet.sim.replay.trace import Market, compile_market
from vastfleet.sim.replay.workload import WorkJob

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "traces" / "skynomad-artifact"
TICK = 195  # seconds, the V100 traces' probe interval

# Can't Be Late: 48 h job, job fraction 0.8 -> deadline 60 h; changeover 0.2 h; k = 3.06 / 0.9731
CBL = {"zones": ["us-west-2a", "us-west-2b"], "work_h": 48.0, "deadline_h": 60.0, "restart_h": 0.2,
       "spot_price": 0.9731, "start_every_h": 24.0, "quick_every_h": 168.0,
       "published": {"greedy_spot": 0.756, "uniform_progress": 0.675, "optimum": 0.613}}
# SkyNomad --config v100: deadline = the window (1,106 ticks of 195 s), job = deadline / 1.5
SKYNOMAD = {"zones": ["us-east-1c", "us-east-2b", "us-west-2a"], "window_ticks": 1106, "deadline_ratio": 1.5,
            "windows": [3, 5, 7, 8, 14], "quick_windows": [3, 8], "restart_h": 0.2, "checkpoint_gb": 50.0,
            "published": {"uniform_progress": 47.02, "optimum": 37.37, "skynomad": 41.73}}
BASELINE_NAMES = {"greedy_spot": "greedy", "uniform_progress": "Uniform Progress", "optimum": "omniscient / Optimal",
                  "on_demand": "on demand", "ours": "ours"}
CKPT_S = 60.0  # progress is never lost in the published simulators: checkpoints are free, so every minute


def egress_per_gb(a: str, b: str) -> float:
    """S3 transfer $/GB between two AWS zones, as SkyNomad's migration model prices it (same region free)."""
    ra, rb = a[:-1], b[:-1]
    if ra == rb:
        return 0.0
    if {ra, rb} == {"us-east-1", "us-east-2"}:
        return 0.01
    return 0.02


def full_market(data: Path, zones: list[str], inet_down_cost: float = 0.0) -> Market:
    meta, events = convert_v100(data, zones)
    for e in events:
        if e["type"] == "offer":
            e["inet_down_cost"] = inet_down_cost
    for no, e in enumerate(events, 1):
        e["_no"] = no
    return compile_market(meta, events, meta["name"])


def window(m: Market, k0: int, n: int, spot_price: float | None = None) -> Market:
    """Ticks [k0, k0 + n) of `m` as a market of their own, optionally at one constant spot price."""
    k1 = min(k0 + n, m.n_ticks)
    floor = m.floor[k0:k1].copy()
    if spot_price is not None:
        floor[:] = spot_price
    return dataclasses.replace(m, listed_from=np.zeros_like(m.listed_from), dph=m.dph[k0:k1], floor=floor,
                               comp=m.comp[k0:k1], online=m.online[k0:k1], gone=m.gone[k0:k1])


class Tracked:
    """Wraps a policy and records, per job, the zones its successive rentals ran in (for the egress bill)."""

    def __init__(self, inner: ReplayPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.zones: dict[str, list[int]] = {}

    def step(self, sim: Replay, k: int, now: float) -> list[Action]:
        for run in sim.active():
            if run.rental is not None:
                seq = self.zones.setdefault(run.job.id, [])
                if not seq or seq[-1] != run.rental.offer:
                    seq.append(run.rental.offer)
        return self.inner.step(sim, k, now)


def make(name: str, o: Options) -> ReplayPolicy:
    if name == "on_demand":
        return OnDemand(CKPT_S)
    if name == "greedy_spot":
        return GreedySpot(CKPT_S, spot_below_od=True)
    if name == "uniform_progress":
        return UniformProgress(CKPT_S, spot_below_od=True)
    # the translator's own configuration (sim/replay/ours.py) with the one-minute checkpoint floor the free
    # checkpoints of this setting allow (the product's default floor is 5 minutes)
    return Ours(PolicyParams(restart_overhead_s=o.restart_overhead_s, resume_overhead_s=o.resume_overhead_s,
                             launch_gb=o.launch_gb, lower_bids=True, max_price_factor=float("inf"),
                             max_price_per_gpu_hour=float("inf"), min_ckpt_interval_s=CKPT_S))


def run_case(m: Market, job: WorkJob, o: Options, policies: list[str], checkpoint_gb: float = 0.0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in policies:
        pol = Tracked(make(name, o))
        run: JobRun = Replay(m, [job], o).run(pol)[job.id]
        seq = pol.zones.get(job.id, [])
        egress = sum(egress_per_gb(m.offer_keys[a], m.offer_keys[b]) * checkpoint_gb for a, b in pairwise(seq))
        late = run.done_at is None or run.done_at > (job.deadline_at or math.inf) + 1e-6
        out[name] = {"dollars": run.compute + run.storage + egress, "compute": run.compute, "egress": egress,
                     "moves": sum(1 for a, b in pairwise(seq) if a != b), "late": late,
                     "interruptions": len(run.interruptions)}
    bound = job_bound(m, job, dataclasses.replace(o, launch_gb=0.0))  # egress >= 0: leaving it out keeps a bound
    out["optimum"] = {"dollars": bound.dollars, "feasible": bound.feasible}
    return out


def cbl(data: Path, quick: bool, policies: list[str]) -> dict[str, Any]:
    s = CBL
    o = Options(restart_overhead_s=s["restart_h"] * 3600, resume_overhead_s=s["restart_h"] * 3600,
                checkpoint_cost_s=0.0, launch_gb=0.0, spot_pays_market=True)
    n = math.ceil(s["deadline_h"] * 3600 / TICK) + 1
    every = round((s["quick_every_h"] if quick else s["start_every_h"]) * 3600 / TICK)
    job = WorkJob("cbl", 0.0, s["work_h"], V100_DLPERF, ("Tesla V100",), 1, s["deadline_h"] * 3600)
    od_cost = s["work_h"] * V100_OD
    cases = []
    for zone in s["zones"]:
        m = full_market(data, [zone])
        for k0 in range(0, m.n_ticks - n, every):
            res = run_case(window(m, k0, n, s["spot_price"]), job, o, policies)
            cases.append({"zone": zone, "start_h": round(k0 * TICK / 3600, 2), **res})
    return summarise("cbl", cases, od_cost, s["published"], policies)


def skynomad(data: Path, quick: bool, policies: list[str]) -> dict[str, Any]:
    s = SKYNOMAD
    gb = s["checkpoint_gb"]
    # policies see a move's egress as the launch download ($0.02/GB x 50 GB, the common inter-region rate); the
    # bill replaces it with the egress of each move actually made (free at the first launch and within a zone)
    o = Options(restart_overhead_s=s["restart_h"] * 3600, resume_overhead_s=s["restart_h"] * 3600,
                checkpoint_cost_s=0.0, launch_gb=gb, spot_pays_market=True)
    wt = s["window_ticks"]
    deadline = wt * TICK
    job = WorkJob("skynomad", 0.0, deadline / s["deadline_ratio"] / 3600, V100_DLPERF, ("Tesla V100",), 1,
                  float(deadline))
    m = full_market(data, s["zones"], inet_down_cost=0.02)
    cases = []
    for w in (s["quick_windows"] if quick else s["windows"]):
        res = run_case(window(m, w * wt, wt + 1), job, o, policies, gb)
        cases.append({"window": w, "start_h": round(w * wt * TICK / 3600, 3), **res})
    return summarise("skynomad", cases, None, s["published"], policies)


def summarise(setting: str, cases: list[dict[str, Any]], od_cost: float | None, published: dict[str, float],
              policies: list[str]) -> dict[str, Any]:
    rows = []
    scale = od_cost or 1.0
    for name in [*policies, "optimum"]:
        mean = float(np.mean([c[name]["dollars"] for c in cases])) / scale
        pub = published.get(name)
        row = {"policy": name, "value": round(mean, 4), "published": pub,
               "ratio": round(mean / pub, 4) if pub else None,
               "late": sum(1 for c in cases if c[name].get("late")),
               "moves": round(float(np.mean([c[name].get("moves", 0) for c in cases])), 2)}
        rows.append(row)
    opt = next(r["value"] for r in rows if r["policy"] == "optimum")
    for r in rows:
        r["vs_optimum"] = round(r["value"] / opt, 4)
    unit = "fraction of all-on-demand cost" if od_cost else "mean dollars per window"
    return {"setting": setting, "unit": unit, "cases": len(cases), "rows": rows,
            "published_extra": {k: v for k, v in published.items() if k not in policies and k != "optimum"},
            "per_case": cases}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--quick", action="store_true", help="fewer windows: a weekly start (cbl), two windows (skynomad)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--settings", default="cbl,skynomad")
    args = ap.parse_args()
    out = []
    for name in args.settings.split(","):
        t0 = time.perf_counter()
        if name == "cbl":
            res = cbl(args.data, args.quick, ["on_demand", "greedy_spot", "uniform_progress", "ours"])
        elif name == "skynomad":
            res = skynomad(args.data, args.quick, ["uniform_progress", "ours"])
        else:
            raise SystemExit(f"unknown setting {name!r}")
        res["seconds"] = round(time.perf_counter() - t0, 1)
        out.append(res)
    if args.json:
        print(json.dumps(out, sort_keys=True, default=float))
        return
    print("| setting | baseline | published | reproduced | ratio | vs omniscient | late | moves |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for res in out:
        for r in res["rows"]:
            pub = f"{r['published']:.3f}" if r["published"] is not None else "-"
            ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
            print(f"| {res['setting']} | {BASELINE_NAMES[r['policy']]} | {pub} | {r['value']:.3f} | {ratio} | "
                  f"{r['vs_optimum']:.3f} | {r['late']} | {r['moves']} |")
        for k, v in res["published_extra"].items():
            ours = next(r for r in res["rows"] if r["policy"] == "ours")
            print(f"| {res['setting']} | {k} (published) vs ours | {v:.3f} | {ours['value']:.3f} | "
                  f"{ours['value'] / v:.3f} | - | - | - |")
    print()
    for res in out:
        print(f"{res['setting']}: {res['cases']} cases, {res['unit']}, {res['seconds']} s")


if __name__ == "__main__":
    main()
