"""End to end: a counting job survives preemptions and a host outage; a zombie is told to stop.

Real processes: the simulator's server and instance process groups, the agent, the API, redis-server.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.harness import attempt_instances, committed_state, count_spec, ours_left, settings
from tests.helpers import wait_for
from tests.sim_fixtures import running_sim
from vastfleet.runtime import build_runtime
from vastfleet.spec.job import Job, JobState

pytestmark = pytest.mark.slow
S = JobState


def _progressed(rt, job_id: str, epoch: int | None) -> Job | None:
    """The job, when its attempt (`epoch`, or the current one) runs and has committed a checkpoint of its own."""
    job = rt.store.get(job_id)
    ok = job.state == S.RUNNING and (epoch is None or job.epoch == epoch) and job.latest_checkpoint is not None \
        and job.latest_checkpoint.epoch == job.epoch
    return job if ok else None


def test_count_job_survives_three_preemptions_and_a_host_outage(tmp_path: Path, redis_url: str) -> None:
    with running_sim(tmp_path, seed=11, hosts=16, boot_delay=0.3) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path)).start()
        try:
            steps = 60
            job = rt.store.submit(count_spec(steps=steps, every=4, sleep=0.08))
            kinds = ["preempt", "preempt", "host_offline", "preempt"]
            for kind in kinds:
                current = wait_for(lambda: _progressed(rt, job.id, None), 40, what="the attempt to checkpoint")
                epoch = current.epoch
                if kind == "preempt":
                    sim.admin.preempt(current.instance_id)
                else:
                    sim.admin.host_offline(sim.admin.instance(current.instance_id)["host_id"])
                wait_for(lambda e=epoch: rt.store.get(job.id).epoch > e, 40, what=f"recovery from {kind}")
            done = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j, 60, what="the job to finish")
            assert done.state == S.SUCCEEDED, done.reason
            # (a heartbeat delayed past its bound on a loaded machine may add one safe interruption of its own)
            assert done.preemptions >= len(kinds)
            instances = attempt_instances(rt.store, job.id)
            assert len(instances) == done.epoch == done.preemptions + 1 and len(set(instances)) == len(instances), \
                "a new instance for every attempt"
            state = committed_state(tmp_path / "ckpt", done)
            assert state["counted"] == list(range(1, steps + 1)), "every step counted once along the lineage"
            resumed_from = [a["from"] for a in state["attempts"]]
            assert resumed_from == sorted(resumed_from) and resumed_from[0] == 0 and len(resumed_from) >= 2
            reasons = [e.reason for e in rt.store.events(job.id) if e.to_state == S.INTERRUPTED]
            assert sum(r.startswith("outbid") for r in reasons) >= 3
            assert sum(r.startswith("host_offline") for r in reasons) == 1
            wait_for(lambda: not ours_left(sim), 20, what="every instance of ours destroyed")
            torn = {e.data["instance_id"]: e.reason for e in rt.store.events(job.id) if e.kind == "teardown"}
            assert set(torn) == set(instances), "every attempt's instance torn down, each once"
            assert "exit 0" in torn[instances[-1]], "the last one after the agent's final upload"
        finally:
            rt.stop()


def test_a_zombie_that_wakes_after_its_job_moved_is_told_to_stop_and_writes_nothing(
        tmp_path: Path, redis_url: str) -> None:
    with running_sim(tmp_path, seed=5, hosts=12, boot_delay=0.3, quirks={"zombie": True}, zombie_delay=7.0) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path)).start()
        try:
            job = rt.store.submit(count_spec(steps=50, every=4, sleep=0.08))
            wait_for(lambda: _progressed(rt, job.id, 1), 40, what="attempt 1 to checkpoint")
            old = rt.store.get(job.id).instance_id
            # Keep the old instance alive past its wake-up: every destroy fails for a while.
            sim.admin.fault(500, count=10_000, path="/api/v0/instances/", method="DELETE")
            sim.admin.preempt(old)
            wait_for(lambda: rt.store.get(job.id).epoch >= 2, 30, what="the job to move to a new attempt")
            moved_at = time.time()
            epoch1_dir = tmp_path / "ckpt" / "jobs" / job.id / "epoch-1"
            before = sorted(p.name for p in epoch1_dir.iterdir()) if epoch1_dir.exists() else []
            # The zombie wakes (the quirk resumes a paused instance by itself) and its agent starts again.
            wait_for(lambda: sim.admin.instance(old)["starts"] >= 2, 30, what="the zombie to wake")
            log = sim.sandbox(old).parent / "container.log"
            wait_for(lambda: "this attempt is over" in log.read_text() or "stopped" in log.read_text(), 20,
                     what="the zombie's agent to be told to stop")
            after = sorted(p.name for p in epoch1_dir.iterdir()) if epoch1_dir.exists() else []
            assert after == before, "the zombie wrote no checkpoint object"
            job_now = rt.store.get(job.id)
            assert job_now.epoch >= 2 and job_now.instance_id != old
            late = [e for e in rt.store.events(job.id) if e.epoch == 1 and e.at > moved_at]
            assert late == [], "no commit, heartbeat note or transition of the old attempt after the move"
            sim.admin.clear_faults()  # the destroy obligation is re-driven and goes through now
            done = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j, 60, what="the job to finish")
            assert done.state == S.SUCCEEDED, done.reason
            wait_for(lambda: not ours_left(sim), 30, what="the zombie and every other instance destroyed")
        finally:
            rt.stop()


def test_a_cancelled_job_is_torn_down_once_its_agent_has_stopped(tmp_path: Path, redis_url: str) -> None:
    with running_sim(tmp_path, seed=2, hosts=8, boot_delay=0.3) as sim:
        rt = build_runtime(settings(sim, redis_url, tmp_path)).start()
        try:
            job = rt.store.submit(count_spec(steps=400, every=5, sleep=0.05))
            wait_for(lambda: _progressed(rt, job.id, 1), 40, what="the job to run and checkpoint")
            instance = rt.store.get(job.id).instance_id
            rt.store.cancel(job.id)
            wait_for(lambda: not ours_left(sim), 30, what="the cancelled job's instance destroyed")
            assert rt.store.get(job.id).state == S.CANCELLED
            teardown = [e for e in rt.store.events(job.id) if e.kind == "teardown"]
            assert [e.data["instance_id"] for e in teardown] == [instance]
            assert "silent" in teardown[0].reason or "no heartbeat" in teardown[0].reason \
                or "no un-uploaded" in teardown[0].reason, "destroyed only once its agent had stopped"
        finally:
            rt.stop()
