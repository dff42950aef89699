"""Salvage: checkpoints an interrupted attempt wrote but never uploaded, copied off its disk before it goes.

When an attempt is lost while its agent had a checkpoint pending (the heartbeat names the newest one: its
directory, step and manifest digest) and its disk still exists (paused, stopped, exited, agent silent on a
running instance; not gone), the recovery holds the job in INTERRUPTED and a salvage action copies that
directory with vast's cloud copy (it works while the instance is stopped) into the checkpoint store, under
the key an upload of it would have had. The control plane then lists and hashes what arrived: only when
that manifest's digest is the agent's does it commit the checkpoint (the Iron Law: verified off-box first);
the job is then re-queued from it and the instance destroyed. Every other outcome is a rule with its reason:
no copy after `tries` attempts or `timeout` seconds, a copy that does not verify; the job is re-queued from
its last committed checkpoint, and the instance destroyed all the same (never left stopped). A copy the
marketplace could not run at all (the host offline, the API failing) counts no try: the disk is still there,
so it is tried again at the next pass until the timeout; an instance gone is given up at once.

State in Redis: `{prefix}:salvage`, a hash job id -> JSON record of its attempt's salvage (queued, done,
failed). The action runs on an RQ worker (the `vastfleet-salvage` queue) or inline; one at a time per job.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Literal

import redis

from vastfleet.errors import InstanceGone, RetryLater, StaleEpoch, VastfleetError
from vastfleet.logs import event
from vastfleet.spec.job import CheckpointRef
from vastfleet.storage.manifest import FileEntry, Manifest, checkpoint_prefix

if TYPE_CHECKING:
    from vastfleet.scheduler.actions import ActionContext
    from vastfleet.scheduler.supervise import PendingCheckpoint

log = logging.getLogger(__name__)

CKPT_DIR = "/workspace/.vastfleet/ckpt"  # where the agent keeps checkpoints on the instance (its default workdir)


@dataclass(frozen=True)
class SalvageRecord:
    epoch: int
    instance_id: int
    step: int
    dir: str
    digest: str
    files: int
    since: float
    status: Literal["queued", "done", "failed"] = "queued"
    tries: int = 0
    reason: str = ""


class Salvages:
    def __init__(self, client: redis.Redis, prefix: str = "vf") -> None:
        self.redis = client
        self.key = f"{prefix}:salvage"
        self.queued_prefix = f"{prefix}:sched:salvage-queued"

    def start(self, job_id: str, epoch: int, instance_id: int, pending: PendingCheckpoint, now: float) -> bool:
        """Record a salvage of this attempt (once: a second start of the same attempt changes nothing)."""
        have = self.get(job_id)
        if have is not None and have.epoch == epoch:
            return False
        rec = SalvageRecord(epoch, instance_id, pending.step, pending.dir, pending.digest, pending.files, now)
        self.redis.hset(self.key, job_id, json.dumps(asdict(rec)))
        return True

    def get(self, job_id: str) -> SalvageRecord | None:
        raw = self.redis.hget(self.key, job_id)
        return None if raw is None else SalvageRecord(**json.loads(raw))

    def all(self) -> dict[str, SalvageRecord]:
        raw = self.redis.hgetall(self.key)
        return {str(job): SalvageRecord(**json.loads(text)) for job, text in raw.items()}

    def save(self, job_id: str, rec: SalvageRecord) -> None:
        self.redis.hset(self.key, job_id, json.dumps(asdict(rec)))

    def forget(self, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.hdel(self.key, *job_ids)

    def claim(self, job_id: str, ttl_s: float) -> bool:
        """One salvage action in flight per job (queued or running)."""
        return bool(self.redis.set(f"{self.queued_prefix}:{job_id}", "1", nx=True, px=int(ttl_s * 1000)))

    def release(self, job_id: str) -> None:
        self.redis.delete(f"{self.queued_prefix}:{job_id}")


def salvage(ctx: ActionContext, job_id: str, tries: int = 3) -> str:
    """One try at the job's queued salvage: copy, verify, commit. Returns the record's status after it."""
    book = Salvages(ctx.redis, ctx.prefix)
    try:
        rec = book.get(job_id)
        if rec is None or rec.status != "queued":
            return "none" if rec is None else rec.status
        rec = replace(rec, tries=rec.tries + 1)
        try:
            step = _copy_verify_commit(ctx, job_id, rec)
        except _NotNow as exc:  # the copy never ran: no try spent, the plan's timeout bounds the waiting
            reason = f"salvage of checkpoint step {rec.step} waits: {exc}"
            book.save(job_id, replace(rec, tries=rec.tries - 1, reason=reason))
            event(log, "salvage waits", reason, job=job_id, epoch=rec.epoch, instance=rec.instance_id)
            return "queued"
        except (VastfleetError, OSError, ValueError) as exc:
            gone = isinstance(exc, InstanceGone)
            status: Literal["queued", "failed"] = "failed" if rec.tries >= tries or gone else "queued"
            reason = f"salvage of checkpoint step {rec.step} failed ({rec.tries} of {tries} tries): {exc}"
            book.save(job_id, replace(rec, status=status, reason=reason))
            event(log, "salvage failed", reason, job=job_id, epoch=rec.epoch, instance=rec.instance_id)
            if status == "failed":
                _note(ctx, job_id, "salvage", reason, rec)
            return status
        reason = f"salvaged checkpoint step {step} off instance {rec.instance_id}: copied, verified, committed"
        book.save(job_id, replace(rec, status="done", reason=reason))
        event(log, "salvaged", reason, job=job_id, epoch=rec.epoch, instance=rec.instance_id)
        _note(ctx, job_id, "salvage", reason, rec)
        return "done"
    finally:
        book.release(job_id)


def _copy_verify_commit(ctx: ActionContext, job_id: str, rec: SalvageRecord) -> int:
    if ctx.ckpt is None or not ctx.salvage_connection:
        raise ValueError("no checkpoint store or cloud connection to salvage into")
    prefix = checkpoint_prefix(job_id, rec.epoch, rec.step, rec.digest)
    try:
        cost = ctx.market.cloud_copy(rec.instance_id, f"{CKPT_DIR}/{rec.dir}", ctx.salvage_root + prefix,
                                     ctx.salvage_connection, to_cloud=True)
    except RetryLater as exc:  # vast's API failing (429, 5xx, timeouts): the copy never ran
        raise _NotNow(f"the marketplace could not copy off instance {rec.instance_id} now ({exc})") from None
    except InstanceGone:
        raise
    except VastfleetError:
        if _host_offline(ctx, rec.instance_id):  # refused while its host is down: the disk comes back with it
            raise _NotNow(f"instance {rec.instance_id}'s host is offline") from None
        raise
    if cost and ctx.spend is not None:
        ctx.spend.add(job_id, cost)
    files: dict[str, FileEntry] = {}
    for key in ctx.ckpt.keys_under(prefix):
        stat = ctx.ckpt.stat(key)
        if stat is not None:
            files[key[len(prefix):]] = FileEntry(size=stat[0], sha256=stat[1])
    if not files:
        raise ValueError("the copy brought no file")
    manifest = Manifest(step=rec.step, files=files)
    if manifest.digest != rec.digest or len(files) != rec.files:
        raise ValueError(f"the copy ({len(files)} files, digest {manifest.digest}) is not what the agent wrote"
                         f" ({rec.files} files, digest {rec.digest})")
    ref = CheckpointRef(epoch=rec.epoch, step=rec.step, prefix=prefix, files=manifest.as_files(),
                        committed_at=time.time(), bytes=manifest.total_bytes)
    try:
        ctx.store.commit_checkpoint(job_id, rec.epoch, ref)
    except StaleEpoch:
        raise ValueError("the job moved on before the copy was committed") from None
    return rec.step


def _host_offline(ctx: ActionContext, instance_id: int) -> bool:
    try:
        inst = ctx.market.get_instance(instance_id)
    except VastfleetError:
        return False
    return inst is not None and (inst.actual_status or "").lower() == "offline"


class _NotNow(Exception):
    """The cloud copy could not run now; the disk is still there."""


def _note(ctx: ActionContext, job_id: str, kind: str, reason: str, rec: SalvageRecord) -> None:
    try:
        ctx.store.note(job_id, kind, reason, {"instance_id": rec.instance_id, "step": rec.step})
    except VastfleetError:
        pass


def salvage_job(context_key: str, job_id: str) -> str:
    """The RQ entry point (a module-level function: RQ imports it by name)."""
    from vastfleet.scheduler.actions import _context

    return salvage(_context(context_key), job_id)
