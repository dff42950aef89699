"""The agent API: what the agent on an instance may do, fenced by its per-attempt token and the job's epoch.

All routes are `POST /v1/agent/jobs/{job_id}/<verb>` with a JSON body and `Authorization: Bearer <agent
token>` (never the users' token):

    claim             BOOTING -> RUNNING ("agent claimed"); a restarted container of the same attempt
                      re-claims (RUNNING stays RUNNING). Answers the job's run/setup/env/runtime, the
                      heartbeat and checkpoint intervals and the latest checkpoint with presigned GET URLs.
                      PLACING (the instance booted before the scheduler wrote BOOTING) -> 503, retry.
    heartbeat         records progress (epoch-fenced) and the heartbeat key; answers
                      {"action": "continue" | "stop" | "checkpoint", "checkpoint_interval", ...}
    presign-upload    a manifest {step, files: {relpath: {size, sha256}}} -> a PUT URL + headers per file,
                      under jobs/<job>/epoch-<n>/step-<s>/ (no `..`, no absolute path; count/size limits)
    presign-download  fresh GET URLs for the job's latest checkpoint
    commit            the same manifest: every object is checked with the store's `stat` (size + sha256 of
                      the stored bytes), then JobStore.commit_checkpoint (epoch-fenced, forward only);
                      a mismatch -> 422 and nothing moves
    finish            {exit_code, error}: 0 -> SUCCEEDED; non-zero -> PENDING while retries on error are
                      left, else FAILED; no exit code + error (no GPU...) -> INTERRUPTED (a host fault,
                      not the command's). A repeated finish of the same attempt answers the same.

Bad or expired token -> 401; a token of another job -> 403; a stale epoch, another instance, or a job
that is not running any more -> 409 {"action": "stop"}. Nothing a token allows touches another job.
Holds no scheduling logic; the control plane hooks in through `AgentHooks`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header
from fastapi.responses import JSONResponse

from vastfleet.agent.tokens import AgentClaims, InvalidToken, TokenSigner
from vastfleet.api import heartbeats
from vastfleet.errors import (
    BadInput,
    Conflict,
    Forbidden,
    RetryLater,
    StaleEpoch,
    Unauthorized,
    VastfleetError,
)
from vastfleet.queue import JobStore
from vastfleet.spec.job import CheckpointRef, Job, JobState
from vastfleet.storage.base import CheckpointStore
from vastfleet.storage.manifest import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    checkpoint_prefix,
    parse_manifest,
    require_verified,
)

log = logging.getLogger(__name__)
MAX_PROGRESS_BYTES = 4096
MAX_ERROR_CHARS = 500


@dataclass
class AgentHooks:
    """Optional callbacks of the control plane; exceptions in `on_*` are not the agent's problem."""

    checkpoint_interval: Callable[[Job], float | None] | None = None  # the cadence for interval: auto
    on_claim: Callable[[Job], None] | None = None
    on_commit: Callable[[Job, CheckpointRef], None] | None = None
    on_finish: Callable[[Job], None] | None = None
    # the values of the spec's secrets, handed to the agent only in the claim answer (never stored)
    resolve_secrets: Callable[[list[str]], dict[str, str]] | None = None


@dataclass
class AgentSettings:
    heartbeat_interval_s: float = 5.0
    default_checkpoint_interval_s: float = 600.0  # when the spec says auto and no hook decides
    poll_interval_s: float = 1.0  # how often the agent looks for new checkpoint directories
    url_expiry_s: int = 3600
    max_files: int = DEFAULT_MAX_FILES
    max_bytes: int = DEFAULT_MAX_BYTES
    extra: dict[str, Any] = field(default_factory=dict)


def agent_router(
    store: JobStore,
    ckpt: CheckpointStore,
    tokens: TokenSigner,
    hooks: AgentHooks | None = None,
    settings: AgentSettings | None = None,
) -> APIRouter:
    """The agent routes under /v1/agent, plus /v1/blobs when `ckpt` is a LocalCheckpointStore."""
    api = _AgentApi(store, ckpt, tokens, hooks or AgentHooks(), settings or AgentSettings())
    outer = APIRouter()
    outer.include_router(api.router)
    from vastfleet.storage.local import LocalCheckpointStore

    if isinstance(ckpt, LocalCheckpointStore):
        from vastfleet.api.blob_routes import blob_router

        outer.include_router(blob_router(ckpt))
    return outer


def _error(exc: VastfleetError) -> JSONResponse:
    body: dict[str, Any] = {"detail": str(exc)}
    headers = {}
    if exc.http_status == 409:
        body["action"] = "stop"
    if isinstance(exc, RetryLater):
        headers["Retry-After"] = str(max(1, int(exc.delay)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


class _AgentApi:
    def __init__(
        self,
        store: JobStore,
        ckpt: CheckpointStore,
        tokens: TokenSigner,
        hooks: AgentHooks,
        settings: AgentSettings,
    ) -> None:
        self.store, self.ckpt, self.tokens, self.hooks, self.settings = store, ckpt, tokens, hooks, settings
        self.prefix = store.keys.prefix
        self.router = APIRouter(prefix="/v1/agent", tags=["agent"])
        verbs: dict[str, Callable[[AgentClaims, dict[str, Any]], dict[str, Any]]] = {
            "claim": self.claim,
            "heartbeat": self.heartbeat,
            "presign-upload": self.presign_upload,
            "presign-download": self.presign_download,
            "commit": self.commit,
            "finish": self.finish,
        }
        for verb, handler in verbs.items():
            self.router.add_api_route(
                f"/jobs/{{job_id}}/{verb}",
                self._endpoint(handler),
                methods=["POST"],
                name=f"agent_{verb.replace('-', '_')}",
            )

    # --- plumbing -----------------------------------------------------------------------------------

    def _endpoint(
        self, handler: Callable[[AgentClaims, dict[str, Any]], dict[str, Any]]
    ) -> Callable[..., Any]:
        def endpoint(
            job_id: str,
            body: Annotated[dict[str, Any] | None, Body()] = None,
            authorization: Annotated[str | None, Header()] = None,
        ) -> Any:
            try:
                claims = self._authenticate(job_id, authorization)
                if body is not None and not isinstance(body, dict):
                    raise BadInput("the request body must be a JSON object")
                return handler(claims, body or {})
            except VastfleetError as exc:
                return _error(exc)

        endpoint.__doc__ = handler.__doc__
        return endpoint

    def _authenticate(self, job_id: str, authorization: str | None) -> AgentClaims:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("an agent token is required (Authorization: Bearer ...)")
        try:
            claims = self.tokens.verify(token.strip())
        except InvalidToken as exc:
            raise Unauthorized(str(exc)) from None
        if claims.job_id != job_id:
            raise Forbidden("this agent token belongs to another job")
        return claims

    def _current(
        self, claims: AgentClaims, states: tuple[JobState, ...], reported_instance: Any = None
    ) -> Job:
        """The job, if this token's attempt still holds it in one of `states`; else 409 (stop)."""
        job = self.store.get(claims.job_id)
        if job.epoch != claims.epoch:
            raise StaleEpoch(f"job {job.id} is at attempt {job.epoch}; attempt {claims.epoch} is over")
        for inst in (claims.instance, reported_instance):
            text = str(inst or "").removeprefix("C.")
            if text.isdigit() and job.instance_id is not None and int(text) != job.instance_id:
                raise StaleEpoch(f"instance {text} does not hold job {job.id} any more")
        if job.state == JobState.PLACING and JobState.BOOTING in states:
            raise RetryLater("the instance is still being recorded; claim again shortly", delay=2)
        if job.state not in states or job.cancel_requested:
            raise Conflict(f"job {job.id} is {job.state.value}: this attempt has nothing more to do")
        return job

    def _checkpoint_interval(self, job: Job) -> float:
        interval = job.spec.checkpoint.interval
        if isinstance(interval, (int, float)):
            return float(interval)
        if self.hooks.checkpoint_interval is not None:
            chosen = self.hooks.checkpoint_interval(job)
            if chosen:
                return float(chosen)
        return self.settings.default_checkpoint_interval_s

    def _urls_for(self, ref: CheckpointRef | None) -> dict[str, Any] | None:
        if ref is None:
            return None
        files = {
            rel: {**meta, "url": self.ckpt.presign_get(ref.prefix + rel, self.settings.url_expiry_s)}
            for rel, meta in ref.files.items()
        }
        return {"epoch": ref.epoch, "step": ref.step, "prefix": ref.prefix, "files": files}

    @staticmethod
    def _hook(fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is not None:
            try:
                fn(*args)
            except Exception:
                log.exception("agent API hook %s failed", getattr(fn, "__name__", fn))

    # --- verbs --------------------------------------------------------------------------------------

    def claim(self, claims: AgentClaims, body: dict[str, Any]) -> dict[str, Any]:
        """Start (or resume, after a container restart) this attempt; answers what to run."""
        job = self._current(claims, (JobState.BOOTING, JobState.RUNNING, JobState.PAUSED), body.get("instance_id"))
        gpus = [str(g)[:200] for g in body.get("gpus", [])][:16] if isinstance(body.get("gpus"), list) else []
        if job.state in (JobState.BOOTING, JobState.PAUSED):
            why = "agent claimed" if job.state == JobState.BOOTING else "resumed: the agent claimed again"
            job = self.store.transition(job.id, JobState.RUNNING, why, expected_epoch=claims.epoch)
        else:
            self.store.note(
                job.id,
                "agent_reclaimed",
                "agent claimed again (container restarted)",
                {"epoch": claims.epoch},
            )
        heartbeats.record_heartbeat(
            self.store.redis,
            job.id,
            claims.epoch,
            self.store.clock(),
            {"phase": "claimed", "gpus": gpus},
            self.prefix,
        )
        self._hook(self.hooks.on_claim, job)
        spec = job.spec
        env = dict(spec.env)
        if spec.secrets:
            if self.hooks.resolve_secrets is None:
                raise BadInput(f"secrets: {', '.join(spec.secrets)} cannot be resolved: this server has no secrets")
            env.update(self.hooks.resolve_secrets(list(spec.secrets)))
        return {
            "job_id": job.id,
            "epoch": job.epoch,
            "name": spec.name,
            "run": spec.run,
            "setup": spec.setup,
            "env": env,
            "runtime": spec.runtime.value,
            "gpus": spec.resources.gpus,
            "checkpoint_required": spec.checkpoint.required,
            "heartbeat_interval": self.settings.heartbeat_interval_s,
            "checkpoint_interval": self._checkpoint_interval(job),
            "poll_interval": self.settings.poll_interval_s,
            "checkpoint": self._urls_for(job.latest_checkpoint),
            "limits": {"max_files": self.settings.max_files, "max_bytes": self.settings.max_bytes},
        }

    def heartbeat(self, claims: AgentClaims, body: dict[str, Any]) -> dict[str, Any]:
        """Liveness and progress; the answer says whether to go on."""
        job = self._current(claims, (JobState.RUNNING, JobState.PAUSED))
        if job.state == JobState.PAUSED:  # the marketplace's pause was brief, or its status lied: it runs
            job = self.store.transition(job.id, JobState.RUNNING, "resumed: the agent heartbeats again",
                                        expected_epoch=claims.epoch)
        progress = body.get("progress") if isinstance(body.get("progress"), dict) else {}
        if len(json.dumps(progress)) > MAX_PROGRESS_BYTES:
            progress = {"truncated": True}
        job = self.store.update(job.id, expected_epoch=claims.epoch, progress=progress)
        data = {
            "progress": progress,
            "ckpt_step": body.get("ckpt_step"),
            "phase": str(body.get("phase", ""))[:40],
        }
        heartbeats.record_heartbeat(
            self.store.redis, job.id, claims.epoch, self.store.clock(), data, self.prefix
        )
        action = (
            "checkpoint"
            if heartbeats.take_checkpoint_request(self.store.redis, job.id, claims.epoch, self.prefix)
            else "continue"
        )
        return {
            "action": action,
            "checkpoint_interval": self._checkpoint_interval(job),
            "heartbeat_interval": self.settings.heartbeat_interval_s,
        }

    def presign_upload(self, claims: AgentClaims, body: dict[str, Any]) -> dict[str, Any]:
        """PUT URLs for the files of one checkpoint step of this attempt."""
        self._current(claims, (JobState.RUNNING,))
        manifest = parse_manifest(body, max_files=self.settings.max_files, max_bytes=self.settings.max_bytes)
        prefix = checkpoint_prefix(claims.job_id, claims.epoch, manifest.step)
        files = {}
        for rel, entry in manifest.files.items():
            key = prefix + rel
            files[rel] = {
                "url": self.ckpt.presign_put(key, entry.size, entry.sha256, self.settings.url_expiry_s),
                "method": "PUT",
                "headers": self.ckpt.put_headers(key, entry.size, entry.sha256),
            }
        return {"step": manifest.step, "prefix": prefix, "files": files}

    def presign_download(self, claims: AgentClaims, body: dict[str, Any]) -> dict[str, Any]:
        """Fresh GET URLs for the latest committed checkpoint (None when there is none)."""
        job = self._current(claims, (JobState.RUNNING,))
        return {"checkpoint": self._urls_for(job.latest_checkpoint)}

    def commit(self, claims: AgentClaims, body: dict[str, Any]) -> dict[str, Any]:
        """Verify the stored objects of a step, then move the job's latest checkpoint to it."""
        self._current(claims, (JobState.RUNNING,))
        manifest = parse_manifest(body, max_files=self.settings.max_files, max_bytes=self.settings.max_bytes)
        prefix = checkpoint_prefix(claims.job_id, claims.epoch, manifest.step)
        require_verified(self.ckpt, prefix, manifest)
        ref = CheckpointRef(
            epoch=claims.epoch,
            step=manifest.step,
            prefix=prefix,
            files=manifest.as_files(),
            committed_at=self.store.clock(),
            bytes=manifest.total_bytes,
        )
        try:
            job = self.store.commit_checkpoint(claims.job_id, claims.epoch, ref)
        except StaleEpoch:
            raise
        except Conflict as exc:  # older than the latest one: refuse the commit, not the attempt
            raise BadInput(str(exc)) from None
        self._hook(self.hooks.on_commit, job, ref)
        return {"committed": True, "step": manifest.step, "bytes": ref.bytes, "prefix": prefix}

    def finish(self, claims: AgentClaims, body: dict[str, Any]) -> dict[str, Any]:
        """The command's exit (or the agent's fault); moves the job out of RUNNING."""
        exit_code, error = body.get("exit_code"), body.get("error")
        if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
            raise BadInput("exit_code must be an integer or null")
        error = str(error)[:MAX_ERROR_CHARS] if error else None
        if exit_code is None and not error:
            raise BadInput("finish needs an exit_code or an error")
        job = self.store.get(claims.job_id)
        if (
            job.epoch == claims.epoch
            and job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.PENDING, JobState.INTERRUPTED)
            and job.exit_code == exit_code
        ):
            return {"state": job.state.value, "repeated": True}  # our answer was lost; say it again
        if exit_code is None:
            job = self._current(claims, (JobState.BOOTING, JobState.RUNNING))
            job = self.store.transition(
                job.id, JobState.INTERRUPTED, f"agent: {error}", expected_epoch=claims.epoch
            )
        else:
            job = self._current(claims, (JobState.RUNNING,))
            errors = job.errors + (exit_code != 0)
            reason = f"command exited with {exit_code}" + (f": {error}" if error else "")
            if exit_code == 0:
                to = JobState.SUCCEEDED
            elif errors <= job.spec.retries_on_error:
                to, reason = JobState.PENDING, f"{reason}; retry {errors} of {job.spec.retries_on_error}"
            else:
                to = JobState.FAILED
            job = self.store.transition(
                job.id, to, reason, expected_epoch=claims.epoch, exit_code=exit_code, errors=errors
            )
        heartbeats.clear_heartbeat(self.store.redis, job.id, self.prefix)
        self._hook(self.hooks.on_finish, job)
        return {"state": job.state.value, "repeated": False}
