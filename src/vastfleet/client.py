"""A small client of the user API (the CLI's only way to the server), configured by VASTFLEET_URL and
VASTFLEET_TOKEN.

Translates every transport failure and error status into `vastfleet.errors`, with one-line messages that
name the URL; never prints, never retries on its own, never shows the token.
"""

from __future__ import annotations

import builtins
import os
from typing import Any, Self

import httpx

from vastfleet.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    RetryLater,
    Unauthorized,
    VastfleetError,
)
from vastfleet.spec import Job, JobEvent, JobSpec, JobState, JobSummary
from vastfleet.spec.summary import QuarantineEntry

DEFAULT_URL = "http://127.0.0.1:8765"

_BY_STATUS: dict[int, type[VastfleetError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: BadInput, 422: BadInput,
    503: RetryLater,
}


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("VASTFLEET_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("VASTFLEET_TOKEN", "")
        if not self.url.startswith(("http://", "https://")):
            raise BadInput(f"VASTFLEET_URL {self.url!r} is not an http:// or https:// URL")
        self._has_token = bool(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the API ------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec | dict[str, Any]) -> Job:
        body = spec.model_dump(mode="json") if isinstance(spec, JobSpec) else spec
        return Job.model_validate(self._call("POST", "/v1/jobs", json=body))

    def list(self, state: JobState | str | None = None, limit: int = 100, *, before: str | None = None,
             after: str | None = None) -> builtins.list[JobSummary]:
        """Job summaries in submit order: the `limit` (at most 1000) most recent, or those just before or
        after a job id (the first of a page is the cursor to the older one). `get` has the full job."""
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state.value if isinstance(state, JobState) else state
        if before is not None:
            params["before"] = before
        if after is not None:
            params["after"] = after
        return [JobSummary.model_validate(j) for j in self._call("GET", "/v1/jobs", params=params)]

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._call("GET", f"/v1/jobs/{_segment(job_id)}"))

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self._call("POST", f"/v1/jobs/{_segment(job_id)}/cancel"))

    def events(self, job_id: str, after: str | None = None, limit: int = 1000) -> builtins.list[JobEvent]:
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        data = self._call("GET", f"/v1/jobs/{_segment(job_id)}/events", params=params)
        return [JobEvent.model_validate(e) for e in data]

    def quarantined(self, limit: int = 100) -> builtins.list[QuarantineEntry]:
        """Jobs whose records no longer decode, set aside by the server."""
        return [QuarantineEntry.model_validate(q) for q in self._call("GET", "/v1/quarantine",
                                                                         params={"limit": limit})]

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")  # type: ignore[no-any-return]

    # --- transport ----------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise VastfleetError(f"the vastfleet server at {self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise VastfleetError(
                f"cannot reach the vastfleet server at {self.url} ({reason}); is `vastfleet server` running"
                " and VASTFLEET_URL right?") from None
        if response.is_success:
            return response.json()
        detail = _detail(response)
        error = _BY_STATUS.get(response.status_code)
        if error is None:
            raise VastfleetError(f"the vastfleet server at {self.url} answered {response.status_code}: {detail}")
        if error is Unauthorized and not self._has_token:
            # The server speaks HTTP ("send Authorization: Bearer ..."); a CLI user needs the variable to set.
            detail = (f"the vastfleet server at {self.url} needs the user token: set VASTFLEET_TOKEN to the"
                      " server's token (export VASTFLEET_TOKEN=...)")
        elif error is Unauthorized and "VASTFLEET_TOKEN" not in detail:
            detail += " (set VASTFLEET_TOKEN)"
        raise error(detail)


def _segment(job_id: str) -> str:
    if not job_id or "/" in job_id or job_id in (".", ".."):
        raise BadInput(f"{job_id!r} is not a job id")
    return job_id


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.reason_phrase or f"HTTP {response.status_code}"
