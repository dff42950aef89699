"""Answers the simulator never gives (malformed listings, odd create answers, a dead port), from a tiny
scripted HTTP server on loopback that lives only in this test module."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.helpers import free_port
from vastfleet.errors import InsufficientFunds, MarketError, MarketUnavailable
from vastfleet.market.retry import RetryPolicy
from vastfleet.market.vast import VastMarketplace
from vastfleet.spec.market import CreateRequest

KEY = "stub-key-0f9e8d7c6b5a"
Reply = tuple[int, Any, dict[str, str]]


class Stub:
    """Scripted answers by path prefix; the last answer of a script repeats. Records (method, path)."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.seen: list[tuple[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stub.seen.append((self.command, self.path))
                status, body, headers = stub.reply(self.path)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "text/plain" if isinstance(body, str) else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def script(self, prefix: str, *replies: Reply) -> None:
        self.scripts[prefix] = list(replies)

    def reply(self, path: str) -> Reply:
        for prefix, replies in self.scripts.items():
            if path.startswith(prefix):
                return replies.pop(0) if len(replies) > 1 else replies[0]
        return 404, {"success": False, "error": "not_found", "msg": "no script"}, {}

    def count(self, prefix: str) -> int:
        return sum(1 for _, p in self.seen if p.startswith(prefix))


@pytest.fixture
def stub() -> Iterator[Stub]:
    s = Stub()
    yield s
    s.server.shutdown()
    s.server.server_close()


def market_on(stub: Stub, **kwargs: Any) -> VastMarketplace:
    kwargs.setdefault("retry", RetryPolicy.fast(attempts=3))
    return VastMarketplace(KEY, stub.url, **kwargs)


ROW = {"id": 1, "label": "vf:a:1", "start_date": 1.0, "extra_env": [], "actual_status": "running"}
LIST = "/api/v1/instances/"


@pytest.mark.parametrize(
    "page",
    [
        {"instances": None, "next_token": None},
        {"next_token": None},
        ["not", "a", "page"],
        {"instances": [ROW], "next_token": None, "total_instances": 3},
        {"instances": [{"label": "no id"}]},
    ],
)
def test_a_malformed_listing_raises_never_empty(stub: Stub, page: Any) -> None:
    stub.script(LIST, (200, page, {}))
    with pytest.raises(MarketError):
        market_on(stub).list_instances()


def test_a_gone_listing_endpoint_raises(stub: Stub) -> None:
    stub.script(LIST, (410, {"success": False, "error": "deprecated", "msg": "use v2"}, {}))
    with pytest.raises(MarketError, match="410"):
        market_on(stub).list_instances()
    assert stub.count(LIST) == 1  # permanent: not retried


def test_a_repeated_page_token_raises(stub: Stub) -> None:
    stub.script(LIST, (200, {"instances": [ROW], "next_token": "same"}, {}))
    with pytest.raises(MarketError, match="token"):
        market_on(stub).list_instances()


def test_get_survives_a_row_the_client_cannot_postprocess(stub: Stub) -> None:
    # the vastai client computes `time.time() - start_date`; a row still being created has none
    stub.script(
        "/api/v0/instances/5/", (200, {"instances": {"id": 5, "start_date": None, "actual_status": None}}, {})
    )
    inst = market_on(stub).get_instance(5)
    assert inst is not None and inst.id == 5 and inst.start_date is None


def test_create_answers(stub: Stub) -> None:
    req = CreateRequest(image="x", disk_gb=10, label="vf:a:1", onstart="true")
    stub.script("/api/v0/asks/", (200, {"success": True}, {}))
    with pytest.raises(MarketError, match="without a new instance id"):
        market_on(stub).create_instance(3, req)
    stub.script(
        "/api/v0/asks/",
        (200, {"success": False, "error": "insufficient_credit", "msg": "Your account lacks credit"}, {}),
    )
    with pytest.raises(InsufficientFunds):
        market_on(stub).create_instance(3, req)
    stub.script("/api/v0/asks/", (200, {"success": True, "new_contract": "77"}, {}))
    assert market_on(stub).create_instance(3, req) == 77


def test_retry_after_is_used_and_observer_failures_are_harmless(stub: Stub) -> None:
    waits: list[float] = []
    stub.script(
        "/api/v0/users/current", (429, "slow down", {"Retry-After": "0.01"}), (200, {"credit": 12.5}, {})
    )

    def broken_observer(op: str, code: str, seconds: float) -> None:
        raise RuntimeError("metrics down")

    policy = RetryPolicy(attempts=3, initial_s=5, max_wait_s=1, jitter_s=0, sleep=waits.append)
    assert market_on(stub, retry=policy, on_call=broken_observer).balance() == 12.5
    assert waits == [0.01]


def test_unreachable_server_is_market_unavailable(stub: Stub) -> None:
    dead = VastMarketplace(KEY, f"http://127.0.0.1:{free_port()}", retry=RetryPolicy.fast(attempts=2))
    seen: list[str] = []
    dead._on_call = lambda op, code, s: seen.append(code)  # count the attempts
    with pytest.raises(MarketUnavailable, match="could not connect") as info:
        dead.create_instance(1, CreateRequest(image="x", disk_gb=10, label="l", onstart="true"))
    assert KEY not in str(info.value)
    assert seen == ["connection_error", "connection_error"]  # never connected: safe to repeat a create


def test_a_client_exit_is_contained(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    market = market_on(stub)

    def exits() -> None:
        raise SystemExit(0)

    monkeypatch.setattr(market._sdk, "show_user", exits)
    with pytest.raises(MarketError, match="exit"):
        market.balance()
