"""The users' routes: submit, list, get, cancel and the events of a job, under `/v1/jobs`.

Thin: each route validates, calls the job store, and returns the store's models. Errors are the store's
own (`vastfleet.errors`), answered by the app's handler. Holds no scheduling logic.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, status

from vastfleet.api.auth import require_user
from vastfleet.errors import BadInput
from vastfleet.queue import JobStore
from vastfleet.spec import Job, JobEvent, JobSpec, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_user)])


def _store(request: Request) -> JobStore:
    return request.app.state.ctx.store  # type: ignore[no-any-return]


def parse_state(value: str | None) -> JobState | None:
    if value is None or value == "":
        return None
    try:
        return JobState(value.strip().upper())
    except ValueError:
        raise BadInput(f"unknown state {value!r} (known: {', '.join(s.value for s in JobState)})") from None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Job, summary="Submit a job")
def submit(spec: JobSpec, request: Request) -> Job:
    if spec.secrets:
        source = request.app.state.ctx.extra.get("secrets")  # a SecretSource, when the server holds secrets
        if source is None:
            raise BadInput(f"secrets: {', '.join(spec.secrets)} named, but this server holds no secrets")
        source.check(spec.secrets)
    job = _store(request).submit(spec)
    metrics = request.app.state.ctx.extra.get("metrics")  # the exporter, when the runtime has one
    if metrics is not None:
        metrics.job_submitted()
    return job


@router.get("", response_model=list[Job], summary="List jobs, oldest first (optionally of one state)")
def list_jobs(request: Request, state: str | None = Query(None, description="a job state, e.g. PENDING"),
              limit: int = Query(1000, ge=1, le=10_000)) -> list[Job]:
    return _store(request).list(parse_state(state), limit=limit)


@router.get("/{job_id}", response_model=Job, summary="One job")
def get_job(job_id: str, request: Request) -> Job:
    return _store(request).get(job_id)


@router.post("/{job_id}/cancel", response_model=Job, summary="Cancel a job (409 when already finished)")
def cancel(job_id: str, request: Request) -> Job:
    return _store(request).cancel(job_id)


@router.get("/{job_id}/events", response_model=list[JobEvent], summary="A job's events, oldest first")
def events(job_id: str, request: Request, after: str | None = Query(None, description="an event id seen"),
           limit: int = Query(1000, ge=1, le=10_000)) -> list[JobEvent]:
    return _store(request).events(job_id, after=after, limit=limit)
