"""`vastfleet sweep ...`: submit (or --dry-run), status (a live view with --watch), best, cancel, dashboard.

Talks to the server through the API (VASTFLEET_URL, VASTFLEET_TOKEN) like the job commands: a bad spec is
refused here first (exit 2, nothing sent), other failures exit 1 with one line on stderr.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from vastfleet.errors import VastfleetError
from vastfleet.sweeps.client import SweepClient
from vastfleet.sweeps.models import BestTrial, Sweep, SweepStatus
from vastfleet.sweeps.spec import load_sweep_spec

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console(soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Our errors become one line on stderr and their exit code (2 for bad input, else 1), as in `vastfleet`'s
    own commands (not imported from there: that module registers this one)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VastfleetError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}" if value < 10 else f"${value:,.2f}"


@app.command()
@friendly_errors
def submit(
    file: Annotated[Path, typer.Argument(help="the sweep spec, YAML or JSON")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key, e.g. --set max_parallel=8")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan; submit nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Submit a sweep (prints its id), or with --dry-run print its plan: trials, parallelism, dollars, finish."""
    spec = load_sweep_spec(file, set_ or [])  # validated here first: a bad spec never reaches the server
    if dry_run:
        from vastfleet.sweeps.plan import market_offers, plan

        now = time.time()
        offers, source = market_offers(spec, now)
        result = plan(spec, offers, now, source)
        if as_json:
            print_json(result)
        else:
            out.print(plan_table(result))
        return
    with SweepClient() as client:
        sweep = client.submit_sweep(spec)
    if as_json:
        print_json(sweep.model_dump(mode="json"))
    else:
        typer.echo(sweep.id)


def plan_table(p: dict[str, Any]) -> Table:
    t = Table(title=f"plan for sweep {p['sweep']} (dry run: nothing submitted)", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    share = f"{p['work_share']:.0%} of a full trial expected ({p['early_stop']})" if p["early_stop"] != "none" else "none"
    rows = [
        ("trials", f"{p['trials']} ({p['method']})"),
        ("early stopping", share),
        ("parallelism", f"{p['parallelism']} at once: {p['reason']}"),
        ("expected $ per trial", _money(p["expected_trial_usd"])),
        ("expected $ in all", _money(p["expected_total_usd"]) + (
            f" (budget {_money(p['budget_usd'])} affords {p['trials_the_budget_affords']} trials)"
            if p["budget_usd"] else "")),
        ("expected finish", f"in {p['expected_hours']:.2f} h ({when(p['expected_finish'])})"),
        ("priced from", f"{p['priced_from']}, {p['offers']} offers"),
    ]
    if p["work_hours_assumed"]:
        rows.append(("note", "job.work_hours is not set: one hour per trial assumed"))
    for k, v in rows:
        t.add_row(Text(k), Text(v))
    return t


@app.command()
@friendly_errors
def status(
    sweep_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="one sweep; all recent ones without")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="a live view until the sweep is over")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes with --watch")] = 2.0,
) -> None:
    """Trials by state, spend against budget and projection, the binding limit, the best trial so far."""
    with SweepClient() as client:
        if sweep_id is None:
            sweeps = client.sweeps()
            if as_json:
                print_json([s.model_dump(mode="json") for s in sweeps])
            else:
                out.print(sweeps_table(sweeps) if sweeps else "no sweeps")
            return
        current = client.sweep_status(sweep_id)
        if as_json:
            print_json(current.model_dump(mode="json"))
            return
        if not watch:
            out.print(status_view(current))
            return
        with Live(status_view(current), console=out, refresh_per_second=2) as live:
            while not current.sweep.state.over:
                time.sleep(interval)
                current = client.sweep_status(sweep_id)
                live.update(status_view(current))


def sweeps_table(sweeps: list[Sweep]) -> Table:
    t = Table(box=None, header_style="bold")
    for col in ("ID", "NAME", "STATE", "SPENT", "BUDGET", "LIMIT", "REASON"):
        t.add_column(col, no_wrap=col != "REASON")
    for s in sweeps:
        d = s.decision
        t.add_row(*(Text(x) for x in (s.id, s.spec.name, s.state.value, _money(s.spent_usd), _money(s.spec.budget_usd),
                                     f"{d.binding} ({d.actual}/{d.target})" if d else "-", s.reason)))
    return t


def status_view(st: SweepStatus) -> Group:
    s, d = st.sweep, st.sweep.decision
    head = Table(show_header=False, box=None)
    head.add_column(style="bold", no_wrap=True)
    head.add_column()
    metric = s.spec.metric
    rows = [
        ("sweep", f"{s.id} {s.spec.name} ({s.spec.method.value}, early stop {s.spec.early_stop.type})"),
        ("state", f"{s.state.value}: {s.reason}"),
        ("trials", ", ".join(f"{k.lower()} {v}" for k, v in st.trials.items() if v) or "none yet"),
        ("spend", f"{_money(s.spent_usd)} of {_money(s.spec.budget_usd)}" + (
            f", projected {_money(d.projected_usd)}" if d else "")),
        ("instances", f"{d.actual} of target {d.target}, bound by {d.binding}: {d.reason}" if d else "-"),
        ("best", "-" if st.best is None else
         f"trial {st.best.number}: {metric.name} {st.best.value:g} {json.dumps(st.best.params, sort_keys=True)}"),
    ]
    for k, v in rows:
        head.add_row(Text(k), Text(v))
    trials = Table(box=None, header_style="bold")
    for col in ("#", "STATE", "STEP", metric.name.upper(), "COST", "JOB", "PARAMS", "REASON"):
        trials.add_column(col, no_wrap=col not in ("REASON", "PARAMS"))
    for t in st.trial_list[-40:]:  # the latest; --json has them all
        trials.add_row(*(Text(x) for x in (
            str(t.number), t.state.value, "-" if t.step is None else str(t.step),
            "-" if t.value is None else f"{t.value:g}", _money(t.cost_usd), t.job_id or "-",
            json.dumps(t.params, sort_keys=True), t.reason)))
    return Group(head, trials)


@app.command()
@friendly_errors
def best(
    sweep_id: Annotated[str, typer.Argument(metavar="ID")],
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="how many")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """The best trials: parameters, metric, job, its latest checkpoint, its cost."""
    with SweepClient() as client:
        found = client.sweep_best(sweep_id, k)
    if as_json:
        print_json([b.model_dump(mode="json") for b in found])
        return
    out.print(best_table(found) if found else "no trial is complete yet")


def best_table(found: list[BestTrial]) -> Table:
    t = Table(box=None, header_style="bold")
    for col in ("#", "VALUE", "PARAMS", "JOB", "CHECKPOINT", "COST"):
        t.add_column(col)
    for b in found:
        ref = b.checkpoint
        t.add_row(*(Text(x) for x in (
            str(b.trial.number), f"{b.trial.value:g}", json.dumps(b.trial.params, sort_keys=True), b.trial.job_id or "-",
            "-" if ref is None else f"{ref.prefix} (epoch {ref.epoch}, step {ref.step})", _money(b.trial.cost_usd))))
    return t


@app.command()
@friendly_errors
def cancel(sweep_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a sweep: every trial's job is cancelled and its instance destroyed; checkpoints are kept."""
    with SweepClient() as client:
        sweep = client.cancel_sweep(sweep_id)
    typer.echo(f"{sweep.id} {sweep.state.value}")


@app.command()
@friendly_errors
def dashboard(
    sweep_id: Annotated[str, typer.Argument(metavar="ID")],
    host: Annotated[str, typer.Option(help="address to serve on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to serve on (0: any free one)")] = 8080,
    redis_url: Annotated[str | None, typer.Option(help="read the journal on Redis directly (editable notes)")]
    = None,
) -> None:
    """Serve optuna-dashboard on the sweep's study (parameter importance, parallel coordinates...)."""
    from vastfleet.sweeps.dashboard import DashboardServer, api_storage

    client = SweepClient()
    client.sweep_status(sweep_id, trials=False)  # a missing sweep or a bad token fails here, clearly
    if redis_url:
        import redis

        from vastfleet.sweeps.study import storage_for

        storage: Any = storage_for(redis.Redis.from_url(redis_url), "vf", sweep_id)
    else:
        storage = api_storage(client, sweep_id)
    server = DashboardServer(storage, host, port).start()
    typer.echo(f"optuna-dashboard for sweep {sweep_id} on {server.url} (Ctrl-C to stop)", err=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        client.close()
