"""`vastfleet sim serve`: run the marketplace simulator as an HTTP server speaking vast's REST API.

Point the real client at it: `vastai --url http://127.0.0.1:PORT --api-key KEY search offers ...` (set
VAST_URL too: the CLI fetches GPU names from VAST_URL at start). The market moves by itself here (competing
bids, on-demand rivals, host outages, image-load delay); `--quiet-market` turns the random events off.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

from vastfleet.api.serve import check_listen
from vastfleet.errors import BadInput
from vastfleet.sim.entities import QUIRK_NAMES
from vastfleet.sim.simulator import LIVELY_KNOBS, SimServer, Simulator

QUIRK_HELP = "Turn a quirk on (repeatable): " + ", ".join(QUIRK_NAMES) + "."

app = typer.Typer(help="The vast.ai marketplace simulator.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """The vast.ai marketplace simulator."""


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).")] = 8787,
    seed: Annotated[int, typer.Option(help="Seed of the market: same seed, same market.")] = 0,
    hosts: Annotated[int, typer.Option(min=1, max=5000, help="How many hosts (one machine each).")] = 40,
    api_key: Annotated[
        str, typer.Option(envvar="VASTFLEET_SIM_API_KEY", help="The bearer key clients must send.")
    ] = "sim-key",
    workdir: Annotated[Path | None, typer.Option(help="Where sandboxes live (default: a temp dir).")] = None,
    boot_delay: Annotated[float, typer.Option(min=0.0, help="Seconds of image loading.")] = 3.0,
    quiet_market: Annotated[bool, typer.Option("--quiet-market", help="No random bids, rivals or outages.")] = False,
    quirk: Annotated[list[str] | None, typer.Option(help=QUIRK_HELP)] = None,
) -> None:
    """Serve the simulated vast.ai API until interrupted."""
    quirk = quirk or []
    unknown = [q for q in quirk if q not in QUIRK_NAMES]
    if unknown:
        typer.echo(f"unknown quirk(s): {', '.join(unknown)} (known: {', '.join(QUIRK_NAMES)})", err=True)
        raise typer.Exit(2)
    try:
        check_listen(host, port)  # a port in use: one line and exit 2, before the server prints anything
    except BadInput as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    knobs = {} if quiet_market else dict(LIVELY_KNOBS)
    knobs["boot_delay"] = boot_delay
    root = workdir or Path(tempfile.mkdtemp(prefix="vastfleet-sim-"))
    sim = Simulator(
        root, seed=seed, hosts=hosts, api_key=api_key, knobs=knobs, quirks=dict.fromkeys(quirk, True)
    )
    server = SimServer(sim, host=host, port=port or None, log_level="info")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):  # every instance dies with it
        signal.signal(sig, lambda *_: done.set())
    try:
        try:
            server.start()
        except RuntimeError as exc:  # lost a race for the port after the check, or uvicorn could not start
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        sim.start_ticker()
        typer.echo(f"vastfleet sim: {len(sim.market.machines)} machines (seed {seed}) at {server.url}")
        shown = api_key if api_key == "sim-key" else "$VASTFLEET_SIM_API_KEY"  # never echo a chosen key
        typer.echo(f"  vastai --url {server.url} --api-key {shown} search offers 'gpu_name=RTX_4090'")
        typer.echo(f"  admin API: {server.url}/sim/v1/state   sandboxes: {root}")
        done.wait()
    finally:
        server.stop()
        sim.close()
