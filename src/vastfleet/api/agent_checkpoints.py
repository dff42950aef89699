"""The agent API's checkpoint verbs: presign-upload, presign-download, commit, restore-failed, and the fence
on the local store's PUT route. Mixed into the agent API (`vastfleet.api.agent_routes`), which authenticates
the call and parses its body first.

Committed checkpoints are immutable: upload URLs are handed out only for steps above the attempt's committed
one, under a prefix that names the manifest's content (`manifest_prefix`), and both stores refuse to replace
a stored object. A file whose bytes (size and sha256) one of the job's committed checkpoints already holds is
answered `stored` instead of a URL (a Ray run re-snapshots mostly unchanged files): the commit records that
object's key for it and verifies it against the store like every other object. The API alone picks the reused
keys, from the job's own verified history, so an agent can neither name nor overwrite any key.

A restore that fails on the instance is checked against the store: a damaged checkpoint is dropped and the
job falls back to the previous verified one (`JobStore.drop_checkpoint`), or FAILS when none is left and
checkpoints are required, so a bad checkpoint never loops the job through new attempts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vastfleet.agent.tokens import AgentClaims
from vastfleet.api.agent_bodies import EmptyBody, RestoreFailedBody
from vastfleet.errors import BadInput, Conflict, Forbidden, NotFound, StaleEpoch
from vastfleet.queue import JobStore
from vastfleet.spec.job import CheckpointRef, Job, JobState
from vastfleet.storage.base import CheckpointStore
from vastfleet.storage.manifest import (
    FileEntry,
    Manifest,
    job_prefix,
    manifest_prefix,
    object_key,
    parse_checkpoint_key,
    require_verified,
    verify_objects,
)

if TYPE_CHECKING:
    from vastfleet.api.agent_routes import AgentHooks, AgentSettings

S = JobState
# The states in which an attempt may do each kind of thing: one place to change when a state is added.
CLAIMABLE = (S.BOOTING, S.RUNNING, S.PAUSED)
LIVE = (S.RUNNING, S.PAUSED)  # PAUSED: the marketplace paused it, yet its agent calls: it runs again
UPLOADING = (*LIVE, S.CANCELLED)  # a cancelled attempt still uploads what it wrote, then its instance goes
ENDED = (S.SUCCEEDED, S.FAILED, S.PENDING, S.INTERRUPTED)  # where a repeated finish finds its attempt


class CheckpointVerbs:
    store: JobStore
    ckpt: CheckpointStore
    hooks: AgentHooks
    settings: AgentSettings

    def _current(self, claims: AgentClaims, states: tuple[JobState, ...], reported_instance: Any = None) -> Job:
        raise NotImplementedError

    def _ended(self, job: Job) -> None:
        raise NotImplementedError

    @staticmethod
    def _hook(fn: Callable[..., None] | None, *args: Any) -> None:
        raise NotImplementedError

    def _urls_for(self, ref: CheckpointRef | None) -> dict[str, Any] | None:
        if ref is None:
            return None
        files = {
            rel: {"size": meta["size"], "sha256": meta["sha256"],
                  "url": self.ckpt.presign_get(object_key(ref.prefix, rel, meta), self.settings.url_expiry_s)}
            for rel, meta in ref.files.items()
        }
        return {"epoch": ref.epoch, "step": ref.step, "prefix": ref.prefix, "files": files}

    @staticmethod
    def _stored(job: Job) -> dict[tuple[int, str], str]:
        """(size, sha256) -> key of every object the job's committed checkpoints hold: what a new checkpoint need
        not upload again. Verified history only, so a key named here held those bytes when it was committed."""
        found: dict[tuple[int, str], str] = {}
        mine = job_prefix(job.id)
        for ref in [*job.checkpoint_history, *([job.latest_checkpoint] if job.latest_checkpoint else [])]:
            for rel, meta in ref.files.items():
                key = object_key(ref.prefix, rel, meta)
                if key.startswith(mine):
                    found[(int(meta["size"]), str(meta["sha256"]))] = key
        return found

    def may_put(self, key: str) -> None:
        """For the local store's PUT route: only the job's current, running attempt may still upload."""
        parsed = parse_checkpoint_key(key)
        if parsed is None:
            raise Forbidden("not a checkpoint object key")
        job_id, epoch, _step = parsed
        try:
            job = self.store.get(job_id)
        except NotFound:
            raise Forbidden("no such job") from None
        if job.epoch != epoch or job.state not in UPLOADING:
            raise Forbidden(f"attempt {epoch} of job {job_id} is over: its upload URLs no longer work")

    def presign_upload(self, claims: AgentClaims, manifest: Manifest) -> dict[str, Any]:
        """PUT URLs for the files of one new checkpoint step of this attempt."""
        job = self._current(claims, UPLOADING)
        prefix = manifest_prefix(claims.job_id, claims.epoch, manifest)
        latest = job.latest_checkpoint
        if latest is not None and latest.prefix == prefix:
            return {"step": manifest.step, "prefix": prefix, "committed": True, "files": {}}
        if latest is not None and latest.epoch == claims.epoch and latest.step is not None \
                and manifest.step <= latest.step:
            raise BadInput(f"checkpoint step {manifest.step} is at or below step {latest.step}, already committed"
                           " by this attempt: committed checkpoints are immutable")
        files: dict[str, Any] = {}
        stored = self._stored(job)
        for rel, entry in manifest.files.items():
            key = prefix + rel
            if stored.get((entry.size, entry.sha256), key) != key:
                files[rel] = {"stored": True}  # no URL: the commit points this file at the stored object
                continue
            files[rel] = {
                "url": self.ckpt.presign_put(key, entry.size, entry.sha256, self.settings.url_expiry_s),
                "method": "PUT",
                "headers": self.ckpt.put_headers(key, entry.size, entry.sha256),
            }
        return {"step": manifest.step, "prefix": prefix, "files": files}

    def presign_download(self, claims: AgentClaims, body: EmptyBody) -> dict[str, Any]:
        """Fresh GET URLs for the latest committed checkpoint (None when there is none)."""
        job = self._current(claims, LIVE)
        return {"checkpoint": self._urls_for(job.latest_checkpoint)}

    def commit(self, claims: AgentClaims, manifest: Manifest) -> dict[str, Any]:
        """Verify the stored objects of a step, then move the job's latest checkpoint to it."""
        job = self._current(claims, UPLOADING)
        prefix = manifest_prefix(claims.job_id, claims.epoch, manifest)
        stored = self._stored(job)  # the same choice presign-upload made: history only grows within an attempt
        keys = {rel: key for rel, e in manifest.files.items()
                if (key := stored.get((e.size, e.sha256))) is not None and key != prefix + rel}
        require_verified(self.ckpt, prefix, manifest, keys)  # every object, reused ones included, read back
        files: dict[str, dict[str, Any]] = dict(manifest.as_files())
        for rel, key in keys.items():
            files[rel] = {**files[rel], "key": key}
        ref = CheckpointRef(epoch=claims.epoch, step=manifest.step, prefix=prefix, files=files,
                            committed_at=self.store.clock(), bytes=manifest.total_bytes)
        try:
            job = self.store.commit_checkpoint(claims.job_id, claims.epoch, ref)
        except StaleEpoch:
            raise
        except Conflict as exc:  # older than the latest one, or a committed step again: refuse the commit only
            raise BadInput(str(exc)) from None
        self._hook(self.hooks.on_commit, job, ref)
        reused = sum(manifest.files[rel].size for rel in keys)
        return {"committed": True, "step": manifest.step, "bytes": ref.bytes, "prefix": prefix,
                "reused_files": len(keys), "uploaded_bytes": ref.bytes - reused}

    def restore_failed(self, claims: AgentClaims, body: RestoreFailedBody) -> dict[str, Any]:
        """The latest checkpoint did not verify on the instance: check the store, fall back or fail the job."""
        job = self._current(claims, LIVE)
        ref = job.latest_checkpoint
        if ref is None or ref.prefix != body.prefix:  # dropped already (a retried report): what is latest now
            return {"verified": False, "checkpoint": self._urls_for(ref)}
        what = f"checkpoint step {ref.step} of attempt {ref.epoch}"
        files = {rel: FileEntry(size=int(m["size"]), sha256=str(m["sha256"])) for rel, m in ref.files.items()}
        keys = {rel: object_key(ref.prefix, rel, m) for rel, m in ref.files.items()}
        problems = verify_objects(self.ckpt, ref.prefix, files, keys)
        if not problems:  # the store holds it intact: the instance could not read it (its network, its disk)
            self.store.note(job.id, "restore_failed", f"{what} did not restore on the instance but verifies in"
                            f" storage: {body.reason}", {"epoch": claims.epoch, "step": ref.step})
            return {"verified": True, "checkpoint": self._urls_for(ref)}
        found = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        job = self.store.drop_checkpoint(job.id, claims.epoch, ref.prefix,
                                         f"{what} dropped: it fails verification ({found}); agent: {body.reason}")
        if job.latest_checkpoint is None and job.spec.checkpoint.required:
            job = self.store.transition(job.id, S.FAILED, f"{what} fails verification ({found}) and no earlier"
                                        " verified checkpoint is left", expected_epoch=claims.epoch)
            self._ended(job)
            raise Conflict(f"job {job.id} FAILED: {what} fails verification and no earlier one is left")
        return {"verified": False, "checkpoint": self._urls_for(job.latest_checkpoint)}
