"""End to end: a checkpoint written but never uploaded is salvaged off a paused instance before it goes.

Storage refuses uploads (the agent keeps its newest checkpoint pending and says so in its heartbeats), then a
rival outbids the instance far beyond what a re-bid may pay: the job is moved, and before its instance is
destroyed the scheduler copies the pending checkpoint off the stopped disk with the marketplace's cloud copy,
verifies it against the agent's manifest digest and commits it. The next attempt resumes from it; every
step is counted once; the destroy comes after the commit; nothing is left billing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import committed_state, count_spec, ours_left, settings
from tests.helpers import wait_for
from tests.sim_fixtures import running_sim
from vastfleet.errors import RetryLater
from vastfleet.queue.heartbeats import last_heartbeat
from vastfleet.runtime import build_runtime
from vastfleet.spec.job import JobState

pytestmark = pytest.mark.slow
S = JobState


def test_a_pending_checkpoint_is_salvaged_verified_and_committed_before_the_destroy(tmp_path: Path,
                                                                                    redis_url: str) -> None:
    with running_sim(tmp_path, seed=5, hosts=16, boot_delay=0.3) as sim:
        sim.sim.connection_dirs["1001"] = tmp_path / "ckpt"  # the connection is the store's bucket
        rt = build_runtime(settings(sim, redis_url, tmp_path, salvage_connection="1001",
                                    heartbeat_lost_s=6.0)).start()
        try:
            steps = 40
            job = rt.store.submit(count_spec(steps=steps, every=4, sleep=0.15))
            first = wait_for(lambda: (j := rt.store.get(job.id)).latest_checkpoint is not None
                             and j.state == S.RUNNING and j, 40, what="a first committed checkpoint")
            refusing = {"on": True}
            inner = rt.ckpt.presign_put

            def presign_put(key: str, *args: Any, **kwargs: Any) -> str:
                if refusing["on"]:
                    raise RetryLater("storage refuses uploads (the test)", delay=1)
                return inner(key, *args, **kwargs)

            rt.ckpt.presign_put = presign_put

            def pending() -> Any:
                hb = last_heartbeat(rt.store.redis, job.id)
                told = hb[1].get("pending") if hb else None
                committed = rt.store.get(job.id).latest_checkpoint
                return told if told and committed is not None and told["step"] > committed.step else None

            told = wait_for(pending, 30, what="a checkpoint written but not uploaded")
            inst = first.instance_id
            sim.admin.outbid(inst, price=50.0)  # no re-bid may follow it: the job moves
            refusing["on"] = False
            moved = wait_for(lambda: (j := rt.store.get(job.id)).epoch > first.epoch and j, 40,
                             what="the job to move to a new attempt")
            assert moved.latest_checkpoint is not None and moved.latest_checkpoint.step >= told["step"]
            history = rt.store.events(job.id)
            salvaged = [e for e in history if e.kind == "salvage" and "committed" in e.reason]
            assert salvaged, [(e.kind, e.reason) for e in history]
            done = wait_for(lambda: (j := rt.store.get(job.id)).state.terminal and j, 90, what="the job to end")
            assert done.state == S.SUCCEEDED, done.reason
            assert committed_state(tmp_path / "ckpt", done)["counted"] == list(range(1, steps + 1))
            events = rt.store.events(job.id)
            commit_at = next(e.at for e in events if e.kind == "salvage" and "committed" in e.reason)
            destroyed = [e for e in events if e.kind in ("teardown", "destroyed") and e.data.get("instance_id") == inst]
            assert destroyed and all(e.at >= commit_at for e in destroyed), "never destroyed before the copy"
            wait_for(lambda: not ours_left(sim), 20, what="nothing of ours left")
        finally:
            rt.stop()
