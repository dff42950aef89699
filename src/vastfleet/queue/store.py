"""The job store on Redis: records, the priority queue, per-state indexes, epochs and event streams.

A job is one Redis hash whose every field holds the JSON text of one `Job` attribute. Why a hash of JSON
values rather than one JSON string per job: the Lua scripts must read `state`/`epoch` and write a few
fields atomically, and decoding + re-encoding a whole document inside Redis (cjson) would lose float
precision (14 digits) and turn empty lists into objects. With a hash the scripts touch only the fields
they need and Python does every encoding through pydantic, so records round-trip exactly.

Every state change goes through `vastfleet.queue.machine` (one script, atomic). The other writes here
(`submit`, `update`, `commit_checkpoint`/`drop_checkpoint`, `note`) are small scripts of their own, each atomic and each
fenced where the contract says so. Never talks to a marketplace; never decides policy.

The reads (`get`, `list`, `pending`) decode each record on its own: one that no longer decodes is moved
aside (`vastfleet.queue.quarantine`) and skipped, so one bad record never stops a listing or a pass.
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import redis
from pydantic import TypeAdapter, ValidationError

from vastfleet.errors import BadInput, Conflict, IllegalTransition, NotFound, RetryLater, StaleEpoch
from vastfleet.logs import event
from vastfleet.queue.keys import Keys
from vastfleet.queue.machine import StateMachine, pairs
from vastfleet.queue.quarantine import JobQuarantined, Quarantine, try_decode
from vastfleet.spec.job import CheckpointRef, Job, JobEvent, JobState
from vastfleet.spec.jobspec import JobSpec

log = logging.getLogger(__name__)

# Fields only their own method writes: identity, the state machine's, and the forward-only checkpoint.
_PROTECTED = frozenset({"id", "spec", "state", "epoch", "submitted_at", "updated_at", "latest_checkpoint",
                        "checkpoint_history"})
_History = list[CheckpointRef]
CHECKPOINT_HISTORY = 3  # verified checkpoints a job keeps on record, to fall back to when the newest is damaged

SUBMIT_LUA = """
local job, jobs, pending_index, pending, seq, stream, all_events = unpack(KEYS)
local id, now, qscore, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', job) == 1 then return 'exists' end
local qm = string.format('%012d:%s', redis.call('INCR', seq), id)
for i = 5, #ARGV, 2 do redis.call('HSET', job, ARGV[i], ARGV[i + 1]) end
redis.call('HSET', job, '_qscore', qscore, '_qm', qm)
redis.call('ZADD', jobs, now, id)
redis.call('ZADD', pending_index, now, id)
redis.call('ZADD', pending, qscore, qm)
local event = {'job_id', id, 'at', now, 'kind', 'submitted', 'from_state', '', 'to_state', 'PENDING',
               'epoch', '0', 'reason', 'submitted', 'data', '{}'}
redis.call('XADD', stream, '*', unpack(event))
redis.call('XADD', all_events, 'MAXLEN', '~', cap, '*', unpack(event))
return 'ok'
"""

UPDATE_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'notfound'} end
if tonumber(epoch) ~= tonumber(ARGV[1]) then return {'stale', epoch} end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return {'ok', redis.call('HGETALL', KEYS[1])}
"""

# Writes `latest_checkpoint` and `checkpoint_history` together, epoch-fenced, and only if neither changed since
# Python read them (compare-and-set): Python orders and trims the history, since decoding the refs in Lua
# (cjson) would lose float precision; the script keeps the write atomic. 'changed' -> read again and retry.
CHECKPOINTS_LUA = """
local job, stream, all_events = KEYS[1], KEYS[2], KEYS[3]
local epoch, seen_latest, seen_history, latest, history = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local updated, now, kind, reason, data, cap, id = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local cur = redis.call('HMGET', job, 'epoch', 'latest_checkpoint', 'checkpoint_history')
if not cur[1] then return {'notfound'} end
if tonumber(cur[1]) ~= tonumber(epoch) then return {'stale', cur[1]} end
if (cur[2] or '') ~= seen_latest or (cur[3] or '') ~= seen_history then return {'changed'} end
redis.call('HSET', job, 'latest_checkpoint', latest, 'checkpoint_history', history, 'updated_at', updated)
local event = {'job_id', id, 'at', now, 'kind', kind, 'from_state', '', 'to_state', '',
               'epoch', epoch, 'reason', reason, 'data', data}
redis.call('XADD', stream, '*', unpack(event))
redis.call('XADD', all_events, 'MAXLEN', '~', cap, '*', unpack(event))
return {'ok', redis.call('HGETALL', job)}
"""

NOTE_LUA = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return false end
local event = {'job_id', ARGV[1], 'at', ARGV[2], 'kind', ARGV[3], 'from_state', '', 'to_state', '',
               'epoch', epoch, 'reason', ARGV[4], 'data', ARGV[5]}
local event_id = redis.call('XADD', KEYS[2], '*', unpack(event))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', unpack(event))
return event_id
"""


# One page of an index in submit order, around a cursor job (exclusive). Equal submit times are ordered by
# id, as Redis orders equal scores, so a page boundary never drops or repeats a job. The cursor's time
# comes from the all-jobs index, or the quarantine's when the cursor job was quarantined since.
PAGE_LUA = """
local index, jobs, quarantine = KEYS[1], KEYS[2], KEYS[3]
local limit, dir, cursor = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if dir == '' then return {'ok', redis.call('ZRANGE', index, -limit, -1)} end
local score = redis.call('ZSCORE', jobs, cursor) or redis.call('ZSCORE', quarantine, cursor)
if not score then return {'nocursor'} end
local pos = redis.call('ZCOUNT', index, '-inf', '(' .. score)
for _, member in ipairs(redis.call('ZRANGEBYSCORE', index, score, score)) do
  if member < cursor or (member == cursor and dir == 'after') then pos = pos + 1 end
end
if dir == 'before' then
  if pos == 0 then return {'ok', {}} end
  return {'ok', redis.call('ZRANGE', index, math.max(0, pos - limit), pos - 1)}
end
return {'ok', redis.call('ZRANGE', index, pos, pos + limit - 1)}
"""


@cache
def _adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(Job.model_fields[name].annotation)  # type: ignore[arg-type]


def encode_field(name: str, value: Any) -> str:
    """One Job attribute as the JSON text stored in its hash field; validated against the model first."""
    if name not in Job.model_fields:
        raise BadInput(f"{name!r} is not a job field")
    adapter = _adapter(name)
    try:
        return adapter.dump_json(adapter.validate_python(value)).decode()
    except ValidationError as exc:
        raise BadInput(f"job field {name!r}: {exc.errors()[0]['msg']}") from None


def decode_job(raw: dict[str, str]) -> Job:
    """The record a write script returned. One that no longer decodes is reported like a quarantined one (the
    next read sets it aside), never as a raw validation error that would escape the callers' handling."""
    job, reason = try_decode(raw)
    if job is None:
        job_id = raw.get("id", '"?"').strip('"')
        raise JobQuarantined(f"job {job_id} is quarantined: {reason}", job_id=job_id)
    return job


_STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def new_job_id() -> str:
    """`j-` and 10 base32 characters (50 random bits): short, URL-safe, collisions checked at submit."""
    return "j-" + base64.b32encode(secrets.token_bytes(7)).decode()[:10].lower()


class JobStore:
    EVENTS_CAP = StateMachine.EVENTS_CAP

    def __init__(self, redis: redis.Redis, prefix: str = "vf", clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.clock = clock
        self.machine = StateMachine(redis, self.keys)
        self._submit = redis.register_script(SUBMIT_LUA)
        self._update = redis.register_script(UPDATE_LUA)
        self._checkpoints = redis.register_script(CHECKPOINTS_LUA)
        self._note = redis.register_script(NOTE_LUA)
        self._page = redis.register_script(PAGE_LUA)
        # the records that no longer decode: list, inspect, release (`store.quarantine.list()`...)
        self.quarantine = Quarantine(redis, self.keys, clock, self.EVENTS_CAP)

    # --- writes -------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> Job:
        now = self.clock()
        k = self.keys
        for _ in range(5):  # 50 random bits: a second try is already astronomically rare
            job = Job(id=new_job_id(), spec=spec, submitted_at=now, updated_at=now,
                      deadline_at=spec.deadline_at(now), reason="submitted")
            fields = [x for name in Job.model_fields for x in (name, encode_field(name, getattr(job, name)))]
            keys = [k.job(job.id), k.jobs, k.state(JobState.PENDING), k.pending, k.seq, k.events(job.id),
                    k.all_events]
            args = [job.id, repr(now), str(-spec.priority), str(self.EVENTS_CAP), *fields]
            if _text(self._submit(keys=keys, args=args)) == "ok":
                event(log, "submitted", f"{spec.name}, priority {spec.priority}", job=job.id, epoch=0)
                return job
        raise Conflict("could not allocate a unique job id")  # pragma: no cover

    def transition(self, job_id: str, to: JobState, reason: str, *, expected_epoch: int | None = None,
                   **fields: Any) -> Job:
        encoded = self._encode_user_fields(fields)
        data = "{" + ",".join(f"{json.dumps(n)}:{v}" for n, v in encoded.items()) + "}"
        now = self.clock()
        encoded["reason"] = json.dumps(reason)
        encoded["updated_at"] = json.dumps(now)
        applied = self.machine.apply(job_id, JobState(to), reason, now=now, expected_epoch=expected_epoch,
                                     encoded_fields=encoded, data_json=data)
        job = decode_job(applied.raw)
        # The one place every state change passes (scheduler, agents, users): each is logged here, once.
        event(log, "transition", reason, job=job_id, epoch=job.epoch, instance=job.instance_id, to=job.state.value)
        return job

    def update(self, job_id: str, *, expected_epoch: int, **fields: Any) -> Job:
        encoded = self._encode_user_fields(fields)
        encoded["updated_at"] = json.dumps(self.clock())
        args = [str(int(expected_epoch)), *[x for kv in encoded.items() for x in kv]]
        reply = self._update(keys=[self.keys.job(job_id)], args=args)
        return decode_job(self._checked(reply, job_id, expected_epoch))

    def cancel(self, job_id: str, reason: str = "cancelled by user") -> Job:
        """Terminal jobs raise IllegalTransition; any other goes to CANCELLED with `cancel_requested`, so
        the reconcile loop knows to tear down the instance the job may still hold."""
        try:
            return self.transition(job_id, JobState.CANCELLED, reason, cancel_requested=True)
        except IllegalTransition as exc:
            state = exc.context.get("state", "finished")
            raise IllegalTransition(f"job {job_id} is already {state}; there is nothing to cancel",
                                    **exc.context) from None

    def commit_checkpoint(self, job_id: str, epoch: int, ref: CheckpointRef) -> Job:
        """Make `ref` the latest checkpoint and append it to the history (the last CHECKPOINT_HISTORY kept).
        Forward only by (epoch, step, committed_at); a step already committed with other objects is refused
        (committed checkpoints are immutable); the same ref again is a harmless retry."""
        if ref.epoch != epoch:
            raise BadInput(f"checkpoint of epoch {ref.epoch} committed as epoch {epoch}")
        data = {"step": ref.step, "prefix": ref.prefix, "files": len(ref.files), "bytes": ref.bytes}

        def change(latest: CheckpointRef | None, history: builtins.list[CheckpointRef]) -> _History | None:
            if latest is not None and latest.prefix != ref.prefix:
                new, old = _order(ref), _order(latest)
                if new < old:
                    raise Conflict(f"job {job_id}: checkpoint is older than the latest one (epoch, step, time)"
                                   f" {list(old)}", job_id=job_id)
                if ref.step is not None and new[:2] == old[:2]:
                    raise Conflict(f"job {job_id}: step {ref.step} of attempt {epoch} is already committed with"
                                   " other objects; committed checkpoints are immutable", job_id=job_id)
            return [*(h for h in history if h.prefix != ref.prefix), ref][-CHECKPOINT_HISTORY:]

        return self._change_checkpoints(job_id, epoch, change, "checkpoint", "checkpoint committed", data)

    def drop_checkpoint(self, job_id: str, epoch: int, prefix: str, reason: str) -> Job:
        """Forget the checkpoint stored under `prefix` (it failed verification at restore): it leaves the history
        and `latest_checkpoint` moves back to the newest verified one left (None when none is). Fenced by the
        epoch of the attempt that found it damaged; dropping one that is already gone changes nothing."""

        def change(latest: CheckpointRef | None, history: builtins.list[CheckpointRef]) -> _History | None:
            kept = [h for h in history if h.prefix != prefix]
            return None if len(kept) == len(history) else kept

        data = {"prefix": prefix}
        return self._change_checkpoints(job_id, epoch, change, "checkpoint_dropped", reason, data)

    def _change_checkpoints(self, job_id: str, epoch: int,
                            change: Callable[[CheckpointRef | None, _History], _History | None],
                            kind: str, reason: str, data: dict[str, Any]) -> Job:
        k = self.keys
        for _ in range(20):  # another writer between our read and the script: read again
            raw_epoch, seen_latest, seen_history = (
                None if v is None else _text(v)
                for v in self.redis.hmget(k.job(job_id), ["epoch", "latest_checkpoint", "checkpoint_history"]))
            if raw_epoch is None:
                raise NotFound(f"no job {job_id}", job_id=job_id)
            if int(raw_epoch) != int(epoch):
                raise StaleEpoch(f"job {job_id} is at epoch {raw_epoch}, not {epoch}: this attempt is over",
                                 job_id=job_id, epoch=int(raw_epoch), expected=epoch)
            latest = CheckpointRef.model_validate_json(seen_latest) if seen_latest not in (None, "null") else None
            history = _adapter("checkpoint_history").validate_json(seen_history) if seen_history else []
            if not history and latest is not None:
                history = [latest]  # a record from before the history existed
            changed = change(latest, history)
            if changed is None:
                return self.get(job_id)  # nothing to change (a drop already done, reported again)
            history = changed
            now = self.clock()
            new_latest = history[-1] if history else None
            args = [str(epoch), seen_latest or "", seen_history or "", encode_field("latest_checkpoint", new_latest),
                    encode_field("checkpoint_history", history), json.dumps(now), repr(now), kind, reason,
                    json.dumps(data), str(self.EVENTS_CAP), job_id]
            reply = self._checkpoints(keys=[k.job(job_id), k.events(job_id), k.all_events], args=args)
            if _text(reply[0]) != "changed":
                return decode_job(self._checked(reply, job_id, epoch))
        raise RetryLater(f"job {job_id}: its checkpoints kept changing under this write; try again", delay=1)

    def note(self, job_id: str, kind: str, reason: str, data: dict[str, Any] | None = None) -> None:
        """An event that is not a transition (heartbeat lost, bid raised...)."""
        if kind in ("transition", "submitted", "checkpoint", "checkpoint_dropped"):
            raise BadInput(f"{kind!r} events are written by the store itself")
        k = self.keys
        args = [job_id, repr(self.clock()), kind, reason, json.dumps(data or {}), str(self.EVENTS_CAP)]
        if self._note(keys=[k.job(job_id), k.events(job_id), k.all_events], args=args) is None:
            raise NotFound(f"no job {job_id}", job_id=job_id)

    # --- reads --------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job; NotFound when there is none, JobQuarantined (a NotFound) when its record is set aside."""
        for _ in range(3):  # a record rewritten while we quarantine it is read again
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(self.keys.job(job_id))
            pipe.hget(self.keys.quarantine_reasons, job_id)
            pipe.hget(self.keys.spend_jobs, job_id)
            raw, why, spent = pipe.execute()
            if not raw:
                if why is not None:
                    raise JobQuarantined.of(job_id, why)
                raise NotFound(f"no job {job_id}", job_id=job_id)
            fields = {_text(k): _text(v) for k, v in raw.items()}
            job, reason = try_decode(fields)
            if job is not None:
                return _with_spend(job, spent)
            if self.quarantine.set_aside(job_id, fields, reason) != "changed":
                raise JobQuarantined(f"job {job_id} is quarantined: {reason}", job_id=job_id)
        raise Conflict(f"job {job_id} is being rewritten and does not decode; try again", job_id=job_id)

    def list(self, state: JobState | None = None, limit: int = 1000, *, before: str | None = None,
             after: str | None = None) -> builtins.list[Job]:
        """The `limit` most recently submitted jobs (of one state), oldest first. With `before` (a job id,
        e.g. the first of the previous page) the `limit` submitted just before it; with `after`, the
        `limit` submitted just after it. Records that do not decode are quarantined and left out."""
        if before is not None and after is not None:
            raise BadInput("give before or after, not both")
        cursor = before if before is not None else after
        direction = "" if cursor is None else "before" if before is not None else "after"
        index = self.keys.jobs if state is None else self.keys.state(JobState(state))
        k = self.keys
        reply = self._page(keys=[index, k.jobs, k.quarantine], args=[max(1, limit), direction, cursor or ""])
        if _text(reply[0]) == "nocursor":
            raise BadInput(f"{direction}: no job {cursor!r} (a cursor is the id of a listed job)")
        return self._load([_text(i) for i in reply[1]])

    def pending(self, limit: int = 1000) -> builtins.list[Job]:
        """PENDING jobs in the order they should be placed: priority (highest first), then submit order."""
        members = [_text(m) for m in self.redis.zrange(self.keys.pending, 0, max(1, limit) - 1)]
        return self._load([m.partition(":")[2] for m in members], members)

    def ids(self, state: JobState) -> builtins.list[str]:
        return [_text(i) for i in self.redis.zrange(self.keys.state(JobState(state)), 0, -1)]

    def counts(self) -> dict[JobState, int]:
        pipe = self.redis.pipeline(transaction=False)
        for state in JobState:
            pipe.zcard(self.keys.state(state))
        return dict(zip(JobState, (int(n) for n in pipe.execute())))

    def events(self, job_id: str, after: str | None = None, limit: int = 1000) -> builtins.list[JobEvent]:
        """The job's events oldest first; `after` is an event id already seen (exclusive)."""
        if after is not None and not _STREAM_ID.fullmatch(after):
            raise BadInput(f"{after!r} is not an event id (like 1700000000000-0)")
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self.keys.job(job_id))
        pipe.xrange(self.keys.events(job_id), min="-" if after is None else f"({after}", max="+", count=limit)
        exists, entries = pipe.execute()
        if not exists:
            raise NotFound(f"no job {job_id}", job_id=job_id)
        return [JobEvent.from_stream(_text(eid), {_text(k): _text(v) for k, v in fields.items()}) for eid, fields in entries]

    # --- helpers ------------------------------------------------------------------------------------

    def _load(self, ids: builtins.list[str], members: builtins.list[str] | None = None) -> builtins.list[Job]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        if ids:
            pipe.hmget(self.keys.spend_jobs, ids)
        replies = pipe.execute()
        spends = replies.pop() if ids else []
        out = []
        for at, (job_id, raw) in enumerate(zip(ids, replies)):
            if not raw:  # quarantined (or deleted by hand) after the index was read
                continue
            fields = {_text(k): _text(v) for k, v in raw.items()}
            job, reason = try_decode(fields)
            if job is None:
                self.quarantine.set_aside(job_id, fields, reason, members[at] if members else "")
                continue
            out.append(_with_spend(job, spends[at]))
        return out

    @staticmethod
    def _encode_user_fields(fields: dict[str, Any]) -> dict[str, str]:
        protected = sorted(set(fields) & _PROTECTED)
        if protected:
            raise BadInput(f"{', '.join(protected)} cannot be set here (owned by its own store method)")
        return {name: encode_field(name, value) for name, value in fields.items()}

    @staticmethod
    def _checked(reply: Any, job_id: str, expected_epoch: int) -> dict[str, str]:
        status = _text(reply[0])
        if status == "notfound":
            raise NotFound(f"no job {job_id}", job_id=job_id)
        if status == "stale":
            raise StaleEpoch(f"job {job_id} is at epoch {_text(reply[1])}, not {expected_epoch}: this attempt"
                             " is over", job_id=job_id, epoch=int(_text(reply[1])), expected=expected_epoch)
        return pairs(reply[1])


def _with_spend(job: Job, spent: Any) -> Job:
    """The job with what the scheduler attributed to its rentals (the marketplace's rates, kept apart from the
    record so that accruing it never races a transition)."""
    if spent is None:
        return job
    return job.model_copy(update={"cost_usd": max(job.cost_usd, float(_text(spent)))})


def _order(ref: CheckpointRef) -> tuple[int, int, float]:
    """The order in which checkpoints may follow each other: attempt, then step, then commit time."""
    return ref.epoch, -1 if ref.step is None else ref.step, ref.committed_at


# IllegalTransition is raised by the machine; re-exported so callers can import errors from one place.
__all__ = ["IllegalTransition", "JobQuarantined", "JobStore", "StaleEpoch", "decode_job", "encode_field",
           "new_job_id"]
