"""Factories for the loop's unit tests: jobs, instances, offers, beats with sensible defaults."""

from __future__ import annotations

from typing import Any

from vastfleet.scheduler.labels import label_for
from vastfleet.scheduler.supervise import Beat
from vastfleet.spec.job import CheckpointRef, Job, JobState
from vastfleet.spec.jobspec import JobSpec
from vastfleet.spec.market import Instance, Offer

NOW = 10_000.0


def make_spec(**overrides: Any) -> JobSpec:
    data: dict[str, Any] = {"name": "count", "image": "python:3.11-slim", "run": "python count.py",
                            "resources": {"gpu": ["RTX 4090"], "gpus": 1, "disk_gb": 10}}
    data.update(overrides)
    return JobSpec.model_validate(data)


def make_job(job_id: str = "j-aaaa", state: JobState = JobState.RUNNING, epoch: int = 1,
             instance_id: int | None = 100, updated_at: float = NOW - 30, spec: JobSpec | None = None,
             **fields: Any) -> Job:
    return Job(id=job_id, spec=spec or make_spec(), state=state, epoch=epoch, submitted_at=NOW - 100,
               updated_at=updated_at, instance_id=instance_id, **fields)


def make_instance(instance_id: int = 100, job_id: str = "j-aaaa", epoch: int = 1, status: str = "running",
                  label: str | None = "", **fields: Any) -> Instance:
    return Instance(id=instance_id, label=label_for(job_id, epoch) if label == "" else label,
                    actual_status=status, intended_status=fields.pop("intended_status", "running"),
                    cur_state=fields.pop("cur_state", "running" if status == "running" else "stopped"), **fields)


def make_beat(at: float = NOW - 1, epoch: int = 1, **fields: Any) -> Beat:
    return Beat(at=at, epoch=epoch, **fields)


def make_offer(offer_id: int = 1, gpu_name: str = "RTX 4090", dph_total: float = 0.5, min_bid: float = 0.2,
               is_bid: bool = False, **fields: Any) -> Offer:
    data: dict[str, Any] = {"id": offer_id, "machine_id": offer_id, "host_id": offer_id, "gpu_name": gpu_name,
                            "num_gpus": 1, "gpu_ram_gb": 24, "cuda_max_good": 12.4, "dlperf": 50,
                            "dph_total": dph_total, "min_bid": min_bid, "disk_space": 100, "reliability": 0.99,
                            "verified": True, "is_bid": is_bid}
    data.update(fields)
    return Offer(**data)


def make_ckpt(epoch: int = 1, step: int = 10) -> CheckpointRef:
    return CheckpointRef(epoch=epoch, step=step, prefix=f"jobs/j-aaaa/epoch-{epoch}/{step}/", files={},
                         committed_at=NOW - 5)
