"""The chaos run: the whole control plane, as an operator runs it, under a seeded storm of faults.

What runs (all on loopback):
    redis-server      a real one, `--appendonly yes`, restarted on its own AOF when a fault stops it
    vastfleet server  two processes (API + scheduler + action workers each), one Redis, one data directory
                      and the same secrets: one leads (the lease); a SIGKILL of the leader hands it over
    the simulator     in this process (its HTTP server speaks vast's API to the servers); instances are real
                      process groups running the real agent and the example count job (examples/count.yaml)
    a proxy           of this script's own, between the agents and the API processes (it relays to any live
                      one): it can cut the agents off, or answer 503 to uploads (`/v1/blobs`, presign calls)

Faults, drawn from the seed over the run (each kind at least a few times, `--faults-per-minute` in all):
    scheduler_kill    SIGKILL of the server process that holds the lease, restarted 0.5-3 s later
    redis_restart     SIGKILL or SIGTERM of redis-server, restarted on the same AOF 0.3-3 s later
    market_429        the simulator answers 429 to the next calls (queued faults, or its rate-limit quirk)
    market_5xx        500/502/503 to the next calls (queued faults, or its error-burst quirk)
    market_timeout    the next calls are held past the servers' marketplace timeout, then served (vast acts
                      on a call whose answer the client gave up on)
    ghost             destroyed instances show as stopped for a while (quirk `destroyed_ghost`)
    zombie            an instance of ours is paused by a rival bid and resumes by itself (quirk `zombie`)
    cur_state_lie     the listing's `cur_state` lies for a while (quirk `cur_state_lies`)
    host_offline      the host of a running instance of ours goes offline for 3-15 s
    preempt           a rival bid pauses a running instance of ours (for a while, or until we move)
    agent_cut         the agents' calls hang, then drop, for 1-5 s
    storage_refusal   `/v1/blobs` (uploads and downloads) and presign calls answer 503 for 2-8 s

Then every fault is lifted, the run settles (every job ends, every instance goes), and it checks:
    jobs_lost            a submitted job not SUCCEEDED (the count job never fails by itself: any FAILED or
                         unfinished job is the control plane's loss)
    steps_lost           steps of 1..N missing from a finished job's committed lineage (its checkpoint's
                         `counted`), summed over jobs
    steps_duplicated     steps counted more than once along that lineage
    instances_left       instances of ours (by label) the simulator still holds, in any phase
    unverified_destroys  destroys of an instance of ours whose disk held a complete checkpoint newer than its
                         job's committed one at that moment (the simulator's destroy is hooked to look)
    double_rentals       attempts (labels) ever seen on two live instances at once (sampled every 20 ms)
    ledger_gap_usd       the simulator's ledger for our instances minus what vastfleet attributed
                         (`SpendLedger.total()`); within a cent
    faults               injected faults by kind

`--json` prints one object with those keys (and the details behind them) on the last line.
Usage: python bench/chaos.py [--minutes 3] [--seed 1] [--jobs 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vastfleet.agent.agent import ckpt_dirs
from vastfleet.client import Client
from vastfleet.errors import VastfleetError
from vastfleet.queue import JobStore, Lease
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.spend import SpendLedger
from vastfleet.sim.admin_client import SimAdmin
from vastfleet.sim.entities import Phase
from vastfleet.sim.simulator import SimServer, Simulator
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.jobspec import JobSpec, load_job_spec
from vastfleet.storage.local import LocalCheckpointStore

COUNT_YAML = ROOT / "examples" / "count.yaml"
PREFIX = "vf"
GPUS = "[RTX_4090, RTX_3090, RTX_5090, RTX_A6000, L40S, A40]"

# The servers' timings: production's shape, scaled so that a recovery takes seconds (a run lasts minutes).
PLANE: dict[str, Any] = {
    "pass_interval_s": 0.5, "heartbeat_interval_s": 0.5, "heartbeat_lost_s": 8.0, "boot_timeout_s": 40.0,
    "scheduling_timeout_s": 20.0, "outbid_wait_s": 2.0, "gone_grace_s": 5.0, "agent_poll_s": 0.3,
    "lease_ttl_s": 3.0, "create_lock_s": 10.0, "action_requeue_s": 5.0, "checkpoint_interval_s": 30.0,
    "host_exclusion_s": 30.0, "vast_timeout_s": 3.0, "salvage_connection": "1001",
}

KINDS = ("scheduler_kill", "redis_restart", "market_429", "market_5xx", "market_timeout", "ghost", "zombie",
         "cur_state_lie", "host_offline", "preempt", "agent_cut", "storage_refusal")
# relative weights of the kinds past the minimum of each (cheap marketplace faults are the most common)
WEIGHTS = {"scheduler_kill": 5, "redis_restart": 4, "market_429": 12, "market_5xx": 12, "market_timeout": 7,
           "ghost": 6, "zombie": 7, "cur_state_lie": 6, "host_offline": 8, "preempt": 10, "agent_cut": 9,
           "storage_refusal": 8}
MARKET_PATHS = (None, "/api/v1/instances", "/api/v0/bundles", "/api/v0/asks", "/api/v0/instances",
                "/api/v0/users/current")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling through a restart; say the last error
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last!r}" if last else ""))


# --- redis-server on its own AOF ------------------------------------------------------------------------------


class RedisProc:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on the PATH")
        self.binary, self.dir, self.port = binary, workdir, free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes", "--daemonize", "no", "--loglevel", "warning",
                "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            wait_until(client.ping, 30, "redis-server to load its AOF", 0.05)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


# --- the agents' way to the API -------------------------------------------------------------------------------


class AgentProxy:
    """A loopback HTTP/1.1 relay from the agents to any live API process (the next one when a connection is
    refused: a load balancer's failover). `cut(s)`: calls hang, then drop, for s seconds (a partition);
    `refuse_storage(s)`: uploads and presign calls answer 503 for s seconds. Each connection carries one
    request (`Connection: close` is forced upstream; the agent's urllib client sends it anyway)."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self.cut_until = 0.0
        self.refuse_until = 0.0
        self.counts: collections.Counter[str] = collections.Counter()
        # (job, epoch) -> [(time, step)]: the pending checkpoints heartbeats told the API of (answered 200)
        self.told: dict[tuple[str, int], list[tuple[float, int]]] = {}
        self._next = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        async def shutdown() -> None:  # every relay in flight ends before the loop does
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()

    def cut(self, seconds: float) -> None:
        self.cut_until = max(self.cut_until, time.monotonic() + seconds)

    def refuse_storage(self, seconds: float) -> None:
        self.refuse_until = max(self.refuse_until, time.monotonic() + seconds)

    def heal(self) -> None:
        self.cut_until = self.refuse_until = 0.0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, limit=1 << 20)
            self._ready.set()

        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._relay(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, RuntimeError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _method, target, _ = lines[0].split(" ", 2)
        length = 0
        kept = [lines[0]]
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            if name.strip().lower() in ("connection", "keep-alive", "proxy-connection"):
                continue
            kept.append(line)
        body = await reader.readexactly(length) if length else b""
        auth = next((ln.partition(":")[2].strip() for ln in kept if ln.lower().startswith("authorization:")), "")
        if time.monotonic() < self.cut_until:  # a partition: the call hangs, then the connection drops
            self.counts["cut"] += 1
            while time.monotonic() < self.cut_until:
                await asyncio.sleep(0.05)
            return
        storage = target.startswith("/v1/blobs/") or "/presign-" in target
        if storage and time.monotonic() < self.refuse_until:
            self.counts["refused"] += 1
            msg = b'{"detail":"storage unavailable (chaos)"}'
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                         b"Connection: close\r\nContent-Length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg)
            await writer.drain()
            return
        upstream = await self._connect()
        if upstream is None:
            self.counts["no_backend"] += 1
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = upstream
        self.counts["relayed"] += 1
        first = b""
        try:
            up_writer.write(("\r\n".join([*kept, "Connection: close", "", ""])).encode("latin-1") + body)
            await up_writer.drain()
            while True:
                chunk = await up_reader.read(1 << 16)
                if not chunk:
                    break
                first = first or chunk
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()
        if target.endswith("/heartbeat") and first.startswith(b"HTTP/1.1 200"):
            self._witness(target, auth, body)

    def _witness(self, target: str, auth: str, body: bytes) -> None:
        """A heartbeat the API took: which checkpoint it said was written and not yet uploaded."""
        try:
            pending = json.loads(body).get("pending") or {}
            epoch = int(auth.split()[-1].split(".")[1])  # the session secret names its epoch: vfs1.<epoch>.<mac>
        except (ValueError, IndexError, AttributeError):
            return
        if isinstance(pending, dict) and isinstance(pending.get("step"), int):
            job = target.split("/v1/agent/jobs/", 1)[-1].split("/", 1)[0]
            self.told.setdefault((job, epoch), []).append((time.time(), int(pending["step"])))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
            except (OSError, asyncio.TimeoutError):
                continue
        return None


# --- the `vastfleet server` processes -------------------------------------------------------------------------


class Servers:
    """The server processes under a supervisor, as systemd or Kubernetes keeps them: one that exits (a
    SIGKILL, or a start while Redis is down: the server refuses to start without it) is started again, after
    `down(i, s)` has kept it down s seconds."""

    def __init__(self, ports: list[int], env: dict[str, str], redis_url: str, public_url: str, logdir: Path) -> None:
        self.ports = ports
        self.env, self.redis_url, self.public_url, self.logdir = env, redis_url, public_url, logdir
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(ports)
        self.up_at = [0.0] * len(ports)  # monotonic time from which the supervisor keeps it running
        self.lock = threading.Lock()
        self.starts = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._supervise, name="chaos-supervisor", daemon=True)

    def supervise(self) -> None:
        self.thread.start()

    def _supervise(self) -> None:
        while not self.stopping.wait(0.5):
            for i in range(len(self.procs)):
                if time.monotonic() >= self.up_at[i]:
                    self.start(i)

    def down(self, i: int, seconds: float) -> None:
        """SIGKILL server i and keep it down `seconds`."""
        self.up_at[i] = time.monotonic() + seconds
        self.kill(i)

    def revive(self) -> None:
        self.up_at = [0.0] * len(self.procs)
        for i in range(len(self.procs)):
            self.start(i)

    def start(self, i: int) -> None:
        with self.lock:
            if self.procs[i] is not None and self.procs[i].poll() is None:  # type: ignore[union-attr]
                return
            argv = [sys.executable, "-c", "from vastfleet.cli import main; main()", "server",
                    "--port", str(self.ports[i]), "--redis-url", self.redis_url, "--public-url", self.public_url,
                    "--log-level", "INFO"]
            with open(self.logdir / f"server-{i}.log", "ab") as log:
                self.procs[i] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True)
            self.starts += 1

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        with self.lock:
            proc = self.procs[i]
            if proc is None or proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def index_of(self, pid: int) -> int | None:
        with self.lock:
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.pid == pid and proc.poll() is None:
                    return i
        return None

    def alive(self) -> list[int]:
        with self.lock:
            return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.ports[i]}" for i in self.alive()]

    def stop_all(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(5)
        for i in range(len(self.procs)):
            self.kill(i, signal.SIGTERM)


# --- what the simulator's truth shows -------------------------------------------------------------------------


@dataclass
class DestroySeen:
    at: float
    instance_id: int
    job_id: str
    epoch: int
    newest_step: int  # the newest complete checkpoint directory on its disk (-1: none)


class Watch(threading.Thread):
    """Samples the simulator's instances every 20 ms (labels on two live instances at once) and hooks its
    destroy to look at the disk before it is deleted."""

    def __init__(self, sim: Simulator, keep_logs: Path | None = None) -> None:
        super().__init__(name="chaos-watch", daemon=True)
        self.sim = sim
        self.stopping = threading.Event()
        self.doubles: dict[str, set[int]] = {}
        self.rented: dict[str, set[int]] = {}
        self.destroys: list[DestroySeen] = []
        market = sim.market
        original = market.destroy

        def destroy(instance_id: int) -> None:  # called under the market's lock by the HTTP handler
            inst = market.instances.get(instance_id)
            owner = parse_label(inst.label if inst is not None else None, PREFIX)
            if owner is not None:
                disk = sim.runner.sandbox(instance_id) / ".vastfleet" / "ckpt"
                steps = [s for s, _ in ckpt_dirs(str(disk))]
                self.destroys.append(DestroySeen(time.time(), instance_id, owner[0], owner[1], max(steps, default=-1)))
                if keep_logs is not None:  # the instance's log goes with its disk: keep it for the post-mortem
                    with contextlib.suppress(OSError):
                        keep_logs.mkdir(exist_ok=True)
                        shutil.copyfile(sim.runner.log_path(instance_id), keep_logs / f"{instance_id}.log")
            original(instance_id)

        market.destroy = destroy  # type: ignore[method-assign]

    def run(self) -> None:
        market = self.sim.market
        while not self.stopping.wait(0.02):
            with market.lock:
                live = [(i.id, i.label) for i in market.instances.values()]
            per: dict[str, list[int]] = {}
            for iid, label in live:
                if parse_label(label, PREFIX) is not None:
                    per.setdefault(str(label), []).append(iid)
                    self.rented.setdefault(str(label), set()).add(iid)
            for label, ids in per.items():
                if len(ids) > 1:
                    self.doubles.setdefault(label, set()).update(ids)

    def owner(self, instance_id: int) -> tuple[str, int] | None:
        inst = self.sim.market.instances.get(instance_id)
        return parse_label(inst.label, PREFIX) if inst is not None else None

    def ours(self, phases: tuple[Phase, ...] | None = None) -> list[tuple[int, int, bool]]:
        """(instance id, host id, is_bid) of our instances in those phases (None: any)."""
        market = self.sim.market
        with market.lock:
            return [(i.id, i.host_id, i.is_bid) for i in market.instances.values()
                    if parse_label(i.label, PREFIX) is not None and (phases is None or i.phase in phases)]


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class Chaos:
    minutes: float = 3.0
    seed: int = 1
    jobs: int = 5  # jobs kept in flight while faults are injected
    steps: int = 60
    every: int = 5
    sleep: float = 0.25
    hosts: int = 24
    faults_per_minute: float = 50.0
    settle_s: float = 240.0  # the bound on settling after the last fault (a run that cannot settle fails)
    workdir: Path | None = None
    say: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    # --- the schedule of faults ---

    def schedule(self, seconds: float) -> list[tuple[float, str]]:
        rng = random.Random(self.seed * 7 + 1)
        total = max(int(self.faults_per_minute * seconds / 60.0), len(KINDS))
        floor = max(2, total // (4 * len(KINDS)))  # every kind several times, even in a short run
        kinds = [k for k in KINDS for _ in range(floor)]
        rest = max(0, total - len(kinds))
        kinds += rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=rest)
        rng.shuffle(kinds)
        start = 15.0  # let the first jobs place and run
        times = sorted(rng.uniform(start, seconds) for _ in kinds)
        return list(zip(times, kinds, strict=True))

    def spec(self) -> JobSpec:
        sets = [f"run=python3 count_steps.py --steps {self.steps} --every {self.every} --sleep {self.sleep}",
                "max_preemptions=1000", f"resources.gpu={GPUS}"]
        return load_job_spec(COUNT_YAML, sets)

    # --- the whole run ---

    def run(self) -> dict[str, Any]:
        root = Path(self.workdir or tempfile.mkdtemp(prefix="vastfleet-chaos-"))
        root.mkdir(parents=True, exist_ok=True)
        ckpt_dir = root / "ckpt"
        ckpt_dir.mkdir(exist_ok=True)
        fault_s = max(30.0, self.minutes * 60.0 - 45.0)  # the last ~45 s of a run are for settling
        rng = random.Random(self.seed)
        sim = Simulator(root / "sim", seed=self.seed, hosts=self.hosts, api_key="chaos-key",
                        knobs={"boot_delay": 0.5}, quirks={})
        sim.connection_dirs["1001"] = ckpt_dir  # the cloud connection is the checkpoint store's bucket
        sim.start_ticker()
        sim_server = SimServer(sim).start()
        admin = SimAdmin(sim_server.url, sim.api_key)
        watch = Watch(sim, keep_logs=root / "destroyed" if self.workdir is not None else None)
        watch.start()
        rds = RedisProc(root / "redis")
        rds.start()
        proxy: AgentProxy | None = None
        servers: Servers | None = None
        client = redis.Redis.from_url(rds.url, decode_responses=True, socket_timeout=5)
        token = secrets.token_urlsafe(24)
        injected: collections.Counter[str] = collections.Counter()
        notes: collections.Counter[str] = collections.Counter()
        started = time.monotonic()
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VASTFLEET_", "VAST_"))}
            plane = {**PLANE, "data_dir": root / "plane", "checkpoint_dir": ckpt_dir,
                     "agent_secret": secrets.token_hex(32), "storage_secret": secrets.token_hex(32),
                     "vast_api_key": sim.api_key, "vast_url": sim_server.url, "log_format": "text"}
            env.update({f"VASTFLEET_{k.upper()}": str(v) for k, v in plane.items()})
            env["VASTFLEET_TOKEN"] = token
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
            backends = [free_port(), free_port()]
            proxy = AgentProxy(backends)
            proxy.start()
            servers = Servers(backends, env, rds.url, proxy.url, root)
            servers.revive()
            servers.supervise()
            wait_until(lambda: any(_healthy(u) for u in servers.urls()), 90, "a server to answer")
            self.say(f"chaos: workdir {root}; redis {rds.url}; servers {servers.ports}; proxy {proxy.port};"
                     f" faults for {fault_s:.0f}s")
            submitted: list[str] = []
            active: set[str] = set()  # submitted and not seen terminal yet
            plan = self.schedule(fault_s)
            lease = Lease(client, "scheduler", 1.0, prefix=PREFIX)
            store = JobStore(client, prefix=PREFIX)

            def submit() -> None:
                for url in servers.urls():
                    try:
                        with Client(url, token, timeout=10) as api:
                            submitted.append(api.submit(self.spec()).id)
                            active.add(submitted[-1])
                            return
                    except (VastfleetError, httpx.HTTPError):
                        notes["submit_retried"] += 1

            def in_flight() -> int:
                try:
                    active.difference_update([j for j in active if store.get(j).state.terminal])
                    return len(active)
                except (redis.RedisError, VastfleetError):
                    return self.jobs

            def user_traffic() -> None:
                for url in servers.urls()[:1]:
                    with contextlib.suppress(VastfleetError, httpx.HTTPError), Client(url, token, timeout=10) as api:
                        api.list(limit=50)

            def running_targets(bid_only: bool) -> list[tuple[int, int, bool]]:
                """Running instances of ours whose job runs on them now (not a finished job's leftover)."""
                out = []
                for iid, host, is_bid in watch.ours((Phase.running,)):
                    owner = watch.owner(iid)
                    try:
                        job = store.get(owner[0]) if owner else None
                    except (redis.RedisError, VastfleetError):
                        return []
                    if job is not None and job.state == JobState.RUNNING and job.instance_id == iid \
                            and (is_bid or not bid_only):
                        out.append((iid, host, is_bid))
                return out

            def inject(kind: str) -> bool:
                """One fault of `kind`; False when it has no target now (tried again a moment later)."""
                if kind == "scheduler_kill":
                    held = lease.holder()
                    index = servers.index_of(int(held[0].split(":")[1])) if held else None
                    if index is None:
                        return False
                    servers.down(index, rng.uniform(0.5, 3.0))
                elif kind == "redis_restart":
                    rds.stop(rng.choice((signal.SIGKILL, signal.SIGTERM)))
                    time.sleep(rng.uniform(0.3, 3.0))
                    rds.start()
                elif kind == "market_429":
                    if rng.random() < 0.3:
                        admin.set_knobs(rate_limit_interval=rng.uniform(0.3, 1.0))
                        quirk_window("rate_limits", rng.uniform(3, 8))
                    else:
                        admin.fault(429, count=rng.randint(1, 6), path=rng.choice(MARKET_PATHS),
                                    text=rng.random() < 0.3)
                elif kind == "market_5xx":
                    if rng.random() < 0.3:
                        admin.set_knobs(error_rate=rng.uniform(0.05, 0.3))
                        quirk_window("error_bursts", rng.uniform(3, 8))
                    else:
                        admin.fault(rng.choice((500, 502, 503)), count=rng.randint(1, 5),
                                    path=rng.choice(MARKET_PATHS))
                elif kind == "market_timeout":
                    timeout = float(PLANE["vast_timeout_s"])
                    admin.fault(0, count=rng.randint(1, 2), path=rng.choice(MARKET_PATHS),
                                delay=rng.uniform(timeout + 0.5, timeout + 3.0))
                elif kind == "ghost":
                    admin.set_knobs(ghost_seconds=rng.uniform(2, 8))
                    quirk_window("destroyed_ghost", rng.uniform(10, 25))
                elif kind == "zombie":
                    targets = running_targets(bid_only=True)
                    if not targets:
                        return False
                    admin.set_knobs(zombie_delay=rng.uniform(0.5, 4.0))
                    quirk_window("zombie", 8.0)
                    admin.preempt(rng.choice(targets)[0])
                elif kind == "cur_state_lie":
                    admin.set_knobs(cur_state_lie_rate=rng.uniform(0.2, 1.0))
                    quirk_window("cur_state_lies", rng.uniform(5, 15))
                elif kind == "host_offline":
                    targets = running_targets(bid_only=False)
                    if not targets:
                        return False
                    admin.host_offline(rng.choice(targets)[1], duration=rng.uniform(3, 15))
                elif kind == "preempt":
                    targets = running_targets(bid_only=True)
                    if not targets:
                        return False
                    duration = rng.choice((None, rng.uniform(1, 6), rng.uniform(10, 40)))
                    admin.preempt(rng.choice(targets)[0], duration=duration)
                elif kind == "agent_cut":
                    proxy.cut(rng.uniform(1, 5))
                elif kind == "storage_refusal":
                    proxy.refuse_storage(rng.uniform(2, 8))
                return True

            quirks_until: dict[str, float] = {}

            def quirk_window(name: str, seconds: float) -> None:
                quirks_until[name] = max(quirks_until.get(name, 0.0), time.monotonic() + seconds)
                admin.set_quirks(**{name: True})

            def lift_quirks(all_: bool = False) -> None:
                now = time.monotonic()
                over = [q for q, t in quirks_until.items() if all_ or t <= now]
                if over:
                    admin.set_quirks(**dict.fromkeys(over, False))
                    for q in over:
                        quirks_until.pop(q, None)

            # 1. The storm: jobs kept in flight, faults at their scheduled times.
            t0 = time.monotonic()
            pending = [[at, kind, 0] for at, kind in plan]  # [due, kind, tries without a target]
            next_user = 0.0
            while time.monotonic() - t0 < fault_s or pending:
                now = time.monotonic() - t0
                if now < fault_s and in_flight() < self.jobs:
                    submit()
                if now >= next_user:
                    user_traffic()
                    next_user = now + 2.0
                lift_quirks()
                due = [p for p in pending if p[0] <= now]
                for item in due:
                    pending.remove(item)
                    kind = str(item[1])
                    try:
                        done = inject(kind)
                    except (httpx.HTTPError, redis.RedisError, OSError) as exc:
                        notes[f"inject_error:{kind}"] += 1
                        self.say(f"chaos: {kind} could not be injected: {exc!r}")
                        done = False
                    if done:
                        injected[kind] += 1
                        if sum(injected.values()) % 10 == 0:
                            self.say(f"chaos: {sum(injected.values())} faults at {now:.0f}s: {dict(injected)}")
                    elif int(item[2]) < 20 and now < fault_s + 30:  # no target yet: a moment later
                        pending.append([now + 1.0, kind, int(item[2]) + 1])
                    else:
                        notes[f"no_target:{kind}"] += 1
                time.sleep(0.1)

            # 2. Lift everything and settle.
            self.say(f"chaos: {sum(injected.values())} faults injected; settling")
            proxy.heal()
            lift_quirks(all_=True)
            admin.clear_faults()
            for host in admin.hosts():
                if not host.get("online", True):
                    admin.host_online(int(host["id"]))
            if rds.proc is None:
                rds.start()
            servers.revive()
            settle_t0 = time.monotonic()

            def settled() -> bool:
                jobs = [store.get(j) for j in submitted]
                left = watch.ours()
                open_rentals = client.hlen(f"{PREFIX}:spend:inst")
                return all(j.state.terminal for j in jobs) and not left and open_rentals == 0

            try:
                wait_until(settled, self.settle_s, "every job to end and every instance to go", 0.5)
            except TimeoutError as exc:
                notes["settle_timeout"] += 1
                self.say(f"chaos: {exc}")
            settle_s = time.monotonic() - settle_t0
            time.sleep(2 * float(PLANE["pass_interval_s"]) + 0.5)  # one more accrual after the last close
            return self.check(store, client, sim, watch, ckpt_dir, injected, notes, submitted,
                              time.monotonic() - started, settle_s, servers.starts, proxy)
        finally:
            watch.stopping.set()
            if servers is not None:
                servers.stop_all()
            if proxy is not None:
                proxy.stop()
            client.close()
            rds.stop()
            admin.close()
            sim_server.stop()
            sim.close()

    # --- the checks ---

    def check(self, store: JobStore, client: redis.Redis, sim: Simulator, watch: Watch, ckpt_dir: Path,
              injected: collections.Counter[str], notes: collections.Counter[str], submitted: list[str],
              elapsed: float, settle_s: float, server_starts: int, proxy: AgentProxy) -> dict[str, Any]:
        told_of = proxy.told
        jobs: dict[str, Job] = {j.id: j for j in store.list(limit=100_000)}
        for job_id in submitted:
            jobs.setdefault(job_id, store.get(job_id))
        lost: dict[str, str] = {}
        steps_lost = steps_dup = 0
        ckpt = LocalCheckpointStore(ckpt_dir, "x" * 32)
        for job in jobs.values():
            if job.state != JobState.SUCCEEDED:
                lost[job.id] = f"{job.state.value}: {job.reason}"
                continue
            want = int(job.spec.run.split("--steps")[1].split()[0])
            counted = _counted(ckpt, job)
            steps_lost += len(set(range(1, want + 1)) - set(counted))
            steps_dup += len(counted) - len(set(counted))
        unverified, unreported = [], []
        for seen in watch.destroys:
            committed = _committed_at(store, seen.job_id, seen.at)
            if seen.newest_step <= committed:
                continue
            told = max((step for at, step in told_of.get((seen.job_id, seen.epoch), []) if at <= seen.at),
                       default=-1)
            where = {"instance": seen.instance_id, "job": seen.job_id, "epoch": seen.epoch,
                     "on_disk": seen.newest_step, "told": told, "committed": committed}
            (unverified if told > committed else unreported).append(where)
        left = watch.ours()
        billed_jobs = _billed_ours(sim)
        billed = sum(billed_jobs.values())
        spend = SpendLedger(client, PREFIX)
        attributed = spend.total()
        per_job = spend.of_jobs(billed_jobs)
        gaps = sorted(((round(b - per_job.get(j, 0.0), 5), j) for j, b in billed_jobs.items()), key=lambda g: -abs(g[0]))
        states = collections.Counter(j.state.value for j in jobs.values())
        return {
            "faults": dict(sorted(injected.items())),
            "jobs_lost": len(lost),
            "steps_lost": steps_lost,
            "steps_duplicated": steps_dup,
            "instances_left": len(left),
            "unverified_destroys": len(unverified),
            "unreported_destroys": len(unreported),
            "double_rentals": len(watch.doubles),
            "ledger_gap_usd": round(billed - attributed, 4),
            "details": {
                "seed": self.seed, "minutes": self.minutes, "elapsed_s": round(elapsed, 1),
                "settle_s": round(settle_s, 1), "faults_total": sum(injected.values()),
                "jobs": len(jobs), "states": dict(states),
                "attempts": sum(j.epoch for j in jobs.values()), "rentals": sum(len(v) for v in watch.rented.values()),
                "preemptions": sum(j.preemptions for j in jobs.values()),
                "destroys_seen": len(watch.destroys), "server_starts": server_starts,
                "billed_usd": round(billed, 4), "attributed_usd": round(attributed, 4),
                "lost": lost, "unverified": unverified[:20], "unreported": unreported[:20],
                "doubles": {k: sorted(v) for k, v in list(watch.doubles.items())[:20]},
                "left": [t[0] for t in left], "proxy": dict(proxy.counts), "notes": dict(notes),
                "ledger_gaps": [{"job": j, "gap_usd": g} for g, j in gaps[:5]],
            },
        }


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _counted(ckpt: LocalCheckpointStore, job: Job) -> list[int]:
    ref = job.latest_checkpoint
    if ref is None:
        return []
    rel = next((r for r in ref.files if r.endswith("state.json")), None)
    if rel is None:
        return []
    try:
        return [int(s) for s in json.loads(ckpt.path_for(ref.prefix + rel).read_text())["counted"]]
    except (OSError, ValueError, KeyError):
        return []


def _committed_at(store: JobStore, job_id: str, at: float) -> int:
    """The job's committed step at time `at` (from its history of commits; -1: none yet)."""
    try:
        events = store.events(job_id, limit=100_000)
    except VastfleetError:
        return -1
    steps = [int(e.data.get("step", -1)) for e in events if e.kind == "checkpoint" and e.at <= at]
    return max(steps, default=-1)


def _billed_ours(sim: Simulator) -> dict[str, float]:
    """What the simulator billed for our instances, per job (by label)."""
    with sim.market.lock:
        rows = sim.market.ledger.snapshot(sim.market.clock())["instances"]
    out: dict[str, float] = {}
    for row in rows.values():
        owner = parse_label(row.get("label"), PREFIX)
        if owner is not None:
            out[owner[0]] = out.get(owner[0], 0.0) + float(row["total"])
    return out


def report(out: dict[str, Any]) -> str:
    d = out["details"]
    lines = [
        (f"chaos run: seed {d['seed']}, {d['elapsed_s']:.0f}s ({d['settle_s']:.0f}s settling), {d['jobs']} jobs"
        f" ({d['states']}), {d['attempts']} attempts, {d['rentals']} rentals, {d['preemptions']} interruptions"),
        f"faults injected: {d['faults_total']}  " + ", ".join(f"{k} {v}" for k, v in out["faults"].items()),
        f"jobs_lost            {out['jobs_lost']}",
        f"steps_lost           {out['steps_lost']}",
        f"steps_duplicated     {out['steps_duplicated']}",
        f"instances_left       {out['instances_left']}",
        f"unverified_destroys  {out['unverified_destroys']}  (of {d['destroys_seen']} destroys)",
        (f"unreported_destroys  {out['unreported_destroys']}  (a checkpoint written after the agent's last report"
         " reached the control plane)"),
        f"double_rentals       {out['double_rentals']}",
        (f"ledger_gap_usd       {out['ledger_gap_usd']:+.4f}  (billed ${d['billed_usd']:.4f},"
        f" attributed ${d['attributed_usd']:.4f})"),
    ]
    if d["lost"] or d["unverified"] or d["unreported"] or d["doubles"] or d["left"]:
        lines.append(f"details: lost={d['lost']} unverified={d['unverified']} unreported={d['unreported']}"
                     f" doubles={d['doubles']} left={d['left']}")
    return "\n".join(lines)


def passed(out: dict[str, Any]) -> bool:
    zero = ("jobs_lost", "steps_lost", "steps_duplicated", "instances_left", "unverified_destroys",
            "double_rentals")
    return all(out[k] == 0 for k in zero) and abs(out["ledger_gap_usd"]) <= 0.01


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=3.0, help="length of the run (faults, then settling)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=5, help="jobs kept in flight while faults are injected")
    ap.add_argument("--faults-per-minute", type=float, default=50.0)
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs, AOF and sandboxes here")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still ends every process it started
    out = Chaos(minutes=args.minutes, seed=args.seed, jobs=args.jobs, faults_per_minute=args.faults_per_minute,
                workdir=args.workdir).run()
    print(report(out), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        print(json.dumps(out))
    return 0 if passed(out) else 1


if __name__ == "__main__":
    sys.exit(main())
