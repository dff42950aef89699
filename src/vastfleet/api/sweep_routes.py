"""The users' sweep routes under `/v1/sweeps` (bearer token, like the job routes).

    POST /v1/sweeps                   a sweep spec (JSON) -> 201 the sweep; 422 with the CLI's exact message
    GET  /v1/sweeps?limit=            the most recent sweeps
    GET  /v1/sweeps/{id}?trials=      status: the sweep, trials by state, the best, the trials
    GET  /v1/sweeps/{id}/best?k=      the k best trials with their job's latest checkpoint
    GET  /v1/sweeps/{id}/events       what the sweep did and why
    GET  /v1/sweeps/{id}/journal?after=   Optuna's journal records (for `vastfleet sweep dashboard`)
    POST /v1/sweeps/{id}/cancel       409 when the sweep is already over

Thin: validation, then `vastfleet.sweeps.service`. The body is read as plain JSON and validated by the sweep
spec's own loader, so a bad spec gets the message `vastfleet sweep submit` prints, naming the key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, status

from vastfleet.api.auth import require_user
from vastfleet.errors import BadInput
from vastfleet.queue import JobStore
from vastfleet.sweeps import service
from vastfleet.sweeps.models import BestTrial, Sweep, SweepEvent, SweepStatus
from vastfleet.sweeps.spec import sweep_spec_from_dict
from vastfleet.sweeps.store import SweepStore

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], dependencies=[Depends(require_user)])


def _jobs(request: Request) -> JobStore:
    return request.app.state.ctx.store  # type: ignore[no-any-return]


def _sweeps(request: Request) -> SweepStore:
    store = _jobs(request)
    return SweepStore(store.redis, store.keys.prefix, store.clock)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Sweep, summary="Submit a sweep")
def submit(request: Request, body: Annotated[Any, Body(description="a sweep spec (docs/sweeps.md)")]) -> Sweep:
    if not isinstance(body, dict):
        raise BadInput("invalid sweep spec:\n  (top level): expected a JSON object with the sweep spec's keys")
    spec = sweep_spec_from_dict(body)
    if spec.job.secrets:
        source = request.app.state.ctx.extra.get("secrets")
        if source is None:
            raise BadInput(f"job.secrets: {', '.join(spec.job.secrets)} named, but this server holds no secrets")
        source.check(spec.job.secrets)
    return service.submit(_sweeps(request), spec)


@router.get("", response_model=list[Sweep], summary="The most recent sweeps, oldest first")
def list_sweeps(request: Request, limit: int = Query(100, ge=1, le=1000)) -> list[Sweep]:
    return _sweeps(request).recent(limit)


@router.get("/{sweep_id}", response_model=SweepStatus, summary="A sweep's status and trials")
def get_status(sweep_id: str, request: Request, trials: bool = Query(True)) -> SweepStatus:
    return service.status(_sweeps(request), sweep_id, with_trials=trials)


@router.get("/{sweep_id}/best", response_model=list[BestTrial], summary="The best trials so far")
def get_best(sweep_id: str, request: Request, k: int = Query(5, ge=1, le=1000)) -> list[BestTrial]:
    return service.best(_jobs(request), _sweeps(request), sweep_id, k)


@router.get("/{sweep_id}/events", response_model=list[SweepEvent], summary="A sweep's events, oldest first")
def get_events(sweep_id: str, request: Request, limit: int = Query(1000, ge=1, le=10_000)) -> list[SweepEvent]:
    sweeps = _sweeps(request)
    sweeps.get(sweep_id)
    return sweeps.events(sweep_id, limit)


@router.get("/{sweep_id}/journal", summary="The study's Optuna journal records after a record number")
def get_journal(sweep_id: str, request: Request, after: int = Query(-1, ge=-1),
                limit: int = Query(service.MAX_JOURNAL_PAGE, ge=1, le=service.MAX_JOURNAL_PAGE)) -> dict[str, Any]:
    return service.journal(_sweeps(request), sweep_id, after, limit)


@router.post("/{sweep_id}/cancel", response_model=Sweep, summary="Cancel a sweep and every trial")
def cancel(sweep_id: str, request: Request) -> Sweep:
    return service.cancel(_jobs(request), _sweeps(request), sweep_id)
