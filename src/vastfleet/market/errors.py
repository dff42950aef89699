"""Translation of the `vastai` client's failures into `vastfleet.errors`, worded for a user.

Owns: classifying a raised exception (transient or not, which outcome code to count) and mapping it to
our error tree. Never retries, never performs I/O, and never lets the API key into a message: every
text that came from the server or from `requests` passes through `redact` first.

| what happened                                   | raised                                   |
|-------------------------------------------------|------------------------------------------|
| HTTP 401 / 403                                  | MarketAuthError                          |
| HTTP 402, or an error body about credit/balance | InsufficientFunds                        |
| HTTP 404 / `no_such_ask` on create              | OfferUnavailable                         |
| HTTP 404 / 410 on an instance operation         | InstanceGone (destroy / get treat as gone)|
| HTTP 429 / 5xx, connection error, timeout       | MarketUnavailable (after our retries)    |
| an answer of the wrong shape, anything else     | MarketError                              |
"""

from __future__ import annotations

import re
from typing import Any

import requests

from vastfleet.errors import (
    InstanceGone,
    InsufficientFunds,
    MarketAuthError,
    MarketError,
    MarketUnavailable,
    OfferUnavailable,
    VastfleetError,
)

# vast's error keys (`error` in the JSON body) that mean the offer is no longer rentable.
_OFFER_GONE_KEYS = {"no_such_ask", "ask_not_found", "offer_unavailable", "no_such_offer", "ask_unavailable"}
_INSTANCE_GONE_KEYS = {"no_such_instance", "instance_not_found", "no_such_contract"}
_FUNDS_PATTERN = re.compile(
    r"insufficient[_ ]?(credit|funds|balance)|lacks? (credit|funds)|low balance", re.IGNORECASE
)
_MAX_DETAIL = 300


class MalformedAnswer(Exception):
    """The server answered 2xx, but not in the shape the client and we rely on."""


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` (and its bearer header form) replaced by `***`."""
    if secret:
        text = text.replace(secret, "***")
    return text


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def error_body(exc: BaseException) -> dict[str, Any]:
    """The JSON error body of an HTTP error, or {} (vast's 429 bodies are sometimes plain text)."""
    response = getattr(exc, "response", None)
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        text = (getattr(response, "text", "") or "").strip()
        return {"msg": text} if text else {}
    return body if isinstance(body, dict) else {}


def retry_after(exc: BaseException) -> float | None:
    """The server's Retry-After hint in seconds, when it gave a numeric one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def is_search_quota(exc: BaseException) -> bool:
    """A daily search quota 429: it resets at UTC midnight, so retrying only burns requests."""
    return http_status(exc) == 429 and error_body(exc).get("error") == "search_quota_exceeded"


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: rate limited, a server error, or the network failed."""
    if isinstance(
        exc,
        (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,  # the connection broke mid-answer
        ),
    ):
        return True
    status = http_status(exc)
    if status is None:
        return False
    return (status == 429 and not is_search_quota(exc)) or 500 <= status <= 599


def is_refused_unprocessed(exc: BaseException) -> bool:
    """Transient AND certainly not acted on by the server: safe to repeat a non-idempotent call.

    Only a rate-limit answer (429) or a connection that never opened qualifies. A 5xx or a read timeout
    on a create may have rented the offer all the same, so repeating it could rent twice.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        # "could not connect" arrives wrapped as NewConnectionError; "Connection aborted" (a reset after
        # the request went out) may have been acted on.
        return "NewConnectionError" in repr(exc) or "Connection refused" in str(exc)
    return http_status(exc) == 429 and not is_search_quota(exc)


def outcome_code(exc: BaseException | None) -> str:
    """The `code` label of one counted call: "ok", the HTTP status, or the kind of failure."""
    if exc is None:
        return "ok"
    status = http_status(exc)
    if status is not None:
        return str(status)
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection_error"
    if isinstance(exc, (MalformedAnswer, ValueError, KeyError, TypeError)):
        return "malformed"
    return "error"


def _detail(exc: BaseException, api_key: str | None) -> str:
    body = error_body(exc)
    parts = [str(body[k]) for k in ("error", "msg", "message", "detail") if body.get(k)]
    text = ": ".join(dict.fromkeys(parts)) if parts else ""
    return redact(text, api_key)[:_MAX_DETAIL]


def translate(
    exc: BaseException,
    operation: str,
    *,
    api_key: str | None,
    server_url: str,
    subject: str = "",
    not_found: str = "",
) -> VastfleetError:
    """Our error for a failure of `operation` that our retries could not (or must not) fix.

    `subject` names the thing acted on ("offer 123", "instance 7") for the message; `not_found` says
    what a 404 means for this operation: "offer" (OfferUnavailable), "instance" (InstanceGone), or ""
    (nothing in particular: a listing or search endpoint that answers 404/410 is a plain MarketError).
    """
    if isinstance(exc, VastfleetError):
        return exc
    what = f"{operation} {subject}".strip()
    ctx: dict[str, Any] = {"operation": operation}
    status = http_status(exc)
    if status is not None:
        ctx["status"] = status
        detail = _detail(exc, api_key)
        body_error = str(error_body(exc).get("error") or "")
        suffix = f" ({detail})" if detail else ""
        if status in (401, 403):
            return MarketAuthError(
                f"vast.ai refused the API key for {what} (HTTP {status}); check VAST_API_KEY or the key "
                f"file of `vastai set api-key`{suffix}",
                **ctx,
            )
        if status == 402 or _FUNDS_PATTERN.search(detail):
            return InsufficientFunds(
                f"not enough credit on the vast.ai account for {what} (HTTP {status}){suffix}", **ctx
            )
        if not_found == "offer" and (status in (404, 410) or body_error in _OFFER_GONE_KEYS):
            return OfferUnavailable(f"{subject or 'the offer'} is no longer available{suffix}", **ctx)
        if not_found == "instance" and (status in (404, 410) or body_error in _INSTANCE_GONE_KEYS):
            return InstanceGone(f"{subject or 'the instance'} no longer exists on vast.ai{suffix}", **ctx)
        if status == 429 or 500 <= status <= 599:
            delay = retry_after(exc) or 30.0
            return MarketUnavailable(
                f"vast.ai is {'rate limiting us' if status == 429 else 'failing'} (HTTP {status}) on {what} "
                f"after retries; try again later{suffix}",
                delay=delay,
                **ctx,
            )
        return MarketError(f"vast.ai rejected {what} (HTTP {status}){suffix}", **ctx)
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "could not connect"
        return MarketUnavailable(
            f"{what}: {kind} to the marketplace at {redact(server_url, api_key)}; try again later",
            delay=10.0,
            **ctx,
        )
    if isinstance(exc, TimeoutError):
        # the client's polling of a result URL (logs) gave up
        return MarketUnavailable(f"{what}: vast.ai did not make the result ready in time", delay=10.0, **ctx)
    if isinstance(exc, SystemExit):
        return MarketError(f"{what}: the vastai client tried to exit the process (code {exc.code})", **ctx)
    text = redact(f"{type(exc).__name__}: {exc}", api_key)[:_MAX_DETAIL]
    if isinstance(exc, (MalformedAnswer, ValueError, KeyError, TypeError)):
        return MarketError(f"{what}: vast.ai sent an answer we cannot read ({text})", **ctx)
    return MarketError(f"{what} failed: {text}", **ctx)


def refusal(
    body: Any, operation: str, *, api_key: str | None, subject: str = "", not_found: str = "instance"
) -> MarketError:
    """Our error for a 2xx answer that says `"success": false` (vast does this for some refusals)."""
    data = body if isinstance(body, dict) else {}
    key = str(data.get("error") or "")
    parts = [str(data[k]) for k in ("error", "msg", "message") if data.get(k)]
    detail = redact(": ".join(dict.fromkeys(parts)), api_key)[:_MAX_DETAIL] or "no reason given"
    what = f"{operation} {subject}".strip()
    if _FUNDS_PATTERN.search(detail):
        return InsufficientFunds(
            f"not enough credit on the vast.ai account for {what} ({detail})", operation=operation
        )
    if not_found == "offer" and key in _OFFER_GONE_KEYS:
        return OfferUnavailable(
            f"{subject or 'the offer'} is no longer available ({detail})", operation=operation
        )
    if not_found == "instance" and key in _INSTANCE_GONE_KEYS:
        return InstanceGone(
            f"{subject or 'the instance'} no longer exists on vast.ai ({detail})", operation=operation
        )
    return MarketError(f"vast.ai refused {what} ({detail})", operation=operation)
