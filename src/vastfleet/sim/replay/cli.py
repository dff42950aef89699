"""`vastfleet bench`: replay policies over a market trace against the omniscient optimum, make seeded traces
and workloads, and convert the public spot traces. The lead wires `app` in as `vastfleet bench`.

Bad input (unreadable files, bad lines, infeasible deadlines) prints one line and exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vastfleet.errors import VastfleetError

app = typer.Typer(help="Policy benchmarks: replay a market trace in virtual time.", no_args_is_help=True)
_err = Console(stderr=True)


def _fail(exc: VastfleetError) -> typer.Exit:
    _err.print(f"error: {exc}", markup=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


# (JSON key, header, format): short headers so the table fits an 80-column terminal
COLUMNS = (("policy", "policy", "{}"), ("dollars", "$", "{:.2f}"), ("ratio_to_optimum", "x opt", "{:.3f}"),
           ("ratio_to_per_job_bound", "x jobs", "{:.3f}"), ("p50_job_ratio", "p50", "{:.3f}"),
           ("p90_job_ratio", "p90", "{:.3f}"), ("deadline_misses", "missed", "{}"),
           ("interruptions", "interr", "{}"), ("gpu_hours_lost", "GPU-h lost", "{:.1f}"))


def results_table(result: dict[str, object]) -> Table:
    table = Table(title=f"{result['market']} ({result['jobs']} jobs)", box=box.SIMPLE_HEAD, padding=(0, 0),
                  pad_edge=False, caption="x opt: dollars over the omniscient workload bound; x jobs: over the sum of each "
                          "job's own bound; p50/p90: per job, over its own bound")
    for key, header, _ in COLUMNS:
        table.add_column(header, justify="left" if key == "policy" else "right", no_wrap=True)
    for row in result["policies"]:  # type: ignore[attr-defined]
        table.add_row(*[fmt.format(row[key]) if key in row else "" for key, _, fmt in COLUMNS])
    return table


@app.command("policy")
def policy_cmd(
    market: Annotated[Path, typer.Option("--market", help="market trace (JSON Lines)")],
    workload: Annotated[Path, typer.Option("--workload", help="workload (JSON Lines)")],
    policies: Annotated[list[str] | None, typer.Option("--policies", help="policies to run (repeat)")] = None,
    restart_overhead: Annotated[float, typer.Option(help="seconds to boot and restore on a new offer")] = 300.0,
    resume_overhead: Annotated[float, typer.Option(help="seconds to restart in place after an outbid")] = 120.0,
    checkpoint_cost: Annotated[float, typer.Option(help="seconds one checkpoint takes")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Replay each policy and the optimum; print dollars, ratios, misses, interruptions."""
    from vastfleet.sim.replay import POLICIES, Options, load_market, load_workload, run_bench

    try:
        chosen = [p for item in (policies or list(POLICIES)) for p in item.split(",") if p]
        if restart_overhead < 0 or resume_overhead < 0 or checkpoint_cost < 0:
            raise VastfleetError("overheads and checkpoint cost must be >= 0")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=_err, transient=True, disable=not _err.is_terminal) as bar:
            task = bar.add_task("loading", total=None)

            def show(stage: str, done: int, total: int) -> None:
                bar.update(task, description=stage, completed=done, total=total)

            result = run_bench(load_market(market), load_workload(workload),
                               Options(restart_overhead, resume_overhead, checkpoint_cost), chosen, progress=show)
    except VastfleetError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        Console().print(results_table(result))


@app.command("make-trace")
def make_trace_cmd(
    seed: Annotated[int, typer.Option("--seed")],
    hours: Annotated[float, typer.Option("--hours")] = 168.0,
    hosts: Annotated[int, typer.Option("--hosts")] = 60,
    volatility: Annotated[str, typer.Option("--volatility", help="low | mid | high")] = "mid",
    out: Annotated[Path | None, typer.Option("--out")] = None,
) -> None:
    """Write a seeded vast-like market trace (stdout without --out)."""
    from vastfleet.sim.replay.generate import make_trace
    from vastfleet.sim.replay.trace import write_events

    try:
        meta, events = make_trace(seed, hours, hosts, volatility)
    except VastfleetError as exc:
        raise _fail(exc) from None
    if out is None:
        typer.echo(json.dumps({"type": "meta", **meta}, sort_keys=True))
        for ev in events:
            typer.echo(json.dumps(ev, sort_keys=True))
    else:
        write_events(out, meta, events)
        _err.print(f"wrote {len(events)} events to {out}")


@app.command("make-workload")
def make_workload_cmd(
    market: Annotated[Path, typer.Option("--market")],
    seed: Annotated[int, typer.Option("--seed")],
    jobs: Annotated[int, typer.Option("--jobs")] = 30,
    min_hours: Annotated[float, typer.Option("--min-hours")] = 2.0,
    max_hours: Annotated[float, typer.Option("--max-hours")] = 24.0,
    out: Annotated[Path | None, typer.Option("--out")] = None,
) -> None:
    """Write a seeded workload that fits MARKET, with feasible deadlines."""
    from vastfleet.sim.replay import load_market, write_workload
    from vastfleet.sim.replay.generate import make_workload

    try:
        if not 0 < min_hours <= max_hours:
            raise VastfleetError("need 0 < --min-hours <= --max-hours")
        wl = make_workload(load_market(market), seed, jobs, (min_hours, max_hours))
    except VastfleetError as exc:
        raise _fail(exc) from None
    target = out or Path("/dev/stdout")
    write_workload(target, wl)


@app.command("convert-trace")
def convert_trace_cmd(
    kind: Annotated[str, typer.Argument(help="v100 (AWS p3.2xlarge) | h100 (GCP a3-highgpu-8g)")],
    source: Annotated[Path, typer.Option("--source", help="the skynomad-artifact folder")],
    out: Annotated[Path, typer.Option("--out")],
    zones: Annotated[list[str] | None, typer.Option("--zone", help="keep only these zones (repeat)")] = None,
    ticks: Annotated[int | None, typer.Option("--ticks", help="keep only the first N ticks")] = None,
) -> None:
    """Convert a public spot trace to the market format."""
    from vastfleet.errors import BadInput
    from vastfleet.sim.replay.convert import convert_h100, convert_v100
    from vastfleet.sim.replay.trace import write_events

    try:
        if kind not in ("v100", "h100"):
            raise BadInput("kind must be v100 or h100")
        if not source.is_dir():
            raise BadInput(f"{source} is not a folder")
        meta, events = (convert_v100 if kind == "v100" else convert_h100)(source, zones, ticks)
    except VastfleetError as exc:
        raise _fail(exc) from None
    write_events(out, meta, events)
    _err.print(f"wrote {len(events)} events to {out}")
