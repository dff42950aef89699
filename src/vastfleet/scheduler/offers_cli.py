"""`vastfleet offers [--job FILE] [--explain] [--json]`: offers ranked by expected dollars to finish.

Reads offers through the Marketplace protocol (`vastfleet.market.config.marketplace_from_env()`), ranks them
with the policy's one cost model, and prints the terms behind each figure; `--explain` adds how many offers
each feasibility filter removed. Without a job file it ranks every offer for one hour of work on one GPU; a
job file ranks for its `work_hours` (one hour when it has none) and its deadline.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from vastfleet.errors import VastfleetError
from vastfleet.scheduler.policy import (
    FleetStats,
    JobView,
    OfferTable,
    PolicyParams,
    Ranking,
    job_view_from_job,
    rank_offers,
)
from vastfleet.spec import BidKind, JobSpec, Offer, OfferQuery, load_job_spec
from vastfleet.spec.job import Job


def query_for(spec: JobSpec | None) -> OfferQuery:
    if spec is None:
        return OfferQuery(verified=None, kind=BidKind.bid, limit=500)
    r = spec.resources
    return OfferQuery(gpu_names=list(r.gpu), num_gpus=r.gpus, min_gpu_ram_gb=r.min_gpu_ram_gb, min_cuda=r.min_cuda,
                      min_disk_gb=r.disk_gb, min_reliability=r.min_reliability, min_direct_ports=r.direct_ports or None,
                      min_inet_down_mbps=r.min_inet_down_mbps, verified=r.verified or None,
                      geolocations=r.regions, kind=BidKind.bid, limit=500, disk_gb=r.disk_gb)


def view_for(spec: JobSpec | None, offers: list[Offer], now: float) -> JobView:
    if spec is None:
        names = tuple(sorted({o.gpu_name for o in offers})) or ("RTX 4090",)
        return JobView(job_id="(any)", gpu_names=names, remaining_work_hours=1.0,
                       ref_dlperf=max((o.dlperf for o in offers), default=1.0))
    # the spec as if submitted now: the same view the scheduler would place it with
    job = Job(id=spec.name, spec=spec, submitted_at=now, updated_at=now, deadline_at=spec.deadline_at(now))
    return job_view_from_job(job, now)


def ranking_json(ranking: Ranking) -> dict[str, Any]:
    return {"considered": ranking.considered, "rejected": ranking.rejected,
            "offers": [{"offer_id": r.offer_id, "kind": r.kind, "bid": r.bid, "price_per_hour": r.price_per_hour,
                        "expected_cost": round(r.expected_cost, 6),
                        "terms": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                  for k, v in r.terms.items()}} for r in ranking.rows]}


def offers_command(job_file: Path | None, explain: bool, as_json: bool) -> None:
    """Rank offers for a job spec (or any job) by expected dollars to finish; exit 2 on a bad spec."""
    err = Console(stderr=True)
    try:
        spec = load_job_spec(job_file) if job_file is not None else None
        from vastfleet.market.config import marketplace_from_env  # the market helper's module

        market = marketplace_from_env()
        offers = market.search_offers(query_for(spec))
        now = time.time()
        job = view_for(spec, offers, now)
        table = OfferTable.from_offers(offers, job.disk_gb)
        ranking = rank_offers(job, table, FleetStats(), now, PolicyParams(), limit=20)
    except VastfleetError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        typer.echo(json.dumps(ranking_json(ranking), sort_keys=True))
        return
    out = Console()
    per = "" if spec is not None and spec.work_hours else " (set work_hours in the spec for the whole job)"
    t = Table(title=f"offers for {job.job_id}: expected $ for {job.remaining_work_hours:g} h of work{per}")
    for col in ("offer", "kind", "$/h", "expected $", "hazard/h", "ckpt every", "speed"):
        t.add_column(col, justify="right")
    for r in ranking.rows:
        t.add_row(str(r.offer_id), r.kind, f"{r.price_per_hour:.4f}", f"{r.expected_cost:.4f}",
                  str(r.terms.get("hazard_per_hour")), f"{r.terms.get('checkpoint_interval_s')} s",
                  str(r.terms.get("speed")))
    out.print(t)
    if explain:
        out.print(f"{ranking.considered} offers considered; filters removed: "
                  + (", ".join(f"{k} {v}" for k, v in ranking.rejected.items() if v) or "none"))
        for r in ranking.rows[:5]:
            out.print(f"offer {r.offer_id} {r.kind}: " + ", ".join(f"{k}={v}" for k, v in r.terms.items()),
                      markup=False)
