"""The mapping of the client's failures to vastfleet.errors, and the retry policy, without a server."""

from __future__ import annotations

import json

import pytest
import requests

from vastfleet.errors import (
    InstanceGone,
    InsufficientFunds,
    MarketAuthError,
    MarketError,
    MarketUnavailable,
    OfferUnavailable,
)
from vastfleet.market.errors import (
    MalformedAnswer,
    is_refused_unprocessed,
    is_transient,
    outcome_code,
    refusal,
    translate,
)
from vastfleet.market.retry import RetryPolicy

KEY = "sk-secret-0123456789abcdef"


def http_error(status: int, body: object = None, headers: dict[str, str] | None = None) -> requests.HTTPError:
    r = requests.Response()
    r.status_code = status
    r.url = "http://127.0.0.1:1/api/v0/x/"
    if body is not None:
        r._content = (json.dumps(body) if not isinstance(body, str) else body).encode()
        r.headers["Content-Type"] = "application/json" if not isinstance(body, str) else "text/plain"
    r.headers.update(headers or {})
    return requests.HTTPError(f"{status} Error for url: {r.url}", response=r)


def tr(exc: BaseException, not_found: str = "instance") -> Exception:
    return translate(
        exc, "op", api_key=KEY, server_url="http://127.0.0.1:1", subject="thing 1", not_found=not_found
    )


@pytest.mark.parametrize(
    ("exc", "not_found", "expected"),
    [
        (
            http_error(401, {"success": False, "error": "auth_error", "msg": f"Invalid user key {KEY}"}),
            "instance",
            MarketAuthError,
        ),
        (http_error(403, {"msg": "forbidden"}), "instance", MarketAuthError),
        (http_error(404, {"error": "no_such_ask", "msg": "gone"}), "offer", OfferUnavailable),
        (http_error(400, {"error": "no_such_ask", "msg": "gone"}), "offer", OfferUnavailable),
        (http_error(404, {"msg": "nope"}), "instance", InstanceGone),
        (http_error(402, {"msg": "pay up"}), "offer", InsufficientFunds),
        (
            http_error(400, {"error": "insufficient_credit", "msg": "Your account lacks credit"}),
            "offer",
            InsufficientFunds,
        ),
        (http_error(429, "slow down"), "instance", MarketUnavailable),
        (http_error(503, {"msg": "down"}), "instance", MarketUnavailable),
        (http_error(400, {"error": "invalid_args", "msg": "bad disk"}), "offer", MarketError),
        (requests.ConnectionError("refused"), "instance", MarketUnavailable),
        (requests.ReadTimeout("slow"), "instance", MarketUnavailable),
        (MalformedAnswer("no list"), "instance", MarketError),
        (KeyError("offers"), "instance", MarketError),
        (SystemExit(0), "instance", MarketError),
    ],
)
def test_mapping_table(exc: BaseException, not_found: str, expected: type[Exception]) -> None:
    err = tr(exc, not_found)
    assert type(err) is expected
    assert KEY not in str(err) and str(err)


def test_auth_message_is_actionable_and_keyless() -> None:
    err = tr(http_error(401, {"msg": f"bad key {KEY}", "error": "auth_error"}))
    assert "VAST_API_KEY" in str(err) and "401" in str(err) and KEY not in str(err)


def test_429_delay_follows_retry_after() -> None:
    err = tr(http_error(429, {"msg": "rate"}, {"Retry-After": "7"}))
    assert isinstance(err, MarketUnavailable) and err.delay == 7.0


def test_refusal_bodies() -> None:
    assert isinstance(
        refusal(
            {"success": False, "error": "no_such_ask"}, "create_instance", api_key=KEY, not_found="offer"
        ),
        OfferUnavailable,
    )
    assert isinstance(
        refusal({"success": False, "msg": "insufficient credit"}, "create_instance", api_key=KEY),
        InsufficientFunds,
    )
    err = refusal({"success": False, "msg": f"weird {KEY}"}, "stop_instance", api_key=KEY)
    assert type(err) is MarketError and KEY not in str(err)


def test_transient_classification() -> None:
    assert (
        is_transient(http_error(429, "x"))
        and is_transient(http_error(500, {}))
        and is_transient(http_error(504, {}))
    )
    assert is_transient(requests.ConnectionError("x")) and is_transient(requests.ReadTimeout("x"))
    assert not is_transient(http_error(401, {})) and not is_transient(http_error(404, {}))
    assert not is_transient(http_error(429, {"error": "search_quota_exceeded"}))  # resets at midnight
    assert not is_transient(ValueError("x"))
    # a create may be repeated only when vast certainly did not act on it
    assert is_refused_unprocessed(http_error(429, "x"))
    assert not is_refused_unprocessed(http_error(502, {}))
    assert not is_refused_unprocessed(requests.ReadTimeout("x"))
    assert not is_refused_unprocessed(requests.ConnectionError("Connection aborted."))
    assert is_refused_unprocessed(requests.ConnectTimeout("x"))


def test_outcome_codes() -> None:
    assert outcome_code(None) == "ok"
    assert outcome_code(http_error(429, "x")) == "429"
    assert outcome_code(requests.ConnectionError("x")) == "connection_error"
    assert outcome_code(requests.ReadTimeout("x")) == "timeout"
    assert outcome_code(MalformedAnswer("x")) == "malformed"


class Flaky:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def test_retry_recovers_within_attempts_with_growing_jittered_waits() -> None:
    waits: list[float] = []
    policy = RetryPolicy(
        attempts=4, initial_s=0.1, max_wait_s=5, jitter_s=0.05, max_total_s=60, sleep=waits.append
    )
    fn = Flaky([http_error(503, {}), http_error(502, {}), http_error(429, "x")])
    assert policy.run(fn, is_transient) == "done"
    assert fn.calls == 4 and len(waits) == 3
    assert 0.1 <= waits[0] <= 0.15 and 0.2 <= waits[1] <= 0.25 and 0.4 <= waits[2] <= 0.45


def test_retry_gives_up_after_attempts_and_reraises_last() -> None:
    waits: list[float] = []
    policy = RetryPolicy(attempts=3, initial_s=0.01, max_wait_s=0.01, jitter_s=0, sleep=waits.append)
    fn = Flaky([http_error(500, {}), http_error(500, {}), http_error(503, {}), http_error(500, {})])
    with pytest.raises(requests.HTTPError) as info:
        policy.run(fn, is_transient)
    assert info.value.response is not None and info.value.response.status_code == 503
    assert fn.calls == 3 and len(waits) == 2


def test_retry_does_not_repeat_permanent_errors() -> None:
    fn = Flaky([http_error(401, {})])
    with pytest.raises(requests.HTTPError):
        RetryPolicy.fast().run(fn, is_transient)
    assert fn.calls == 1


def test_retry_after_is_honoured_but_capped() -> None:
    waits: list[float] = []
    policy = RetryPolicy(attempts=3, initial_s=0.01, max_wait_s=2.0, jitter_s=0, sleep=waits.append)
    fn = Flaky([http_error(429, "x", {"Retry-After": "1.5"}), http_error(429, "x", {"Retry-After": "3600"})])
    assert policy.run(fn, is_transient) == "done"
    assert waits == [1.5, 2.0]


def test_retry_total_time_is_bounded() -> None:
    policy = RetryPolicy(attempts=1000, initial_s=0.02, max_wait_s=0.02, jitter_s=0, max_total_s=0.1)
    fn = Flaky([http_error(500, {}) for _ in range(1000)])
    with pytest.raises(requests.HTTPError):
        policy.run(fn, is_transient)
    assert fn.calls < 10


def test_policy_validates() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_s=-1)
