"""`vastfleet offers [--job FILE] [--explain] [--json]`: offers ranked by expected dollars to finish.

Reads offers through the Marketplace protocol (`vastfleet.market.config.marketplace_from_env()`), ranks them
with the policy's one cost model, and prints the terms behind each figure. Work is measured on a reference
GPU, and the header says which: a job file's first GPU (times its GPU count) for its `work_hours` (one hour
when it has none); without a job file, one hour on one RTX 4090. The `hours` column is that work's expected
wall time on each offer, checkpoints and interruptions included, so a slower GPU shows more hours for the
same work. When no offer fits, it says which feasibility filter removed how many offers (from a search of
the whole market when the job's own search finds none). `--explain` adds, for the first offers, every
term of the cost in an indented block, and the filters' counts.
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
from rich.text import Text

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
from vastfleet.scheduler.policy.explain import RankedOffer, removed_text, unplaced_reason
from vastfleet.spec import BidKind, JobSpec, Offer, OfferQuery, load_job_spec
from vastfleet.spec.durations import format_duration
from vastfleet.spec.gpus import gpu_model
from vastfleet.spec.job import Job
from vastfleet.spec.money import format_price, format_usd

REFERENCE_GPU = "RTX 4090"  # what "1 h of work" means without a job file
EXPLAINED = 5  # offers `--explain` details


def query_for(spec: JobSpec | None) -> OfferQuery:
    if spec is None:
        return OfferQuery(verified=None, kind=BidKind.bid, limit=500)
    r = spec.resources
    return OfferQuery(gpu_names=list(r.gpu), num_gpus=r.gpus, min_gpu_ram_gb=r.min_gpu_ram_gb, min_cuda=r.min_cuda,
                      min_disk_gb=r.disk_gb, min_reliability=r.min_reliability, min_direct_ports=r.direct_ports or None,
                      min_inet_down_mbps=r.min_inet_down_mbps, verified=r.verified or None,
                      geolocations=r.regions, kind=BidKind.bid, limit=500, disk_gb=r.disk_gb)


def whole_market(spec: JobSpec | None) -> OfferQuery:
    """Every offer, to count what each filter removes when the job's own search finds none."""
    return OfferQuery(verified=None, kind=BidKind.bid, limit=500, disk_gb=spec.resources.disk_gb if spec else 10.0)


def view_for(spec: JobSpec | None, offers: list[Offer], now: float) -> JobView:
    if spec is None:
        names = tuple(sorted({o.gpu_name for o in offers})) or (REFERENCE_GPU,)
        return JobView(job_id="any 1-GPU job", gpu_names=names, remaining_work_hours=1.0,
                       ref_dlperf=gpu_model(REFERENCE_GPU).dlperf)
    # the spec as if submitted now: the same view the scheduler would place it with
    job = Job(id=spec.name, spec=spec, submitted_at=now, updated_at=now, deadline_at=spec.deadline_at(now))
    return job_view_from_job(job, now)


def work_text(spec: JobSpec | None, view: JobView) -> str:
    """What the expected dollars are for: how much work, on which reference GPU."""
    ref = f"1x {REFERENCE_GPU}" if spec is None else f"{spec.resources.gpus}x {spec.resources.gpu[0]}"
    text = f"expected $ for {view.remaining_work_hours:g} h of work on {ref}"
    if spec is None:
        return text + " (rank for a whole job with --job FILE and its work_hours)"
    if spec.work_hours is None:
        return text + " (set work_hours in the spec for the whole job)"
    return text


def ranking_json(ranking: Ranking, no_fit: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "considered": ranking.considered, "rejected": ranking.rejected,
        "offers": [{"offer_id": r.offer_id, "kind": r.kind, "bid": r.bid, "price_per_hour": r.price_per_hour,
                    "expected_cost": round(r.expected_cost, 6),
                    "terms": {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                              for k, v in r.terms.items()}} for r in ranking.rows]}
    if no_fit is not None:
        out["no_fit"] = no_fit
    return out


def offers_command(job_file: Path | None, explain: bool, as_json: bool) -> None:
    """Rank offers for a job spec (or any job) by expected dollars to finish; exit 2 on a bad spec."""
    err = Console(stderr=True)
    no_fit: str | None = None
    try:
        spec = load_job_spec(job_file) if job_file is not None else None
        from vastfleet.market.config import marketplace_from_env  # the market helper's module

        market = marketplace_from_env()
        offers = market.search_offers(query_for(spec))
        now = time.time()
        job = view_for(spec, offers, now)
        table = OfferTable.from_offers(offers, job.disk_gb)
        ranking = rank_offers(job, table, FleetStats(), now, PolicyParams(), limit=20)
        if not ranking.rows:
            searched_all = not offers
            if searched_all:  # the search already filtered: count what each filter removes from everything
                offers = market.search_offers(whole_market(spec))
                table = OfferTable.from_offers(offers, job.disk_gb)
                ranking = rank_offers(job, table, FleetStats(), now, PolicyParams(), limit=20)
            no_fit = unplaced_reason(job, table, now, searched_all=searched_all)
    except VastfleetError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        typer.echo(json.dumps(ranking_json(ranking, no_fit), sort_keys=True))
        return
    out = Console()
    if no_fit is not None:
        out.print(Text(f"{job.job_id}: {no_fit}"))
        return
    by_id = {o.id: o for o in offers}
    out.print(offers_table(ranking, by_id, f"offers for {job.job_id}: {work_text(spec, job)}"))
    if explain:
        out.print(Text(f"{ranking.considered} offers considered; {removed_text(job, ranking.rejected)}"))
        for r in ranking.rows[:EXPLAINED]:
            out.print(Text(explain_block(r, by_id.get(r.offer_id), job)))


def offers_table(ranking: Ranking, by_id: dict[int, Offer], title: str) -> Table:
    """Fits 80 columns: the hazard, speed and the rest of each cost are in `--explain`."""
    t = Table(title=title, title_justify="left", box=None, header_style="bold")
    for col in ("offer", "GPU", "n", "where", "kind", "price", "expected $", "hours", "ckpt every"):
        t.add_column(col, justify="left" if col in ("GPU", "where", "kind") else "right", no_wrap=True)
    for r in ranking.rows:
        offer = by_id.get(r.offer_id)
        t.add_row(*[Text(c) for c in (
            str(r.offer_id), offer.gpu_name if offer else "-", str(offer.num_gpus) if offer else "-",
            country(offer.geolocation) if offer else "-", "bid" if r.kind == "bid" else "on demand",
            format_price(r.price_per_hour), format_usd(r.expected_cost), _g(r.terms.get("expected_hours")),
            _interval(r.terms.get("checkpoint_interval_s")))])
    return t


def country(geolocation: str) -> str:
    """`US` from vast's `Texas, US`: the table's column; `--explain` shows the whole place."""
    return geolocation.rsplit(",", 1)[-1].strip() or "-" if geolocation else "-"


def explain_block(r: RankedOffer, offer: Offer | None, job: JobView) -> str:
    """Every term of one offer's expected cost, one per line."""
    t = r.terms
    what = f"{offer.num_gpus}x {offer.gpu_name} ({offer.geolocation or '?'})" if offer else "?"
    if r.kind == "bid":
        how = f"bid {format_price(r.price_per_hour)}, +{float(t.get('margin_over_min_bid', 0)) * 100:.0f}% over min_bid"
    else:
        how = f"on demand {format_price(r.price_per_hour)}"
    slack = t.get("slack_hours")
    cadence = "the spec's interval" if job.checkpoint_interval_s is not None else "Young/Daly from the hazard"
    rows = [
        ("expected cost", f"{format_usd(r.expected_cost)} to finish"),
        ("expected time", f"{_g(t.get('expected_hours'))} h at {_g(t.get('speed'))}x speed"),
        ("interruptions", (f"{_g(t.get('expected_interruptions'))} expected, {_g(t.get('hazard_per_hour'))}/h"
                          f" (one every {_g(t.get('mtbi_hours'))} h)")),
        ("checkpoints", f"every {_interval(t.get('checkpoint_interval_s'))} ({cadence})"),
        ("deadline slack", "no deadline" if not _finite(slack) else f"{_g(slack)} h"),
        ("why", str(t.get("why", ""))),
    ]
    return f"offer {r.offer_id}: {what}, {how}\n" + "\n".join(f"  {k:<15} {v}" for k, v in rows)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _g(value: Any) -> str:
    return f"{value:.3g}" if _finite(value) else "-"


def _interval(seconds: Any) -> str:
    return format_duration(float(seconds)) if _finite(seconds) else "-"
