"""End to end, the policy's moves made by the live loop (issue 13): a job with a deadline under a storm of
preemptions goes on demand once its slack no longer covers an interruption and finishes on time; a job
escalated to on demand by a storm returns to bids (a graceful move: checkpoint first) once the storm is over.

Real processes: the simulator's server and instance process groups, the agent, the API, redis-server. The
policy's overheads are scaled to the simulator's seconds (a 0.3 s boot, not vast's minutes)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import count_spec, ours_left, settings
from tests.helpers import wait_for
from tests.sim_fixtures import running_sim
from vastfleet.runtime import build_runtime
from vastfleet.scheduler.policy import PolicyParams
from vastfleet.spec.job import Job, JobState

pytestmark = pytest.mark.slow
S = JobState
MODELS = "[RTX_4090, RTX_3090, RTX_5090, RTX_4080, RTX_A6000, L40S, A40]"
SCALED = {"checkpoint_cost_s": 0.5, "restart_overhead_s": 2.0, "resume_overhead_s": 1.0, "deadline_guard_s": 3.0, "min_ckpt_interval_s": 1.0,
              "max_ckpt_interval_s": 30.0}


def _start(sim: Any, redis_url: str, tmp_path: Path, **policy: Any) -> Any:
    rt = build_runtime(settings(sim, redis_url, tmp_path)).start()
    assert rt.loop is not None
    rt.loop.placer.params = PolicyParams(**{**SCALED, **policy})  # type: ignore[attr-defined]
    rt.loop.config.params = replace(rt.loop.config.params, rebalance_every_s=2.0)
    return rt


def _running_bid_with_checkpoint(rt: Any, job_id: str) -> Job | None:
    job = rt.store.get(job_id)
    ok = job.state == S.RUNNING and job.bid is not None and job.latest_checkpoint is not None \
        and job.latest_checkpoint.epoch == job.epoch
    return job if ok else None


def _attempts(rt: Any, job_id: str) -> list[dict[str, Any]]:
    """Each attempt's placement as the PLACING transition recorded it."""
    return [e.data for e in rt.store.events(job_id, limit=500) if e.to_state == S.PLACING]


def test_a_deadline_job_under_a_preemption_storm_goes_on_demand_and_finishes_on_time(
        tmp_path: Path, redis_url: str) -> None:
    with running_sim(tmp_path, seed=21, hosts=16, boot_delay=0.3) as sim:
        rt = _start(sim, redis_url, tmp_path)
        try:
            steps, sleep = 120, 0.25  # 30 s of work
            # one more interruption needs restart 2 s + interval 5 s + checkpoint 0.5 s + guard 3 s = 10.5 s of
            # slack: this deadline leaves ~25 s more than that, a few preemptions' worth (each costs a detection,
            # a boot and the work since the last checkpoint)
            deadline = time.time() + steps * sleep + 36.0
            job = rt.store.submit(count_spec(steps=steps, every=5, sleep=sleep, interruptible="auto",
                                             work_hours=round(steps * sleep / 3600.0, 6),
                                             deadline=datetime.fromtimestamp(deadline, timezone.utc).isoformat(),
                                             **{"checkpoint.interval": 5}))
            storm = 0
            while True:  # the storm: every bid attempt is preempted once it has committed a checkpoint
                current = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j or (
                    j.state == S.RUNNING and j.bid is None and j) or _running_bid_with_checkpoint(rt, job.id),
                    60, what="a bid attempt to checkpoint, or the job on demand")
                if current.state.terminal or current.bid is None:
                    break
                sim.admin.preempt(current.instance_id)
                storm += 1
                wait_for(lambda e=current.epoch: rt.store.get(job.id).epoch > e or rt.store.get(job.id).state
                         in (S.PAUSED, S.INTERRUPTED), 30, what="the preemption to be seen")
            done = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j, 90, what="the job to end")
            facts = (f"{done.state} {done.reason}; storm={storm}; {_attempts(rt, job.id)}; "
                     f"{[e.reason for e in rt.store.events(job.id, limit=500) if e.to_state == S.PLACING]}")
            assert done.state == S.SUCCEEDED, facts
            assert storm >= 1, f"the storm hit the job on bids before it moved: {facts}"
            assert done.updated_at <= deadline, f"finished {done.updated_at - deadline:.1f} s late: {facts}"
            last = _attempts(rt, job.id)[-1]
            assert last.get("bid") is None and done.pinned_on_demand, f"the last attempt on demand, pinned: {facts}"
            wait_for(lambda: not ours_left(sim), 20, what="every instance of ours destroyed")
        finally:
            rt.stop()


def test_an_escalated_job_returns_to_bids_when_the_storm_passes(tmp_path: Path, redis_url: str) -> None:
    with running_sim(tmp_path, seed=23, hosts=40, boot_delay=0.3) as sim:
        # three interruptions within 20 s escalate to on demand; the storm then stops. The fleet remembers the
        # storm in its estimates of the models and hosts it hit: a bid must be clearly cheaper on another one
        rt = _start(sim, redis_url, tmp_path, escalate_after=3, escalate_window_s=20.0)
        try:
            # 60 s of work that the job says is 10 hours' (its progress is `step` of `of`): the way back to a bid
            # (a new launch: boot, image and checkpoint downloaded) pays only on hours of work, not on seconds
            steps, sleep = 240, 0.25
            job = rt.store.submit(count_spec(steps=steps, every=5, sleep=sleep, interruptible="auto", work_hours=10,
                                             **{"checkpoint.interval": 5, "resources.gpu": MODELS}))
            for _ in range(3):
                current = wait_for(lambda: _running_bid_with_checkpoint(rt, job.id), 60,
                                   what="a bid attempt to checkpoint")
                sim.admin.preempt(current.instance_id)
                wait_for(lambda e=current.epoch: rt.store.get(job.id).epoch > e, 30, what="the job to move on")
            escalated = wait_for(lambda: (j := rt.store.get(job.id)).state == S.RUNNING and j, 60,
                                 what="the escalated attempt to run")
            facts = lambda: f"{_attempts(rt, job.id)}"
            assert escalated.bid is None and not escalated.pinned_on_demand, facts()
            # the storm is over: after the window a rebalance pass moves it back to a bid (checkpoint first)
            back = wait_for(lambda: (j := rt.store.get(job.id)).epoch > escalated.epoch and j.bid is not None
                            and j, 90, what="the job back on a bid")
            moved = [e for e in rt.store.events(job.id, limit=500)
                     if e.to_state == S.INTERRUPTED and e.reason.startswith("moved")]
            assert moved, f"a graceful move back to bids: {facts()}"
            done = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j, 120, what="the job to end")
            assert done.state == S.SUCCEEDED, f"{done.reason}; {facts()}"
            assert back.bid is not None and done.preemptions == 3, f"a move is no preemption: {facts()}"
            wait_for(lambda: not ours_left(sim), 20, what="every instance of ours destroyed")
        finally:
            rt.stop()
