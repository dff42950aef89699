"""Session fixtures of the observability tests: one scrape target running a scripted fleet, one real
Prometheus scraping it (with vastfleet's rules loaded).

`metrics_target` is the seam for the end-to-end version: override it (same name, session scope) to yield
the `Target` of a real `vastfleet server` driving the simulator, and every dashboard test runs against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import RedisServer, wait_for
from tests.observability.promharness import PrometheusServer, Target
from tests.observability.workload import FleetThread, ScriptedFleet
from vastfleet.api import ApiContext, create_app
from vastfleet.api.serve import ServerThread
from vastfleet.metrics import FleetMetrics, metrics_asgi_app
from vastfleet.queue import JobStore

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "vastfleet.rules.yml"


@pytest.fixture(scope="session")
def scripted_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetThread]:
    """A scripted fleet on its own redis-server (the shared one is flushed by other areas' tests)."""
    server = RedisServer(Path(tmp_path_factory.mktemp("obs-redis"))).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    store = JobStore(client, prefix="vfobs")
    metrics = FleetMetrics()
    metrics.attach_store(store)
    fleet = FleetThread(ScriptedFleet(store, metrics), interval=0.2).start()
    yield fleet
    fleet.stop()
    client.close()
    server.stop()
    assert fleet.error is None, f"the scripted fleet failed: {fleet.error!r}"


@pytest.fixture(scope="session")
def metrics_target(scripted_fleet: FleetThread) -> Iterator[Target]:
    """The real API app (spine's create_app) with the exporter mounted at /metrics, on loopback."""
    fleet = scripted_fleet.fleet
    ctx = ApiContext(store=fleet.store, token="obs-test-token", metrics_app=metrics_asgi_app(fleet.metrics))
    server = ServerThread(create_app(ctx)).start()
    yield Target(f"127.0.0.1:{server.port}", "/metrics")
    server.stop()


@pytest.fixture(scope="session")
def prometheus(
    metrics_target: Target, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    prom = PrometheusServer(Path(tmp_path_factory.mktemp("prometheus")), [metrics_target], rule_files=[RULES])
    prom.start()
    try:
        prom.wait_first_scrape()
        yield prom
    finally:
        prom.stop()


@pytest.fixture(scope="session")
def warm_prometheus(prometheus: PrometheusServer, scripted_fleet: FleetThread) -> PrometheusServer:
    """Prometheus once it holds a few scrapes of a fleet that has preempted, recovered and finished jobs:
    enough samples for rate() and increase() to see movement."""
    wait_for(
        lambda: scripted_fleet.error is None and scripted_fleet.fleet.passes >= 10,
        timeout=30,
        what="ten passes of the scripted fleet",
    )
    prometheus.wait_for_samples("vastfleet_recovery_seconds_count", 3)
    wait_for(lambda: prometheus.values("sum(vastfleet_preemptions_total)"), timeout=10, what="a preemption")
    return prometheus
