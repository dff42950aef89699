"""Running the API: in the foreground (`vastfleet server`) or in a background thread (demo, tests, bench).

Owns the uvicorn settings; never builds the app or its context. An address that cannot be listened on (a
port in use, an address not on this machine) is a `BadInput` with one line that names it, raised before
anything is served: never uvicorn's traceback after its "running on" line.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from vastfleet.errors import BadInput

_WHY = {errno.EADDRINUSE: "the port is already in use (another server runs there?)",
        errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
        errno.EACCES: "permission denied (ports below 1024 need root)"}


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) for uvicorn to serve on; BadInput naming the address when it cannot be."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY on the connections it accepts only for a socket that says
        # so; without it every answer on a kept-alive connection waited ~40 ms for a delayed ACK (Nagle)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except OSError as exc:
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses a port left in TIME_WAIT
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        why = _WHY.get(getattr(exc, "errno", None) or -1) or getattr(exc, "strerror", None) or str(exc)
        raise BadInput(f"cannot listen on {host}:{port}: {why}") from None
    return sock


def check_listen(host: str, port: int) -> None:
    """Fail early, before a server prints anything, when (host, port) cannot be listened on."""
    if port:
        listening_socket(host, port).close()


def run_forever(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


class ServerThread:
    """uvicorn serving `app` on a loopback port in a daemon thread; `with ServerThread(app) as url: ...`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.sock = listening_socket(host, port)  # bound here, so the port is ours before the thread starts
        self.host, self.port = host, int(self.sock.getsockname()[1])
        # log_config=None: uvicorn's lines go through the process's own logging (`vastfleet.logs`), same format
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"vastfleet-api-{self.port}")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # uvicorn offers no event to wait on; poll its flag
        if not self.server.started:
            raise RuntimeError(f"the API did not start on {self.url}")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
