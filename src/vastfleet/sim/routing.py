"""The simulator's HTTP plumbing: route tables, the catch-all dispatch (auth, the quirks' gate, the market's
lock around every handler, JSON errors) and the Starlette app. The routes live in `server.py` (vast's API)
and `admin.py` (the simulator's own)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from vastfleet.sim.entities import SimError
from vastfleet.sim.quirks import Hold

if TYPE_CHECKING:
    from vastfleet.sim.simulator import Simulator


class JsonResponse(Response):
    """JSON with the exact media type the vast CLI checks for (no charset parameter)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("utf-8")

    def init_headers(self, headers: Any = None) -> None:
        super().init_headers(headers)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-type"]
        self.raw_headers.append((b"content-type", b"application/json"))


@dataclass
class Call:
    sim: Simulator
    method: str
    path: str
    args: tuple[str, ...]
    query: dict[str, str]
    body: dict[str, Any]
    base_url: str


Handler = Callable[[Call], Any]
RouteEntry = tuple[str, re.Pattern[str], str, Handler, bool]  # method, regex, name, handler, auth


class Routes:
    """A table of routes filled by its decorator (the vast API's, the admin API's)."""

    def __init__(self) -> None:
        self.entries: list[RouteEntry] = []

    def route(self, method: str, pattern: str, auth: bool = True) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.entries.append((method, re.compile("^" + pattern.rstrip("/") + "/?$"), pattern, fn, auth))
            return fn

        return deco


# --- dispatch -------------------------------------------------------------------------------------------


def _authorized(request: Request, key: str) -> bool:
    header = request.headers.get("authorization", "")
    sent = header[7:].strip() if header.lower().startswith("bearer ") else request.query_params.get("api_key")
    return bool(sent) and hmac.compare_digest(str(sent), key)


async def dispatch(request: Request) -> Response:
    sim: Simulator = request.app.state.sim
    method, path = request.method, request.url.path
    candidates = [(r, m) for r in request.app.state.routes if (m := r[1].match(path))]
    if not candidates:
        return JsonResponse({"success": False, "error": "not_found", "msg": f"No route {path}."}, 404)
    found = [(r, m) for r, m in candidates if r[0] == method]
    if not found:
        return JsonResponse({"success": False, "error": "method_not_allowed", "msg": f"{method} {path}"}, 405)
    (_, _, name, handler, auth), match = found[0]
    if auth and not _authorized(request, sim.api_key):
        sim.gate.record(method, path, name, 401)
        return JsonResponse({"success": False, "error": "auth_error", "msg": "Invalid user key"}, 401)
    raw = await request.body()  # read first: a held call's client may be gone by the time it is served
    if not path.startswith("/sim/"):
        caller = request.headers.get("authorization", "") or request.query_params.get("api_key", "")
        answer = sim.gate.check(method, path, name, caller)
        if isinstance(answer, Hold):  # a slow answer: held, then answered with an error or served as usual
            await asyncio.sleep(answer.delay)
            answer = None if not answer.status else (answer.status, answer.body, answer.as_text)
        if answer is not None:
            status, body, as_text = answer
            sim.gate.record(method, path, name, status)
            if as_text:
                return PlainTextResponse(body["msg"], status)
            return JsonResponse(body, status)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return JsonResponse({"success": False, "error": "invalid_json", "msg": "Body is not JSON."}, 400)
    if not isinstance(body, dict):
        body = {"_": body}
    call = Call(
        sim, method, path, match.groups(), dict(request.query_params), body, str(request.base_url).rstrip("/")
    )
    try:
        with sim.market.lock:
            result = handler(call)
        status = 200
    except SimError as err:
        result, status = err.body(), err.status
    except Exception as exc:  # a bug of ours still answers JSON, as vast's 500s do
        logging.getLogger(__name__).exception("simulator route %s failed", name)
        result, status = {"success": False, "error": "server_error", "msg": f"internal error: {exc!r}"}, 500
    sim.gate.record(method, path, name, status)
    if isinstance(result, Response):
        return result
    return JsonResponse(result, status)


def routing_app(sim: Simulator, routes: list[RouteEntry]) -> Starlette:
    app = Starlette(
        routes=[Route("/{path:path}", dispatch, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])]
    )
    app.state.sim = sim
    app.state.routes = routes
    return app
