"""The workload bound: the per-job optimum with offer capacity priced in, so jobs cannot all take the
cheapest offer at the same time.

The per-job bound lets every job rent the cheapest offer at once; on a market of single-GPU hosts that is
several points below anything a workload can do. Relaxing each offer's capacity with a price mu >= 0 per
(tick, offer) decomposes the workload again into one DP per job:

    L(mu) = sum_j  max_lambda [lambda * W_j + DP_j(lambda, prices + mu)]  -  sum_(t,n) mu[t,n] * capacity[n]

and L(mu) <= the workload's true optimum for EVERY mu >= 0 (weak duality; L(0) is the per-job sum). Good
prices come from the LP relaxation (jobs x ticks x offers, fractional, no boots) solved with HiGHS: its
capacity duals. The LP optimum plus each job's cheapest possible first boot and download is a bound too;
the reported figure is the largest of the three. Only (tick, offer) cells that more jobs could use than the
offer holds get a price; a workload without such cells keeps the per-job sum, which is then exact.

Per-job shares (for per-job ratios): job j's DP term minus the capacity prices its LP schedule pays;
they add up to the workload bound when the LP's prices are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vastfleet.sim.replay.engine import Options
from vastfleet.sim.replay.optimum import JobBound, JobProblem, job_problem, maximise
from vastfleet.sim.replay.parallel import map_ordered
from vastfleet.sim.replay.trace import Market
from vastfleet.sim.replay.workload import WorkJob

MAX_LP_VARIABLES = 3_000_000  # beyond this the LP would take minutes: keep the per-job sum
LP_CANDIDATES = 6  # per job and tick, the LP sees only its cheapest offers (any mu is a valid price)


@dataclass
class WorkloadBound:
    dollars: float  # the workload bound (>= the per-job sum)
    per_job_sum: float
    shares: dict[str, float]  # per job; they add up to `dollars`
    method: str  # "per-job" | "capacity-lagrangian" | "lp" ; which candidate was largest
    contended_cells: int = 0
    notes: list[str] = field(default_factory=list)


def _contended(market: Market, probs: dict[str, JobProblem]) -> np.ndarray:
    """[T, n] bool: cells more jobs could use than the offer holds."""
    demand = np.zeros((market.n_ticks, len(market.offer_keys)), dtype=np.int64)
    for pr in probs.values():
        usable = np.isfinite(pr.cont).any(axis=1)  # [T_j, n_j]
        demand[pr.k0:pr.k0 + pr.ticks][:, pr.idx] += usable
    return demand > market.capacity[None, :]


def _lp_prices(market: Market, probs: list[JobProblem], cap: int | None) -> tuple[dict[str, np.ndarray], bool]:
    """Per job, the LP's price of each (tick, offer) cell (inf: no variable), and whether any was pruned.

    At a tick when k of the workload's jobs are live, a job rarely needs more than its k offers cheapest per
    unit of work, and in practice far fewer: only the cheapest min(k, cap) get variables, so the LP stays
    small on big markets. A pruned LP is no longer a relaxation, so its optimum is not used as a bound; its
    prices are still prices, and L(mu) is a bound for any mu.
    """
    live = np.zeros(market.n_ticks, dtype=np.int64)
    for pr in probs:
        live[pr.k0:pr.k0 + pr.ticks] += 1
    out: dict[str, np.ndarray] = {}
    pruned = False
    for pr in probs:
        price = pr.cont.min(axis=1)  # [T_j, n_j]: either kind, no boots
        per_work = price / np.maximum(pr.gains[0, -1], 1e-12)[None, :]
        rank = np.argsort(np.argsort(per_work, axis=1, kind="stable"), axis=1)
        k = live[pr.k0:pr.k0 + pr.ticks]
        keep = rank < (k if cap is None else np.minimum(k, cap))[:, None]
        pruned |= bool((np.isfinite(price) & ~keep).any())
        out[pr.job_id] = np.where(keep, price, np.inf)
    return out, pruned


def _lp(market: Market, probs: list[JobProblem], contended: np.ndarray, cap: int | None
        ) -> tuple[float, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray], bool] | None:
    """(LP optimum, mu [T, n] $ per tick, per job its LP prices and its use of each cell, pruned) or None
    when it cannot solve."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    n_all = len(market.offer_keys)
    prices, pruned = _lp_prices(market, probs, cap)
    cols_cost, rows, cols, vals, rhs = [], [], [], [], []
    cells, owners = [], []
    nvar = nrow = 0
    for pr in probs:
        price = prices[pr.job_id]
        tt, nn = np.nonzero(np.isfinite(price))
        var = np.arange(nvar, nvar + tt.size)
        nvar += tt.size
        cols_cost.append(price[tt, nn])
        rows.append(np.full(tt.size, nrow))
        cols.append(var)
        vals.append(-pr.gains[0, -1][nn])  # work >= W
        rhs.append(-pr.work)
        nrow += 1
        rows.append(nrow + tt)
        cols.append(var)
        vals.append(np.ones(tt.size))  # one offer per tick
        rhs.extend([1.0] * pr.ticks)
        nrow += pr.ticks
        key = (pr.k0 + tt) * n_all + pr.idx[nn]
        hot = contended.reshape(-1)[key]
        cells.append(key[hot])
        owners.append(var[hot])
    if nvar > MAX_LP_VARIABLES:
        return None
    keys = np.concatenate(cells)
    owner = np.concatenate(owners)
    uniq, row_of, count = np.unique(keys, return_inverse=True, return_counts=True)
    binding = count > market.capacity[uniq % n_all]  # a cell fewer variables could fill needs no row
    keys, owner = keys[binding[row_of]], owner[binding[row_of]]
    uniq, row_of = np.unique(keys, return_inverse=True)
    rows.append(nrow + row_of)
    cols.append(owner)
    vals.append(np.ones(keys.size))
    rhs.extend(market.capacity[uniq % n_all].astype(float))
    nrow += uniq.size
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nrow, nvar)).tocsr()
    res = linprog(np.concatenate(cols_cost), A_ub=a, b_ub=np.array(rhs), bounds=(0, 1), method="highs-ipm")
    if res.status != 0:
        return None
    duals = -np.asarray(res.ineqlin.marginals)[nrow - uniq.size:]
    flat = np.zeros(market.n_ticks * n_all)
    flat[uniq] = np.maximum(duals, 0.0)
    mu = flat.reshape(market.n_ticks, n_all)
    x = np.asarray(res.x)
    use: dict[str, np.ndarray] = {}
    start = 0
    for pr, price in zip(probs, cols_cost, strict=True):
        use[pr.job_id] = x[start:start + price.size]
        start += price.size
    return float(res.fun), mu, prices, use, pruned


def _first_start_floor(pr: JobProblem, restart_s: float, tick_s: float) -> float:
    """Every job pays at least one boot at the cheapest price it could see, and the cheapest download."""
    finite = pr.cont[np.isfinite(pr.cont)]
    return float(finite.min()) * restart_s / tick_s + float(pr.launch.min()) if finite.size else 0.0


def _priced_bound(item: tuple[JobProblem, np.ndarray, float]) -> float:
    """One job's bound with each cell's capacity price added (a pool worker's task)."""
    pr, adder, hint = item
    return maximise(pr, adder, hint=hint)[0]


def workload_bound(market: Market, jobs: list[WorkJob], options: Options,
                   per_job: dict[str, JobBound]) -> WorkloadBound:
    base = sum(per_job[j.id].dollars for j in jobs)
    shares = {j.id: per_job[j.id].dollars for j in jobs}
    probs = {j.id: job_problem(market, j, options) for j in jobs}
    hot = _contended(market, probs)
    if not hot.any():
        return WorkloadBound(base, base, shares, "per-job")
    involved = [pr for pr in probs.values() if hot[pr.k0:pr.k0 + pr.ticks][:, pr.idx].any()]
    solved = _lp(market, involved, hot, LP_CANDIDATES) or _lp(market, involved, hot, None)
    if solved is None:
        return WorkloadBound(base, base, shares, "per-job", int(hot.sum()), ["the LP was too large or failed"])
    lp_value, mu, prices, use, pruned = solved
    lp_bound = -math.inf if pruned else base - sum(per_job[pr.job_id].dollars for pr in involved) + lp_value + sum(
        _first_start_floor(pr, options.restart_overhead_s, float(market.tick)) for pr in involved)
    lag = base
    lag_shares = dict(shares)
    priced = ((pr, mu[pr.k0:pr.k0 + pr.ticks][:, pr.idx], per_job[pr.job_id].lam) for pr in involved)
    terms = map_ordered(_priced_bound, priced, len(involved), sum(pr.ticks * pr.idx.size for pr in involved))
    for pr, term in zip(involved, terms, strict=True):
        adder = mu[pr.k0:pr.k0 + pr.ticks][:, pr.idx]
        tt, nn = np.nonzero(np.isfinite(prices[pr.job_id]))
        paid = float(adder[tt, nn] @ use[pr.job_id])
        lag += term - per_job[pr.job_id].dollars
        lag_shares[pr.job_id] = term - paid
    lag -= float((mu * market.capacity[None, :]).sum())
    best = max((base, "per-job"), (lag, "capacity-lagrangian"), (lp_bound, "lp"))
    if best[1] == "capacity-lagrangian":
        drift = best[0] - sum(lag_shares.values())  # complementary slackness holds up to the LP's tolerance
        shares = {k: v + drift / len(lag_shares) for k, v in lag_shares.items()}
    elif best[1] == "lp":
        shares = {k: v * best[0] / base for k, v in shares.items()}
    return WorkloadBound(best[0], base, shares, best[1], int(hot.sum()))
