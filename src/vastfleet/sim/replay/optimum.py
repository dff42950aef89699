"""The omniscient optimum: a lower bound on what any policy can pay for a job, by dynamic programming.

It sees the whole trace, pays no lost work and no checkpoints, may run on any fitting offer (on demand, or
interruptible at the lowest running bid of each tick), ignores other jobs (so the sum over jobs bounds a
workload), but cannot run faster than the offers allow, pays the restart overhead on its first start (every
job's first start is a fresh launch) and the launch download of the offer it first starts on, the smaller
of restart and resume on each later start, and must finish by the deadline.

Method: Lagrangian relaxation of the work constraint. For a price lambda on a work-hour, a forward DP over
ticks with states (idle | offer x kind x boot phase) finds the schedule minimising cost - lambda * work;
then L(lambda) = lambda * W + that minimum is <= the true optimum for every lambda >= 0 (weak duality), and
we maximise it over lambda. The minimum is over schedules that start at least once (every job does): the
empty schedule would let the relaxation spread the one-time costs of a start over nothing. Each L(lambda) is a valid bound, so the reported figure is one, whatever the
gap; tests check it against brute force on tiny cases. Vectorised over a batch of lambdas with numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vastfleet.sim.replay.engine import Options
from vastfleet.sim.replay.trace import Market
from vastfleet.sim.replay.workload import WorkJob


@dataclass
class JobBound:
    job_id: str
    dollars: float  # the lower bound
    feasible: bool  # False: no schedule meets the deadline even on the best offers
    lam: float


def _arrays(market: Market, job: WorkJob, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = market
    mask = np.isin(m.gpu, np.array(job.gpu_names, dtype=object)) & (m.num_gpus >= job.num_gpus)
    idx = np.flatnonzero(mask)
    ks = np.arange(k0, k1)
    up = (m.listed_from[idx][None, :] <= ks[:, None]) & m.online[k0:k1][:, idx]
    spot_ok = up & ~m.gone[k0:k1][:, idx]
    eff = np.maximum(m.floor[k0:k1][:, idx], m.comp[k0:k1][:, idx])
    st = m.storage_dph[idx][None, :]
    price = np.stack([np.where(spot_ok, eff + st, np.inf), np.where(spot_ok, m.dph[k0:k1][:, idx] + st, np.inf)],
                     axis=1)  # [T, kind, n]
    speed = m.dlperf[idx] / job.ref_dlperf
    return idx, price, speed


def _dp(price: np.ndarray, gains: np.ndarray, lams: np.ndarray, dt: float, launch: np.ndarray) -> np.ndarray:
    """min over schedules of sum(cost - lam * work), for each lam. price [T,2,n]; gains [2,P,n] work-hours.

    gains[0] are the boot phases of the job's first start (a fresh launch: the restart overhead), gains[1]
    those of every later start (the smaller of restart and resume). States: not started yet (cost 0),
    idle after a start, or running (first/later segment, kind, offer, boot phase). `launch` [n] is paid
    on the first start.
    """
    T, _, n = price.shape
    P = gains.shape[1]
    L = lams.shape[0]
    inf = np.inf
    run = np.full((L, 2, 2, n, P), inf)  # [L, segment (first|later), kind, offer, phase]
    idle = np.full(L, inf)  # idle after the first start; "not started" is the constant 0
    lg = lams[:, None, None, None, None] * np.transpose(gains, (0, 2, 1))[None, :, None, :, :]  # [L,2,1,n,P]
    for t in range(T):
        c = price[t][None, None, :, :, None] * (dt / 3600.0)  # [1,1,2,n,1]
        best = np.minimum(idle, run.reshape(L, -1).min(axis=1))
        new = np.empty_like(run)
        new[:, 0, ..., 0] = c[:, 0, ..., 0] - lg[:, 0, ..., 0] + launch  # first start: the launch download
        new[:, 1, ..., 0] = best[:, None, None] + c[:, 0, ..., 0] - lg[:, 1, ..., 0]
        if P > 2:
            new[..., 1:P - 1] = run[..., 0:P - 2] + c - lg[..., 1:P - 1]
        if P > 1:
            new[..., P - 1] = np.minimum(run[..., P - 2], run[..., P - 1]) + c[..., 0] - lg[..., P - 1]
        new[np.isnan(new)] = inf
        run = new
        idle = best
    # the empty schedule is left out: every job has work, so it starts at least once, and its one-time costs
    # (the first boot, the launch download) are not spread over an empty schedule
    return np.minimum(idle, run.reshape(L, -1).min(axis=1))


def _phase_gains(overhead_s: float, P: int, dt: float, speed: np.ndarray) -> np.ndarray:
    """Work-hours done in each tick of a run segment that starts with `overhead_s` of boot, per offer."""
    phase_s = np.array([max(0.0, min(dt, (p + 1) * dt - overhead_s)) for p in range(P)])
    return phase_s[:, None] * speed[None, :] / 3600.0


def job_bound(market: Market, job: WorkJob, options: Options) -> JobBound:
    dt = float(market.tick)
    k0 = math.floor(job.submit / dt)
    end = job.deadline_at if job.deadline_at is not None else job.submit + 30 * 86400.0
    k1 = min(math.ceil(end / dt), market.n_ticks)
    idx, price, speed = _arrays(market, job, k0, k1)
    if idx.size == 0 or k1 <= k0:
        return JobBound(job.id, math.inf, False, 0.0)
    r = min(options.restart_overhead_s, options.resume_overhead_s)
    r_first = options.restart_overhead_s  # the first start is always a fresh launch
    P = math.ceil(max(r, r_first) / dt) + 1
    gains = np.stack([_phase_gains(r_first, P, dt, speed), _phase_gains(r, P, dt, speed)])  # [2, P, n]
    W = job.work_hours
    finite = price[np.isfinite(price)]
    if finite.size == 0:
        return JobBound(job.id, math.inf, False, 0.0)
    lo = max(float(finite.min()) / float(speed.max()) * 0.25, 1e-6)
    hi = float(finite.max()) / float(speed.min()) * 8.0 * (1.0 + r_first / dt)
    launch = market.inet_down_cost[idx] * options.launch_gb  # paid on the offer where the job first starts
    best_val, best_lam = _maximise(price, gains, W, lo, hi, dt, launch)
    feasible = best_lam < hi * 0.99  # lam runs to the top only when no schedule does the work
    return JobBound(job.id, best_val, feasible, best_lam)


def _maximise(price: np.ndarray, gains: np.ndarray, W: float, lo: float, hi: float, dt: float,
              launch: np.ndarray) -> tuple[float, float]:
    """max over lam of lam * W + DP(lam): a coarse geometric grid, then two finer linear grids."""
    lams = np.concatenate([[0.0], np.geomspace(lo, hi, 31)])
    best_val, best_lam = -math.inf, 0.0
    for _ in range(3):
        vals = lams * W + _dp(price, gains, lams, dt, launch)
        i = int(np.argmax(vals))
        if vals[i] > best_val:
            best_val, best_lam = float(vals[i]), float(lams[i])
        left = lams[max(i - 1, 0)]
        right = lams[min(i + 1, len(lams) - 1)]
        if right <= left:
            break
        lams = np.linspace(left, right, 24)
    return best_val, best_lam


def optimum(market: Market, jobs: list[WorkJob], options: Options) -> dict[str, JobBound]:
    return {j.id: job_bound(market, j, options) for j in jobs}
