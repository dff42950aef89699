"""A cap on request bodies for every route, enforced before a body is read into memory.

Why here and not in the routes: FastAPI reads and parses the whole body before a route runs, so a route
can only refuse a 100 MB body after the server already held it (and parsed it into a dict several times
that size). This ASGI middleware answers 413 from the `Content-Length` header alone when it is too big,
and otherwise counts the bytes as they stream in (a chunked body has no length) and stops at the cap.
The routes then see the same body, buffered, so nothing about them changes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from vastfleet.storage.local import BLOB_ROUTE

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A job spec is at most 64 KiB as compact JSON (vastfleet.spec.limits); 1 MiB leaves room for any
# formatting and still refuses the megabyte-sized bodies that made the queue slow for everyone.
DEFAULT_MAX_BODY = 1024 * 1024
# Agents commit checkpoint manifests: up to 10,000 files of up to ~600 bytes of JSON each.
DEFAULT_MAX_AGENT_BODY = 8 * 1024 * 1024
AGENT_PREFIX = "/v1/agent/"
# The local store's blob route streams each upload to disk and stops at the size its URL signs (after checking
# the signature, before reading a byte): buffering a checkpoint file here would hold it in memory, and refuse
# every one over the cap.
STREAMED_PREFIX = BLOB_ROUTE


def size_text(n: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


class BodyLimit:
    """`max_body` bytes for every route, `max_agent_body` for the agents' routes under /v1/agent/."""

    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_BODY,
                 max_agent_body: int = DEFAULT_MAX_AGENT_BODY) -> None:
        self.app = app
        self.max_body = max_body
        self.max_agent_body = max_agent_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if path.startswith(STREAMED_PREFIX):
            await self.app(scope, receive, send)
            return
        limit = self.max_agent_body if path.startswith(AGENT_PREFIX) else self.max_body
        declared = _content_length(scope)
        if declared is None:
            await _answer(send, 400, "the Content-Length header is not a number")
            return
        if declared > limit:
            await _answer(send, 413, _too_large(limit, declared))
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            body = message.get("body", b"")
            total += len(body)
            if total > limit:
                await _answer(send, 413, _too_large(limit, None))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; 0 when none is declared (a chunked body is counted as it comes)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if length >= 0 else None
    return 0


def _too_large(limit: int, declared: int | None) -> str:
    size = f" ({declared} bytes)" if declared is not None else ""
    return f"the request body{size} is larger than the limit of {size_text(limit)} for this route"


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
