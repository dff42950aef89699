"""Helpers of the end-to-end tests: fast control-plane settings, the count job, reading what survived.

Every test runs real processes: the simulator's HTTP server and its instances' onstart process groups, the
real agent talking to the real API over loopback, a real redis-server, the real `vastai` client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.sim_fixtures import SimHandle
from vastfleet.queue import JobStore
from vastfleet.runtime import Settings
from vastfleet.scheduler.labels import parse_label
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.jobspec import JobSpec, load_job_spec
from vastfleet.storage.local import LocalCheckpointStore

ROOT = Path(__file__).resolve().parents[2]
COUNT_YAML = ROOT / "examples" / "count.yaml"

# Small bounds so a recovery takes seconds: the production defaults are in `Settings`.
FAST: dict[str, Any] = {
    "pass_interval_s": 0.3, "heartbeat_interval_s": 0.4, "heartbeat_lost_s": 3.0, "boot_timeout_s": 20.0,
    "scheduling_timeout_s": 10.0, "outbid_wait_s": 0.3, "gone_grace_s": 3.0, "agent_poll_s": 0.2,
    "lease_ttl_s": 2.0, "checkpoint_interval_s": 30.0, "log_level": "WARNING", "create_lock_s": 5.0,
    "action_requeue_s": 3.0,
}


def settings(sim: SimHandle, redis_url: str, tmp: Path, **over: Any) -> Settings:
    values: dict[str, Any] = {**FAST, "redis_url": redis_url, "api_port": 0, "vast_api_key": sim.api_key,
                              "vast_url": sim.url, "data_dir": tmp / "plane", "checkpoint_dir": tmp / "ckpt"}
    values.update(over)
    return Settings(**values)


def count_spec(steps: int, every: int, sleep: float, **over: Any) -> JobSpec:
    """The example job of examples/count.yaml, with a shorter count."""
    sets = [f"run=python3 count_steps.py --steps {steps} --every {every} --sleep {sleep}"]
    sets += [f"{k}={v}" for k, v in over.items()]
    return load_job_spec(COUNT_YAML, sets)


def committed_state(ckpt_dir: Path, job: Job) -> dict[str, Any]:
    """The count job's state.json inside the job's latest COMMITTED checkpoint (read from the store)."""
    ref = job.latest_checkpoint
    assert ref is not None, f"job {job.id} has no committed checkpoint"
    rel = next(r for r in ref.files if r.endswith("state.json"))
    store = LocalCheckpointStore(ckpt_dir, "x" * 32)
    return json.loads(store.path_for(ref.prefix + rel).read_text())


def ours_left(sim: SimHandle, prefix: str = "vf") -> list[dict[str, Any]]:
    """Instances of ours the simulator still holds, whatever their phase (running, stopped, scheduling...)."""
    return [i for i in sim.admin.instances() if parse_label(i.get("label"), prefix) is not None]


def attempt_instances(store: JobStore, job_id: str) -> list[int]:
    """The instance recorded for each attempt, in order (from the job's event stream)."""
    out = []
    for ev in store.events(job_id):
        if ev.kind == "transition" and ev.to_state == JobState.BOOTING and "instance_id" in ev.data:
            out.append(int(ev.data["instance_id"]))
    return out
