"""The agent's uploads while storage refuses them (found by the chaos run, bench/chaos.py): the heartbeat names
the NEWEST checkpoint written (what a salvage copies off a lost instance), not the first one refused; and a
checkpoint is never given up because storage was unavailable, so the final one is committed before the
agent reports the exit, however long the outage (only refusals for good count against a step)."""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.agent.conftest import AGENT, AgentApi, booted, count_spec
from tests.helpers import wait_for
from vastfleet.errors import RetryLater
from vastfleet.storage.local import LocalCheckpointStore


def _agent_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vastfleet_agent_under_test", AGENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_checkpoint(ckpt_dir: Path, step: int) -> None:
    tmp = ckpt_dir / f".step-{step:08d}.tmp"
    tmp.mkdir(parents=True)
    (tmp / "state.json").write_text(json.dumps({"step": step, "counted": list(range(1, step + 1))}))
    tmp.rename(ckpt_dir / f"step-{step:08d}")


def _sync_returns(agent: Any, final: bool = False, within: float = 30.0) -> None:
    """One sync on a thread: it must come back (a sync stuck on an old step names no newer one)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            agent.sync(final=final)
        except Exception as exc:  # noqa: BLE001 - a failed try is fine here; what matters is that it returns
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), "the sync is stuck retrying an old checkpoint"


def test_refused_uploads_name_the_newest_checkpoint_and_are_never_given_up(
        api: AgentApi, local_store: LocalCheckpointStore, gpu_bin: Path, tmp_path: Path) -> None:
    job = booted(api.store, count_spec(steps=30, every=5))
    env = api.agent_env(job, tmp_path / "w", gpu_bin)
    (tmp_path / "w").mkdir()
    agent = _agent_module().Agent(env)
    agent.poll = 0.2
    Path(agent.ckpt_dir).mkdir(parents=True)
    agent.load_claim()
    assert agent.claim(["RTX 4090"], None) is not None

    refusing = {"presign": True, "put": False}
    presign, finish = local_store.presign_put, local_store.finish_put

    def presign_put(*args: Any, **kwargs: Any) -> str:
        if refusing["presign"]:
            raise RetryLater("storage refuses uploads (the test)", delay=1)
        return presign(*args, **kwargs)

    def finish_put(*args: Any, **kwargs: Any) -> None:
        if refusing["put"]:
            raise RetryLater("storage refuses uploads (the test)", delay=1)
        finish(*args, **kwargs)

    local_store.presign_put = presign_put  # type: ignore[method-assign]
    local_store.finish_put = finish_put  # type: ignore[method-assign]

    ckpt = Path(agent.ckpt_dir)
    _write_checkpoint(ckpt, 5)
    _sync_returns(agent)
    assert agent.pending["step"] == 5
    _write_checkpoint(ckpt, 10)
    _write_checkpoint(ckpt, 15)
    for _ in range(4):  # more failed tries than a step may be rejected
        _sync_returns(agent)
    assert agent.pending["step"] == 15 and agent.pending["dir"] == "step-00000015", agent.pending
    assert [s for s, _ in agent.unsent()] == [5, 10, 15], "storage being down is not the checkpoints' fault"
    assert agent.beat_once() is False
    assert api.redis.hget("vf:hb:data", job.id) and json.loads(api.redis.hget("vf:hb:data", job.id))[
        "pending"]["step"] == 15, "the heartbeat names the newest checkpoint written"

    refusing.update(presign=False, put=True)  # now the PUTs are refused, through the final upload
    _write_checkpoint(ckpt, 30)
    for _ in range(4):
        _sync_returns(agent)
    assert [s for s, _ in agent.unsent()][-1] == 30
    final = threading.Thread(target=agent.sync, kwargs={"final": True}, daemon=True)
    final.start()
    wait_for(lambda: agent.rejects.get(30, 0) == 0 and agent.pending and agent.pending["step"] == 30, 10,
             what="the final checkpoint named")
    refusing["put"] = False
    final.join(60)
    assert not final.is_alive()
    committed = api.store.get(job.id).latest_checkpoint
    assert committed is not None and committed.step == 30, "the final checkpoint is committed, not given up"


def test_a_restore_rides_out_storage_refusing_downloads(
        api: AgentApi, local_store: LocalCheckpointStore, gpu_bin: Path, tmp_path: Path) -> None:
    """Storage unavailable while a new instance restores: the agent keeps trying (heartbeating) and resumes
    when it is back, instead of ending the attempt as the host's fault (which, repeated, failed a job for
    making no progress in the chaos run)."""
    from tests.agent.conftest import output, replace_instance
    from vastfleet.spec import JobState

    job = booted(api.store, count_spec(steps=20, every=5, sleep=0.05))
    first = api.start_agent(job, tmp_path / "first", gpu_bin)
    wait_for(lambda: (r := api.store.get(job.id).latest_checkpoint) and r.step >= 10, 20, what="a commit")
    first.kill()
    first.wait()
    job = replace_instance(api.store, job.id, 2002)
    resume = api.store.get(job.id).latest_checkpoint
    assert resume is not None

    refused = {"count": 0}
    opened = local_store.open_for_get

    def open_for_get(key: str) -> Path:
        if refused["count"] < 6:  # more than one restore's own retries
            refused["count"] += 1
            raise RetryLater("storage unavailable (the test)", delay=1)
        return opened(key)

    local_store.open_for_get = open_for_get  # type: ignore[method-assign]
    proc = api.start_agent(job, tmp_path / "second", gpu_bin)
    log = output(proc, timeout=120)
    assert refused["count"] == 6 and "checkpoint restore" in log and "retrying" in log, log
    done = api.store.get(job.id)
    assert done.state == JobState.SUCCEEDED and done.epoch == job.epoch, (done.state, done.reason, log)
    assert f"RESUME from step {resume.step}" in log
