"""Every query of every dashboard, evaluated by a real Prometheus scraping a fleet with a preemption: each
must parse and return data (at least one finite value). The alert rules load and evaluate there too."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.observability.dashboard_queries import Query, dashboard_queries, substitute
from tests.observability.promharness import PrometheusServer
from tests.observability.workload import FleetThread
from vastfleet.spec.job import JobState

QUERIES = dashboard_queries()


def finite(series: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in series)


@pytest.mark.slow
@pytest.mark.parametrize("query", QUERIES, ids=[q.id for q in QUERIES])
def test_panel_query_returns_data(warm_prometheus: PrometheusServer, query: Query) -> None:
    expr = substitute(query.expr)
    last: list[list[dict[str, Any]]] = [[]]

    def has_data() -> bool:
        last[0] = warm_prometheus.query(expr)  # a parse error raises PromQLError at once, not retried
        return finite(last[0])

    try:
        wait_for(has_data, timeout=8, interval=0.25, what=f"data for {query.id}")
    except TimeoutError:
        pytest.fail(f"{query.id}: {expr!r} returned no finite value; last result: {last[0]!r}")


def test_every_dashboard_has_queries() -> None:
    per_dashboard = {q.dashboard for q in QUERIES}
    assert per_dashboard == {"cost", "preemptions", "queue", "fleet"}
    assert len(QUERIES) >= 40


@pytest.mark.slow
def test_gpu_model_variable_lists_models(warm_prometheus: PrometheusServer) -> None:
    models = warm_prometheus.api("label/gpu_model/values", **{"match[]": "vastfleet_spend_dollars_total"})
    assert set(models) == {"RTX 4090", "A100 SXM4"}


@pytest.mark.slow
def test_the_workload_shows_preemption_and_recovery(
    warm_prometheus: PrometheusServer, scripted_fleet: FleetThread
) -> None:
    prom = warm_prometheus
    kinds = {s["metric"]["kind"] for s in prom.query("sum by (kind) (vastfleet_preemptions_total) > 0")}
    assert kinds == {"outbid", "host_offline"}
    assert prom.values("sum(vastfleet_recovery_seconds_count)")[0] > 0
    assert prom.values("sum(vastfleet_work_lost_gpu_seconds_total)")[0] > 0
    # Jobs by state come from the job store at scrape time: the counts of terminal jobs only grow, and
    # what Prometheus holds is never ahead of the store.
    succeeded = prom.values('max(vastfleet_jobs{state="SUCCEEDED"})')[0]
    assert 0 < succeeded <= scripted_fleet.fleet.store.counts()[JobState.SUCCEEDED]
    assert prom.values("max(vastfleet_stopped_instances)") == [0.0]


@pytest.mark.slow
def test_rules_load_and_evaluate(warm_prometheus: PrometheusServer) -> None:
    prom = warm_prometheus

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prom.rule_groups() for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else []  # "unknown" until evaluated

    rules = wait_for(evaluated, timeout=10, what="every rule evaluated with health ok")
    names = {r.get("name") for r in rules}
    assert {
        "VastfleetBudgetBurn",
        "VastfleetStoppedInstance",
        "VastfleetHeartbeatLost",
        "VastfleetPreemptionStorm",
    } <= names
    savings = wait_for(lambda: prom.values("vastfleet:savings_dollars"), timeout=10, what="savings recorded")
    assert savings[0] > 0  # the script bids below on-demand prices
    firing = prom.query('ALERTS{alertname="VastfleetStoppedInstance"}')
    assert firing == []
