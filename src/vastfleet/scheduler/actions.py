"""The marketplace actions the applier hands to RQ workers (or runs inline): create and destroy.

Both are idempotent, so a retry, a re-drive by the next pass, or a second worker never rents twice:

* create (job, epoch): holds a per-attempt lock; re-reads the job (a job that moved on is not rented for);
  looks for an instance already carrying the label `vf:<job>:<epoch>` and ADOPTS it instead of renting;
  only then rents, and records the instance with PLACING -> BOOTING fenced by the epoch. A kill between the
  rent and the record leaves a labelled instance that the next create or the next pass adopts.
* destroy (instance): a durable obligation in the Redis hash `{p}:sched:destroy` (instance id -> why),
  written by the applier BEFORE the call; the destroy call is idempotent and the obligation is dropped only
  when a listing shows the instance gone (the loop's `Forget`), so a crash anywhere re-drives it.

RQ job functions take a context key: the process that runs the worker registers the `ActionContext` under
that key (`register`). Never decides WHAT to create or destroy: `plan` does.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from vastfleet.errors import IllegalTransition, MarketError, StaleEpoch
from vastfleet.logs import event
from vastfleet.market.protocol import Marketplace
from vastfleet.queue import JobStore
from vastfleet.scheduler.labels import label_for
from vastfleet.scheduler.spend import SpendLedger
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.market import CreateRequest
from vastfleet.spec.money import format_price

log = logging.getLogger(__name__)

RequestBuilder = Callable[[Job, int, float | None], CreateRequest]

_RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class ActionContext:
    store: JobStore
    market: Marketplace
    redis: redis.Redis  # decode_responses=True
    build_request: RequestBuilder  # the CreateRequest for (job, epoch, bid): image, onstart with agent token
    prefix: str = "vf"
    create_lock_s: float = 120.0  # longer than one create call may take
    on_event: Callable[[str, dict[str, Any]], None] | None = None  # metrics hook: ("created", {...})
    spend: SpendLedger | None = None  # the meters: opened by a rental, closed by its destroy
    ckpt: Any = None  # the checkpoint store a salvage copies into and verifies (None: no salvage)
    salvage_connection: str = ""  # the marketplace's cloud connection whose root holds the store's keys
    salvage_root: str = ""  # where the store's keys start inside that connection

    # --- keys -----------------------------------------------------------------------------------------

    @property
    def obligations_key(self) -> str:
        return f"{self.prefix}:sched:destroy"

    def create_lock_key(self, job_id: str, epoch: int) -> str:
        return f"{self.prefix}:sched:creating:{job_id}:{epoch}"

    def create_queued_key(self, job_id: str, epoch: int) -> str:
        return f"{self.prefix}:sched:create-queued:{job_id}:{epoch}"

    def destroy_queued_key(self, instance_id: int) -> str:
        return f"{self.prefix}:sched:destroy-queued:{instance_id}"

    def emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:
                log.exception("action event hook failed")


_CONTEXTS: dict[str, ActionContext] = {}


def register(key: str, ctx: ActionContext) -> None:
    _CONTEXTS[key] = ctx


def unregister(key: str) -> None:
    _CONTEXTS.pop(key, None)


def _context(key: str) -> ActionContext:
    try:
        return _CONTEXTS[key]
    except KeyError:
        raise RuntimeError(f"no action context {key!r} in this worker process (runtime.register_actions)") from None


# --- obligations ------------------------------------------------------------------------------------------


def add_obligation(ctx: ActionContext, instance_id: int, job_id: str | None, epoch: int | None, reason: str) -> bool:
    """Durable: written before any destroy call, removed only when a listing shows the instance gone.
    True when the obligation is new."""
    why = json.dumps({"job_id": job_id, "epoch": epoch, "reason": reason, "since": time.time()})
    return bool(ctx.redis.hsetnx(ctx.obligations_key, str(instance_id), why))


def obligations(ctx: ActionContext) -> dict[int, dict[str, Any]]:
    raw = ctx.redis.hgetall(ctx.obligations_key)
    return {int(k): json.loads(v) for k, v in raw.items()}


def forget_obligation(ctx: ActionContext, instance_id: int) -> None:
    ctx.redis.hdel(ctx.obligations_key, str(instance_id))


# --- create -----------------------------------------------------------------------------------------------


def create(ctx: ActionContext, job_id: str, epoch: int, offer_id: int, bid: float | None) -> int | None:
    """Rent (or adopt) the instance of attempt (job, epoch); returns its id, or None when nothing was done."""
    lock_key, token = ctx.create_lock_key(job_id, epoch), secrets.token_hex(8)
    if not ctx.redis.set(lock_key, token, nx=True, px=int(ctx.create_lock_s * 1000)):
        log.info("create %s/%s: another worker holds it", job_id, epoch)
        return None
    try:
        return _create_locked(ctx, job_id, epoch, offer_id, bid)
    finally:
        ctx.redis.eval(_RELEASE_LUA, 1, lock_key, token)
        ctx.redis.delete(ctx.create_queued_key(job_id, epoch))


def _create_locked(ctx: ActionContext, job_id: str, epoch: int, offer_id: int, bid: float | None) -> int | None:
    job = ctx.store.get(job_id)
    if job.epoch != epoch or job.state != JobState.PLACING:
        log.info("create %s/%s: the job moved on (%s, epoch %s); not renting", job_id, epoch, job.state, job.epoch)
        return None
    refused = bid_refusal(job, bid)
    if refused:
        event(log, "create refused", refused, job=job_id, epoch=epoch, offer=offer_id, level=logging.ERROR)
        _back_to_pending(ctx, job_id, epoch, f"create refused: {refused}")
        return None
    label = label_for(job_id, epoch, ctx.prefix)
    existing = sorted(i.id for i in ctx.market.list_instances(label=label) if i.label == label)
    if existing:
        instance_id, how = existing[0], "adopted by its label"
        event(log, "adopted", f"instance {instance_id} already carries the label {label}", job=job_id, epoch=epoch,
              instance=instance_id)
    else:
        request = ctx.build_request(job, epoch, bid)
        try:
            instance_id = ctx.market.create_instance(offer_id, request)
        except MarketError as exc:  # offer gone, funds, refused: permanent for this offer; MarketUnavailable retries
            event(log, "create failed", str(exc), job=job_id, epoch=epoch, offer=offer_id, level=logging.WARNING)
            _back_to_pending(ctx, job_id, epoch, f"create failed: {exc}")
            return None
        how = f"rented offer {offer_id}" + (f" at bid {format_price(bid)}" if bid is not None else " on demand")
        event(log, "created", how, job=job_id, epoch=epoch, instance=instance_id, offer=offer_id)
        if ctx.spend is not None:
            ctx.spend.opened(instance_id, job_id, epoch)
        ctx.emit("created", job_id=job_id, epoch=epoch, instance_id=instance_id, bid=bid)
    try:
        ctx.store.transition(job_id, JobState.BOOTING, f"instance {instance_id}: {how}", expected_epoch=epoch,
                             instance_id=instance_id)
    except (StaleEpoch, IllegalTransition):
        now = ctx.store.get(job_id)
        if not (now.epoch == epoch and now.instance_id == instance_id):
            # The job moved on while we rented (cancelled, or re-placed): the instance is nobody's.
            add_obligation(ctx, instance_id, job_id, epoch, "rented for an attempt that moved on")
            return None
    return instance_id


def bid_refusal(job: Job, bid: float | None) -> str | None:
    """Why a bid must not be placed (None: fine). The policy never plans one of these; this is the last check
    before a rental, so that no arithmetic anywhere can turn into a bid above the offer's on-demand price or
    the job's cap."""
    if bid is None:
        return None
    if not math.isfinite(bid) or bid <= 0:
        return f"bid {bid!r} is not a positive number"
    if job.offer_dph is not None and bid > job.offer_dph * (1 + 1e-9):
        return f"bid ${bid:.4f}/h is above the offer's on-demand ${job.offer_dph:.4f}/h"
    cap = job.spec.resources.max_price_per_hour
    if cap is not None and bid > cap * (1 + 1e-9):
        return f"bid ${bid:.4f}/h is above the job's cap ${cap:.4f}/h"
    return None


def _back_to_pending(ctx: ActionContext, job_id: str, epoch: int, reason: str) -> None:
    try:
        ctx.store.transition(job_id, JobState.PENDING, reason, expected_epoch=epoch)
    except (StaleEpoch, IllegalTransition):
        pass


# --- destroy ----------------------------------------------------------------------------------------------


def destroy(ctx: ActionContext, instance_id: int) -> bool:
    """Drive one obligation: call destroy (idempotent). The obligation stays until a listing shows it gone."""
    try:
        why = ctx.redis.hget(ctx.obligations_key, str(instance_id))
        if why is None:
            return False  # satisfied meanwhile
        ctx.market.destroy_instance(instance_id)
        if ctx.spend is not None:
            ctx.spend.closed(instance_id)
        owner = json.loads(why)
        event(log, "destroy called", str(owner.get("reason", "")), job=owner.get("job_id"), epoch=owner.get("epoch"),
              instance=instance_id)
        ctx.emit("destroyed", instance_id=instance_id)
        return True
    finally:
        ctx.redis.delete(ctx.destroy_queued_key(instance_id))


# --- RQ entry points (module-level functions: RQ imports them by name) --------------------------------------


def create_instance(context_key: str, job_id: str, epoch: int, offer_id: int, bid: float | None) -> int | None:
    return create(_context(context_key), job_id, epoch, offer_id, bid)


def destroy_instance(context_key: str, instance_id: int) -> bool:
    return destroy(_context(context_key), instance_id)
