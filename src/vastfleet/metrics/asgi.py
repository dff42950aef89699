"""Serving the metrics: the ASGI app the API mounts at `/metrics`.

Owns only the HTTP exposition; never defines a metric.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import make_asgi_app

from vastfleet.metrics.registry import FleetMetrics


def metrics_asgi_app(metrics: FleetMetrics) -> Any:
    """The Prometheus text exposition of `metrics.registry` (gzip when the scraper asks for it)."""
    return make_asgi_app(registry=metrics.registry)
