"""What our rentals cost, from the marketplace's own figures, kept in Redis so that it survives restarts.

Each pass the leader accrues every rental of ours the listing shows: since its last accrual, compute at the
rate it pays (`dph_base`: its bid, or the on-demand price) while it holds GPUs (loading or running), and its
disk (`storage_dph`) in every state until destroyed, as vast bills. The status and rates seen at the last
accrual stand for the interval since, so the error is at most one pass of a rate change. A rental leaves the
books when it is destroyed (the destroy action closes it at that moment) or, absent from a successful
listing without a close, when that listing is seen; a destroyed instance that shows again (vast's ghosts)
is not reopened. Bandwidth a cloud copy bills is added by its action (`add`).

Keys under the prefix: `spend:inst` (instance id -> JSON record of the open rental), `spend:closed` (ids
destroyed, with when), `spend:job` (job id -> dollars), `spend:total`, and `spend:day:YYYY-MM-DD`,
`spend:month:YYYY-MM` for the fleet's caps. Never decides anything; one writer (the leader) per pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import redis

from vastfleet.queue.keys import Keys
from vastfleet.scheduler.labels import parse_label
from vastfleet.spec.market import Instance

BILLED = ("loading", "running")  # vast bills compute while the instance holds its GPUs
CLOSED_KEEP_S = 3600.0  # how long a destroyed instance is remembered (vast shows ghosts for seconds)


@dataclass
class Rental:
    job_id: str
    epoch: int
    at: float  # accrued up to here
    billed: bool  # held its GPUs when last seen
    compute_dph: float
    storage_dph: float
    seen: bool = True  # False: opened by the create, rates not listed yet (the first listing's apply)


@dataclass(frozen=True)
class Burn:
    """What the fleet costs now and has cost, as the caps read it."""

    per_hour: float  # $/h of our rentals as they are now
    today: float  # $ spent this UTC day
    month: float  # $ this UTC month
    total: float


def _rates(inst: Instance) -> tuple[float, float]:
    storage = inst.storage_dph or 0.0
    compute = inst.dph_base if inst.dph_base is not None else max((inst.dph_total or 0.0) - storage, 0.0)
    return max(compute, 0.0), max(storage, 0.0)


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%d")


def _month(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m")


class SpendLedger:
    def __init__(self, client: redis.Redis, prefix: str = "vf", clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.prefix = prefix
        self.clock = clock
        self.open_key = f"{prefix}:spend:inst"
        self.closed_key = f"{prefix}:spend:closed"
        # instances that left the listing without our destroy, and until when they were charged: one that
        # shows again (a listing that skipped it, a zombie) goes on from there, not from its start again
        self.dropped_key = f"{prefix}:spend:dropped"
        self.job_key = Keys(prefix).spend_jobs  # the store reads it into each job's cost_usd
        self.total_key = f"{prefix}:spend:total"

    # --- writes (the leader's pass and its actions) ---------------------------------------------------------

    def opened(self, instance_id: int, job_id: str, epoch: int, at: float | None = None) -> None:
        """A rental was made (the create action): billing starts now, at rates the first listing tells."""
        rec = Rental(job_id, epoch, self.clock() if at is None else at, True, 0.0, 0.0, seen=False)
        self.redis.hsetnx(self.open_key, str(instance_id), json.dumps(asdict(rec)))

    def closed(self, instance_id: int, at: float | None = None) -> None:
        """The destroy went through: the next accrual stops the meter here."""
        self.redis.zadd(self.closed_key, {str(instance_id): self.clock() if at is None else at}, nx=True)

    def add(self, job_id: str, dollars: float, at: float | None = None) -> None:
        """A charge outside the meters (bandwidth of a cloud copy)."""
        if dollars > 0:
            pipe = self.redis.pipeline()
            self._book(pipe, {job_id: dollars}, self.clock() if at is None else at)
            pipe.execute()

    def accrue(self, instances: Sequence[Instance], now: float) -> Burn:
        """Accrue every open rental up to `now` from ONE successful listing; returns the fleet's burn."""
        raw = self.redis.hgetall(self.open_key)
        open_: dict[int, Rental] = {int(k): Rental(**json.loads(v)) for k, v in raw.items()}
        scored: list[tuple[str, float]] = self.redis.zrangebyscore(self.closed_key, "-inf", "+inf",
                                                                  withscores=True)  # type: ignore[assignment]
        closed = {int(m): float(s) for m, s in scored}
        dropped_scores: list[tuple[str, float]] = self.redis.zrangebyscore(
            self.dropped_key, "-inf", "+inf", withscores=True)  # type: ignore[assignment]
        dropped = {int(m): float(s) for m, s in dropped_scores}
        listed = {i.id: i for i in instances if parse_label(i.label, self.prefix) is not None}
        charges: dict[str, float] = {}
        pipe = self.redis.pipeline()
        per_hour = 0.0
        for iid, inst in listed.items():
            if iid in closed:
                continue  # a ghost of one we destroyed
            rec = open_.pop(iid, None)
            parsed = parse_label(inst.label, self.prefix)
            assert parsed is not None
            status = (inst.actual_status or "").lower()
            compute, storage = _rates(inst)
            if rec is None:  # first seen (adopted after a crash): from when it says it started, or now
                start = inst.start_date if inst.start_date is not None and inst.start_date <= now else now
                start = max(start, dropped.get(iid, start))  # charged already up to there
                rec = Rental(parsed[0], parsed[1], start, status in BILLED, compute, storage)
            elif not rec.seen:  # opened at the create: the interval since bills at what it shows now
                rec = Rental(rec.job_id, rec.epoch, rec.at, status in BILLED, compute, storage)
            _charge(charges, rec, now)
            rec = Rental(rec.job_id, rec.epoch, max(rec.at, now), status in BILLED, compute, storage)
            per_hour += (compute if rec.billed else 0.0) + storage
            pipe.hset(self.open_key, str(iid), json.dumps(asdict(rec)))
        for iid, rec in open_.items():  # not listed: destroyed by us (closed), or gone
            until = min(closed.get(iid, now), now)
            _charge(charges, rec, until)
            pipe.hdel(self.open_key, str(iid))
            if iid not in closed:
                pipe.zadd(self.dropped_key, {str(iid): max(until, rec.at)})
        pipe.zremrangebyscore(self.closed_key, "-inf", now - CLOSED_KEEP_S)
        pipe.zremrangebyscore(self.dropped_key, "-inf", now - CLOSED_KEEP_S)
        self._book(pipe, charges, now)
        pipe.execute()
        today, month, total = self.redis.mget(f"{self.prefix}:spend:day:{_day(now)}",
                                              f"{self.prefix}:spend:month:{_month(now)}", self.total_key)
        return Burn(per_hour, float(today or 0.0), float(month or 0.0), float(total or 0.0))

    def _book(self, pipe: redis.client.Pipeline, charges: dict[str, float], at: float) -> None:
        amount = sum(charges.values())
        for job_id, dollars in charges.items():
            if dollars > 0:
                pipe.hincrbyfloat(self.job_key, job_id, dollars)
        if amount > 0:
            pipe.incrbyfloat(self.total_key, amount)
            day, month = f"{self.prefix}:spend:day:{_day(at)}", f"{self.prefix}:spend:month:{_month(at)}"
            pipe.incrbyfloat(day, amount)
            pipe.expire(day, 3 * 86400)
            pipe.incrbyfloat(month, amount)
            pipe.expire(month, 62 * 86400)

    # --- reads ---------------------------------------------------------------------------------------------

    def of_jobs(self, job_ids: Iterable[str]) -> dict[str, float]:
        ids = list(job_ids)
        if not ids:
            return {}
        values = self.redis.hmget(self.job_key, ids)
        return {j: float(v) for j, v in zip(ids, values, strict=True) if v is not None}

    def total(self) -> float:
        return float(self.redis.get(self.total_key) or 0.0)


def _charge(charges: dict[str, float], rec: Rental, until: float) -> None:
    hours = max(0.0, until - rec.at) / 3600.0
    dollars = hours * ((rec.compute_dph if rec.billed else 0.0) + rec.storage_dph)
    if dollars > 0:
        charges[rec.job_id] = charges.get(rec.job_id, 0.0) + dollars
