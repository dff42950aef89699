"""The sweeps' records in Redis, next to the job store and the Optuna journal they share a server with.

    {p}:sweeps                 zset    sweep id -> created at
    {p}:sweeps:open            set     sweeps the driver still has work on (running, or over with trials to close)
    {p}:sweep:{id}             hash    spec, state, reason, times, spent_usd (a float: HINCRBYFLOAT), decision
    {p}:sweep:{id}:trials      hash    trial number -> Trial JSON (the vastfleet side of the trial)
    {p}:sweep:{id}:cost        hash    trial number -> dollars its instances billed
    {p}:sweep:{id}:billed      hash    instance id -> {"job", "number", "until"}: the accrual's position
    {p}:sweep:{id}:events      stream  what the sweep did and why (trials started, pruned, stopped; the end)
    {p}:sweep:{id}:journal...  Optuna's journal (`sweeps.study`)
    {p}:sweep:jobs             hash    job id -> "{sweep id}:{trial number}" (every sweep's trials)

Trial jobs are ordinary jobs in the job store; this module never writes a job. A sweep's state leaves
RUNNING once, atomically (a cancel and the driver's own end cannot overwrite each other).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis

from vastfleet.errors import Conflict, NotFound
from vastfleet.sweeps.models import Decision, Sweep, SweepEvent, SweepState, Trial
from vastfleet.sweeps.spec import SweepSpec

EVENTS_CAP = 10_000

# state: RUNNING -> an end state, once. Returns {changed, the state now}.
END_LUA = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return false end
if cur ~= 'RUNNING' then return {0, cur} end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'reason', ARGV[2], 'ended_at', ARGV[3], 'updated_at', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'at', ARGV[3], 'kind', 'ended', 'message', ARGV[2],
           'data', ARGV[5])
return {1, ARGV[1]}
"""

# One accrual step, atomic: the instance's position, the sweep's spend and the trial's cost move together.
ACCRUE_LUA = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[4]) > 0 then
  redis.call('HINCRBYFLOAT', KEYS[2], 'spent_usd', ARGV[4])
  redis.call('HINCRBYFLOAT', KEYS[3], ARGV[3], ARGV[4])
end
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def new_sweep_id() -> str:
    return "s-" + base64.b32encode(secrets.token_bytes(7)).decode()[:10].lower()


class SweepStore:
    def __init__(self, client: redis.Redis, prefix: str = "vf", clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.prefix = prefix
        self.clock = clock
        self._end = client.register_script(END_LUA)
        self._accrue = client.register_script(ACCRUE_LUA)

    # --- keys ---------------------------------------------------------------------------------------

    def key(self, sweep_id: str, part: str = "") -> str:
        return f"{self.prefix}:sweep:{sweep_id}" + (f":{part}" if part else "")

    @property
    def index(self) -> str:
        return f"{self.prefix}:sweeps"

    @property
    def open_set(self) -> str:
        return f"{self.prefix}:sweeps:open"

    @property
    def job_index(self) -> str:
        return f"{self.prefix}:sweep:jobs"

    # --- sweeps -------------------------------------------------------------------------------------

    def create(self, spec: SweepSpec) -> Sweep:
        now = self.clock()
        for _ in range(5):
            sweep = Sweep(id=new_sweep_id(), spec=spec, created_at=now, updated_at=now,
                          deadline_at=spec.deadline_at(now))
            fields: dict[Any, Any] = {"id": sweep.id, "spec": spec.model_dump_json(), "state": sweep.state.value,
                      "reason": sweep.reason, "created_at": repr(now), "updated_at": repr(now),
                      "deadline_at": json.dumps(sweep.deadline_at), "spent_usd": "0", "peak_instances": "0"}
            if self.redis.hsetnx(self.key(sweep.id), "id", sweep.id):
                pipe = self.redis.pipeline(transaction=True)
                pipe.hset(self.key(sweep.id), mapping=fields)
                pipe.zadd(self.index, {sweep.id: now})
                pipe.sadd(self.open_set, sweep.id)
                pipe.execute()
                self.event(sweep.id, "submitted", f"{spec.trial_count()} trials at most, {spec.method.value}",
                           {"max_parallel": spec.max_parallel, "budget_usd": spec.budget_usd})
                return sweep
        raise Conflict("could not allocate a unique sweep id")  # pragma: no cover

    def get(self, sweep_id: str) -> Sweep:
        raw = {_text(k): _text(v) for k, v in self.redis.hgetall(self.key(sweep_id)).items()}
        if "spec" not in raw:
            raise NotFound(f"no sweep {sweep_id}", sweep_id=sweep_id)
        decision = json.loads(raw.get("decision") or "null")
        return Sweep(id=raw["id"], spec=SweepSpec.model_validate_json(raw["spec"]), state=SweepState(raw["state"]),
                     reason=raw.get("reason", ""), created_at=float(raw["created_at"]),
                     updated_at=float(raw["updated_at"]), ended_at=json.loads(raw.get("ended_at") or "null"),
                     deadline_at=json.loads(raw.get("deadline_at") or "null"),
                     spent_usd=float(raw.get("spent_usd") or 0.0),
                     decision=Decision.model_validate(decision) if decision else None,
                     peak_instances=int(raw.get("peak_instances") or 0))

    def recent(self, limit: int = 100) -> list[Sweep]:
        """The most recent sweeps, oldest first."""
        out = []
        for sweep_id in self.redis.zrange(self.index, -limit, -1):
            try:
                out.append(self.get(_text(sweep_id)))
            except NotFound:
                continue
        return out

    def open_ids(self) -> list[str]:
        return sorted(_text(x) for x in self.redis.smembers(self.open_set))

    def settle(self, sweep_id: str) -> None:
        """The driver has nothing left to do for this sweep."""
        self.redis.srem(self.open_set, sweep_id)

    def end(self, sweep_id: str, state: SweepState, reason: str, data: dict[str, Any] | None = None) -> bool:
        """RUNNING -> `state` once; False when the sweep had already ended (another end came first)."""
        now = self.clock()
        got = self._end(keys=[self.key(sweep_id), self.key(sweep_id, "events")],
                        args=[state.value, reason, repr(now), str(EVENTS_CAP), json.dumps(data or {})])
        if got is None:
            raise NotFound(f"no sweep {sweep_id}", sweep_id=sweep_id)
        return bool(int(got[0]))

    def set_decision(self, sweep_id: str, decision: Decision) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.key(sweep_id), mapping={"decision": decision.model_dump_json(), "updated_at": repr(self.clock())})
        pipe.execute()
        peak = int(self.redis.hget(self.key(sweep_id), "peak_instances") or 0)
        if decision.actual > peak:
            self.redis.hset(self.key(sweep_id), "peak_instances", str(decision.actual))

    # --- trials -------------------------------------------------------------------------------------

    def trials(self, sweep_id: str) -> list[Trial]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.key(sweep_id, "trials"))
        pipe.hgetall(self.key(sweep_id, "cost"))
        raw, cost = pipe.execute()
        out = []
        for number, text in raw.items():
            trial = Trial.model_validate_json(_text(text))
            trial.cost_usd = float(_text(cost.get(number, cost.get(str(_text(number)), "0")) or 0))
            out.append(trial)
        return sorted(out, key=lambda t: t.number)

    def trial(self, sweep_id: str, number: int) -> Trial | None:
        text = self.redis.hget(self.key(sweep_id, "trials"), str(number))
        return None if text is None else Trial.model_validate_json(_text(text))

    def intend(self, sweep_id: str, trial: Trial) -> bool:
        """Record a trial before its job is submitted (job_id None); False when the number is taken."""
        return bool(self.redis.hsetnx(self.key(sweep_id, "trials"), str(trial.number), trial.model_dump_json()))

    def put_trial(self, sweep_id: str, trial: Trial) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key(sweep_id, "trials"), str(trial.number), trial.model_dump_json(exclude={"cost_usd"}))
        if trial.job_id is not None:
            pipe.hset(self.job_index, trial.job_id, f"{sweep_id}:{trial.number}")
        pipe.execute()

    def trial_of_job(self, job_id: str) -> tuple[str, int] | None:
        text = self.redis.hget(self.job_index, job_id)
        if text is None:
            return None
        sweep_id, number = _text(text).rsplit(":", 1)
        return sweep_id, int(number)

    # --- spend --------------------------------------------------------------------------------------

    def billed(self, sweep_id: str) -> dict[int, dict[str, Any]]:
        return {int(_text(k)): json.loads(_text(v)) for k, v in self.redis.hgetall(self.key(sweep_id, "billed")).items()}

    def accrue(self, sweep_id: str, instance_id: int, job_id: str, number: int, until: float, dollars: float,
               rate: float = 0.0, gone: bool = False) -> None:
        """Bill `dollars` to the sweep and the trial, and move the instance's accrual to `until` (its $/h now;
        `gone`: it left the listing, billed to `until` already)."""
        position = json.dumps({"job": job_id, "number": number, "until": until, "rate": rate, "gone": gone})
        self._accrue(keys=[self.key(sweep_id, "billed"), self.key(sweep_id), self.key(sweep_id, "cost")],
                     args=[str(instance_id), position, str(number), repr(max(dollars, 0.0))])

    # --- events -------------------------------------------------------------------------------------

    def event(self, sweep_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.redis.xadd(self.key(sweep_id, "events"), {"at": repr(self.clock()), "kind": kind, "message": message,
                                                        "data": json.dumps(data or {}, default=str)},
                        maxlen=EVENTS_CAP, approximate=True)

    def events(self, sweep_id: str, limit: int = 1000) -> list[SweepEvent]:
        entries: Any = self.redis.xrange(self.key(sweep_id, "events"), count=limit)
        out = []
        for eid, raw in entries:
            f = {_text(k): _text(v) for k, v in raw.items()}
            out.append(SweepEvent(id=_text(eid), at=float(f["at"]), kind=f["kind"], message=f["message"],
                                  data=json.loads(f.get("data") or "{}")))
        return out
