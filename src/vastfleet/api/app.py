"""The FastAPI application: user routes, the agent routes and metrics when given, health, error mapping.

Errors of `vastfleet.errors` become their `http_status` with `{"detail": message}`; a malformed body gets
422 with the same pointing message the CLI prints; a Redis outage is a 503; a body over the route's cap
gets 413 before it is read (`vastfleet.api.limits`). Never a traceback to a client.
Builds nothing it is not given: the caller (CLI, demo, tests) makes the store and the context.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import Route

import vastfleet
from vastfleet.api import sweep_routes, user_routes
from vastfleet.api.context import ApiContext
from vastfleet.api.limits import BodyLimit
from vastfleet.errors import SpecError, VastfleetError
from vastfleet.spec.jobspec import job_spec_from_dict, location

log = logging.getLogger(__name__)

_MAX_PROBLEMS = 20  # a body with a million bad entries gets the first ones and a count


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="vastfleet", version=vastfleet.__version__,
                  description="Submit and follow GPU jobs on the vast.ai marketplace.")
    app.state.ctx = ctx
    app.include_router(user_routes.router)
    app.include_router(user_routes.quarantine_router)
    app.include_router(sweep_routes.router)
    app.add_middleware(BodyLimit, max_body=ctx.max_body_bytes, max_agent_body=ctx.max_agent_body_bytes)
    if ctx.agent_router is not None:
        app.include_router(ctx.agent_router)
    if ctx.metrics_app is not None:
        # A route, not a mount: a mount answers `/metrics` with a 307 to `/metrics/`, which scrapers and
        # people alike call a broken endpoint. The ASGI app serves the exact path (and `/metrics/` too).
        metrics = WholeApp(ctx.metrics_app)
        app.router.routes.append(Route("/metrics", endpoint=metrics, methods=["GET", "HEAD"]))
        app.router.routes.append(Route("/metrics/", endpoint=metrics, methods=["GET", "HEAD"]))

    @app.get("/healthz", tags=["health"], summary="Liveness and Redis reachability (no auth)")
    def healthz() -> JSONResponse:
        try:
            ctx.store.redis.ping()
        except redis.RedisError:
            return JSONResponse({"status": "unavailable", "redis": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "redis": "ok", "version": vastfleet.__version__})

    app.add_exception_handler(VastfleetError, _vastfleet_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(redis.RedisError, _redis_error)  # type: ignore[arg-type]
    return app


class WholeApp:
    """An ASGI app as a route's endpoint. A router serves an object as a whole ASGI app but wraps a plain
    function (which prometheus_client's app is) as a request handler, so the function travels in an object."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _detail(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _vastfleet_error(request: Request, exc: VastfleetError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return _detail(exc.http_status, exc.message, headers)


async def _redis_error(request: Request, exc: redis.RedisError) -> JSONResponse:
    log.warning("redis error on %s %s: %s", request.method, request.url.path, exc)
    return _detail(503, "the job store (Redis) is unavailable; try again later")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _detail(422, validation_message(request, exc))


def validation_message(request: Request, exc: RequestValidationError) -> str:
    """For a job spec body, the very message the CLI prints (re-validated by the spec's own loader);
    for anything else, the same `location: problem` lines."""
    body: Any = getattr(exc, "body", None)
    is_submit = request.method == "POST" and request.url.path.rstrip("/") == "/v1/jobs"
    if is_submit and isinstance(body, dict):
        try:
            job_spec_from_dict(body)
        except SpecError as spec_error:
            return spec_error.message
    lines = []
    errors = exc.errors()
    for err in errors[:_MAX_PROBLEMS]:
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        where = location(loc) if loc else "(body)"
        if err.get("type") == "json_invalid":
            where, msg = "(body)", f"not valid JSON ({err.get('ctx', {}).get('error', 'decode error')})"
        elif is_submit and not loc:
            msg = "expected a JSON object with the job spec's keys"
        else:
            msg = str(err.get("msg"))
        lines.append(f"  {where}: {msg.removeprefix('Value error, ')}")
    if len(errors) > _MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - _MAX_PROBLEMS} more problems")
    return ("invalid job spec:\n" if is_submit else "invalid request:\n") + "\n".join(lines)
