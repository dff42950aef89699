"""The exporter: what each FleetMetrics method records, label hygiene, Prometheus naming conventions, the
job-store collector on a real redis-server, and the ASGI app served through the real API app."""

from __future__ import annotations

import re

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers import FakeClock, free_port
from vastfleet.api import ApiContext, create_app
from vastfleet.api.serve import ServerThread
from vastfleet.metrics import FleetMetrics, JobStoreCollector, metrics_asgi_app, priority_band
from vastfleet.queue import JobStore
from vastfleet.spec.job import JobState
from vastfleet.spec.jobspec import job_spec_from_dict
from vastfleet.spec.market import Instance

ALLOWED_LABELS = {
    "state",
    "priority_band",
    "status",
    "gpu_model",
    "bid_kind",
    "kind",
    "operation",
    "code",
    "version",
    "le",
}


def value(metrics: FleetMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def spec(priority: int = 0) -> object:
    return job_spec_from_dict(
        {"name": "t", "image": "img", "run": "true", "priority": priority, "resources": {"gpu": ["RTX 4090"]}}
    )


def test_spend_by_kind_and_savings_against_on_demand() -> None:
    m = FleetMetrics()
    m.spend(0.25, "compute", "RTX 4090", "bid", on_demand_dollars=0.60)
    m.spend(0.60, "compute", "RTX 4090", "on_demand")
    m.spend(0.01, "storage", "RTX 4090", True)
    m.spend(0.02, "bandwidth", None, None)
    assert (
        value(m, "vastfleet_spend_dollars_total", kind="compute", gpu_model="RTX 4090", bid_kind="bid")
        == 0.25
    )
    assert (
        value(m, "vastfleet_spend_dollars_total", kind="storage", gpu_model="RTX 4090", bid_kind="bid")
        == 0.01
    )
    assert (
        value(m, "vastfleet_spend_dollars_total", kind="bandwidth", gpu_model="unknown", bid_kind="on_demand")
        == 0.02
    )
    # on demand, the equivalent is the price paid; storage and bandwidth do not count towards savings
    assert (
        value(m, "vastfleet_on_demand_equivalent_dollars_total", gpu_model="RTX 4090", bid_kind="bid") == 0.60
    )
    assert (
        value(m, "vastfleet_on_demand_equivalent_dollars_total", gpu_model="RTX 4090", bid_kind="on_demand")
        == 0.60
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.spend(1.0, "gpu", "RTX 4090", "bid"),
        lambda m: m.spend(-1.0, "compute", "RTX 4090", "bid"),
        lambda m: m.spend(1.0, "compute", "RTX 4090", "spot"),
        lambda m: m.market_call("Create Instance!", 200, 0.1),
        lambda m: m.preemption("RTX 4090", "host 1234 vanished"),
        lambda m: m.job_finished("RUNNING", 1.0),
    ],
)
def test_unbounded_or_wrong_label_values_are_refused(call: object) -> None:
    m = FleetMetrics()
    with pytest.raises(ValueError):
        call(m)  # type: ignore[operator]


def test_market_calls_by_operation_and_code() -> None:
    m = FleetMetrics()
    m.market_call("create_instance", 200, 0.4)
    m.market_call("create_instance", 429, 0.1)
    m.market_call("search_offers", "ReadTimeout", 10.0)
    m.market_call("list_instances", "ok", 0.1)  # the vast adapter's word for a success
    assert value(m, "vastfleet_market_requests_total", operation="create_instance", code="200") == 1
    assert value(m, "vastfleet_market_requests_total", operation="list_instances", code="2xx") == 1
    assert value(m, "vastfleet_market_requests_total", operation="create_instance", code="429") == 1
    assert value(m, "vastfleet_market_requests_total", operation="search_offers", code="read_timeout") == 1
    assert value(m, "vastfleet_market_request_seconds_count", operation="create_instance") == 2
    assert value(m, "vastfleet_market_request_seconds_sum", operation="search_offers") == 10.0


def test_fleet_snapshot_replaces_the_previous_one() -> None:
    m = FleetMetrics()
    first = [
        Instance(
            id=1,
            gpu_name="RTX 4090",
            num_gpus=2,
            actual_status="running",
            is_bid=True,
            dph_total=0.9,
            bid_price=0.4,
        ),
        Instance(id=2, gpu_name="A100 SXM4", num_gpus=1, actual_status="loading", dph_total=1.4),
        Instance(id=3, gpu_name="RTX 4090", num_gpus=1, actual_status="running", dph_total=0.6),
    ]
    m.fleet_snapshot(first, heartbeat_ages=[3.0, 12.5])
    assert value(m, "vastfleet_instances", status="running", gpu_model="RTX 4090", bid_kind="bid") == 1
    assert value(m, "vastfleet_instances", status="loading", gpu_model="A100 SXM4", bid_kind="on_demand") == 1
    # a bid instance costs its bid; loading instances are not counted in the running $/h
    assert (
        value(m, "vastfleet_fleet_spend_rate_dollars_per_hour", gpu_model="RTX 4090", bid_kind="bid") == 0.4
    )
    assert (
        value(m, "vastfleet_fleet_spend_rate_dollars_per_hour", gpu_model="RTX 4090", bid_kind="on_demand")
        == 0.6
    )
    assert value(m, "vastfleet_fleet_gpus", gpu_model="RTX 4090") == 3
    assert value(m, "vastfleet_heartbeat_age_max_seconds") == 12.5
    assert value(m, "vastfleet_stopped_instances") == 0

    second = [
        Instance(id=2, gpu_name="A100 SXM4", num_gpus=1, actual_status="stopped", dph_total=1.4),
        Instance(
            id=4,
            gpu_name="A100 SXM4",
            num_gpus=1,
            actual_status="running",
            intended_status="stopped",
            dph_total=1.4,
        ),
        Instance(id=5, gpu_name=None, actual_status="weird-new-status"),
    ]
    m.fleet_snapshot(second)
    assert value(m, "vastfleet_instances", status="running", gpu_model="RTX 4090", bid_kind="bid") is None
    assert value(m, "vastfleet_instances", status="stopped", gpu_model="A100 SXM4", bid_kind="on_demand") == 1
    assert value(m, "vastfleet_instances", status="unknown", gpu_model="unknown", bid_kind="on_demand") == 1
    assert value(m, "vastfleet_stopped_instances") == 2  # stopped, or told to stop: both bill disk forever
    assert value(m, "vastfleet_heartbeat_age_max_seconds") == 0
    assert value(m, "vastfleet_fleet_gpus", gpu_model="RTX 4090") is None


def test_preemption_recovery_work_lost_checkpoints_and_passes() -> None:
    clock = FakeClock(1_000_000.0)
    m = FleetMetrics(clock=clock)
    m.preemption("RTX 4090", "outbid")
    m.preemption("RTX 4090", "host_offline")
    m.recovery(95.0)
    m.work_lost(1800.0, "RTX 4090")
    m.checkpoint_upload(5_000_000, 12.0)
    m.checkpoint_failed()
    m.observe_pass(0.05)
    m.set_hosts_excluded(3)
    m.set_budget(500.0, None, spent_dollars=120.5)
    assert value(m, "vastfleet_preemptions_total", gpu_model="RTX 4090", kind="outbid") == 1
    assert value(m, "vastfleet_preemptions_total", gpu_model="RTX 4090", kind="host_offline") == 1
    assert value(m, "vastfleet_recovery_seconds_bucket", le="120.0") == 1
    assert value(m, "vastfleet_recovery_seconds_bucket", le="60.0") == 0
    assert value(m, "vastfleet_work_lost_gpu_seconds_total", gpu_model="RTX 4090") == 1800
    assert value(m, "vastfleet_checkpoint_upload_bytes_total") == 5_000_000
    assert value(m, "vastfleet_checkpoint_upload_seconds_sum") == 12.0
    assert value(m, "vastfleet_checkpoint_upload_failures_total") == 1
    assert value(m, "vastfleet_scheduler_last_pass_timestamp_seconds") == clock.now
    assert value(m, "vastfleet_hosts_excluded") == 3
    assert value(m, "vastfleet_budget_hourly_cap_dollars") == 0
    assert value(m, "vastfleet_budget_spent_dollars") == 120.5


def test_jobs_counters() -> None:
    m = FleetMetrics()
    m.job_submitted()
    m.job_started(42.0)
    m.job_finished(JobState.SUCCEEDED, 3.5)
    assert value(m, "vastfleet_jobs_submitted_total") == 1
    assert value(m, "vastfleet_job_wait_seconds_sum") == 42
    assert value(m, "vastfleet_jobs_finished_total", state="SUCCEEDED") == 1
    assert value(m, "vastfleet_jobs_finished_total", state="FAILED") == 0  # present from the start
    assert value(m, "vastfleet_job_cost_dollars_sum", state="SUCCEEDED") == 3.5


def test_names_units_and_labels_follow_prometheus_conventions(redis_client: redis.Redis) -> None:
    m = FleetMetrics()
    m.attach_store(JobStore(redis_client))
    for family in m.registry.collect():
        assert family.name.startswith("vastfleet_"), family.name
        assert re.fullmatch(r"[a-z_:]+", family.name)
        if family.type == "counter":
            assert any(family.name.endswith(u) for u in ("_dollars", "_bytes", "_seconds", "")), family.name
        if family.type == "histogram":
            assert family.name.endswith(("_seconds", "_dollars")), family.name
        assert not re.search(r"_(ms|milliseconds|minutes|hours|mb|gb|cents)(_|$)", family.name), family.name
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)


def test_priority_bands() -> None:
    assert [priority_band(p) for p in (1000, 1, 0, -1, -1000)] == ["high", "high", "normal", "low", "low"]


def test_store_collector_reads_the_job_store(redis_client: redis.Redis) -> None:
    clock = FakeClock(1_000_000.0)
    store = JobStore(redis_client, clock=clock)
    jobs = [store.submit(spec(p)) for p in (10, 10, 0, -5)]
    placing = store.transition(jobs[0].id, JobState.PLACING, "offer")
    store.transition(jobs[0].id, JobState.BOOTING, "created", expected_epoch=placing.epoch)
    store.cancel(jobs[3].id)
    clock.now += 30
    m = FleetMetrics(clock=clock)
    m.attach_store(store)
    assert value(m, "vastfleet_jobstore_up") == 1
    assert value(m, "vastfleet_jobs", state="PENDING") == 2
    assert value(m, "vastfleet_jobs", state="BOOTING") == 1
    assert value(m, "vastfleet_jobs", state="CANCELLED") == 1
    assert value(m, "vastfleet_jobs", state="RUNNING") == 0
    assert value(m, "vastfleet_queue_depth", priority_band="high") == 1
    assert value(m, "vastfleet_queue_depth", priority_band="normal") == 1
    assert value(m, "vastfleet_queue_depth", priority_band="low") == 0
    assert value(m, "vastfleet_queue_oldest_pending_age_seconds") == 30


def test_store_collector_reports_an_outage_instead_of_failing_the_scrape() -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    m = FleetMetrics()
    m.registry.register(JobStoreCollector(JobStore(dead)))
    assert value(m, "vastfleet_jobstore_up") == 0
    assert value(m, "vastfleet_jobs", state="PENDING") is None
    assert value(m, "vastfleet_build_info", version=__import__("vastfleet").__version__) == 1


def test_served_at_metrics_by_the_api(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client)
    store.submit(spec(3))
    m = FleetMetrics()
    m.attach_store(store)
    m.preemption("RTX 4090", "outbid")
    app = create_app(ApiContext(store=store, token="tok", metrics_app=metrics_asgi_app(m)))
    with ServerThread(app) as url:
        resp = httpx.get(f"{url}/metrics", follow_redirects=True)  # unauthenticated, as Prometheus scrapes
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    assert families["vastfleet_preemptions"].samples[0].value == 1
    pending = [s for s in families["vastfleet_jobs"].samples if s.labels["state"] == "PENDING"]
    assert pending[0].value == 1
    assert "j-" not in resp.text  # no job id anywhere in the exposition
