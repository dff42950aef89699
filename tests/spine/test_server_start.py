"""`vastfleet server` and `vastfleet sim serve` as a user starts them (issue 16): a port in use is one line and
exit 2; the server logs each decision, readable or as JSON lines; `/metrics` answers at `/metrics`.
Real processes, real redis-server, loopback only."""

from __future__ import annotations

import io
import json
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import clean_env, free_port, wait_for
from tests.spine.conftest import TOKEN, spec_dict
from vastfleet import logs
from vastfleet.api import ApiContext, create_app
from vastfleet.api.serve import ServerThread
from vastfleet.errors import BadInput
from vastfleet.metrics import FleetMetrics, metrics_asgi_app
from vastfleet.queue import JobStore

VASTFLEET = [sys.executable, "-m", "vastfleet.cli"]


@contextmanager
def occupied_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VASTFLEET, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_server_on_a_port_in_use_says_so_in_one_line_and_exits_2(redis_url: str) -> None:
    with occupied_port() as port:
        done = run(["server", "--port", str(port), "--redis-url", redis_url, "--no-scheduler"],
                   clean_env(VASTFLEET_TOKEN=TOKEN))
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "in use" in done.stderr and "Traceback" not in done.stderr


def test_sim_serve_on_a_port_in_use_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    with occupied_port() as port:
        done = run(["sim", "serve", "--port", str(port), "--workdir", str(tmp_path)], clean_env())
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "in use" in done.stderr and "Traceback" not in done.stderr


def test_the_api_thread_on_a_port_in_use_is_bad_input(store: JobStore) -> None:
    with occupied_port() as port, pytest.raises(BadInput, match="in use"):
        ServerThread(create_app(ApiContext(store=store, token=TOKEN)), port=port)


def test_metrics_answer_200_at_metrics_not_a_redirect(store: JobStore) -> None:
    app = create_app(ApiContext(store=store, token=TOKEN, metrics_app=metrics_asgi_app(FleetMetrics())))
    with ServerThread(app) as url:
        exact = httpx.get(f"{url}/metrics", follow_redirects=False)
        assert exact.status_code == 200 and "vastfleet_build_info" in exact.text
        assert httpx.get(f"{url}/metrics/", follow_redirects=False).status_code == 200


def test_bad_log_options_exit_2_before_anything(redis_url: str) -> None:
    env = clean_env(VASTFLEET_TOKEN=TOKEN)
    for option in (["--log-level", "LOUD"], ["--log-format", "xml"]):
        done = run(["server", "--redis-url", redis_url, "--no-scheduler", *option], env)
        assert done.returncode == 2 and option[0] in done.stderr and "Traceback" not in done.stderr


def test_the_server_logs_each_action_as_one_json_object_per_line(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    log_file = tmp_path / "server.log"
    server = subprocess.Popen([*VASTFLEET, "server", "--port", str(port), "--redis-url", redis_url,
                               "--no-scheduler", "--log-format", "json"],
                              env=clean_env(VASTFLEET_TOKEN=TOKEN, VASTFLEET_DATA_DIR=str(tmp_path / "data")),
                              stdout=subprocess.DEVNULL, stderr=log_file.open("w"))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=30, what="vastfleet server")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        job = httpx.post(f"{url}/v1/jobs", json=spec_dict(), headers=headers).json()
        assert httpx.post(f"{url}/v1/jobs/{job['id']}/cancel", headers=headers).status_code == 200

        def cancelled() -> list[dict[str, object]]:
            lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
            return [e for e in lines if e.get("job") == job["id"] and e.get("to") == "CANCELLED"] and lines

        lines = wait_for(cancelled, timeout=10, what="the cancel in the log")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    started = [e for e in lines if e.get("event") == "started"]
    assert started and f"127.0.0.1:{port}" in str(started[0]["message"]), "it says where it listens, once it does"
    mine = [e for e in lines if e.get("job") == job["id"]]
    assert [e["event"] for e in mine] == ["submitted", "transition"]
    assert mine[1] == {**mine[1], "to": "CANCELLED", "epoch": 0, "reason": "cancelled by user", "level": "INFO"}
    assert TOKEN not in log_file.read_text()


def test_the_readable_format_puts_every_field_on_the_line() -> None:
    stream = io.StringIO()
    root, ours = logging.getLogger(), logging.getLogger("vastfleet")
    levels, handlers = (root.level, ours.level), list(root.handlers)
    logs.setup("INFO", "text", stream)
    try:
        logs.event(logging.getLogger("vastfleet.test"), "destroy", "the job finished", job="j-1", epoch=2,
                   instance=7)
        logging.getLogger("vastfleet.test").debug("not shown at INFO")
    finally:  # the process's logging as it was (pytest's own handlers included)
        root.handlers[:] = handlers
        root.setLevel(levels[0])
        ours.setLevel(levels[1])
    line = stream.getvalue().strip()
    assert line.endswith("vastfleet.test: destroy job=j-1 epoch=2 instance=7: the job finished")
    assert len(stream.getvalue().splitlines()) == 1


def test_the_api_answers_kept_alive_connections_without_nagle() -> None:
    """The connections the API accepts have TCP_NODELAY: without it each answer on a kept-alive connection
    (a load balancer's, the CLI's, the bench's) waited for the client's delayed ACK, ~40 ms a request (found
    by bench/agents.py: /healthz took 44 ms on a reused connection, 2 ms on a new one)."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    server = ServerThread(app).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            for _ in range(3):  # one kept-alive connection
                assert client.get("/ping").json() == {"pong": "yes"}
            conns = list(server.server.server_state.connections)
            assert conns, "uvicorn tracks the open connection"
            sockets = [c.transport.get_extra_info("socket") for c in conns]  # type: ignore[attr-defined]
            assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
    finally:
        server.stop()
