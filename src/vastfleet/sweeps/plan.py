"""`vastfleet sweep submit --dry-run`: the plan before anything is submitted, from the same autoscaler and cost
model the driver runs: trials, parallelism and the limit that binds it, expected dollars per trial and in
all, and the expected finish. Prices are the marketplace's when a key is configured (as `vastfleet offers`
reads them), else the GPU catalogue's typical on-demand prices, said so.
"""

from __future__ import annotations

import math
from typing import Any

from vastfleet.errors import BadInput, MarketAuthError, VastfleetError
from vastfleet.scheduler.loop import queries_for
from vastfleet.scheduler.policy import FleetStats
from vastfleet.scheduler.policy.autoscale import AutoscaleParams, SweepNow, decide, remaining_share, survival
from vastfleet.scheduler.policy_adapter import merge_offers
from vastfleet.spec.gpus import gpu_model
from vastfleet.spec.market import Offer
from vastfleet.sweeps.driver import early_stop_model
from vastfleet.sweeps.loop import market_for, probe_job
from vastfleet.sweeps.models import Sweep
from vastfleet.sweeps.spec import SweepSpec


def catalogue_offers(spec: SweepSpec) -> list[Offer]:
    """Stand-in offers when no marketplace is reachable: `max_parallel` machines of each GPU the job takes, at
    the catalogue's typical on-demand price (no bids: an estimate that errs high)."""
    res = spec.job.resources
    out = []
    for g, name in enumerate(res.gpu):
        try:
            model = gpu_model(name)
        except BadInput:
            continue
        for i in range(spec.max_parallel):
            oid = 1_000_000 + g * 10_000 + i
            dph = model.dph * res.gpus
            out.append(Offer(id=oid, machine_id=oid, host_id=oid, gpu_name=model.name, num_gpus=res.gpus,
                             gpu_ram_gb=float(model.vram_gb), cuda_max_good=model.cuda_max, dlperf=model.dlperf * res.gpus,
                             dph_total=dph, dph_base=dph, min_bid=dph, disk_space=res.disk_gb * 4,
                             reliability=max(res.min_reliability, 0.98), verified=True, direct_port_count=64))
    return out


def market_offers(spec: SweepSpec, now: float) -> tuple[list[Offer], str]:
    from vastfleet.market.config import marketplace_from_env

    sweep = _draft(spec, now)
    try:
        market = marketplace_from_env()
        found = {q.kind.value: market.search_offers(q) for q in queries_for(probe_job(sweep, now), 200)}
        return merge_offers(found), "the marketplace"
    except MarketAuthError:
        return catalogue_offers(spec), "the GPU catalogue's typical on-demand prices (no marketplace key)"
    except VastfleetError as exc:
        return catalogue_offers(spec), f"the GPU catalogue's typical on-demand prices (marketplace: {exc})"


def _draft(spec: SweepSpec, now: float) -> Sweep:
    return Sweep(id="s-dryrun", spec=spec, created_at=now, updated_at=now, deadline_at=spec.deadline_at(now))


def plan(spec: SweepSpec, offers: list[Offer], now: float, source: str = "") -> dict[str, Any]:
    sweep = _draft(spec, now)
    stop = early_stop_model(sweep)
    work_h = float(spec.job.work_hours or 1.0)
    x, s = survival(stop, (), AutoscaleParams())
    share = remaining_share(x, s, 0.0) if stop.max_step else 1.0
    market = market_for(sweep, offers, FleetStats(watch_all=False), now, work_h * share)
    trials = spec.trial_count()
    state = SweepNow(max_parallel=spec.max_parallel, trials_left=trials, work_hours=work_h,
                     budget_usd=spec.budget_usd, deadline_at=sweep.deadline_at, early_stop=stop)
    scale = decide(state, market, now)
    per_trial = scale.expected_trial_usd
    total = per_trial * trials
    affordable = trials if spec.budget_usd is None or per_trial <= 0 else min(trials, int(spec.budget_usd // per_trial))
    parallel = max(scale.target, 1)
    hours = scale.expected_trial_hours * math.ceil(min(trials, affordable or trials) / parallel)
    return {
        "sweep": spec.name, "trials": trials, "method": spec.method.value,
        "early_stop": spec.early_stop.type, "work_share": round(share, 4),
        "parallelism": scale.target, "binding": scale.binding, "reason": scale.reason,
        "expected_trial_usd": round(per_trial, 6), "expected_total_usd": round(total, 6),
        "budget_usd": spec.budget_usd, "trials_the_budget_affords": affordable,
        "expected_trial_hours": round(scale.expected_trial_hours, 4), "expected_hours": round(hours, 4),
        "expected_finish": now + hours * 3600.0, "offers": len(offers), "priced_from": source,
        "work_hours_assumed": spec.job.work_hours is None,
    }
