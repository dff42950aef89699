"""The one applier: executes a `Plan` in order. Transitions go through the JobStore only (epoch-fenced);
creates and destroys go to RQ action workers, or run inline (`inline=True`: tests, the single-process demo).

A refused transition (StaleEpoch, IllegalTransition: the world moved since the snapshot) is not an error:
the rest of that job's actions are skipped and the next pass re-decides from what it reads then. A destroy
is first written as a durable obligation, then driven; a create is enqueued at most once per attempt while
one is queued (the action itself holds the per-attempt lock that makes a second one harmless).

The applier checks the leader's fencing token (`fence()`) before it starts and before every marketplace
action, so a deposed leader stops acting as soon as it can know. Never decides anything.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rq import Retry

from vastfleet.errors import BadInput, IllegalTransition, NotFound, RetryLater, StaleEpoch, VastfleetError
from vastfleet.logs import event
from vastfleet.queue.actions import CREATE, DESTROY, SALVAGE, action_queue
from vastfleet.queue.heartbeats import request_checkpoint
from vastfleet.scheduler import actions as act
from vastfleet.scheduler.plan import Create, Destroy, Forget, Plan, RaiseBid, Salvage, StartMove, Transition
from vastfleet.scheduler.salvage import Salvages, salvage, salvage_job
from vastfleet.spec.money import format_price

log = logging.getLogger(__name__)


@dataclass
class Applied:
    transitions: int = 0
    refused: int = 0
    creates: int = 0
    destroys: int = 0
    forgotten: int = 0
    bids: int = 0
    salvages: int = 0
    errors: list[str] = field(default_factory=list)
    transitioned: list[Transition] = field(default_factory=list)  # the transitions that applied


class Applier:
    def __init__(self, ctx: act.ActionContext, *, inline: bool = False, context_key: str = "default",
                 queue_ttl_s: float = 60.0, fence: Callable[[], bool] = lambda: True,
                 retries: int = 3) -> None:
        self.ctx = ctx
        self.inline = inline
        self.context_key = context_key
        self.queue_ttl_s = queue_ttl_s  # a queued action not picked up in this long is driven again
        self.fence = fence
        self.retries = retries

    def apply(self, plan: Plan) -> Applied:
        done = Applied()
        if not plan.actions:
            return done
        if not self.fence():
            done.errors.append("lost the leader lease before applying")
            return done
        broken: set[str] = set()  # jobs whose chain a refused transition cut
        for action in plan.actions:
            job_id = getattr(action, "job_id", None)
            if job_id is not None and job_id in broken and not isinstance(action, Destroy):
                continue
            try:
                if isinstance(action, Transition):
                    self._transition(action, done, broken)
                    continue
                if not self.fence():
                    done.errors.append("lost the leader lease mid-plan")
                    return done
                if isinstance(action, Create):
                    self._create(action, done)
                elif isinstance(action, Destroy):
                    self._destroy(action, done)
                elif isinstance(action, Forget):
                    act.forget_obligation(self.ctx, action.instance_id)
                    self._note(action.job_id, "destroyed", f"instance {action.instance_id} destroyed: {action.reason}",
                               {"instance_id": action.instance_id})
                    done.forgotten += 1
                elif isinstance(action, RaiseBid):
                    self._bid(action, done)
                elif isinstance(action, Salvage):
                    self._salvage(action, done)
                elif isinstance(action, StartMove):
                    self._start_move(action)
            except (RetryLater, VastfleetError) as exc:
                # One action failing must not stop the others; the next pass re-drives it.
                log.warning("action %s failed: %s", type(action).__name__, exc)
                done.errors.append(f"{type(action).__name__}: {exc}")
                if job_id is not None:
                    broken.add(job_id)
        return done

    def _transition(self, t: Transition, done: Applied, broken: set[str]) -> None:
        try:
            self.ctx.store.transition(t.job_id, t.to, t.reason, expected_epoch=t.expected_epoch, **dict(t.fields))
        except (StaleEpoch, IllegalTransition) as exc:
            event(log, "transition refused", str(exc), job=t.job_id, epoch=t.expected_epoch, to=t.to.value)
            done.refused += 1
            broken.add(t.job_id)
            return
        done.transitions += 1  # the store logs every transition it makes, whoever asks
        done.transitioned.append(t)

    def _note(self, job_id: str | None, kind: str, reason: str, data: dict[str, object]) -> None:
        """An event on the job's history (its job may be gone: then only the log tells)."""
        if job_id:
            try:
                self.ctx.store.note(job_id, kind, reason, data)
            except NotFound:
                pass

    def _bid(self, b: RaiseBid, done: Applied) -> None:
        if not (math.isfinite(b.price) and 0 < b.price <= b.ceiling * (1 + 1e-9)):
            # Never reached by a sound plan: the last line between arithmetic and other people's money.
            raise BadInput(f"bid ${b.price}/h for instance {b.instance_id} refused: above its ceiling"
                           f" ${b.ceiling}/h or not a positive number")
        self.ctx.market.change_bid(b.instance_id, b.price)
        if b.start:
            self.ctx.market.start_instance(b.instance_id)
        job = self.ctx.store.update(b.job_id, expected_epoch=self.ctx.store.get(b.job_id).epoch, bid=b.price,
                                    **b.fields)
        event(log, "bid", b.reason, job=b.job_id, epoch=job.epoch, instance=b.instance_id,
              price=format_price(b.price), restart=b.start)
        self._note(b.job_id, "bid", f"bid set to {format_price(b.price)}" + (" and the instance started again"
                   if b.start else "") + f": {b.reason}", {"instance_id": b.instance_id, "price": b.price})
        done.bids += 1

    def _start_move(self, m: StartMove) -> None:
        """Mark the job (epoch-fenced), then ask its agent to checkpoint now: the move ends the attempt once
        that checkpoint is committed (`recovery`)."""
        job = self.ctx.store.update(m.job_id, expected_epoch=m.epoch, **m.fields)
        request_checkpoint(self.ctx.redis, m.job_id, m.epoch, prefix=self.ctx.prefix)
        self._note(m.job_id, "move", f"moving: {m.reason} (a checkpoint first)", {"epoch": m.epoch})
        event(log, "move", m.reason, job=m.job_id, epoch=job.epoch, instance=job.instance_id)

    def _salvage(self, s: Salvage, done: Applied) -> None:
        book = Salvages(self.ctx.redis, self.ctx.prefix)
        if book.start(s.job_id, s.epoch, s.instance_id, s.pending, self.ctx.store.clock()):
            self._note(s.job_id, "salvage", f"salvaging checkpoint step {s.pending.step} off instance"
                       f" {s.instance_id} before it goes: {s.reason}", {"instance_id": s.instance_id})
        if not book.claim(s.job_id, self.queue_ttl_s):
            return  # one is in flight
        done.salvages += 1
        if self.inline:
            salvage(self.ctx, s.job_id)
            return
        action_queue(self.ctx.redis, SALVAGE).enqueue(salvage_job, self.context_key, s.job_id,
                                                      job_timeout=int(self.queue_ttl_s),
                                                      description=f"salvage {s.job_id}/{s.epoch}")

    def _create(self, c: Create, done: Applied) -> None:
        r = self.ctx.redis
        if not r.set(self.ctx.create_queued_key(c.job_id, c.epoch), "1", nx=True, px=int(self.queue_ttl_s * 1000)):
            return  # one is queued already
        done.creates += 1
        if self.inline:
            act.create(self.ctx, c.job_id, c.epoch, c.offer_id, c.bid)
            return
        action_queue(r, CREATE).enqueue(
            act.create_instance, self.context_key, c.job_id, c.epoch, c.offer_id, c.bid,
            retry=Retry(max=self.retries), job_timeout=int(self.ctx.create_lock_s),
            description=f"create {c.job_id}/{c.epoch}",
        )

    def _destroy(self, d: Destroy, done: Applied) -> None:
        if act.add_obligation(self.ctx, d.instance_id, d.job_id, d.epoch, d.reason) and d.job_id:  # durable first
            try:  # the job's history says when and why its instance went
                self.ctx.store.note(d.job_id, "teardown", d.reason, {"instance_id": d.instance_id, "epoch": d.epoch})
            except NotFound:
                pass
        r = self.ctx.redis
        if not r.set(self.ctx.destroy_queued_key(d.instance_id), "1", nx=True, px=int(self.queue_ttl_s * 1000)):
            return
        done.destroys += 1
        event(log, "destroy", d.reason, job=d.job_id, epoch=d.epoch, instance=d.instance_id)
        if self.inline:
            act.destroy(self.ctx, d.instance_id)
            return
        action_queue(r, DESTROY).enqueue(act.destroy_instance, self.context_key, d.instance_id,
                                         retry=Retry(max=self.retries), description=f"destroy {d.instance_id}")
