"""What an agent may send: each agent route's body cap and strict schema.

An instance is a stranger's machine, so nothing it sends is coerced: a step of `"5"` or `true` is refused,
not read as 5. Every refusal is a BadInput (HTTP 422) naming the field; a body over its route's cap is
refused with 413 before it is parsed; NaN, Infinity and numbers too big for a float (which Python's json
would read as infinite) are refused anywhere in a body. Pure: no I/O but reading the request body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.requests import Request

from vastfleet.errors import BadInput

KIB, MIB = 1024, 1024 * 1024
# Request-body caps per route: a manifest of the default 10,000 files with ordinary names fits easily.
BODY_CAPS = {
    "claim": 16 * KIB,
    "heartbeat": 8 * KIB,
    "presign-upload": 8 * MIB,
    "presign-download": 1 * KIB,
    "commit": 8 * MIB,
    "finish": 8 * KIB,
    "restore-failed": 8 * KIB,
}
MAX_PROGRESS_BYTES = 4096  # the job's progress object as compact JSON
MAX_STEP = 10**15


class BodyTooLarge(BadInput):
    http_status = 413


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> float:
    raise _NonFinite(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text[:20])
    return value


async def read_body(request: Request, verb: str) -> bytes:
    """The raw body, refused with 413 as soon as it passes the route's cap (declared or streamed)."""
    cap = BODY_CAPS[verb]
    too_big = BodyTooLarge(f"the {verb} request body is over its limit of {cap} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object with finite numbers only; an empty body is `{}`."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except _NonFinite as exc:
        raise BadInput(f"the request body holds a non-finite number ({exc}); only finite numbers are accepted")
    except (ValueError, RecursionError):
        raise BadInput("the request body is not valid JSON (or nests too deeply)") from None
    if not isinstance(data, dict):
        raise BadInput("the request body must be a JSON object")
    return data


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Step = Annotated[int, Field(ge=0, le=MAX_STEP)]


class ClaimBody(_Body):
    gpus: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=16)] = []
    instance_id: Annotated[str, Field(max_length=64)] | Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    agent: Annotated[str, Field(max_length=40)] | None = None
    nonce: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,128}$")] | None = None
    error: Annotated[str, Field(min_length=1, max_length=1000)] | None = None  # a host fault before the run


class PendingCheckpoint(_Body):
    """The newest checkpoint written on the instance and not yet committed: what a salvage would copy off the
    disk (`dir` under the checkpoint directory) and verify (`digest`: the manifest's, as its storage key)."""

    step: Step
    dir: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
    bytes: Annotated[int, Field(ge=0, le=2**50)]
    files: Annotated[int, Field(ge=1, le=10**6)]


class HeartbeatBody(_Body):
    progress: dict[str, Any] = {}
    ckpt_step: Annotated[int, Field(ge=-1, le=MAX_STEP)] | None = None
    phase: Annotated[str, Field(max_length=40)] = ""
    pending_uploads: Annotated[int, Field(ge=0, le=10**6)] | None = None  # complete dirs not committed yet
    pending: PendingCheckpoint | None = None

    @field_validator("progress")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":")))
        if size > MAX_PROGRESS_BYTES:
            raise ValueError(f"is {size} bytes as JSON; the limit is {MAX_PROGRESS_BYTES}")
        return value


class FinishBody(_Body):
    exit_code: Annotated[int, Field(ge=-255, le=255)] | None = None
    error: Annotated[str, Field(max_length=1000)] | None = None
    # whose fault an end without an exit code is: "host" (no GPU...) -> INTERRUPTED, not counted against
    # retries_on_error; "job" (the command could not start...) -> counted. Default: host without an exit code.
    fault: Literal["job", "host"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FinishBody:
        if self.exit_code is None and not self.error:
            raise ValueError("finish needs an exit_code or an error")
        if self.exit_code is not None and self.fault == "host":
            raise ValueError("an exit code is the job's own; fault host goes with exit_code null")
        return self


class RestoreFailedBody(_Body):
    step: Step | None
    prefix: Annotated[str, Field(min_length=1, max_length=1024)]
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class EmptyBody(_Body):
    pass


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], verb: str) -> Callable[[dict[str, Any]], M]:
    """A parser of one route's body into `model`, its refusals naming the field."""

    def parse(data: dict[str, Any]) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise BadInput(f"invalid {verb} request: {loc}: {msg}") from None

    return parse
