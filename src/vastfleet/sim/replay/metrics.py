"""Benchmark figures per policy, and the runner that replays every policy over one market and workload.

Same inputs, same output: no clock, no unseeded randomness, stable orders.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from vastfleet.errors import BadInput
from vastfleet.sim.replay.baselines import GreedySpot, OnDemand, UniformProgress, UPSwitch
from vastfleet.sim.replay.engine import JobRun, Options, Replay, ReplayPolicy
from vastfleet.sim.replay.joint import workload_bound
from vastfleet.sim.replay.optimum import JobBound, fitting, optimum
from vastfleet.sim.replay.ours import Ours
from vastfleet.sim.replay.trace import Market
from vastfleet.sim.replay.workload import WorkJob

POLICIES = ("on_demand", "greedy_spot", "uniform_progress", "up_switch", "ours")


def make_policy(name: str) -> ReplayPolicy:
    table: dict[str, Any] = {"on_demand": OnDemand, "greedy_spot": GreedySpot, "uniform_progress": UniformProgress,
                             "up_switch": UPSwitch, "ours": Ours}
    if name not in table:
        raise BadInput(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    return table[name]()  # type: ignore[no-any-return]


def _missed(run: JobRun) -> bool:
    deadline = run.job.deadline_at
    return run.done_at is None or (deadline is not None and run.done_at > deadline + 1e-6)


def summarise(name: str, runs: dict[str, JobRun], bounds: dict[str, JobBound], workload: float) -> dict[str, Any]:
    """Ratio of sums against the workload bound; per-job ratios against each job's own bound."""
    ids = sorted(runs)
    dollars = sum(runs[i].dollars for i in ids)
    opt = sum(bounds[i].dollars for i in ids)
    ratios = np.array([runs[i].dollars / bounds[i].dollars for i in ids if bounds[i].dollars > 0])
    misses = sum(1 for i in ids if _missed(runs[i]))
    return {
        "policy": name,
        "dollars": round(dollars, 4),
        "compute": round(sum(runs[i].compute for i in ids), 4),
        "storage": round(sum(runs[i].storage for i in ids), 4),
        "bandwidth": round(sum(runs[i].bandwidth for i in ids), 4),
        "ratio_to_optimum": round(dollars / workload, 4) if workload > 0 else math.nan,
        "ratio_to_per_job_bound": round(dollars / opt, 4) if opt > 0 else math.nan,
        "p50_job_ratio": round(float(np.percentile(ratios, 50)), 4) if ratios.size else math.nan,
        "p90_job_ratio": round(float(np.percentile(ratios, 90)), 4) if ratios.size else math.nan,
        "deadline_misses": misses,
        "unfinished": sum(1 for i in ids if runs[i].done_at is None),
        "interruptions": sum(len(runs[i].interruptions) for i in ids),
        "gpu_hours_lost": round(sum(runs[i].lost_gpu_h for i in ids), 3),
        "bid_hours": round(sum(runs[i].bid_hours for i in ids), 3),
    }


def _why_infeasible(market: Market, job: WorkJob) -> str:
    if fitting(market, job).size == 0:
        return (f"{job.id}: no offer in the trace has {job.num_gpus}x {' or '.join(job.gpu_names)} "
                f"(the trace has {', '.join(sorted({str(g) for g in market.gpu}))})")
    return f"{job.id}: {job.work_hours:g} work-hours do not fit before its deadline even with foresight"


def run_bench(market: Market, jobs: list[WorkJob], options: Options,
              policies: tuple[str, ...] | list[str] = POLICIES,
              progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Every policy and the bound over one market and workload. `progress(stage, done, total)` is called as
    the work goes: one step per job's bound, one for the workload bound, one per policy."""
    total = len(jobs) + 1 + len(policies)
    step = progress or (lambda _stage, _done, _total: None)
    def next_job(k: int) -> None:  # the k-th job's bound is done
        if k + 1 < len(jobs):
            step(f"bound of job {jobs[k + 1].id}", k + 1, total)

    if jobs:
        step(f"bound of job {jobs[0].id}", 0, total)
    bounds = optimum(market, jobs, options, on_each=next_job)
    bad = [j for j in jobs if not bounds[j.id].feasible]
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise BadInput("no policy can finish these jobs on this market: "
                       + "; ".join(_why_infeasible(market, j) for j in bad[:5]) + more)
    step("workload bound (capacity prices)", len(jobs), total)
    whole = workload_bound(market, jobs, options, bounds)
    rows = []
    for n, name in enumerate(policies):
        step(f"replay {name}", len(jobs) + 1 + n, total)
        runs = Replay(market, jobs, options).run(make_policy(name))
        rows.append(summarise(name, runs, bounds, whole.dollars))
    step("done", total, total)
    rows.append({"policy": "optimum", "dollars": round(whole.dollars, 4), "ratio_to_optimum": 1.0,
                 "ratio_to_per_job_bound": round(whole.dollars / whole.per_job_sum, 4),
                 "per_job_bound": round(whole.per_job_sum, 4), "bound": whole.method,
                 "contended_cells": whole.contended_cells, "p50_job_ratio": 1.0, "p90_job_ratio": 1.0,
                 "deadline_misses": 0, "interruptions": 0, "gpu_hours_lost": 0.0})
    return {"market": market.name, "jobs": len(jobs), "options": options.__dict__, "policies": rows}
