"""The simulator as a test fixture: `running_sim(tmp_path, seed=0, hosts=..., **knobs)` and the `sim` fixture.

The server runs in-process (uvicorn in a thread, a free loopback port), its instances' sandboxes under
`tmp_path/sim`. Random market events are off (every rate zero) unless a test passes a knob; quirks keep
vast's defaults (v0 listing gone, insufficient bid created stopped) unless `quirks={...}` says otherwise.

    with running_sim(tmp_path, seed=3, boot_delay=0.5, quirks={"zombie": True}) as sim:
        sim.url, sim.api_key, sim.admin.preempt(iid), sim.admin.ledger(), sim.sim (the Simulator itself)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vastfleet.sim.admin_client import SimAdmin
from vastfleet.sim.simulator import SimServer, Simulator


@dataclass
class SimHandle:
    url: str  # http://127.0.0.1:PORT
    api_key: str
    admin: SimAdmin
    sim: Simulator  # in-process access to the market, the runner and the clock
    server: SimServer
    workdir: Path

    def sandbox(self, instance_id: int) -> Path:
        """The instance's /workspace on this machine."""
        return self.sim.runner.sandbox(instance_id)

    def cloud_dir(self, connection: int | str = 1001) -> Path:
        return self.sim.cloud_dir(str(connection))

    def close(self) -> None:
        self.admin.close()
        self.server.stop()
        self.sim.close()


@contextmanager
def running_sim(
    tmp_path: Path,
    seed: int = 0,
    hosts: int = 40,
    *,
    api_key: str = "sim-test-key",
    quirks: dict[str, bool] | None = None,
    ticker: bool = True,
    **knobs: Any,
) -> Iterator[SimHandle]:
    workdir = Path(tmp_path) / "sim"
    sim = Simulator(workdir, seed=seed, hosts=hosts, api_key=api_key, knobs=knobs, quirks=quirks)
    server = SimServer(sim)
    handle: SimHandle | None = None
    try:
        server.start()
        if ticker:
            sim.start_ticker()
        handle = SimHandle(server.url, api_key, SimAdmin(server.url, api_key), sim, server, workdir)
        yield handle
    finally:
        if handle is not None:
            handle.close()
        else:
            server.stop()
            sim.close()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimHandle]:
    with running_sim(tmp_path) as handle:
        yield handle
