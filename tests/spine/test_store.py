"""The job store against a real redis-server: records, queue order, the transition table, fencing."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from tests.spine.conftest import FakeClock, make_spec
from vastfleet.errors import BadInput, Conflict, IllegalTransition, NotFound, StaleEpoch
from vastfleet.queue import ALLOWED, JobStore
from vastfleet.spec import CheckpointRef, Job, JobState

S = JobState

# how to bring a fresh job into each state, legal step by legal step
PATH: dict[JobState, list[JobState]] = {
    S.PENDING: [],
    S.PLACING: [S.PLACING],
    S.BOOTING: [S.PLACING, S.BOOTING],
    S.RUNNING: [S.PLACING, S.BOOTING, S.RUNNING],
    S.PAUSED: [S.PLACING, S.BOOTING, S.RUNNING, S.PAUSED],
    S.INTERRUPTED: [S.PLACING, S.BOOTING, S.INTERRUPTED],
    S.SUCCEEDED: [S.PLACING, S.BOOTING, S.RUNNING, S.SUCCEEDED],
    S.FAILED: [S.PLACING, S.BOOTING, S.RUNNING, S.FAILED],
    S.CANCELLED: [S.CANCELLED],
}

LEGAL = [(src, dst) for src, dsts in ALLOWED.items() for dst in sorted(dsts)]
ILLEGAL = [(src, dst) for src in JobState for dst in JobState if dst not in ALLOWED[src]]


def job_in(store: JobStore, state: JobState, **spec: Any) -> Job:
    job = store.submit(make_spec(**spec))
    for step in PATH[state]:
        job = store.transition(job.id, step, f"to {step.value}")
    assert job.state == state
    return job


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """Everything in the database, to prove a refused call wrote nothing."""
    out: dict[str, Any] = {}
    for key in sorted(client.keys("*")):
        kind = client.type(key)
        if kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = client.xrange(key)
        else:
            out[key] = client.get(key)
    return out


def test_submit_stores_a_pending_job_with_a_submitted_event(store: JobStore, clock: FakeClock) -> None:
    job = store.submit(make_spec(deadline="2h"))
    assert job.id.startswith("j-") and len(job.id) == 12 and job.id[2:].isalnum()
    assert (job.state, job.epoch, job.submitted_at) == (S.PENDING, 0, clock.now)
    assert job.deadline_at == clock.now + 7200
    assert store.get(job.id) == job
    [event] = store.events(job.id)
    assert (event.kind, event.to_state, event.epoch) == ("submitted", S.PENDING, 0)
    assert store.ids(S.PENDING) == [job.id]


def test_get_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound):
        store.get("j-nope")
    with pytest.raises(NotFound):
        store.events("j-nope")
    with pytest.raises(NotFound):
        store.transition("j-nope", S.PLACING, "x")
    with pytest.raises(NotFound):
        store.note("j-nope", "heartbeat_lost", "x")


def test_pending_orders_by_priority_then_submit_time(store: JobStore, clock: FakeClock) -> None:
    ids = {}
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", -3), ("e", 5)]:
        clock.advance(1)
        ids[name] = store.submit(make_spec(name=name, priority=priority)).id
    assert [j.spec.name for j in store.pending()] == ["b", "e", "a", "c", "d"]
    assert [j.spec.name for j in store.pending(limit=2)] == ["b", "e"]
    # a job that leaves and comes back keeps its place among its priority
    store.transition(ids["b"], S.PLACING, "placing")
    assert [j.spec.name for j in store.pending()] == ["e", "a", "c", "d"]
    store.transition(ids["b"], S.PENDING, "create failed")
    assert [j.spec.name for j in store.pending()] == ["b", "e", "a", "c", "d"]


def test_list_filters_by_state_and_keeps_submit_order(store: JobStore, clock: FakeClock) -> None:
    jobs = []
    for i in range(5):
        clock.advance(1)
        jobs.append(store.submit(make_spec(name=f"j{i}")))
    store.transition(jobs[1].id, S.PLACING, "x")
    store.transition(jobs[3].id, S.PLACING, "x")
    assert [j.id for j in store.list()] == [j.id for j in jobs]
    assert [j.id for j in store.list(limit=2)] == [jobs[3].id, jobs[4].id]
    assert [j.id for j in store.list(S.PLACING)] == [jobs[1].id, jobs[3].id]
    assert [j.id for j in store.list(S.PENDING)] == [jobs[0].id, jobs[2].id, jobs[4].id]
    counts = store.counts()
    assert counts[S.PENDING] == 3 and counts[S.PLACING] == 2 and sum(counts.values()) == 5


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=[f"{a.value}->{b.value}" for a, b in LEGAL])
def test_every_legal_transition_applies_and_moves_the_indexes(store: JobStore, src: JobState,
                                                              dst: JobState) -> None:
    job = job_in(store, src)
    events_before = len(store.events(job.id))
    after = store.transition(job.id, dst, "because", expected_epoch=job.epoch, instance_id=7)
    assert after.state == dst and after.reason == "because" and after.instance_id == 7
    assert after.epoch == job.epoch + (1 if (src, dst) == (S.PENDING, S.PLACING) else 0)
    assert store.get(job.id) == after
    assert job.id in store.ids(dst) and (src == dst or job.id not in store.ids(src))
    assert (job.id in [j.id for j in store.pending()]) == (dst == S.PENDING)
    events = store.events(job.id)
    assert len(events) == events_before + 1
    last = events[-1]
    assert (last.kind, last.from_state, last.to_state, last.reason, last.epoch) == (
        "transition", src, dst, "because", after.epoch)
    assert last.data == {"instance_id": 7}


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=[f"{a.value}->{b.value}" for a, b in ILLEGAL])
def test_every_illegal_transition_raises_and_changes_nothing(store: JobStore, redis_client: redis.Redis,
                                                             src: JobState, dst: JobState) -> None:
    job = job_in(store, src)
    before = snapshot(redis_client)
    with pytest.raises(IllegalTransition, match=f"from {src.value} to {dst.value}"):
        store.transition(job.id, dst, "nope", instance_id=9)
    assert snapshot(redis_client) == before


def test_epoch_counts_placements_and_requeue_keeps_it(store: JobStore) -> None:
    job = job_in(store, S.RUNNING)
    assert job.epoch == 1
    job = store.transition(job.id, S.INTERRUPTED, "preempted", expected_epoch=1, preemptions=1)
    job = store.transition(job.id, S.PENDING, "re-queued", expected_epoch=1)
    assert job.epoch == 1
    job = store.transition(job.id, S.PLACING, "new offer", expected_epoch=1)
    assert job.epoch == 2 and job.preemptions == 1


def test_stale_epoch_raises_and_changes_nothing(store: JobStore, redis_client: redis.Redis) -> None:
    job = job_in(store, S.RUNNING)
    before = snapshot(redis_client)
    with pytest.raises(StaleEpoch):
        store.transition(job.id, S.SUCCEEDED, "old agent", expected_epoch=0, exit_code=0)
    with pytest.raises(StaleEpoch):
        store.update(job.id, expected_epoch=2, progress={"step": 5})
    with pytest.raises(StaleEpoch):
        store.commit_checkpoint(job.id, 0, CheckpointRef(epoch=0, prefix="p", files={}, committed_at=1))
    assert snapshot(redis_client) == before
    # the stale check wins over the table: an old agent learns it must stop, whatever it asked
    with pytest.raises(StaleEpoch):
        store.transition(job.id, S.PLACING, "old", expected_epoch=0)


def test_events_carry_every_transition_with_its_reason_and_page(store: JobStore, clock: FakeClock) -> None:
    job = store.submit(make_spec())
    reasons = ["offer 12 at $0.30/h", "instance 5 created", "first heartbeat", "exit 0"]
    for to, reason in zip([S.PLACING, S.BOOTING, S.RUNNING, S.SUCCEEDED], reasons):
        clock.advance(10)
        store.transition(job.id, to, reason)
    events = store.events(job.id)
    assert [e.reason for e in events[1:]] == reasons
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert [e.id for e in store.events(job.id, after=events[2].id)] == [events[3].id, events[4].id]
    assert [e.id for e in store.events(job.id, limit=2)] == [events[0].id, events[1].id]
    with pytest.raises(BadInput):
        store.events(job.id, after="yesterday")


def test_cancel_semantics(store: JobStore) -> None:
    pending = job_in(store, S.PENDING)
    cancelled = store.cancel(pending.id)
    assert cancelled.state == S.CANCELLED and cancelled.cancel_requested
    assert pending.id not in [j.id for j in store.pending()]

    running = job_in(store, S.RUNNING)
    running = store.update(running.id, expected_epoch=1, instance_id=42)
    cancelled = store.cancel(running.id, "user changed their mind")
    # the instance stays on record so the reconcile loop can tear it down
    assert (cancelled.state, cancelled.instance_id, cancelled.reason) == (S.CANCELLED, 42,
                                                                         "user changed their mind")
    for terminal in (S.SUCCEEDED, S.FAILED, S.CANCELLED):
        done = job_in(store, terminal)
        with pytest.raises(IllegalTransition):
            store.cancel(done.id)


def test_update_sets_fields_fenced_and_refuses_owned_fields(store: JobStore) -> None:
    job = job_in(store, S.RUNNING)
    job = store.update(job.id, expected_epoch=1, progress={"step": 100, "loss": 0.5}, cost_usd=1.25)
    assert job.progress == {"step": 100, "loss": 0.5} and job.cost_usd == 1.25 and job.state == S.RUNNING
    for field in ("state", "epoch", "latest_checkpoint", "id"):
        with pytest.raises(BadInput):
            store.update(job.id, expected_epoch=1, **{field: None})
    with pytest.raises(BadInput):
        store.update(job.id, expected_epoch=1, no_such_field=1)
    with pytest.raises(BadInput):
        store.transition(job.id, S.SUCCEEDED, "x", exit_code="zero")
    assert store.get(job.id).state == S.RUNNING


def test_checkpoint_only_moves_forward(store: JobStore) -> None:
    job = job_in(store, S.RUNNING)

    def ref(step: int | None, at: float, epoch: int = 1) -> CheckpointRef:
        return CheckpointRef(epoch=epoch, step=step, prefix=f"jobs/{job.id}/1/{step}",
                             files={"model.pt": {"size": 3, "sha256": "ab"}}, committed_at=at, bytes=3)

    assert store.commit_checkpoint(job.id, 1, ref(10, 100.0)).latest_checkpoint == ref(10, 100.0)
    store.commit_checkpoint(job.id, 1, ref(20, 200.0))
    with pytest.raises(Conflict):
        store.commit_checkpoint(job.id, 1, ref(15, 300.0))
    assert store.get(job.id).latest_checkpoint == ref(20, 200.0)
    store.commit_checkpoint(job.id, 1, ref(20, 200.0))  # a retried commit is harmless
    with pytest.raises(BadInput):
        store.commit_checkpoint(job.id, 1, ref(30, 300.0, epoch=0))
    kinds = [e.kind for e in store.events(job.id)]
    assert kinds.count("checkpoint") == 3
    # a new attempt's checkpoint wins even with a smaller step (it resumed from an older one)
    store.transition(job.id, S.INTERRUPTED, "preempted")
    store.transition(job.id, S.PENDING, "re-queued")
    store.transition(job.id, S.PLACING, "placing")
    assert store.commit_checkpoint(job.id, 2, ref(5, 50.0, epoch=2)).latest_checkpoint == ref(5, 50.0, epoch=2)


def test_note_appends_a_non_transition_event(store: JobStore) -> None:
    job = job_in(store, S.RUNNING)
    store.note(job.id, "heartbeat_lost", "no heartbeat for 60s", {"last": 12.5})
    last = store.events(job.id)[-1]
    assert (last.kind, last.reason, last.data, last.epoch, last.to_state) == (
        "heartbeat_lost", "no heartbeat for 60s", {"last": 12.5}, 1, None)
    with pytest.raises(BadInput):
        store.note(job.id, "transition", "forged")
    assert store.get(job.id).state == S.RUNNING


def test_store_works_on_a_bytes_client_and_a_prefix(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)  # decode_responses=False, as RQ's connections are
    store = JobStore(client, prefix="other")
    job = store.submit(make_spec())
    job = store.transition(job.id, S.PLACING, "x", expected_epoch=0)
    assert store.get(job.id) == job and store.pending() == [] and store.ids(S.PLACING) == [job.id]
    assert len(store.events(job.id)) == 2
    assert all(key.startswith(b"other:") for key in client.keys("*"))
    client.close()
