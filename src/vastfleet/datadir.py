"""What the control plane keeps on its own disk so that a restart loses nothing: the data directory (the
embedded Redis's files, local checkpoints) and the secrets it signs with.

The default data directory lasts (`$XDG_DATA_HOME/vastfleet`, else `~/.local/share/vastfleet`): the quick
start of the README, restarted, still verifies its checkpoints and its agents' tokens. A secret not given in
the settings is generated once into `<data dir>/secrets/<name>` (mode 0600) and read back ever after.
Never logs a secret.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import redis


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vastfleet"


def lasting_secret(data_dir: Path, name: str, given: str = "") -> str:
    """`given` when set; else the one kept in the data directory, made on first use."""
    if given:
        return given
    folder = data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
        raise ValueError(f"{path} holds no usable secret: remove it, or set VASTFLEET_{name.upper()}") from None
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


class EmbeddedRedis:
    """A `redis-server` child on a free loopback port, in its own process group, killed at stop."""

    def __init__(self, workdir: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", "",
             "--appendonly", "yes", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        atexit.register(self.stop)  # even a crash of the embedding process must not leave the child behind
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the embedded redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
