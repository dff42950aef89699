"""The users' routes: submit, list, get, cancel and the events of a job, under `/v1/jobs`; and the
quarantine of records that no longer decode, under `/v1/quarantine`.

Thin: each route validates, calls the job store, and returns the store's models. Errors are the store's
own (`vastfleet.errors`), answered by the app's handler. Holds no scheduling logic. Listings are bounded:
job summaries, never full specs, at most `MAX_LIST` per page, with a cursor to page on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Depends, Query, Request, status

from vastfleet.api.auth import require_user
from vastfleet.errors import BadInput, NotFound
from vastfleet.queue import JobStore
from vastfleet.queue.quarantine import JobQuarantined
from vastfleet.spec import Job, JobEvent, JobSpec, JobState, JobSummary
from vastfleet.spec.summary import QuarantineDetail, QuarantineEntry

T = TypeVar("T")

DEFAULT_LIST = 100
MAX_LIST = 1000  # a page of summaries stays well under a megabyte

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_user)])
quarantine_router = APIRouter(prefix="/v1/quarantine", tags=["quarantine"], dependencies=[Depends(require_user)])


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
    spec.check_deadline(_store(request).clock())  # a deadline already past is refused here, not by the spec
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


@router.get("", response_model=list[JobSummary],
            summary="List job summaries in submit order, the most recent page by default")
def list_jobs(
    request: Request,
    state: str | None = Query(None, description="a job state, e.g. PENDING"),
    limit: int = Query(DEFAULT_LIST, ge=1, le=MAX_LIST, description="at most this many jobs"),
    before: str | None = Query(None, max_length=64,
                               description="a job id: the jobs submitted just before it (the older page)"),
    after: str | None = Query(None, max_length=64,
                              description="a job id: the jobs submitted just after it (the newer page)"),
) -> list[JobSummary]:
    jobs = _store(request).list(parse_state(state), limit=limit, before=before or None, after=after or None)
    return [JobSummary.of(job) for job in jobs]


@router.get("/{job_id}", response_model=Job, summary="One job, in full (409 when quarantined)")
def get_job(job_id: str, request: Request) -> Job:
    return _store(request).get(job_id)


@router.post("/{job_id}/cancel", response_model=Job, summary="Cancel a job (409 when already finished)")
def cancel(job_id: str, request: Request) -> Job:
    return _unless_quarantined(request, job_id, lambda store: store.cancel(job_id))


@router.get("/{job_id}/events", response_model=list[JobEvent], summary="A job's events, oldest first")
def events(job_id: str, request: Request, after: str | None = Query(None, description="an event id seen"),
           limit: int = Query(1000, ge=1, le=10_000)) -> list[JobEvent]:
    return _unless_quarantined(request, job_id, lambda store: store.events(job_id, after=after, limit=limit))


def _unless_quarantined(request: Request, job_id: str, call: Callable[[JobStore], T]) -> T:
    """The store's writers and the events read find no record for a quarantined job (it was moved aside);
    say why instead of 'no job'."""
    store = _store(request)
    try:
        return call(store)
    except NotFound:
        reason = store.quarantine.reason(job_id)
        if reason is not None:
            raise JobQuarantined(f"job {job_id} is quarantined: {reason}", job_id=job_id) from None
        raise


@quarantine_router.get("", response_model=list[QuarantineEntry],
                       summary="Jobs whose records no longer decode, set aside (most recent page)")
def list_quarantined(request: Request, limit: int = Query(DEFAULT_LIST, ge=1, le=MAX_LIST)) -> list[QuarantineEntry]:
    return _store(request).quarantine.list(limit=limit)


@quarantine_router.get("/{job_id}", response_model=QuarantineDetail,
                       summary="One quarantined job: why, and its record as stored")
def get_quarantined(job_id: str, request: Request) -> QuarantineDetail:
    return _store(request).quarantine.get(job_id)


@quarantine_router.post("/{job_id}/release", response_model=Job,
                        summary="Put a quarantined job back once its record decodes (409 while it does not)")
def release(job_id: str, request: Request) -> Job:
    return _store(request).quarantine.release(job_id)
