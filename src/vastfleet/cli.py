"""The `vastfleet` command: the server, and the user commands that talk to it through `vastfleet.client`.

Every command prints errors as one message on stderr, never a traceback: exit 2 for bad input
(`BadInput`), 1 for any other failure. Other parts expose their own typer apps, named in
`LAZY_SUB_APPS` and imported only when used. Holds no logic of its own beyond parsing and printing.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, TypeGuard, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
import typer.main
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer._click import Command as ClickCommand  # typer vendors click: its own classes, not click's
from typer._click import Context as ClickContext
from typer.core import TyperCommand, TyperGroup

from vastfleet.client import Client
from vastfleet.errors import BadInput, VastfleetError
from vastfleet.spec import Job, JobEvent, JobSummary
from vastfleet.spec.durations import format_duration
from vastfleet.spec.jobspec import load_job_spec
from vastfleet.spec.money import format_price, format_usd

# Sub-apps are imported when named: `vastfleet status` must not load the simulator, the replay or uvicorn.
LAZY_SUB_APPS = {
    "sim": ("vastfleet.sim.cli", "The vast.ai marketplace simulator (for tests and demos)."),
    "sweep": ("vastfleet.sweeps.cli", "Hyperparameter sweeps: many trials, autoscaled, under a budget."),
    "bench": ("vastfleet.sim.replay.cli", "Policy benchmarks: replay market traces in virtual time."),
}


class _LazyCommand(TyperCommand):
    """Stands in for a sub-app in the command list (its help line), nothing imported."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help=help_text, short_help=help_text)


def _sub_app(name: str) -> TyperGroup:
    module, help_text = LAZY_SUB_APPS[name]
    group = typer.main.get_group(importlib.import_module(module).app)
    group.name, group.help, group.short_help = name, help_text, help_text
    tidy_help(group)
    return group


class _LazyGroup(TyperGroup):
    """Lists the sub-apps by their help line; imports one only to run it (or to show its own help)."""

    def list_commands(self, ctx: ClickContext) -> list[str]:
        return [*super().list_commands(ctx), *LAZY_SUB_APPS]

    def get_command(self, ctx: ClickContext, cmd_name: str) -> ClickCommand | None:
        if cmd_name in LAZY_SUB_APPS:
            return _LazyCommand(cmd_name, LAZY_SUB_APPS[cmd_name][1])
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: ClickContext,
                        args: list[str]) -> tuple[str | None, ClickCommand | None, list[str]]:
        if args and args[0] in LAZY_SUB_APPS:
            return args[0], _sub_app(args[0]), args[1:]
        return super().resolve_command(ctx, args)


app = typer.Typer(name="vastfleet", cls=_LazyGroup, help="Run GPU jobs on the vast.ai marketplace cheaply and safely.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console(soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(command: F) -> F:
    """Our errors become a message on stderr and their exit code (2 for bad input, else 1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VastfleetError as exc:
            raise fail(exc.message, exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def redact_url(url: str) -> str:
    """A URL safe to print: the password, if any, replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(at: float) -> str:
    return f"{format_duration(max(0.0, time.time() - at))} ago" if time.time() - at >= 1 else "just now"


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))  # default=str: no value ever crashes the output


# --- the server ---------------------------------------------------------------------------------------


@app.command()
@friendly_errors
def server(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8765,
    redis_url: Annotated[str, typer.Option(envvar="VASTFLEET_REDIS_URL",
                                           help="Redis with append-only persistence (the job store)")]
    = "redis://127.0.0.1:6379/0",
    public_url: Annotated[str | None, typer.Option(envvar="VASTFLEET_PUBLIC_URL",
                                                   help="the URL instances reach the API at (agents)")] = None,
    scheduler: Annotated[bool, typer.Option(help="run the scheduler loop and action workers here too")] = True,
    log_level: Annotated[str, typer.Option(envvar="VASTFLEET_LOG_LEVEL", metavar="LEVEL",
                                           help="DEBUG (every marketplace call), INFO (every decision and action),"
                                                " WARNING or ERROR")] = "INFO",
    log_format: Annotated[str, typer.Option(envvar="VASTFLEET_LOG_FORMAT", metavar="FORMAT",
                                            help="text (readable) or json (one object per line)")] = "text",
) -> None:
    """Run the control plane: the API, and unless --no-scheduler the scheduler loop and action workers.

    It logs each decision and action on stderr, one line each. The user token comes from VASTFLEET_TOKEN;
    the marketplace key from VAST_API_KEY (or vastai's key file) and its server from VASTFLEET_MARKET_URL;
    every other knob from VASTFLEET_* (docs/scheduler.md).
    """
    import redis

    from vastfleet import logs
    from vastfleet.api.serve import check_listen
    from vastfleet.runtime import Settings, serve_forever

    logs.parse_level(log_level)
    log_format = logs.check_format(log_format)
    check_listen(host, port)  # a port in use: one line and exit 2, before anything else is printed
    token = os.environ.get("VASTFLEET_TOKEN", "")
    if not token:
        raise BadInput("VASTFLEET_TOKEN is not set: the server needs a user token for its API "
                       "(e.g. export VASTFLEET_TOKEN=$(openssl rand -hex 24))")
    try:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
    except ValueError as exc:
        raise BadInput(f"--redis-url {redact_url(redis_url)!r}: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise VastfleetError(f"cannot reach Redis at {redact_url(redis_url)}: {exc}") from None
    finally:
        client.close()
    if scheduler:
        from vastfleet.errors import MarketAuthError
        from vastfleet.market.config import find_api_key

        if not os.environ.get("VASTFLEET_VAST_API_KEY"):
            try:
                find_api_key()
            except MarketAuthError as exc:
                raise BadInput(f"{exc}; or start the API alone with --no-scheduler") from None
    settings = Settings(api_host=host, api_port=port, redis_url=redis_url, api_token=token,
                        public_url=public_url, run_scheduler=scheduler, workers=2 if scheduler else 0,
                        log_level=log_level.upper(), log_format=log_format)
    code = serve_forever(settings)  # its first log line says where it listens, once it does
    if code:
        raise typer.Exit(code)


# --- the user commands --------------------------------------------------------------------------------


@app.command()
@friendly_errors
def submit(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="the job spec, YAML or JSON")],
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="override a key, e.g. --set resources.gpus=2")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole job as JSON")] = False,
) -> None:
    """Submit a job to the server at VASTFLEET_URL (default http://127.0.0.1:8765) with the token in
    VASTFLEET_TOKEN; prints the job's id."""
    spec = load_job_spec(file, set_ or [])  # validated here first: a bad spec never reaches the server
    spec.check_deadline(time.time())
    with Client() as client:
        job = client.submit(spec)
    if as_json:
        print_json(job.model_dump(mode="json"))
    else:
        typer.echo(job.id)


@app.command()
@friendly_errors
def status(
    job_id: Annotated[str | None, typer.Argument(metavar="JOB", help="one job's details; all jobs without")]
    = None,
    state: Annotated[str | None, typer.Option(metavar="STATE", help="only jobs in this state, e.g. RUNNING")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, metavar="N", help="at most this many jobs (the most recent)")]
    = 100,
    before: Annotated[str | None, typer.Option(metavar="JOB", help="the jobs submitted before this one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show the most recent jobs (a summary of each), or one job's details, from the server at VASTFLEET_URL
    (default http://127.0.0.1:8765) with the token in VASTFLEET_TOKEN."""
    with Client() as client:
        if job_id is not None:
            job = client.get(job_id)
            if as_json:
                print_json(job.model_dump(mode="json"))
            else:
                out.print(job_details(job))
            return
        jobs = client.list(state=state, limit=limit, before=before)
    if as_json:
        print_json([j.model_dump(mode="json") for j in jobs])
    elif not jobs:
        typer.echo("no jobs" + (f" in state {state.upper()}" if state else "") + (f" before {before}" if before else ""))
    else:
        out.print(jobs_table(jobs))
        if len(jobs) == limit:  # there may be older ones: say how to see them
            typer.echo(f"(the {limit} most recent shown; older: --before {jobs[0].id})", err=True)


@app.command()
@friendly_errors
def cancel(job_id: Annotated[str, typer.Argument(metavar="JOB")]) -> None:
    """Cancel a job; its instance, if any, is torn down by the scheduler."""
    with Client() as client:
        job = client.cancel(job_id)
    typer.echo(f"{job.id} {job.state.value}")


@app.command()
@friendly_errors
def events(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a job's history: every transition with its reason, and notes."""
    with Client() as client:
        history = client.events(job_id)
    if as_json:
        print_json([e.model_dump(mode="json") for e in history])
    else:
        out.print(events_table(history))


def jobs_table(jobs: list[JobSummary]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ID", "NAME", "STATE", "EPOCH", "PRIORITY", "SUBMITTED", "INSTANCE", "REASON"):
        table.add_column(column, no_wrap=column != "REASON", min_width=24 if column == "REASON" else None)
    for job in jobs:
        table.add_row(*plain(job.id, job.name, job.state.value, str(job.epoch), str(job.priority),
                             ago(job.submitted_at), "-" if job.instance_id is None else str(job.instance_id),
                             job.reason))
    return table


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_progress(progress: dict[str, Any]) -> str:
    """`28/60 (47%)` when the job reports `step` and `of` (or `total`), `47%` from a `fraction`, then the
    other scalar entries as `name value` (never the raw JSON)."""
    if not progress:
        return "-"
    step, total, fraction = progress.get("step"), progress.get("of", progress.get("total")), progress.get("fraction")
    head, used = "", set()
    if _number(step) and _number(total) and total > 0:
        head, used = f"{_show(step)}/{_show(total)} ({100.0 * step / total:.0f}%)", {"step", "of", "total"}
    elif _number(fraction):
        head, used = f"{100.0 * fraction:.0f}%", {"fraction"}
    elif _number(step):
        head, used = f"step {_show(step)}", {"step"}
    rest = [f"{k} {_show(v)}" for k, v in progress.items()
            if k not in used and (_number(v) or isinstance(v, (str, bool)))]
    return ", ".join([head, *rest] if head else rest) or "-"


def plain(*cells: str) -> list[Text]:
    """Cells as literal text: a reason or an image may hold `[...]`, which rich would read as markup (and
    a stray `[/x]` made it raise instead of printing the table)."""
    return [Text(cell) for cell in cells]


def job_details(job: Job) -> Table:
    table = Table(box=None, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    checkpoint = job.latest_checkpoint
    rows = [
        ("id", job.id), ("name", job.spec.name), ("state", job.state.value), ("reason", job.reason),
        ("epoch", str(job.epoch)), ("priority", str(job.spec.priority)), ("image", job.spec.image),
        ("gpu", f"{job.spec.resources.gpus} x {' | '.join(job.spec.resources.gpu)}"),
        ("submitted", when(job.submitted_at)), ("updated", when(job.updated_at)),
        ("deadline", when(job.deadline_at)),
        ("instance", "-" if job.instance_id is None else str(job.instance_id)),
        ("bid", "on demand" if job.bid is None else format_price(job.bid)),
        ("preemptions", str(job.preemptions)), ("errors", str(job.errors)), ("cost", format_usd(job.cost_usd)),
        ("expected cost", "-" if job.expected_cost_usd is None else f"{format_usd(job.expected_cost_usd)} more"
         " (at placement)"),
        ("checkpoint", "-" if checkpoint is None else
         f"epoch {checkpoint.epoch} step {checkpoint.step} at {when(checkpoint.committed_at)}"),
        ("progress", format_progress(job.progress)),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
    ]
    if job.cancel_requested:
        rows.append(("cancel", "requested"))
    for key, value in rows:
        table.add_row(*plain(key, value))
    return table


def events_table(history: list[JobEvent]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("TIME", "KIND", "CHANGE", "EPOCH", "REASON"):
        table.add_column(column, no_wrap=column != "REASON", min_width=24 if column == "REASON" else None)
    for event in history:
        change = ""
        if event.to_state is not None:
            change = f"{event.from_state.value if event.from_state else '∅'} → {event.to_state.value}"
        table.add_row(*plain(when(event.at), event.kind, change, str(event.epoch), event.reason))
    return table


def tidy_help(command: Any) -> None:
    """Help that reads well at 80 columns, whatever typer version renders it: no `<bool>`/`<int>` type tags
    (a flag shows nothing, an option its name as `NAME`), and each paragraph of a docstring one line for the
    renderer to wrap (a docstring's own line breaks fell mid-sentence). Walks every command and sub-app."""
    if command.help:
        command.help = "\n\n".join(" ".join(p.split()) for p in command.help.split("\n\n"))
    get_params = command.get_params

    def tidied(ctx: Any) -> Any:
        params = get_params(ctx)  # typer makes --help here, late: it is tidied with the rest
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
            elif param.metavar is None and param.name:
                param.metavar = param.name.upper()
            if getattr(param, "param_type_name", "") == "argument" and hasattr(param, "display_type_rich"):
                param.display_type_rich = lambda ctx: None  # the argument's name says it (typer adds `<path>`)
        return params

    command.get_params = tidied
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


def main() -> None:
    command = typer.main.get_command(app)
    tidy_help(command)
    command(prog_name="vastfleet")


# ======================================================================================================
# Other parts' commands are registered below (`offers`, `demo`; `sim`, `sweep`, `bench` in LAZY_SUB_APPS).
# Each part exposes a typer app or a command function in its own module; only registration lives here.
# ======================================================================================================


@app.command()
def demo(
    jobs: Annotated[int, typer.Option(metavar="N", help="how many jobs to run (1-20)")] = 3,
    preemptions: Annotated[int, typer.Option(metavar="N", help="how many preemptions to inject (0-50)")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as one JSON object, last line")]
    = False,
    sweep: Annotated[bool, typer.Option("--sweep", help="run a small autoscaled sweep instead (docs/sweeps.md)")]
    = False,
) -> None:
    """Run vastfleet on its embedded defaults: simulator, Redis, API, scheduler and agents, with preemptions."""
    if sweep:
        from vastfleet.sweeps.demo import sweep_demo_command

        raise typer.Exit(sweep_demo_command(preemptions, as_json))
    from vastfleet.demo import demo_command

    raise typer.Exit(demo_command(jobs, preemptions, as_json))


@app.command()
def offers(
    job: Annotated[Path | None, typer.Option("--job", metavar="FILE",
                                             help="rank for this job spec (default: any 1-GPU job)")] = None,
    explain: Annotated[bool, typer.Option(help="show the terms behind each expected cost")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List marketplace offers ranked by expected dollars to finish (VAST_API_KEY, VASTFLEET_MARKET_URL)."""
    from vastfleet.scheduler.offers_cli import offers_command

    offers_command(job, explain, as_json)

if __name__ == "__main__":
    main()
