"""Every vastfleet metric, defined once on a dedicated registry, and the small methods that record them.

The other parts never touch prometheus_client: they call `FleetMetrics` methods named after what happened
(`preemption`, `spend`, `recovery`...). Names follow Prometheus conventions: the `vastfleet_` prefix, base
units (seconds, bytes, dollars), `_total` counters. Labels are of low cardinality only (GPU model, bid
kind, state, reason, operation, code): never a job id, instance id or host id, whose values are unbounded.

Owns the metric definitions and label hygiene; never reads Redis or the marketplace itself (the job store
is read at scrape time by `vastfleet.metrics.collector`, the fleet is pushed in by the scheduler).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import vastfleet
from vastfleet.spec.market import BidKind, Instance, InstanceStatus

SPEND_KINDS = ("compute", "storage", "bandwidth")
# Ways a run gets interrupted; the scheduler's supervision uses these words (others are accepted if short
# snake_case names, so a new classification does not need a change here).
PREEMPTION_KINDS = ("outbid", "host_offline", "stuck", "heartbeat_lost", "exited", "unknown")
FINISHED_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")

_WORD = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MAX_LABEL = 64

PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECOVERY_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)
UPLOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
COST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)


def label(value: Any) -> str:
    """A label value from free text (a GPU model): trimmed, bounded, never empty."""
    text = str(value.value if isinstance(value, BidKind) else value or "").strip()
    return text[:_MAX_LABEL] if text else "unknown"


def bid_kind(value: BidKind | str | bool | None) -> str:
    """`bid` (interruptible) or `on_demand`; a bool reads as `is_bid`, None as on demand."""
    if isinstance(value, bool):
        return BidKind.bid.value if value else BidKind.on_demand.value
    if value is None:
        return BidKind.on_demand.value
    return BidKind(value).value  # ValueError names the bad word


def word(value: str, what: str) -> str:
    if not _WORD.match(value):
        raise ValueError(
            f"{what} {value!r} is not a short snake_case word (a metric label must stay bounded)"
        )
    return value


def status_code(code: int | str) -> str:
    """HTTP statuses as their number; a success whose exact status is not known (the marketplace adapter
    says "ok": the vastai client hides it) as "2xx", so that `code!~"2.."` stays the errors; anything else
    (an exception class, 'timeout') as a short word."""
    if isinstance(code, int):
        return str(code)
    text = str(code).strip()
    if text.isdigit():
        return text
    if text.lower() in ("ok", "success", "2xx"):
        return "2xx"
    return word(re.sub(r"(?<!^)(?=[A-Z])", "_", text).lower().replace("__", "_")[:40], "code")


class FleetMetrics:
    """The exporter's metrics on their own `CollectorRegistry` (`.registry`), safe to share across threads."""

    def __init__(
        self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        self._lock = threading.Lock()
        self._series: dict[int, set[Any]] = {}
        self._models: set[str] = set()  # GPU models whose interruption counters exist (at 0 until one happens)
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
        ) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r)

        self.build_info = gauge("vastfleet_build_info", "Always 1; the version as a label.", ("version",))
        self.build_info.labels(vastfleet.__version__).set(1)

        # --- scheduler and marketplace
        self.pass_seconds = histogram(
            "vastfleet_scheduler_pass_seconds", "Duration of one reconcile pass.", PASS_BUCKETS
        )
        self.last_pass = gauge(
            "vastfleet_scheduler_last_pass_timestamp_seconds",
            "Unix time the last reconcile pass ended (0 before the first).",
        )
        self.market_requests = counter(
            "vastfleet_market_requests_total",
            "Marketplace API calls by operation and result code (2xx = success).",
            ("operation", "code"),
        )
        self.market_seconds = histogram(
            "vastfleet_market_request_seconds",
            "Marketplace API call duration.",
            REQUEST_BUCKETS,
            ("operation",),
        )
        self.hosts_excluded = gauge(
            "vastfleet_hosts_excluded", "Hosts the scheduler currently excludes after failures."
        )
        self.balance = gauge("vastfleet_account_balance_dollars", "The marketplace account's credit, as last read.")

        # --- fleet (pushed by the scheduler after each observation of the marketplace)
        self.instances = gauge(
            "vastfleet_instances",
            "Our instances by marketplace status, GPU model, bid kind.",
            ("status", "gpu_model", "bid_kind"),
        )
        self.fleet_rate = gauge(
            "vastfleet_fleet_spend_rate_dollars_per_hour",
            "What the fleet costs per hour right now (compute).",
            ("gpu_model", "bid_kind"),
        )
        self.stopped = gauge(
            "vastfleet_stopped_instances",
            "Instances of ours in the stopped state; they bill disk forever and must stay 0.",
        )
        self.heartbeat_age = gauge(
            "vastfleet_heartbeat_age_max_seconds",
            "Age of the oldest last heartbeat among running jobs (0 when none runs).",
        )
        self.running_gpus = gauge(
            "vastfleet_fleet_gpus", "GPUs rented by the fleet, by GPU model.", ("gpu_model",)
        )

        # --- money
        self.spend_total = counter(
            "vastfleet_spend_dollars_total",
            "Dollars spent by kind, GPU model, bid kind.",
            ("kind", "gpu_model", "bid_kind"),
        )
        self.on_demand_total = counter(
            "vastfleet_on_demand_equivalent_dollars_total",
            "What the same compute would have cost at on-demand prices.",
            ("gpu_model", "bid_kind"),
        )
        self.budget_total = gauge("vastfleet_budget_total_dollars", "The fleet's total spend cap (0 = none).")
        self.budget_hourly = gauge("vastfleet_budget_hourly_cap_dollars", "The fleet's $/h cap (0 = none).")
        self.budget_spent = gauge(
            "vastfleet_budget_spent_dollars",
            "Spend counted against the total cap, from the budget guard's durable record "
            "(survives restarts, unlike the counters).",
        )

        # --- jobs
        self.submitted = counter("vastfleet_jobs_submitted_total", "Jobs submitted.")
        self.finished = counter(
            "vastfleet_jobs_finished_total", "Jobs that reached a terminal state.", ("state",)
        )
        self.job_cost = histogram(
            "vastfleet_job_cost_dollars", "Total cost of each finished job.", COST_BUCKETS, ("state",)
        )
        self.wait_seconds = histogram(
            "vastfleet_job_wait_seconds", "Time an attempt waited from PENDING to RUNNING.", WAIT_BUCKETS
        )

        # --- interruptions and recovery
        self.preemptions = counter(
            "vastfleet_preemptions_total",
            "Runs interrupted, by GPU model and kind (outbid, host_offline, stuck...).",
            ("gpu_model", "kind"),
        )
        self.recovery_seconds = histogram(
            "vastfleet_recovery_seconds",
            "Time from an interruption to the job running again.",
            RECOVERY_BUCKETS,
        )
        self.lost_gpu_seconds = counter(
            "vastfleet_work_lost_gpu_seconds_total",
            "GPU-seconds of work lost since the last checkpoint at interruptions.",
            ("gpu_model",),
        )

        # --- checkpoints
        self.ckpt_bytes = counter("vastfleet_checkpoint_upload_bytes_total", "Checkpoint bytes uploaded.")
        self.ckpt_seconds = histogram(
            "vastfleet_checkpoint_upload_seconds",
            "Duration of a checkpoint upload, first file to committed manifest.",
            UPLOAD_BUCKETS,
        )
        self.ckpt_failures = counter(
            "vastfleet_checkpoint_upload_failures_total", "Checkpoint uploads or commits that failed."
        )

        # Counters a dashboard divides by exist from the start at zero: a zero there is a real answer.
        self.stopped.set(0)
        self.heartbeat_age.set(0)
        self.ckpt_failures.inc(0)
        for state in FINISHED_STATES:
            self.finished.labels(state)

    def attach_store(self, store: Any) -> None:
        """Also export jobs by state and queue depth, read from `store` (a `JobStore`) at each scrape."""
        from vastfleet.metrics.collector import JobStoreCollector
        from vastfleet.sweeps.metrics import SweepCollector  # the sweeps' gauges, from the same Redis

        self.registry.register(JobStoreCollector(store, clock=self.clock))
        keys = getattr(store, "keys", None)
        self.registry.register(SweepCollector(getattr(store, "redis", None), getattr(keys, "prefix", "vf"),
                                              clock=self.clock))

    # --- scheduler and marketplace ---------------------------------------------------------------------

    def observe_pass(self, seconds: float) -> None:
        self.pass_seconds.observe(max(0.0, seconds))
        self.last_pass.set(self.clock())

    def market_call(self, operation: str, code: int | str, seconds: float) -> None:
        """One marketplace API call: `code` is the HTTP status, or a short error word when none came back."""
        op = word(operation, "operation")
        self.market_requests.labels(op, status_code(code)).inc()
        self.market_seconds.labels(op).observe(max(0.0, seconds))

    def set_hosts_excluded(self, count: int) -> None:
        self.hosts_excluded.set(max(0, count))

    def set_balance(self, dollars: float) -> None:
        self.balance.set(dollars)

    # --- fleet -----------------------------------------------------------------------------------------

    def fleet_snapshot(self, instances: Iterable[Instance], heartbeat_ages: Iterable[float] = ()) -> None:
        """Replace the fleet gauges with what the scheduler just observed: our instances, and the age of
        each running job's last heartbeat. Series of statuses no longer seen disappear."""
        counts: dict[tuple[str, str, str], int] = {}
        rates: dict[tuple[str, str], float] = {}
        gpus: dict[str, int] = {}
        stopped = 0
        for inst in instances:
            status = _status(inst.actual_status)
            gpu, kind = label(inst.gpu_name), bid_kind(inst.is_bid)
            counts[(status, gpu, kind)] = counts.get((status, gpu, kind), 0) + 1
            if status == InstanceStatus.stopped.value or _status(inst.intended_status) == "stopped":
                stopped += 1
            if status == InstanceStatus.running.value:
                price = inst.bid_price if inst.is_bid and inst.bid_price else inst.dph_total
                rates[(gpu, kind)] = rates.get((gpu, kind), 0.0) + float(price or 0.0)
                gpus[gpu] = gpus.get(gpu, 0) + int(inst.num_gpus or 0)
        self._zero_interruptions({gpu for _, gpu, _ in counts})
        self._replace(self.instances, counts)
        self._replace(self.fleet_rate, rates)
        self._replace(self.running_gpus, {(g,): n for g, n in gpus.items()})
        self.stopped.set(stopped)
        self.heartbeat_age.set(max((max(0.0, a) for a in heartbeat_ages), default=0.0))

    def _zero_interruptions(self, models: set[str]) -> None:
        """The interruption counters of a GPU model the fleet rents exist from then on at 0: a counter born
        at 1 would hide its first increase from increase()/rate() (and from the preemption annotations)."""
        with self._lock:
            new, self._models = models - self._models, self._models | models
        for gpu in new:
            for kind in PREEMPTION_KINDS:
                self.preemptions.labels(gpu, kind)
            self.lost_gpu_seconds.labels(gpu)

    def _replace(self, gauge: Gauge, values: dict[Any, float] | dict[Any, int]) -> None:
        """Set the new series, then drop the ones not seen this time (set first, so a scrape in between
        never sees the fleet empty)."""
        for key, value in values.items():
            gauge.labels(*key).set(value)
        with self._lock:
            seen = self._series.setdefault(id(gauge), set())
            for key in seen - set(values):
                gauge.remove(*key)
            self._series[id(gauge)] = set(values)

    # --- money -----------------------------------------------------------------------------------------

    def spend(
        self,
        dollars: float,
        kind: str,
        gpu_model: str | None,
        bid_kind_: BidKind | str | bool | None,
        on_demand_dollars: float | None = None,
    ) -> None:
        """Dollars billed. For compute, `on_demand_dollars` is what the same time would have cost on demand
        (None: the rental was on demand, so the same figure)."""
        if kind not in SPEND_KINDS:
            raise ValueError(f"spend kind {kind!r} is not one of {', '.join(SPEND_KINDS)}")
        if dollars < 0:
            raise ValueError(f"spend of {dollars} dollars: a counter only goes up")
        gpu, bk = label(gpu_model), bid_kind(bid_kind_)
        self.spend_total.labels(kind, gpu, bk).inc(dollars)
        if kind == "compute":
            equivalent = dollars if on_demand_dollars is None else on_demand_dollars
            self.on_demand_total.labels(gpu, bk).inc(max(0.0, equivalent))

    def set_budget(
        self, total_dollars: float | None, hourly_cap_dollars: float | None, spent_dollars: float
    ) -> None:
        """The budget guard's caps (None = no cap) and what it has counted as spent so far."""
        self.budget_total.set(total_dollars or 0.0)
        self.budget_hourly.set(hourly_cap_dollars or 0.0)
        self.budget_spent.set(max(0.0, spent_dollars))

    # --- jobs ------------------------------------------------------------------------------------------

    def job_submitted(self) -> None:
        self.submitted.inc()

    def job_started(self, wait_seconds: float) -> None:
        """An attempt reached RUNNING after waiting `wait_seconds` since it (re-)entered PENDING."""
        self.wait_seconds.observe(max(0.0, wait_seconds))

    def job_finished(self, state: str, cost_dollars: float) -> None:
        name = str(getattr(state, "value", state))
        if name not in FINISHED_STATES:
            raise ValueError(f"{name!r} is not a terminal state ({', '.join(FINISHED_STATES)})")
        self.finished.labels(name).inc()
        self.job_cost.labels(name).observe(max(0.0, cost_dollars))

    # --- interruptions and recovery --------------------------------------------------------------------

    def preemption(self, gpu_model: str | None, kind: str) -> None:
        self.preemptions.labels(label(gpu_model), word(kind, "preemption kind")).inc()

    def recovery(self, seconds: float) -> None:
        """A job interrupted `seconds` ago is running again."""
        self.recovery_seconds.observe(max(0.0, seconds))

    def work_lost(self, gpu_seconds: float, gpu_model: str | None = None) -> None:
        self.lost_gpu_seconds.labels(label(gpu_model)).inc(max(0.0, gpu_seconds))

    # --- checkpoints -----------------------------------------------------------------------------------

    def checkpoint_upload(self, nbytes: int, seconds: float) -> None:
        self.ckpt_bytes.inc(max(0, nbytes))
        self.ckpt_seconds.observe(max(0.0, seconds))

    def checkpoint_failed(self) -> None:
        self.ckpt_failures.inc()


def _status(value: str | None) -> str:
    text = (value or "").strip().lower()
    try:
        return InstanceStatus(text).value
    except ValueError:
        return InstanceStatus.unknown.value
