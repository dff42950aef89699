"""One simulator: the market, its process runner, the request gate, the clock and the ticker thread.

`Simulator(workdir, seed=, hosts=, api_key=, knobs=, quirks=)` builds the parts; `tick()` advances the market
to the clock's now; `start_ticker()` runs ticks in a daemon thread; `close()` stops the ticker and kills every
instance's processes. `SimServer` serves it over HTTP with uvicorn in a thread (for tests and the CLI).
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from vastfleet.sim.entities import Knobs
from vastfleet.sim.events import advance
from vastfleet.sim.model import Market
from vastfleet.sim.quirks import Gate
from vastfleet.sim.runner import ProcessRunner

# rates for `vastfleet sim serve` and the demo: a market that moves, gently
LIVELY_KNOBS: dict[str, float] = {
    "boot_delay": 3.0,
    "bid_arrival_rate": 1 / 30.0,
    "bid_duration": 120.0,
    "ondemand_arrival_rate": 1 / 60.0,
    "ondemand_duration": 600.0,
    "outage_scale": 20.0,
    "outage_duration": 90.0,
}


class SimClock:
    """Wall time plus an offset the admin API can advance (to bill an hour without waiting one)."""

    def __init__(self, base: Callable[[], float] = time.time) -> None:
        self.base = base
        self.offset = 0.0

    def __call__(self) -> float:
        return self.base() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)


class Simulator:
    def __init__(
        self,
        workdir: Path | str,
        *,
        seed: int = 0,
        hosts: int = 40,
        api_key: str = "sim-key",
        knobs: dict[str, Any] | None = None,
        quirks: dict[str, bool] | None = None,
        clock: Callable[[], float] | None = None,
        tick_interval: float = 0.2,
        runner: Any = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_key = api_key
        self.seed = seed
        self.clock = SimClock(clock or time.time)
        # instances as local process groups; a benchmark of thousands may bring a lighter runner of its own
        self.runner = runner if runner is not None else ProcessRunner(self.workdir)
        k = Knobs()
        k.update(knobs or {})
        self.market = Market(seed, hosts, clock=self.clock, runner=self.runner, knobs=k, quirks=quirks)
        self.gate = Gate(self.market)
        self.tick_interval = tick_interval
        self.log_results: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.connection_dirs: dict[str, Path] = {}
        self._last_tick = self.clock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def tick(self) -> None:
        with self.market.lock:
            now = self.clock()
            dt = max(0.0, now - self._last_tick)
            self._last_tick = now
            advance(self.market, now, dt)

    def advance_clock(self, seconds: float) -> None:
        with self.market.lock:
            self.clock.advance(seconds)
        self.tick()

    def cloud_dir(self, connection: str) -> Path:
        """A cloud connection's directory; `connection_dirs` may point one at another place (a test points
        it at the control plane's checkpoint store, as a real connection would point at its bucket)."""
        return self.connection_dirs.get(str(connection)) or self.workdir / "cloud" / connection

    def keep_log_result(self, token: str, text: str) -> None:
        self.log_results[token] = text
        while len(self.log_results) > 200:
            self.log_results.popitem(last=False)

    def start_ticker(self) -> None:
        if self._ticker is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.tick_interval):
                try:
                    self.tick()
                except Exception:  # a bad tick must not stop the market's clock
                    import logging

                    logging.getLogger(__name__).exception("simulator tick failed")

        self._ticker = threading.Thread(target=loop, name="vastfleet-sim-ticker", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        with self.market.lock:
            self.runner.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class SimServer:
    """The simulator's HTTP server in a background thread (uvicorn, no signal handlers of its own)."""

    def __init__(
        self, sim: Simulator, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"
    ) -> None:
        from vastfleet.sim.server import create_app

        self.sim = sim
        self.host = host
        self.port = port or free_port(host)
        config = uvicorn.Config(
            create_app(sim), host=host, port=self.port, log_level=log_level, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SimServer:
        self._thread = threading.Thread(target=self.server.run, name="vastfleet-sim-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"simulator server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
