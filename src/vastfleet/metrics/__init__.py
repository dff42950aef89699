"""The Prometheus exporter: `FleetMetrics` (every metric and the methods that record them), the job-store
collector read at scrape time, and the ASGI app served at `/metrics`."""

from vastfleet.metrics.asgi import metrics_asgi_app
from vastfleet.metrics.collector import PRIORITY_BANDS, JobStoreCollector, priority_band
from vastfleet.metrics.registry import PREEMPTION_KINDS, SPEND_KINDS, FleetMetrics

__all__ = [
    "PREEMPTION_KINDS",
    "PRIORITY_BANDS",
    "SPEND_KINDS",
    "FleetMetrics",
    "JobStoreCollector",
    "metrics_asgi_app",
    "priority_band",
]
