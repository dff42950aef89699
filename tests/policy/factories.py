"""Factories for policy tests: offers and jobs with overridable fields."""

from __future__ import annotations

from typing import Any

from vastfleet.scheduler.policy import JobView
from vastfleet.spec import Offer

_next = [0]


def make_offer(**over: Any) -> Offer:
    _next[0] += 1
    base: dict[str, Any] = {"id": _next[0], "machine_id": _next[0], "host_id": _next[0], "gpu_name": "RTX 4090", "num_gpus": 1,
                                "gpu_ram_gb": 24.0, "cuda_max_good": 12.8, "dlperf": 44.0, "dph_total": 0.40, "min_bid": 0.15,
                                "storage_cost": 0.1, "inet_up": 500, "inet_down": 500, "inet_down_cost": 0.002, "disk_space": 200,
                                "reliability": 0.99, "verified": True, "direct_port_count": 10, "geolocation": "US"}
    base.update(over)
    return Offer(**base)


def make_job(**over: Any) -> JobView:
    base: dict[str, Any] = {"job_id": "j1", "gpu_names": ("RTX 4090", "RTX 3090"), "remaining_work_hours": 10.0,
                                "ref_dlperf": 44.0}
    base.update(over)
    return JobView(**base)
