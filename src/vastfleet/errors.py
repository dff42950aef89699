"""The error tree of vastfleet, split by what the caller should do.

Every error carries a message a user can act on; none may carry a secret. The CLI prints `str(err)` and
exits with `err.exit_code`; the API answers `err.http_status`. This module imports nothing of the project,
so every part may use it.
"""

from __future__ import annotations

from typing import Any


class VastfleetError(Exception):
    """Base of every error we raise on purpose."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


# --- the caller sent something wrong: fix the input, do not retry -------------------------------------


class BadInput(VastfleetError):
    """Input that can never be accepted as it is (exit 2, HTTP 422)."""

    exit_code = 2
    http_status = 422


class SpecError(BadInput):
    """A job or sweep spec that fails validation; `problems` lists (location, message) pairs."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class NotFound(VastfleetError):
    exit_code = 1
    http_status = 404


class Unauthorized(VastfleetError):
    http_status = 401


class Forbidden(VastfleetError):
    http_status = 403


# --- the world moved on: the action no longer makes sense ---------------------------------------------


class Conflict(VastfleetError):
    http_status = 409


class IllegalTransition(Conflict):
    """A job state change that the state machine does not allow; nothing was written."""


class StaleEpoch(Conflict):
    """A writer of an older attempt; it must stop (the agent of a job that moved on)."""


# --- try again later ----------------------------------------------------------------------------------


class RetryLater(VastfleetError):
    """A temporary failure; `delay` is a hint in seconds."""

    http_status = 503

    def __init__(self, message: str, delay: float = 5.0, **context: Any) -> None:
        super().__init__(message, **context)
        self.delay = delay


class NotYetDestroyed(RetryLater):
    """A destroy that must wait (checkpoint not yet verified off-box) or is not yet confirmed."""


# --- the marketplace ----------------------------------------------------------------------------------


class MarketError(VastfleetError):
    """A marketplace call failed permanently (bad request, refused)."""

    http_status = 502


class MarketAuthError(MarketError):
    """The marketplace refused our API key."""


class MarketUnavailable(RetryLater):
    """Rate limited (429) or a server error (5xx) from the marketplace, after our retries."""


class OfferUnavailable(MarketError):
    """The offer is gone (rented by someone else, or never existed)."""


class InstanceGone(MarketError):
    """The instance does not exist any more."""


class InsufficientFunds(MarketError):
    """The account balance is too low to rent."""


# --- storage ------------------------------------------------------------------------------------------


class StorageError(VastfleetError):
    """Checkpoint storage failed."""


class ChecksumMismatch(StorageError):
    """An uploaded object does not match its manifest entry (size or sha256)."""

    http_status = 422
