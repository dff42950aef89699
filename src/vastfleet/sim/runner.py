"""The process runner: each simulated instance's onstart command as a local process group in a sandbox.

Layout under `<workdir>/instances/<id>/`: `workspace/` (the sandbox, the job's /workspace and $HOME),
`bin/nvidia-smi` (the fake GPU tool, first on PATH) and `container.log` (stdout and stderr of every run,
appended; what `vastai logs` returns). A start runs `/bin/sh -c ONSTART` as a new session; a kill is
SIGKILL to the whole group at once, never SIGTERM (a paused vast container gets no notice), and to every
process that left the group (a `setsid` child, the agent's job in its own session): each carries the
instance's marker in its environment (`VASTFLEET_SIM_INSTANCE`), as a container holds all its processes.
Remove deletes the directory (destroy deletes the disk). `close()` kills every instance: no process outlives
the simulator.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import threading
import weakref
from pathlib import Path
from typing import Any, Protocol

from vastfleet.sim.entities import Instance, Machine
from vastfleet.sim.nvidia_smi import write_fake_nvidia_smi


class Runner(Protocol):
    """What the market asks of a process runner."""

    def start(self, inst: Instance, machine: Machine) -> None: ...
    def kill(self, instance_id: int) -> None: ...
    def remove(self, instance_id: int) -> None: ...


class NullRunner:
    """Runs nothing: for pure model tests and the benchmark."""

    def start(self, inst: Instance, machine: Machine) -> None:
        return None

    def kill(self, instance_id: int) -> None:
        return None

    def remove(self, instance_id: int) -> None:
        return None


_LIVE: weakref.WeakSet[ProcessRunner] = weakref.WeakSet()


def _kill_all_at_exit() -> None:
    for runner in list(_LIVE):
        runner.close()


atexit.register(_kill_all_at_exit)


def instance_env(inst: Instance, machine: Machine, sandbox: Path, bin_dir: Path) -> dict[str, str]:
    """The environment of an instance's onstart: the create env's real variables (not its `-p` port
    entries), vast's own variables, and the fake nvidia-smi first on PATH."""
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}",
        "HOME": str(sandbox),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "VASTFLEET_SIM_WORKSPACE": str(sandbox),
        "VAST_CONTAINERLABEL": f"C.{inst.id}",
        "CONTAINER_ID": str(inst.id),
        "PUBLIC_IPADDR": machine.public_ip,
        "NVIDIA_VISIBLE_DEVICES": ",".join(str(g) for g in inst.gpu_ids),
        "GPU_COUNT": str(len(inst.gpu_ids)),
    }
    for key, port in inst.ports.items():
        inner, proto = key.split("/", 1)
        env[f"VAST_{proto.upper()}_PORT_{inner}"] = str(port)
    for name, value in inst.env.items():
        if name.startswith("-") or not name.replace("_", "a").isalnum():
            continue
        env[name] = value
    if not env["PATH"].startswith(str(bin_dir)):
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


MARKER = "VASTFLEET_SIM_INSTANCE"


def marked(marker: str, prefix: bool = False) -> list[int]:
    """Pids of the processes whose environment carries `MARKER=marker` (or a value starting with it)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(needle) if prefix else v == needle for v in env):
            found.append(int(entry))
    return found


class ProcessRunner:
    def __init__(self, workdir: Path) -> None:
        self.token = os.urandom(6).hex()  # two simulators on one machine never touch each other's processes
        self.root = Path(workdir) / "instances"
        self.root.mkdir(parents=True, exist_ok=True)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.kills: dict[int, int] = {}
        self.last_exit: dict[int, int | None] = {}
        self.lock = threading.Lock()
        _LIVE.add(self)

    def instance_dir(self, instance_id: int) -> Path:
        return self.root / str(int(instance_id))

    def sandbox(self, instance_id: int) -> Path:
        return self.instance_dir(instance_id) / "workspace"

    def log_path(self, instance_id: int) -> Path:
        return self.instance_dir(instance_id) / "container.log"

    def start(self, inst: Instance, machine: Machine) -> None:
        self.kill(inst.id)
        base = self.instance_dir(inst.id)
        sandbox = self.sandbox(inst.id)
        bin_dir = base / "bin"
        sandbox.mkdir(parents=True, exist_ok=True)
        write_fake_nvidia_smi(
            bin_dir,
            inst.id,
            machine.gpu_name,
            len(inst.gpu_ids),
            machine.gpu_ram_gb,
            machine.driver_version,
            machine.cuda_max_good,
        )
        env = instance_env(inst, machine, sandbox, bin_dir)
        env[MARKER] = self.marker(inst.id)
        with open(self.log_path(inst.id), "ab") as log:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", inst.onstart or "true"],
                cwd=sandbox,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self.lock:
            self.procs[inst.id] = proc

    def marker(self, instance_id: int) -> str:
        return f"{self.token}:{int(instance_id)}"

    def kill(self, instance_id: int) -> None:
        with self.lock:
            proc = self.procs.pop(instance_id, None)
        if proc is None:
            return
        # The group id is the leader's pid (a new session); the leader is never reaped before this kill,
        # so the id cannot have been reused by a stranger.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._sweep(instance_id)
        try:
            self.last_exit[instance_id] = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.last_exit[instance_id] = None
        self.kills[instance_id] = self.kills.get(instance_id, 0) + 1

    def _sweep(self, instance_id: int | None) -> None:
        """Every process of the instance (None: of every instance) that left its group: a container's stop
        spares none of them. A process may fork while it is swept, hence a few rounds."""
        for _ in range(5):
            found = marked(f"{self.token}:", prefix=True) if instance_id is None else marked(self.marker(instance_id))
            pids = [p for p in found if p != os.getpid()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def remove(self, instance_id: int) -> None:
        self.kill(instance_id)
        shutil.rmtree(self.instance_dir(instance_id), ignore_errors=True)

    def alive(self, instance_id: int) -> bool:
        """Whether the onstart shell itself still runs (a zombie leader counts as exited)."""
        with self.lock:
            proc = self.procs.get(instance_id)
        if proc is None:
            return False
        try:
            stat = Path(f"/proc/{proc.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def info(self, instance_id: int) -> dict[str, Any]:
        with self.lock:
            proc = self.procs.get(instance_id)
        return {
            "pid": proc.pid if proc else None,
            "pgid": proc.pid if proc else None,
            "alive": self.alive(instance_id),
            "kills": self.kills.get(instance_id, 0),
            "last_exit": self.last_exit.get(instance_id),
            "sandbox": str(self.sandbox(instance_id)),
            "log": str(self.log_path(instance_id)),
        }

    def log_text(self, instance_id: int) -> str:
        try:
            return self.log_path(instance_id).read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        with self.lock:
            ids = list(self.procs)
        for iid in ids:
            self.kill(iid)
        self._sweep(None)
