"""Quarantine: where a job record that no longer decodes goes, so that it never stops a listing or a pass.

A record can stop decoding without any bad input getting through today's validation: a record written by
an older version, a manual edit, a field that no longer validates after an upgrade, a null where NaN was
once stored. Such a record must not make `GET /v1/jobs` answer 500 or every scheduler pass fail (one bad
record stopped the whole fleet once). So the store's reads decode each record on its own; one that fails
is moved aside here, atomically, and skipped:

- the hash is renamed to `{p}:quarantined:{id}`, byte for byte as it was (for repair and for the record).
  Renaming, rather than marking it in place, is what keeps every writer off it: the state machine, the
  updates and the notes find no job and answer NotFound, so nothing can put it back in an index or
  half-update a record that cannot be read;
- it leaves `{p}:jobs`, every per-state index and the pending queue;
- `{p}:quarantine` (a zset scored by the submit time, so listing cursors still resolve) and
  `{p}:quarantine:reasons` (id -> {"reason", "at"}) record it, and the job's event stream (and the
  shared one) gets a `quarantined` event carrying the reason.

The script quarantines only the record the reader saw (same `updated_at`): a record rewritten meanwhile
is left for the next read to judge. `release` undoes it once the record decodes again (after a repair of
the hash, or an upgrade that reads it), putting it back in the indexes its state names.

Reasons name fields and what is wrong with them, in the spec's own words; they never quote a field's
stored text (an env value may be a secret).
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Callable
from typing import Any

import redis
from pydantic import ValidationError

from vastfleet.errors import Conflict, NotFound
from vastfleet.queue.keys import Keys
from vastfleet.spec.job import Job, JobEvent, JobState
from vastfleet.spec.jobspec import location
from vastfleet.spec.summary import QuarantineDetail, QuarantineEntry

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 500


class JobQuarantined(NotFound):
    """The job's record cannot be read and was moved aside (see `vastfleet.queue.quarantine`).

    A NotFound, because for everything that manages jobs it is one: the loop treats an instance labelled
    with it as nobody's (an orphan), the metrics forget it. HTTP 409, because to a user (and to its agent,
    which stops on a 409) the job exists but is in no state that allows the call."""

    http_status = 409

    @classmethod
    def of(cls, job_id: str, record: Any) -> JobQuarantined:
        """From the job's entry in the reasons hash."""
        reason = str(json.loads(_text(record)).get("reason", "unknown"))
        return cls(f"job {job_id} is quarantined: {reason}", job_id=job_id)


def try_decode(raw: dict[str, str]) -> tuple[Job | None, str]:
    """The job, or why its record does not decode (field names and problems, never the stored text)."""
    values: dict[str, Any] = {}
    for name, text in raw.items():
        if name.startswith("_"):
            continue
        try:
            values[name] = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            problem = str(exc).splitlines()[0] if isinstance(exc, ValueError) else "nested too deeply"
            return None, f"field {name!r} is not valid JSON ({problem})"
    try:
        return Job.model_validate(values), ""
    except ValidationError as exc:
        problems = [f"{location(err['loc'])}: {err['msg']}" for err in exc.errors()]
        return None, cap("the record does not validate: " + "; ".join(problems))
    except (ValueError, TypeError, RecursionError) as exc:  # a validator's own failure on odd data
        return None, cap(f"the record does not validate: {type(exc).__name__}")


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, but no JSON writer of an answer may write them back (the API
    # would answer 500 on the listing); our encoder never writes them, so such a record was made by hand.
    raise ValueError(f"{name} is not a JSON number")


def cap(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."


# KEYS: job, quarantined, jobs, pending, quarantine, reasons, stream, all_events
# ARGV: id, reason, now, updated_at as read ('' when absent), state_prefix, states, cap, pending member
QUARANTINE_LUA = """
local job, quarantined, jobs, pending, quarantine, reasons, stream, all_events = unpack(KEYS)
local id, reason, now, seen, state_prefix, states, cap, member = unpack(ARGV)
if redis.call('EXISTS', job) == 0 then return 'gone' end
if (redis.call('HGET', job, 'updated_at') or '') ~= seen then return 'changed' end
local submitted = redis.call('ZSCORE', jobs, id) or now
local qm = redis.call('HGET', job, '_qm')
local epoch = tonumber(redis.call('HGET', job, 'epoch') or '')
if not epoch or epoch ~= math.floor(epoch) or epoch < 0 or epoch > 1e15 then epoch = 0 end
redis.call('RENAME', job, quarantined)
redis.call('ZREM', jobs, id)
for state in string.gmatch(states, '%S+') do redis.call('ZREM', state_prefix .. state, id) end
if qm then redis.call('ZREM', pending, qm) end
if member ~= '' then redis.call('ZREM', pending, member) end
redis.call('ZADD', quarantine, submitted, id)
redis.call('HSET', reasons, id, cjson.encode({reason = reason, at = now}))
local event = {'job_id', id, 'at', now, 'kind', 'quarantined', 'from_state', '', 'to_state', '',
               'epoch', string.format('%d', epoch), 'reason', reason, 'data', '{}'}
redis.call('XADD', stream, '*', unpack(event))
redis.call('XADD', all_events, 'MAXLEN', '~', cap, '*', unpack(event))
return 'ok'
"""

# KEYS: job, quarantined, jobs, pending, quarantine, reasons, stream, all_events, state index, seq
# ARGV: id, updated_at as read, now, cap, state, epoch, -priority (the queue score if the record lost its own)
RELEASE_LUA = """
local job, quarantined, jobs, pending, quarantine, reasons, stream, all_events, index, seq = unpack(KEYS)
local id, seen, now, cap, state, epoch, qscore = unpack(ARGV)
if redis.call('EXISTS', quarantined) == 0 then return 'gone' end
if redis.call('EXISTS', job) == 1 then return 'exists' end
if (redis.call('HGET', quarantined, 'updated_at') or '') ~= seen then return 'changed' end
-- Everything that could fail is checked before the first write: a script is not rolled back on error.
local submitted = redis.call('ZSCORE', quarantine, id) or now
local q = tonumber(redis.call('HGET', quarantined, '_qscore') or '') or tonumber(qscore)
local qm = redis.call('HGET', quarantined, '_qm')
if not qm then  -- a hand-made record: it joins the queue behind the jobs already there
  qm = string.format('%012d:%s', redis.call('INCR', seq), id)
end
redis.call('RENAME', quarantined, job)
redis.call('HSET', job, '_qm', qm, '_qscore', string.format('%.17g', q))
redis.call('ZADD', jobs, submitted, id)
redis.call('ZADD', index, submitted, id)
if state == 'PENDING' then redis.call('ZADD', pending, q, qm) end
redis.call('ZREM', quarantine, id)
redis.call('HDEL', reasons, id)
local event = {'job_id', id, 'at', now, 'kind', 'released', 'from_state', '', 'to_state', '',
               'epoch', epoch, 'reason', 'released from quarantine: the record decodes again', 'data', '{}'}
redis.call('XADD', stream, '*', unpack(event))
redis.call('XADD', all_events, 'MAXLEN', '~', cap, '*', unpack(event))
return 'ok'
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Quarantine:
    """The quarantine of one job store (`JobStore.quarantine`): set records aside, list, inspect, release."""

    def __init__(self, client: redis.Redis, keys: Keys, clock: Callable[[], float], events_cap: int) -> None:
        self.redis = client
        self.keys = keys
        self.clock = clock
        self.events_cap = events_cap
        self._set_aside = client.register_script(QUARANTINE_LUA)
        self._release = client.register_script(RELEASE_LUA)

    def set_aside(self, job_id: str, fields: dict[str, str], reason: str, member: str = "") -> str:
        """Quarantine the record as read: 'ok', 'gone' (another reader did it first: one warning, one
        event in all), or 'changed' (rewritten since it was read; the next read judges it again)."""
        k = self.keys
        keys = [k.job(job_id), k.quarantined(job_id), k.jobs, k.pending, k.quarantine, k.quarantine_reasons,
                k.events(job_id), k.all_events]
        args = [job_id, reason, repr(self.clock()), fields.get("updated_at", ""), k.state_prefix,
                " ".join(s.value for s in JobState), str(self.events_cap), member]
        status = _text(self._set_aside(keys=keys, args=args))
        if status == "ok":
            log.warning("job %s quarantined (its record does not decode): %s", job_id, reason)
        return status

    def list(self, limit: int = 100) -> builtins.list[QuarantineEntry]:
        """The `limit` most recently submitted quarantined jobs, oldest first."""
        ids = [_text(i) for i in self.redis.zrange(self.keys.quarantine, -max(1, limit), -1)]
        out = []
        for job_id in ids:
            try:
                out.append(self._entry(job_id))
            except NotFound:  # released between the two reads
                continue
        return out

    def get(self, job_id: str, events: int = 20) -> QuarantineDetail:
        """A quarantined job with its record's hash as stored and its last `events`; NotFound when the job
        is not quarantined. (`JobStore.events` answers NotFound for it: it looks for a live record.)"""
        entry = self._entry(job_id)
        raw = self.redis.hgetall(self.keys.quarantined(job_id))
        history: list[Any] = list(self.redis.xrevrange(self.keys.events(job_id), count=events) or [])
        return QuarantineDetail(**entry.model_dump(), fields={_text(a): _text(b) for a, b in raw.items()},
                                events=[JobEvent.from_stream(_text(i), {_text(a): _text(b)
                                                                        for a, b in (f or {}).items()})
                                        for i, f in reversed(history)])

    def reason(self, job_id: str) -> str | None:
        """Why the job is quarantined; None when it is not."""
        record = self.redis.hget(self.keys.quarantine_reasons, job_id)
        return None if record is None else str(json.loads(_text(record)).get("reason", "unknown"))

    def release(self, job_id: str) -> Job:
        """Put a quarantined job back, in the indexes (and queue) its state names, once its record decodes
        (repaired by hand, or read by a newer version). A record that still does not decode stays where it
        is: Conflict, with the reason."""
        raw = {_text(a): _text(b) for a, b in self.redis.hgetall(self.keys.quarantined(job_id)).items()}
        if not raw:
            raise NotFound(f"job {job_id} is not quarantined", job_id=job_id)
        job, reason = try_decode(raw)
        if job is None:
            raise Conflict(f"job {job_id} still does not decode: {reason}", job_id=job_id)
        k = self.keys
        keys = [k.job(job_id), k.quarantined(job_id), k.jobs, k.pending, k.quarantine, k.quarantine_reasons,
                k.events(job_id), k.all_events, k.state(job.state), k.seq]
        args = [job_id, raw.get("updated_at", ""), repr(self.clock()), str(self.events_cap), job.state.value,
                str(job.epoch), str(-job.spec.priority)]
        status = _text(self._release(keys=keys, args=args))
        if status == "gone":
            raise NotFound(f"job {job_id} is not quarantined", job_id=job_id)
        if status == "exists":
            raise Conflict(f"job {job_id}: another record holds its id; it stays quarantined", job_id=job_id)
        if status != "ok":
            raise Conflict(f"job {job_id}: its quarantined record changed meanwhile; try again", job_id=job_id)
        log.warning("job %s released from quarantine (%s, epoch %s)", job_id, job.state.value, job.epoch)
        return job

    def entry(self, job_id: str) -> QuarantineEntry:
        """Why and since when the job is quarantined; NotFound when it is not."""
        return self._entry(job_id)

    def _entry(self, job_id: str) -> QuarantineEntry:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.quarantine_reasons, job_id)
        pipe.zscore(self.keys.quarantine, job_id)
        pipe.hmget(self.keys.quarantined(job_id), "state", "epoch")
        record, submitted, (state, epoch) = pipe.execute()
        if record is None:
            raise NotFound(f"job {job_id} is not quarantined", job_id=job_id)
        data = json.loads(_text(record))
        return QuarantineEntry(id=job_id, reason=str(data.get("reason", "")),
                               quarantined_at=float(data.get("at", 0)), submitted_at=submitted,
                               state=None if state is None else _text(state).strip('"')[:40],
                               epoch=None if epoch is None else _text(epoch)[:40])
