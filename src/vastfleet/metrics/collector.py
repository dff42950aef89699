"""Gauges read from the job store at scrape time: jobs by state, queue depth by priority band, and the age
of the oldest pending job.

Read at scrape time rather than kept as gauges so that every API replica reports the same figures and no
writer has to remember to update them. Reads through the `JobStore` API only; never writes, and a Redis
outage shows as `vastfleet_jobstore_up 0` instead of a failed scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vastfleet.spec.job import Job, JobState

log = logging.getLogger(__name__)

PRIORITY_BANDS = ("high", "normal", "low")


class StoreReader(Protocol):
    def counts(self) -> dict[JobState, int]: ...
    def pending(self, limit: int = 1000) -> list[Job]: ...


def priority_band(priority: int) -> str:
    """Job priorities run -1000..1000; a band keeps the label bounded: above 0, 0, below 0."""
    return "high" if priority > 0 else "normal" if priority == 0 else "low"


class JobStoreCollector(Collector):
    def __init__(
        self, store: StoreReader, clock: Callable[[], float] = time.time, pending_limit: int = 10000
    ):
        self.store = store
        self.clock = clock
        self.pending_limit = pending_limit

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: without describe() the registry would call collect() (and Redis) at registration.
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up, jobs, depth, oldest = self._families()
        try:
            counts = self.store.counts()
            pending = self.store.pending(limit=self.pending_limit)
        except redis.RedisError as exc:
            log.warning("metrics: the job store is unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state, 0))
        bands = dict.fromkeys(PRIORITY_BANDS, 0)
        for job in pending:
            bands[priority_band(job.spec.priority)] += 1
        for band, n in bands.items():
            depth.add_metric([band], n)
        now = self.clock()
        # updated_at is when the job (re-)entered PENDING: a re-queued job's wait starts again there.
        oldest.add_metric([], max((now - job.updated_at for job in pending), default=0.0))
        yield from (up, jobs, depth, oldest)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("vastfleet_jobstore_up", "1 when the last scrape could read the job store."),
            GaugeMetricFamily("vastfleet_jobs", "Jobs by state.", labels=["state"]),
            GaugeMetricFamily(
                "vastfleet_queue_depth",
                "PENDING jobs by priority band (high > 0, normal = 0, low < 0).",
                labels=["priority_band"],
            ),
            GaugeMetricFamily(
                "vastfleet_queue_oldest_pending_age_seconds",
                "How long the longest-waiting PENDING job has waited (0 when none).",
            ),
        )
