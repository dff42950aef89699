"""Committed checkpoints are immutable, and a checkpoint that fails verification at restore is dropped for the
previous verified one (or fails the job): a damaged checkpoint never loops the job through new attempts."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

from tests.agent.conftest import (
    AgentApi,
    Client,
    booted,
    call,
    count_spec,
    manifest,
    output,
    replace_instance,
    running,
    upload,
)
from tests.helpers import wait_for
from vastfleet.errors import Conflict
from vastfleet.spec import JobState
from vastfleet.storage.local import LocalCheckpointStore

S = JobState


def commit(tc: Any, session: str, job_id: str, step: int, files: dict[str, bytes]) -> str:
    r = call(tc, session, job_id, "commit", upload(tc, session, job_id, step, files))
    assert r.status_code == 200, r.text
    return str(r.json()["prefix"])


def damage(store: LocalCheckpointStore, key: str) -> None:
    """What went wrong in the field: a committed object overwritten in storage behind our back."""
    path = store.path_for(key)
    path.chmod(0o644)
    path.write_bytes(b"overwritten")


def test_upload_urls_only_for_steps_above_the_committed_one(client: Client) -> None:
    tc, api, job, session = running(client)
    prefix = commit(tc, session, job.id, 5, {"w": b"five"})
    for step in (5, 4):
        r = call(tc, session, job.id, "presign-upload", manifest(step, {"w": b"other bytes"}))
        assert r.status_code == 422 and "immutable" in r.json()["detail"], r.text
    again = call(tc, session, job.id, "presign-upload", manifest(5, {"w": b"five"})).json()
    assert again["committed"] is True and again["files"] == {} and again["prefix"] == prefix
    assert call(tc, session, job.id, "presign-upload", manifest(6, {"w": b"six"})).status_code == 200
    assert api.ckpt.stat(prefix + "w") == (4, hashlib.sha256(b"five").hexdigest())


def test_the_local_store_never_replaces_an_object(local_store: LocalCheckpointStore) -> None:
    key = "jobs/j-x/epoch-1/step-5-abc/w"
    sha = hashlib.sha256
    for body, expect in ((b"first", None), (b"first", None), (b"other", Conflict)):
        tmp = local_store.tmp_path(key)
        tmp.write_bytes(body)
        if expect is None:
            local_store.finish_put(tmp, key, len(body), sha(body).hexdigest())
        else:
            try:
                local_store.finish_put(tmp, key, len(body), sha(body).hexdigest())
                raise AssertionError("an object was replaced")
            except Conflict as exc:
                assert "never replaced" in str(exc)
        assert not tmp.exists()
    assert local_store.path_for(key).read_bytes() == b"first"


def test_the_job_keeps_its_last_three_verified_checkpoints(client: Client) -> None:
    tc, api, job, session = running(client)
    for step in (1, 2, 3, 4, 5):
        commit(tc, session, job.id, step, {"w": f"step {step}".encode()})
    done = api.store.get(job.id)
    assert [c.step for c in done.checkpoint_history] == [3, 4, 5]
    assert done.latest_checkpoint == done.checkpoint_history[-1]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_then_fails_the_job(client: Client) -> None:
    tc, api, job, session = running(client)
    p10 = commit(tc, session, job.id, 10, {"w": b"ten"})
    p20 = commit(tc, session, job.id, 20, {"w": b"twenty", "opt": b"o"})
    job = replace_instance(api.store, job.id, 2002)  # a new attempt restores step 20
    session = call(tc, api.token(job), job.id, "claim", {"nonce": "second-attempt-nonce-42"}).json()["session"]
    damage(api.ckpt, p20 + "w")  # type: ignore[arg-type]
    r = call(tc, session, job.id, "restore-failed", {"step": 20, "prefix": p20, "reason": "w: sha256 differs"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["verified"] is False and answer["checkpoint"]["step"] == 10 and answer["checkpoint"]["prefix"] == p10
    assert tc.get(answer["checkpoint"]["files"]["w"]["url"]).content == b"ten"
    now = api.store.get(job.id)
    assert now.state == S.RUNNING and now.latest_checkpoint is not None and now.latest_checkpoint.step == 10
    assert [c.step for c in now.checkpoint_history] == [10]
    dropped = [e for e in api.store.events(job.id) if e.kind == "checkpoint_dropped"]
    assert len(dropped) == 1 and "step 20" in dropped[0].reason and "w: stored 11 bytes" in dropped[0].reason
    # the same report again (its answer was lost) changes nothing more
    again = call(tc, session, job.id, "restore-failed", {"step": 20, "prefix": p20, "reason": "again"}).json()
    assert again["checkpoint"]["step"] == 10
    assert len([e for e in api.store.events(job.id) if e.kind == "checkpoint_dropped"]) == 1
    # the last one is damaged too: nothing verified is left and checkpoints are required -> FAILED, not a loop
    os.remove(api.ckpt.path_for(p10 + "w"))  # type: ignore[attr-defined]
    r = call(tc, session, job.id, "restore-failed", {"step": 10, "prefix": p10, "reason": "w: missing"})
    assert r.status_code == 409 and r.json()["action"] == "stop"
    failed = api.store.get(job.id)
    assert failed.state == S.FAILED and failed.latest_checkpoint is None
    assert "step 10" in failed.reason and "not uploaded" in failed.reason, failed.reason


def test_a_checkpoint_that_verifies_in_storage_is_not_dropped(client: Client) -> None:
    tc, api, job, session = running(client)
    prefix = commit(tc, session, job.id, 7, {"w": b"fine"})
    r = call(tc, session, job.id, "restore-failed", {"step": 7, "prefix": prefix, "reason": "my disk is full"})
    assert r.status_code == 200 and r.json()["verified"] is True
    assert api.store.get(job.id).latest_checkpoint.step == 7  # type: ignore[union-attr]
    assert [e.kind for e in api.store.events(job.id)][-1] == "restore_failed"


def test_without_required_checkpoints_the_job_starts_fresh(client: Client) -> None:
    tc, api = client
    job = booted(api.store, count_spec(checkpoint={"interval": 30, "required": False}))
    session = call(tc, api.token(job), job.id, "claim", {"nonce": "fresh-start-nonce-0123"}).json()["session"]
    prefix = commit(tc, session, job.id, 3, {"w": b"three"})
    damage(api.ckpt, prefix + "w")  # type: ignore[arg-type]
    r = call(tc, session, job.id, "restore-failed", {"step": 3, "prefix": prefix, "reason": "bad"})
    assert r.status_code == 200 and r.json() == {"verified": False, "checkpoint": None}
    assert api.store.get(job.id).state == S.RUNNING


def _two_commits_then_preempted(api: AgentApi, gpu_bin: Path, tmp_path: Path, steps: int) -> Any:
    job = booted(api.store, count_spec(steps=steps, every=5, sleep=0.05))
    proc = api.start_agent(job, tmp_path / "first", gpu_bin)
    wait_for(lambda: len(api.store.get(job.id).checkpoint_history) >= 2, 30, what="two commits")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return replace_instance(api.store, job.id, 2002)


def test_the_agent_restores_the_previous_checkpoint_when_the_latest_is_damaged(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    job = _two_commits_then_preempted(api, gpu_bin, tmp_path, steps=40)
    latest, previous = job.checkpoint_history[-1], job.checkpoint_history[-2]
    damage(api.ckpt, latest.prefix + next(iter(latest.files)))  # type: ignore[arg-type]
    log = output(api.start_agent(job, tmp_path / "second", gpu_bin), timeout=60)
    done = api.store.get(job.id)
    assert done.state == S.SUCCEEDED and done.epoch == job.epoch, log
    assert f"falling back to checkpoint step {previous.step}" in log and f"RESUME from step {previous.step}" in log
    assert not [e for e in api.store.events(job.id) if e.epoch == job.epoch and e.to_state == S.INTERRUPTED]


def test_the_agent_fails_the_job_when_no_verified_checkpoint_is_left(
    api: AgentApi, gpu_bin: Path, tmp_path: Path
) -> None:
    job = _two_commits_then_preempted(api, gpu_bin, tmp_path, steps=400)
    for ref in job.checkpoint_history:
        damage(api.ckpt, ref.prefix + next(iter(ref.files)))  # type: ignore[arg-type]
    proc = api.start_agent(job, tmp_path / "second", gpu_bin)
    log = output(proc)
    done = api.store.get(job.id)
    assert done.state == S.FAILED and "no earlier verified checkpoint" in done.reason, log
    assert proc.returncode == 0 and "STEP" not in log, "the command never ran on a bad checkpoint"
    assert not [e for e in api.store.events(job.id) if e.epoch == job.epoch and e.to_state == S.INTERRUPTED]
