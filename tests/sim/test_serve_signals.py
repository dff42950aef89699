"""`vastfleet sim serve` stopped by any signal it can catch leaves no instance process behind, not even one
that left its process group (a `setsid` child, as the agent's job runs in a session of its own)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import clean_env, free_port, wait_for

VASTFLEET = str(Path(sys.executable).parent / "vastfleet")


def _call(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body or {}).encode(),
                                 method=method, headers={"Authorization": "Bearer sim-key"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _running(tag: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if tag.encode() in cmdline:
                pids.append(int(entry))
    return pids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_stopping_the_simulator_kills_every_instance_process(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = subprocess.Popen([VASTFLEET, "sim", "serve", "--port", str(port), "--quiet-market", "--boot-delay", "0",
                             "--workdir", str(tmp_path / "sim")], env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    tag = f"vf-{uuid.uuid4().hex[:8]}"  # a word in each process's command line, to find them afterwards
    try:
        wait_for(lambda: _call(port, "GET", "/api/v0/users/current/"), timeout=30, what="the simulator")
        nap = "python3 -c 'import time; time.sleep(600)'"
        onstart = f"{nap} {tag}-a & (setsid {nap} {tag}-b &); exec {nap} {tag}-c"
        for _ in range(3):
            offer = _call(port, "POST", "/api/v0/bundles/", {"type": "on-demand", "limit": 1})["offers"][0]
            _call(port, "PUT", f"/api/v0/asks/{offer['id']}/", {"image": "x", "disk": 10, "onstart": onstart})
        wait_for(lambda: len(_running(tag)) >= 9, timeout=20, what="9 instance processes")
        proc.send_signal(sig)
        assert proc.wait(30) is not None
        wait_for(lambda: not _running(tag), timeout=10, what="no instance process left")
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in _running(tag):
            os.kill(pid, signal.SIGKILL)
