"""`vastfleet sweep dashboard ID`: optuna-dashboard on the sweep's study, served on this machine.

The study is read through the API (`GET /v1/sweeps/{id}/journal`, the user token): a journal backend that
pulls new records as the dashboard refreshes, so the plots follow the live sweep and no Redis credentials
leave the control plane. Read-only that way (the dashboard's notes and edits are refused); with
`--redis-url` it opens the journal on Redis directly instead. Served by wsgiref on loopback by default.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Generator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from vastfleet.errors import Forbidden
from vastfleet.sweeps.client import SweepClient


class ApiJournalBackend(BaseJournalBackend):
    """The sweep's journal as the API pages it out; appending is refused (a read-only view)."""

    def __init__(self, client: SweepClient, sweep_id: str) -> None:
        self.client = client
        self.sweep_id = sweep_id
        self._lock = threading.Lock()

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        after = log_number_from - 1
        while True:
            with self._lock:  # the dashboard serves several requests at once; httpx clients are not shared
                page = self.client.sweep_journal(self.sweep_id, after)
            yield from page["records"]
            if not page["records"] or page["next"] >= page["last"]:
                return
            after = int(page["next"])

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise Forbidden("this dashboard reads the sweep through the API and cannot change it"
                        " (run `vastfleet sweep dashboard` with --redis-url to edit notes)")


def api_storage(client: SweepClient, sweep_id: str) -> JournalStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return JournalStorage(ApiJournalBackend(client, sweep_id))


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class DashboardServer:
    """optuna-dashboard's WSGI app on a wsgiref server in a thread: `url`, `stop()`."""

    def __init__(self, storage: Any, host: str = "127.0.0.1", port: int = 8080) -> None:
        from optuna_dashboard import wsgi

        self.httpd: WSGIServer = make_server(host, port, wsgi(storage), handler_class=_Quiet)
        self.host, self.port = host, int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="optuna-dashboard", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/dashboard/"

    def start(self) -> DashboardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
