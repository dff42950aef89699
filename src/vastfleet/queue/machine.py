"""The job state machine: the allowed-transitions table and the one atomic script that changes a state.

```
PENDING ──► PLACING ──► BOOTING ──► RUNNING ──► SUCCEEDED
   ▲           │           │         ▲ │ ├──────► FAILED        (command failed, retries on error spent)
   │           │           │         │ ▼ ├──────► PENDING       (command failed, a retry on error left)
   │           │           │       PAUSED │                      (outbid or stopped: wait, raise or move)
   │           │           ▼         ▼    ▼
   ├───────────┘      INTERRUPTED ◄───────┘                      (preempted, host lost, stuck, moved)
   │ (create failed)       │
   └───────────────────────┤                                     (re-queued from the last checkpoint)
                           └──────► FAILED                       (interruptions or fruitless attempts capped)

any non-terminal ──► CANCELLED
```

The epoch (the attempt) is bumped by PENDING → PLACING and by nothing else, so the epoch names one
placement: INTERRUPTED → PENDING keeps it and the next PLACING bumps it.

`apply_transition` runs one Lua script that, in a single atomic step, checks the epoch (StaleEpoch) and
the table (IllegalTransition), writes the state and the caller's fields, moves the job between the
per-state indexes and the priority queue, and appends one event carrying the reason to the job's stream.
A refused transition writes nothing. The table lives here in Python and is handed to the script as the
list of states allowed to reach the target, so there is one table, not two.

This module never encodes job fields (the store does) and knows no marketplace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from vastfleet.errors import IllegalTransition, NotFound, StaleEpoch
from vastfleet.queue.keys import Keys
from vastfleet.spec.job import TERMINAL_STATES, JobState

S = JobState

# from-state -> the states it may move to
ALLOWED: dict[JobState, frozenset[JobState]] = {
    S.PENDING: frozenset({S.PLACING, S.CANCELLED}),
    S.PLACING: frozenset({S.BOOTING, S.PENDING, S.CANCELLED}),
    S.BOOTING: frozenset({S.RUNNING, S.INTERRUPTED, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.INTERRUPTED, S.PENDING, S.PAUSED, S.CANCELLED}),
    S.PAUSED: frozenset({S.RUNNING, S.INTERRUPTED, S.CANCELLED}),
    S.INTERRUPTED: frozenset({S.PENDING, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

# the one transition that starts a new attempt
EPOCH_BUMPS: frozenset[tuple[JobState, JobState]] = frozenset({(S.PENDING, S.PLACING)})

assert all(not ALLOWED[t] for t in TERMINAL_STATES), "terminal states have no way out"


def allowed(src: JobState, dst: JobState) -> bool:
    return dst in ALLOWED[src]


def sources(dst: JobState) -> list[JobState]:
    """The states from which `dst` may be reached."""
    return [src for src, targets in ALLOWED.items() if dst in targets]


# Every hash field holds JSON text, so the script decodes `state` (a JSON string) and `epoch` (a number)
# and writes the caller's already-encoded fields untouched. Hidden fields `_qscore`/`_qm` hold the job's
# place in the priority queue, fixed at submit so a re-queued job keeps its place among equal priorities.
TRANSITION_LUA = """
local job, stream, all_events, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, to, sources, expected, bump = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, reason, data, state_prefix, cap = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]

local cur = redis.call('HMGET', job, 'state', 'epoch', 'submitted_at', '_qscore', '_qm')
if not cur[1] then return {'notfound'} end
local from, epoch = cjson.decode(cur[1]), tonumber(cur[2])
if expected ~= '' and tonumber(expected) ~= epoch then return {'stale', from, tostring(epoch)} end
if not string.find(' ' .. sources .. ' ', ' ' .. from .. ' ', 1, true) then
  return {'illegal', from, tostring(epoch)}
end

if bump == '1' then epoch = epoch + 1 end
redis.call('HSET', job, 'state', cjson.encode(to), 'epoch', tostring(epoch))
for i = 11, #ARGV, 2 do redis.call('HSET', job, ARGV[i], ARGV[i + 1]) end

redis.call('ZREM', state_prefix .. from, id)
redis.call('ZADD', state_prefix .. to, cur[3], id)
if from == 'PENDING' then redis.call('ZREM', pending, cur[5]) end
if to == 'PENDING' then redis.call('ZADD', pending, cur[4], cur[5]) end

local event = {'job_id', id, 'at', now, 'kind', 'transition', 'from_state', from, 'to_state', to,
               'epoch', tostring(epoch), 'reason', reason, 'data', data}
local event_id = redis.call('XADD', stream, '*', unpack(event))
redis.call('XADD', all_events, 'MAXLEN', '~', cap, '*', unpack(event))
return {'ok', event_id, redis.call('HGETALL', job)}
"""


@dataclass
class Applied:
    """What the script returns on success: the record's raw hash and the new event's stream id."""

    raw: dict[str, str]
    event_id: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(flat: list[Any]) -> dict[str, str]:
    """A flat HGETALL reply (from a script) as a dict of str."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


class StateMachine:
    """Runs the transition script; the store wraps it with field encoding and decoding."""

    EVENTS_CAP = 100_000  # the shared stream keeps about this many recent events

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._script = client.register_script(TRANSITION_LUA)

    def apply(
        self,
        job_id: str,
        to: JobState,
        reason: str,
        *,
        now: float,
        expected_epoch: int | None,
        encoded_fields: dict[str, str],
        data_json: str = "{}",
    ) -> Applied:
        k = self.keys
        argv: list[str] = [
            job_id, to.value, " ".join(s.value for s in sources(to)),
            "" if expected_epoch is None else str(int(expected_epoch)),
            "1" if to == S.PLACING else "0",  # only PENDING may reach PLACING: that is EPOCH_BUMPS
            repr(float(now)), reason, data_json, k.state_prefix, str(self.EVENTS_CAP),
        ]
        for name, value in encoded_fields.items():
            argv += [name, value]
        reply = self._script(keys=[k.job(job_id), k.events(job_id), k.all_events, k.pending], args=argv)
        status = _text(reply[0])
        if status == "ok":
            return Applied(raw=pairs(reply[2]), event_id=_text(reply[1]))
        if status == "notfound":
            raise NotFound(f"no job {job_id}", job_id=job_id)
        current, epoch = _text(reply[1]), int(_text(reply[2]))
        if status == "stale":
            raise StaleEpoch(
                f"job {job_id} is at epoch {epoch}, not {expected_epoch}: this attempt is over",
                job_id=job_id, epoch=epoch, expected=expected_epoch,
            )
        raise IllegalTransition(
            f"job {job_id} cannot go from {current} to {to.value}", job_id=job_id, state=current, to=to.value
        )


assert EPOCH_BUMPS == {(src, S.PLACING) for src in sources(S.PLACING)}, "the bump flag assumes this"
