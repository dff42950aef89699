"""The agent API: what the agent on an instance may do, fenced by its attempt's credentials and the job's epoch.

All routes are `POST /v1/agent/jobs/{job_id}/<verb>` with a JSON body (strict types and a size cap per route:
`vastfleet.api.agent_bodies`) and `Authorization: Bearer <credential>` (never the users' token):

    claim             with the ONSTART TOKEN (from the instance env, which vast lists) and a claim nonce, once:
                      BOOTING -> RUNNING ("agent claimed"); answers a per-attempt `session` secret, the job's
                      run/setup/env/runtime, the intervals and the latest checkpoint with presigned GET URLs.
                      The same nonce again (the answer was lost) gets the same session; another nonce -> 403
                      and a "security" event. With the session: a restarted container re-claims. With an
                      `error` (no GPU visible...): the attempt ends INTERRUPTED and nothing of the job is said.
                      PLACING (the instance booted before the scheduler wrote BOOTING) -> 503, retry.
    heartbeat         records progress (epoch-fenced) and the heartbeat key; answers
                      {"action": "continue" | "stop" | "checkpoint", "checkpoint_interval", ...}
    presign-upload    a manifest {step, files: {relpath: {size, sha256}}} -> a PUT URL + headers per file under
                      jobs/<job>/epoch-<n>/step-<s>-<digest>/; a step at or below this attempt's committed one
                      is refused (committed checkpoints are immutable); the committed manifest again answers
                      {"committed": true}
    presign-download  fresh GET URLs for the job's latest checkpoint
    commit            the same manifest: every object is checked with the store's `stat` (size + sha256 of
                      the stored bytes), then JobStore.commit_checkpoint (epoch-fenced, forward only)
    restore-failed    {step, prefix, reason}: the latest checkpoint did not verify on the instance. The API
                      checks the stored objects itself: intact -> {"verified": true} (the instance's fault);
                      damaged -> dropped (event), latest moves back, answers the previous one's URLs, or
                      FAILED (409) when none is left and checkpoints are required
    finish            {exit_code, error, fault}: 0 -> SUCCEEDED; non-zero, or no exit code with fault "job" ->
                      PENDING while retries on error are left, else FAILED; no exit code with fault "host"
                      (the default) -> INTERRUPTED. A repeated finish of the same attempt answers the same.

Every verb but the first claim needs the session secret; the onstart token there -> 401. Bad credentials ->
401; an onstart token of another job -> 403; a stale epoch, another instance, or a job that is not running
any more -> 409 {"action": "stop"}. Holds no scheduling logic; the control plane hooks in with `AgentHooks`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from vastfleet.agent.tokens import SESSION_PREFIX, AgentClaims, InvalidToken, TokenSigner
from vastfleet.api.agent_bodies import (
    ClaimBody,
    EmptyBody,
    FinishBody,
    HeartbeatBody,
    RestoreFailedBody,
    parse_body,
    parse_json,
    read_body,
)
from vastfleet.api.agent_checkpoints import CLAIMABLE, ENDED, LIVE, UPLOADING, CheckpointVerbs
from vastfleet.api.agent_sessions import AgentSessions, SecondClaim
from vastfleet.errors import (
    BadInput,
    Conflict,
    Forbidden,
    RetryLater,
    StaleEpoch,
    Unauthorized,
    VastfleetError,
)
from vastfleet.queue import JobStore, heartbeats
from vastfleet.spec.job import CheckpointRef, Job, JobState
from vastfleet.storage.base import CheckpointStore
from vastfleet.storage.manifest import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, Manifest, parse_manifest

log = logging.getLogger(__name__)
S = JobState
SECURITY_NOTES = 3  # second claims noted on the job; further ones are only counted


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
    url_expiry_s: int = 900  # short: a fenced attempt's URLs stop working soon; the agent asks again
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

        outer.include_router(blob_router(ckpt, may_put=api.may_put))
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


Handler = Callable[[AgentClaims, Any], dict[str, Any]]


class _AgentApi(CheckpointVerbs):
    def __init__(self, store: JobStore, ckpt: CheckpointStore, tokens: TokenSigner, hooks: AgentHooks,
                 settings: AgentSettings) -> None:
        self.store, self.ckpt, self.tokens, self.hooks, self.settings = store, ckpt, tokens, hooks, settings
        self.prefix = store.keys.prefix
        self.sessions = AgentSessions(store.redis, tokens, self.prefix, tokens.ttl_s)
        self.router = APIRouter(prefix="/v1/agent", tags=["agent"])
        routes: dict[str, tuple[Handler, Callable[[dict[str, Any]], Any]]] = {
            "claim": (self.claim, parse_body(ClaimBody, "claim")),
            "heartbeat": (self.heartbeat, parse_body(HeartbeatBody, "heartbeat")),
            "presign-upload": (self.presign_upload, self._manifest),
            "presign-download": (self.presign_download, parse_body(EmptyBody, "presign-download")),
            "commit": (self.commit, self._manifest),
            "restore-failed": (self.restore_failed, parse_body(RestoreFailedBody, "restore-failed")),
            "finish": (self.finish, parse_body(FinishBody, "finish")),
        }
        for verb, (handler, parse) in routes.items():
            self.router.add_api_route(f"/jobs/{{job_id}}/{verb}", self._endpoint(verb, handler, parse),
                                      methods=["POST"], name=f"agent_{verb.replace('-', '_')}")

    # --- plumbing -----------------------------------------------------------------------------------

    def _endpoint(self, verb: str, handler: Handler, parse: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
        def serve(job_id: str, authorization: str | None, raw: bytes) -> dict[str, Any]:
            claims = self._authenticate(job_id, authorization, verb)  # who first, then what they sent
            return handler(claims, parse(parse_json(raw)))

        async def endpoint(job_id: str, request: Request) -> Any:
            try:
                raw = await read_body(request, verb)  # capped before anything is parsed or looked up
                return await run_in_threadpool(serve, job_id, request.headers.get("authorization"), raw)
            except VastfleetError as exc:
                return _error(exc)

        endpoint.__doc__ = handler.__doc__
        return endpoint

    def _authenticate(self, job_id: str, authorization: str | None, verb: str) -> AgentClaims:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("an agent credential is required (Authorization: Bearer ...)")
        try:
            if token.startswith(SESSION_PREFIX + "."):
                return self.sessions.verify(job_id, token)
            claims = self.tokens.verify(token)
        except InvalidToken as exc:
            raise Unauthorized(str(exc)) from None
        if claims.job_id != job_id:
            raise Forbidden("this agent token belongs to another job")
        if verb != "claim":
            raise Unauthorized("the onstart token is good for one claim only; this call needs the session secret"
                               " that the claim answered")
        return claims

    def _manifest(self, body: dict[str, Any]) -> Manifest:
        return parse_manifest(body, max_files=self.settings.max_files, max_bytes=self.settings.max_bytes)

    def _current(self, claims: AgentClaims, states: tuple[JobState, ...], reported_instance: Any = None) -> Job:
        """The job, if this attempt still holds it in one of `states`; else 409 (stop)."""
        job = self.store.get(claims.job_id)
        if job.epoch != claims.epoch:
            raise StaleEpoch(f"job {job.id} is at attempt {job.epoch}; attempt {claims.epoch} is over")
        for inst in (claims.instance, reported_instance):
            text = str(inst or "").removeprefix("C.")
            if text.isdigit() and job.instance_id is not None and int(text) != job.instance_id:
                raise StaleEpoch(f"instance {text} does not hold job {job.id} any more")
        if job.state == S.PLACING and S.BOOTING in states:
            raise RetryLater("the instance is still being recorded; claim again shortly", delay=2)
        if job.state not in states:
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

    def _ended(self, job: Job) -> None:
        heartbeats.clear_heartbeat(self.store.redis, job.id, self.prefix)
        self._hook(self.hooks.on_finish, job)

    @staticmethod
    def _hook(fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is not None:
            try:
                fn(*args)
            except Exception:
                log.exception("agent API hook %s failed", getattr(fn, "__name__", fn))

    # --- verbs --------------------------------------------------------------------------------------

    def claim(self, claims: AgentClaims, body: ClaimBody) -> dict[str, Any]:
        """Start (or resume, after a container restart) this attempt; answers what to run."""
        job = self._current(claims, CLAIMABLE, body.instance_id)
        session = None
        if claims.kind == "onstart":
            if body.nonce is None:
                raise BadInput("invalid claim request: nonce: required with the onstart token")
            try:
                session = self.sessions.open(job.id, claims.epoch, body.nonce, str(body.instance_id or ""))
            except SecondClaim as exc:
                if exc.count <= SECURITY_NOTES:
                    self.store.note(job.id, "security", "second claim with the onstart token refused",
                                    {"epoch": claims.epoch, "refused": exc.count,
                                     "instance_id": str(body.instance_id or "")})
                raise Forbidden("this attempt was already claimed with its onstart token; a second claim is"
                                " refused") from None
        if body.error:  # a host fault seen before anything ran: the attempt ends, nothing of the job is said
            job = self.store.transition(job.id, S.INTERRUPTED, f"agent: {body.error}", expected_epoch=claims.epoch)
            self._ended(job)
            return {"state": job.state.value}
        if job.state in (S.BOOTING, S.PAUSED):
            why = "agent claimed" if job.state == S.BOOTING else "resumed: the agent claimed again"
            job = self.store.transition(job.id, S.RUNNING, why, expected_epoch=claims.epoch)
        else:
            again = "container restarted" if session is None else "its first answer was lost"
            self.store.note(job.id, "agent_reclaimed", f"agent claimed again ({again})", {"epoch": claims.epoch})
        heartbeats.record_heartbeat(self.store.redis, job.id, claims.epoch, self.store.clock(),
                                    {"phase": "claimed", "gpus": body.gpus}, self.prefix)
        self._hook(self.hooks.on_claim, job)
        spec = job.spec
        env = dict(spec.env)
        if spec.secrets:
            if self.hooks.resolve_secrets is None:
                raise BadInput(f"secrets: {', '.join(spec.secrets)} cannot be resolved: this server has no secrets")
            env.update(self.hooks.resolve_secrets(list(spec.secrets)))
        answer = {
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
        if session is not None:
            answer["session"] = session
        return answer

    def heartbeat(self, claims: AgentClaims, body: HeartbeatBody) -> dict[str, Any]:
        """Liveness and progress; the answer says whether to go on (a cancelled attempt: stop the job, upload
        what it wrote, then finish; its instance goes as soon as nothing is left to upload)."""
        job = self._current(claims, UPLOADING)
        pending = {"pending_uploads": body.pending_uploads,
                   "pending": body.pending.model_dump() if body.pending is not None else None}
        if job.state == S.CANCELLED:
            data = {"progress": job.progress, "ckpt_step": body.ckpt_step, "phase": "cancelled", **pending}
            heartbeats.record_heartbeat(self.store.redis, job.id, claims.epoch, self.store.clock(), data,
                                        self.prefix)
            return {"action": "stop", "upload": True, "heartbeat_interval": self.settings.heartbeat_interval_s}
        if job.state == S.PAUSED:  # the marketplace's pause was brief, or its status lied: the attempt runs
            job = self.store.transition(job.id, S.RUNNING, "resumed: the agent heartbeats again",
                                        expected_epoch=claims.epoch)
        job = self.store.update(job.id, expected_epoch=claims.epoch, progress=body.progress)
        data = {"progress": body.progress, "ckpt_step": body.ckpt_step, "phase": body.phase, **pending}
        heartbeats.record_heartbeat(self.store.redis, job.id, claims.epoch, self.store.clock(), data, self.prefix)
        asked = heartbeats.take_checkpoint_request(self.store.redis, job.id, claims.epoch, self.prefix)
        return {
            "action": "checkpoint" if asked else "continue",
            "checkpoint_interval": self._checkpoint_interval(job),
            "heartbeat_interval": self.settings.heartbeat_interval_s,
        }

    def finish(self, claims: AgentClaims, body: FinishBody) -> dict[str, Any]:
        """The command's exit (or the agent's fault); moves the job out of RUNNING."""
        exit_code, error = body.exit_code, body.error
        fault = body.fault or ("job" if exit_code is not None else "host")
        job = self.store.get(claims.job_id)
        if job.epoch == claims.epoch and job.state in ENDED and job.exit_code == exit_code:
            return {"state": job.state.value, "repeated": True}  # our answer was lost; say it again
        if job.epoch == claims.epoch and job.state == S.CANCELLED:  # stopped and uploaded: nothing is left
            self._ended(job)
            return {"state": job.state.value, "repeated": False}
        if fault == "host":
            job = self._current(claims, CLAIMABLE)
            job = self.store.transition(job.id, S.INTERRUPTED, f"agent: {error}", expected_epoch=claims.epoch)
        else:
            job = self._current(claims, LIVE)
            if job.state == S.PAUSED:  # it reports, so it ran: the pause is over (RUNNING is the way out)
                job = self.store.transition(job.id, S.RUNNING, "resumed: the agent reports its exit",
                                            expected_epoch=claims.epoch)
            errors = job.errors + (exit_code != 0)
            reason = f"command exited with {exit_code}" if exit_code is not None else "agent"
            reason += f": {error}" if error else ""
            if exit_code == 0:
                to = S.SUCCEEDED
            elif errors <= job.spec.retries_on_error:
                to, reason = S.PENDING, f"{reason}; retry {errors} of {job.spec.retries_on_error}"
            else:
                to = S.FAILED
            job = self.store.transition(job.id, to, reason, expected_epoch=claims.epoch, exit_code=exit_code,
                                        errors=errors)
        self._ended(job)
        return {"state": job.state.value, "repeated": False}
