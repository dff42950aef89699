"""The omniscient optimum per job: a lower bound on what any policy can pay for a job, by dynamic programming.

It sees the whole trace, pays no lost work and no periodic checkpoints, may run on any fitting offer (on demand, or
interruptible at the lowest running bid of each tick) and ignores other jobs (`joint.py` adds them back).
It cannot run faster than the offers allow and must finish by the deadline. It pays what the replay
engine makes every schedule pay:
  - a fresh launch (every `Place`): the restart overhead, billed with no progress, and the launch download;
  - a resume in place of a paused bid: the resume overhead, and the storage of the paused disk meanwhile.
    A bid can only be paused by the market, at a tick where the lowest running bid rises (its bid covered
    the previous tick's), and a paused rental dies with its host or when the offer is rented away;
  - an on-demand rental survives the offer being rented away (`gone`); a bid does not; neither starts then;
  - a segment that ends before the job does (a pause, a loss, a move) carries its work on only through a
    checkpoint: foresight takes it just in time, so it costs one checkpoint's time at that rental's price.

Method: Lagrangian relaxation of the work constraint. For a price lambda on a work-hour, a forward DP over
ticks finds the schedule minimising cost - lambda * work; L(lambda) = lambda * W + that minimum is <= the
true optimum for every lambda >= 0 (weak duality), and we maximise it over lambda. The minimum is over
schedules that start at least once (every job does), so the one-time costs of a start are never spread
over an empty schedule. Every L(lambda) is a valid bound, whatever the gap; tests check it against brute
force on tiny cases. `adder` ($ per tick per offer, >= 0) prices capacity for the workload bound.
Vectorised over a batch of lambdas with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vastfleet.sim.replay.engine import Options
from vastfleet.sim.replay.parallel import map_ordered
from vastfleet.sim.replay.trace import Market
from vastfleet.sim.replay.workload import WorkJob


@dataclass
class JobBound:
    job_id: str
    dollars: float  # the lower bound
    feasible: bool  # False: no schedule meets the deadline even on the best offers
    lam: float


@dataclass
class JobProblem:
    """One job's window of the market, in dollars per tick, over the offers that fit it."""

    job_id: str
    work: float  # work-hours
    k0: int  # first tick of the window
    idx: np.ndarray  # market columns of the fitting offers
    start: np.ndarray  # [T, kind (bid|od), n] price of a tick that starts a segment (inf: cannot start)
    cont: np.ndarray  # [T, kind, n] price of a tick that continues one (inf: the rental is lost)
    park: np.ndarray  # [T, n] storage of a paused bid (inf: a paused rental is lost)
    rise: np.ndarray  # [T, n] bool: the lowest running bid rose, so a running bid can be paused here
    gains: np.ndarray  # [segment (fresh|resumed), phase, n] work-hours per tick from the segment's start
    launch: np.ndarray  # [n] the download every fresh launch pays
    ckpt: float = 0.0  # a checkpoint's time, as a share of a tick

    @property
    def ticks(self) -> int:
        return int(self.start.shape[0])


def window(market: Market, job: WorkJob) -> tuple[int, int]:
    dt = float(market.tick)
    end = job.deadline_at if job.deadline_at is not None else job.submit + 30 * 86400.0
    return math.floor(job.submit / dt), min(math.ceil(end / dt), market.n_ticks)


def fitting(market: Market, job: WorkJob) -> np.ndarray:
    m = market
    return np.flatnonzero(np.isin(m.gpu, np.array(job.gpu_names, dtype=object)) & (m.num_gpus >= job.num_gpus))


def _phase_gains(overhead_s: float, P: int, dt: float, speed: np.ndarray) -> np.ndarray:
    """Work-hours done in each tick of a run segment that starts with `overhead_s` of boot, per offer."""
    phase_s = np.array([max(0.0, min(dt, (p + 1) * dt - overhead_s)) for p in range(P)])
    return phase_s[:, None] * speed[None, :] / 3600.0


def job_problem(market: Market, job: WorkJob, options: Options) -> JobProblem:
    m = market
    dt = float(m.tick)
    k0, k1 = window(m, job)
    idx = fitting(m, job)
    ks = np.arange(k0, max(k1, k0))
    up = (m.listed_from[idx][None, :] <= ks[:, None]) & m.online[k0:k1][:, idx]
    spot_ok = up & ~m.gone[k0:k1][:, idx]
    eff = np.maximum(m.floor, m.comp)[:, idx]
    st = m.storage_dph[idx][None, :]
    per_tick = dt / 3600.0
    bid = np.where(spot_ok, eff[k0:k1] + st, np.inf) * per_tick
    od = m.dph[k0:k1][:, idx] + st
    start = np.stack([bid, np.where(spot_ok, od, np.inf) * per_tick], axis=1)
    cont = np.stack([bid, np.where(up, od, np.inf) * per_tick], axis=1)
    park = np.where(spot_ok, np.broadcast_to(st * per_tick, spot_ok.shape), np.inf)
    before = np.vstack([eff[:1], eff[:-1]])  # the previous tick's lowest running bid
    rise = eff[k0:k1] > before[k0:k1] * (1 + 1e-12)
    speed = m.dlperf[idx] / job.ref_dlperf
    r_fresh, r_res = options.restart_overhead_s, options.resume_overhead_s
    P = max(math.ceil(max(r_fresh, r_res) / dt) + 1, 2)
    gains = np.stack([_phase_gains(r_fresh, P, dt, speed), _phase_gains(r_res, P, dt, speed)])
    return JobProblem(job.id, job.work_hours, k0, idx, start, cont, park, rise, gains,
                      m.inet_down_cost[idx] * options.launch_gb, options.checkpoint_cost_s / dt)


def dp(pr: JobProblem, lams: np.ndarray, adder: np.ndarray | None = None) -> np.ndarray:
    """min over schedules that start at least once of sum(cost - lam * work), for each lam in `lams`.

    States after each tick: free (no rental, work saved), paused on an offer (bid, disk kept), or running
    (fresh or resumed segment, kind, offer, boot phase); `ended` is a schedule whose work is all done, so
    its last segment paid no checkpoint. Never started is the constant 0.
    """
    T, _, n = pr.start.shape
    P = pr.gains.shape[1]
    L = lams.shape[0]
    inf = np.inf
    lg = lams[:, None, None, None, None] * np.transpose(pr.gains, (0, 2, 1))[None, :, None, :, :]  # [L,2,1,n,P]
    run = np.full((L, 2, 2, n, P), inf)  # [L, segment (fresh|resumed), kind (bid|od), offer, phase]
    parked = np.full((L, n), inf)
    free = np.full(L, inf)
    ended = np.full(L, inf)
    ckpt = np.where(np.isfinite(pr.cont), pr.cont, 0.0) * pr.ckpt  # [T, kind, n]: a checkpoint on the last tick
    for t in range(T):
        extra = 0.0 if adder is None else adder[t]
        start = pr.start[t] + extra  # [2, n]
        cont = (pr.cont[t] + extra)[None, None, :, :, None]
        saved = run + ckpt[t - 1][None, None, :, :, None] if t else run
        ended = np.minimum(ended, run.reshape(L, -1).min(axis=1))
        prev = np.minimum(np.minimum(free, saved.reshape(L, -1).min(axis=1)), parked.min(axis=1))
        new = np.empty_like(run)
        new[:, 0, :, :, 0] = np.minimum(prev, 0.0)[:, None, None] + start + pr.launch - lg[:, 0, :, :, 0]
        new[:, 1, 0, :, 0] = parked + start[0] - lg[:, 1, 0, :, 0]
        new[:, 1, 1, :, 0] = inf
        if P > 2:
            new[..., 1:P - 1] = run[..., 0:P - 2] + cont - lg[..., 1:P - 1]
        new[..., P - 1] = np.minimum(run[..., P - 2], run[..., P - 1]) + cont[..., 0] - lg[..., P - 1]
        paused_now = np.where(pr.rise[t], saved[:, :, 0].min(axis=(1, 3)), inf)  # [L, n]
        parked = np.minimum(parked, paused_now) + pr.park[t] + extra  # a paused disk holds its slot
        run, free = new, prev
    return np.minimum(np.minimum(ended, run.reshape(L, -1).min(axis=1)), np.minimum(free, parked.min(axis=1)))


def job_bound(market: Market, job: WorkJob, options: Options) -> JobBound:
    return bound_of(job_problem(market, job, options))


def bound_of(pr: JobProblem) -> JobBound:
    if pr.idx.size == 0 or pr.ticks == 0:
        return JobBound(pr.job_id, math.inf, False, 0.0)
    value, lam, feasible = maximise(pr)
    return JobBound(pr.job_id, value, feasible, lam)


def lam_range(pr: JobProblem) -> tuple[float, float] | None:
    """Bracket for lambda ($ per work-hour): a quarter of the cheapest tick's price per work, up to 8x the
    dearest, times the boot ticks a start can cost."""
    finite = pr.cont[np.isfinite(pr.cont)]
    full = pr.gains[0, -1]  # work-hours of a full tick, per offer
    if finite.size == 0 or float(full.max()) <= 0:
        return None
    lo = float(finite.min()) / float(full.max()) * 0.25
    hi = float(finite.max()) / max(float(full.min()), 1e-12) * 8.0 * pr.gains.shape[1]
    return max(lo, 1e-6), hi


def maximise(pr: JobProblem, adder: np.ndarray | None = None, hint: float | None = None) -> tuple[float, float, bool]:
    """(bound, lambda, feasible): max over lambda of lambda * W + DP(lambda), on a coarse geometric grid
    (around `hint` when given), then two finer linear grids."""
    rng = lam_range(pr)
    if rng is None:
        return math.inf, 0.0, False
    lo, hi = rng
    if hint is not None and hint > 0:
        lams = np.concatenate([[0.0], np.geomspace(max(hint / 3, lo), min(hint * 3, hi), 15), [hi]])
    else:
        lams = np.concatenate([[0.0], np.geomspace(lo, hi, 31)])
    best_val, best_lam = -math.inf, 0.0
    for _ in range(3):
        vals = lams * pr.work + dp(pr, lams, adder)
        i = int(np.argmax(vals))
        if vals[i] > best_val:
            best_val, best_lam = float(vals[i]), float(lams[i])
        left = lams[max(i - 1, 0)]
        right = lams[min(i + 1, len(lams) - 1)]
        if right <= left:
            break
        lams = np.linspace(left, right, 24)
    feasible = best_lam < hi * 0.99  # lam runs to the top only when no schedule does the work
    return best_val, best_lam, feasible


def optimum(market: Market, jobs: list[WorkJob], options: Options,
            on_each: Callable[[int], None] | None = None) -> dict[str, JobBound]:
    """Every job's bound, on every core when that pays (`parallel.map_ordered`); `on_each(k)` per job."""
    problems = (job_problem(market, j, options) for j in jobs)
    cells = sum(max(k1 - k0, 0) * fitting(market, j).size for j in jobs for k0, k1 in [window(market, j)])
    return {b.job_id: b for b in map_ordered(bound_of, problems, len(jobs), cells, on_each)}
