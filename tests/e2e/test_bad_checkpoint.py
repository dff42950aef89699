"""End to end: a committed checkpoint damaged in storage does not loop the job through new rentals.

What happened in the field: a committed checkpoint was overwritten in storage, every new attempt failed its
restore, and the job went INTERRUPTED -> PENDING again and again (14 rentals in 184 s). Now the attempt
reports the failed restore, the damaged checkpoint is dropped, and the job resumes from the previous one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import attempt_instances, committed_state, count_spec, ours_left, settings
from tests.helpers import wait_for
from tests.sim_fixtures import running_sim
from vastfleet.runtime import build_runtime
from vastfleet.spec.job import JobState
from vastfleet.storage.local import LocalCheckpointStore

pytestmark = pytest.mark.slow
S = JobState


def test_a_damaged_latest_checkpoint_falls_back_instead_of_looping(tmp_path: Path, redis_url: str) -> None:
    with running_sim(tmp_path, seed=7, hosts=10, boot_delay=0.3) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path)).start()
        try:
            steps = 40
            job = rt.store.submit(count_spec(steps=steps, every=4, sleep=0.08))
            first = wait_for(lambda: (j := rt.store.get(job.id)).state == S.RUNNING
                             and len(j.checkpoint_history) >= 2 and j, 40, what="two commits")
            sim.admin.set_knobs(boot_delay=3.0)  # the next instance boots after the damage below, surely
            sim.admin.preempt(first.instance_id)
            wait_for(lambda: rt.store.get(job.id).epoch > first.epoch, 40, what="recovery from the preemption")
            # between the attempts, the latest committed checkpoint is overwritten in storage
            store = LocalCheckpointStore(tmp_path / "ckpt", "x" * 32)
            damaged = rt.store.get(job.id).latest_checkpoint
            assert damaged is not None
            rel = next(r for r in damaged.files if r.endswith("state.json"))
            store.path_for(damaged.prefix + rel).write_text('{"step": 0, "counted": []}')
            done = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j, 60, what="the job to finish")
            assert done.state == S.SUCCEEDED, done.reason
            assert len(attempt_instances(rt.store, job.id)) == done.epoch <= first.epoch + 2, "no rental loop"
            events = rt.store.events(job.id)
            dropped = [e for e in events if e.kind == "checkpoint_dropped"]
            assert [e.data["prefix"] for e in dropped] == [damaged.prefix], "the damaged one, and only it"
            assert not [e for e in events if e.to_state == S.INTERRUPTED and "restore" in e.reason]
            state = committed_state(tmp_path / "ckpt", done)
            assert state["counted"] == list(range(1, steps + 1)), "every step counted once along the lineage"
            assert state["attempts"][1]["from"] < (damaged.step or 0), "resumed from the previous checkpoint"
            wait_for(lambda: not ours_left(sim), 20, what="every instance destroyed")
        finally:
            rt.stop()
