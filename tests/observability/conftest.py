"""Session fixtures of the observability tests: a real `vastfleet server` driving the simulator (the scrape
target), and one real Prometheus scraping it with vastfleet's rules loaded.

Order matters: Prometheus starts scraping the idle server first, then `warm_prometheus` runs the workload
(jobs, a 503, a preemption, a host outage, recoveries, successes), so the gauges that exist only while
instances run (fleet $/h, GPUs rented) are in Prometheus's history, where the panels' range queries see them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.observability.promharness import PrometheusServer, Target
from tests.observability.real_fleet import RealFleet, start_real_fleet

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "vastfleet.rules.yml"


@pytest.fixture(scope="session")
def real_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealFleet]:
    with ExitStack() as stack:
        yield start_real_fleet(stack, Path(tmp_path_factory.mktemp("obs-fleet")))


@pytest.fixture(scope="session")
def metrics_target(real_fleet: RealFleet) -> Target:
    return Target(f"127.0.0.1:{real_fleet.port}", "/metrics")


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
def warm_prometheus(prometheus: PrometheusServer, real_fleet: RealFleet) -> PrometheusServer:
    """Prometheus once the workload is over and it has scraped the end of it a few times."""
    real_fleet.run_workload()
    done = float(real_fleet.succeeded)
    wait_for(lambda: prometheus.values('sum(vastfleet_jobs_finished_total{state="SUCCEEDED"})') == [done],
             timeout=15, interval=0.2, what="Prometheus to scrape every job finished")
    wait_for(lambda: prometheus.values(f'max(vastfleet_sweep_state{{sweep="{real_fleet.sweep_id}",state="FINISHED"}})')
             == [1.0], timeout=15, interval=0.2, what="Prometheus to scrape the sweep finished")
    return prometheus
