"""Load: thousands of agents heartbeating against the API while users submit and list jobs.

Starts a real redis-server (append-only, as in production) and `vastfleet server --no-scheduler` process(es)
on it, creates N jobs through the store (as the scheduler leaves them after a create: BOOTING on an
instance, the onstart token bound to the attempt's label), claims every one through the real agent API
(nonce, then the session secret the claim answers), then drives them all from this process with one
`httpx.AsyncClient`:

    every agent  heartbeats every `--interval` s (10) with its progress, its phase spread over the interval;
                 and now and then (on average every `--checkpoint-every` s, 120) commits a checkpoint as the
                 agent does: presign-upload, PUT of the file to the URL answered (the API's /v1/blobs), commit
    users        `--users` of them (4) each submit a job every 2 s and list the newest 100 every second

Prints the heartbeat latency (p50, p99, max; measured from the request's send to its answer, over the run
after the first interval), the checkpoint commits (count, p50/p99 of the three calls together), the users'
calls, every error (a non-2xx answer or a transport failure, by kind), the event loop's own lag here (so a
slow client is not taken for a slow server), and each server process's memory (RSS) after its start, once
the agents have claimed, and at the end. `--servers K` runs K API processes on the same Redis (agents and
users spread over them, as a load balancer would); `--json` prints one object on the last line.

Usage: python bench/agents.py [--agents 2000] [--seconds 120] [--interval 10] [--servers 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos import COUNT_YAML, ROOT, RedisProc, free_port, wait_until

from vastfleet.agent.tokens import TokenSigner
from vastfleet.queue import JobStore
from vastfleet.scheduler.labels import label_for
from vastfleet.spec.job import JobState
from vastfleet.spec.jobspec import JobSpec, load_job_spec


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 1)


@dataclass
class Agent:
    job_id: str
    instance_id: int
    token: str
    server: str
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    session: str = ""
    step: int = 0
    committed: int = -1


@dataclass
class Tally:
    beats: list[float] = field(default_factory=list)  # seconds, after the warm-up
    beats_all: int = 0
    commits: list[float] = field(default_factory=list)
    submits: list[float] = field(default_factory=list)
    lists: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    lag: list[float] = field(default_factory=list)


class Load:
    def __init__(self, agents: int = 2000, seconds: float = 120.0, interval: float = 10.0, servers: int = 1,
                 checkpoint_every: float = 120.0, users: int = 4, workdir: Path | None = None,
                 say: Any = None) -> None:
        self.n, self.seconds, self.interval, self.n_servers = agents, seconds, interval, servers
        self.checkpoint_every, self.users = checkpoint_every, users
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vastfleet-agents-"))
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.token = secrets.token_urlsafe(24)
        self.agent_secret = secrets.token_hex(32)
        self.tally = Tally()
        self.cpu: dict[str, Any] = {}
        self.cpu_at: tuple[list[float | None], float, float] = ([], 0.0, 0.0)
        self.rng = random.Random(7)

    # --- the control plane ---

    def start_servers(self, redis_url: str) -> list[tuple[subprocess.Popen[bytes], str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VASTFLEET_", "VAST_"))}
        env.update({"VASTFLEET_TOKEN": self.token, "VASTFLEET_DATA_DIR": str(self.workdir / "plane"),
                    "VASTFLEET_AGENT_SECRET": self.agent_secret, "VASTFLEET_STORAGE_SECRET": secrets.token_hex(32),
                    "VASTFLEET_CHECKPOINT_DIR": str(self.workdir / "ckpt"),
                    "VASTFLEET_HEARTBEAT_INTERVAL_S": str(self.interval), "VASTFLEET_LOG_LEVEL": "WARNING",
                    "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])})
        out = []
        for i in range(self.n_servers):
            port = free_port()
            argv = [sys.executable, "-c", "from vastfleet.cli import main; main()", "server", "--no-scheduler",
                    "--port", str(port), "--redis-url", redis_url, "--log-level", "WARNING"]
            with open(self.workdir / f"server-{i}.log", "ab") as log:
                proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            out.append((proc, f"http://127.0.0.1:{port}"))
        for proc, url in out:
            wait_until(lambda u=url: httpx.get(f"{u}/healthz", timeout=2).status_code == 200, 90,
                       f"the server at {url}")
        return out

    def make_jobs(self, store: JobStore, urls: list[str]) -> list[Agent]:
        """N jobs as the scheduler leaves them after a create: BOOTING on an instance, a token for its label."""
        signer = TokenSigner(self.agent_secret)
        spec: JobSpec = load_job_spec(COUNT_YAML)
        agents = []
        for i in range(self.n):
            job = store.submit(spec)
            job = store.transition(job.id, JobState.PLACING, "bench: placed")
            iid = 30_000_000 + i
            store.transition(job.id, JobState.BOOTING, "bench: created", expected_epoch=job.epoch, instance_id=iid)
            token = signer.issue(job.id, job.epoch, label_for(job.id, job.epoch))
            agents.append(Agent(job.id, iid, token, urls[i % len(urls)]))
        return agents

    # --- the agents and users ---

    async def call(self, client: httpx.AsyncClient, agent: Agent, verb: str, body: dict[str, Any],
                   token: str | None = None) -> httpx.Response:
        return await client.post(f"{agent.server}/v1/agent/jobs/{agent.job_id}/{verb}", json=body,
                                 headers={"Authorization": f"Bearer {token or agent.session}"})

    async def claim(self, client: httpx.AsyncClient, agent: Agent) -> None:
        body = {"gpus": ["RTX 4090, 24564 MiB"], "instance_id": agent.instance_id, "agent": "bench",
                "nonce": agent.nonce}
        for _ in range(5):
            try:
                resp = await self.call(client, agent, "claim", body, agent.token)
            except httpx.HTTPError as exc:
                self.tally.errors[f"claim: {type(exc).__name__}"] += 1
                continue
            if resp.status_code == 200:
                agent.session = resp.json()["session"]
                return
            self.tally.errors[f"claim: HTTP {resp.status_code}"] += 1
        raise RuntimeError(f"agent of {agent.job_id} could not claim")

    async def beat(self, agent: Agent, body: dict[str, Any]) -> int:
        """One heartbeat as the real agent sends it (urllib: a new connection, one POST, close), on raw
        asyncio streams: httpx costs this process ~2-10 ms of CPU a request, and at 200 heartbeats a second
        on 2 cores a client that busy measures its own queue, not the server."""
        url = urlsplit(agent.server)
        data = json.dumps(body).encode()
        head = (f"POST /v1/agent/jobs/{agent.job_id}/heartbeat HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Authorization: Bearer {agent.session}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(url.hostname, url.port), 30)
        try:
            writer.write(head + data)
            status = await asyncio.wait_for(reader.readline(), 30)
            await asyncio.wait_for(reader.read(), 30)  # headers and body, to the server's close
            return int(status.split()[1])
        finally:
            writer.close()

    async def run_agent(self, client: httpx.AsyncClient, agent: Agent, t0: float, warm: float) -> None:
        loop = asyncio.get_running_loop()
        due = t0 + self.rng.uniform(0, self.interval)
        next_ckpt = t0 + self.rng.uniform(0, 2 * self.checkpoint_every)
        end = t0 + self.seconds
        while due < end:
            await asyncio.sleep(max(0.0, due - loop.time()))
            agent.step += 1
            body = {"progress": {"step": agent.step, "of": 10_000}, "ckpt_step": agent.committed,
                    "phase": "running"}
            sent = loop.time()
            try:
                status = await self.beat(agent, body)
                took = loop.time() - sent
                if status != 200:
                    self.tally.errors[f"heartbeat: HTTP {status}"] += 1
            except (OSError, asyncio.TimeoutError, ValueError, IndexError) as exc:
                took = loop.time() - sent
                self.tally.errors[f"heartbeat: {type(exc).__name__}"] += 1
            self.tally.beats_all += 1
            if sent >= t0 + warm:
                self.tally.beats.append(took)
            if loop.time() >= next_ckpt:
                await self.commit(client, agent)
                next_ckpt = loop.time() + self.rng.uniform(0, 2 * self.checkpoint_every)
            due += self.interval

    async def commit(self, client: httpx.AsyncClient, agent: Agent) -> None:
        """One checkpoint, as the agent uploads it: presign-upload, PUT, commit."""
        loop = asyncio.get_running_loop()
        data = json.dumps({"step": agent.step, "job": agent.job_id}).encode()
        manifest = {"step": agent.step, "files": {"state.json": {"size": len(data),
                                                                   "sha256": hashlib.sha256(data).hexdigest()}}}
        sent = loop.time()
        try:
            urls = await self.call(client, agent, "presign-upload", manifest)
            if urls.status_code != 200:
                self.tally.errors[f"presign-upload: HTTP {urls.status_code}"] += 1
                return
            entry = urls.json()["files"]["state.json"]
            put = await client.put(entry["url"], content=data, headers=entry.get("headers") or {})
            if put.status_code not in (200, 201, 204):
                self.tally.errors[f"PUT blob: HTTP {put.status_code}"] += 1
                return
            done = await self.call(client, agent, "commit", manifest)
            if done.status_code != 200:
                self.tally.errors[f"commit: HTTP {done.status_code}"] += 1
                return
        except httpx.HTTPError as exc:
            self.tally.errors[f"commit: {type(exc).__name__}"] += 1
            return
        agent.committed = agent.step
        self.tally.commits.append(loop.time() - sent)

    async def run_user(self, client: httpx.AsyncClient, server: str, t0: float, spec: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        headers = {"Authorization": f"Bearer {self.token}"}
        tick = 0
        while loop.time() < t0 + self.seconds:
            await asyncio.sleep(1.0)
            tick += 1
            for what in ("list", "submit") if tick % 2 == 0 else ("list",):
                sent = loop.time()
                try:
                    if what == "list":
                        resp = await client.get(f"{server}/v1/jobs", params={"limit": 100}, headers=headers)
                    else:
                        resp = await client.post(f"{server}/v1/jobs", json=spec, headers=headers)
                    if resp.status_code not in (200, 201):
                        self.tally.errors[f"user {what}: HTTP {resp.status_code}"] += 1
                except httpx.HTTPError as exc:
                    self.tally.errors[f"user {what}: {type(exc).__name__}"] += 1
                    continue
                (self.tally.lists if what == "list" else self.tally.submits).append(loop.time() - sent)

    async def watch_lag(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < t0 + self.seconds:
            before = loop.time()
            await asyncio.sleep(0.1)
            self.tally.lag.append(loop.time() - before - 0.1)

    async def drive(self, agents: list[Agent], urls: list[str], servers: list[subprocess.Popen[bytes]],
                    rss: dict[str, list[float | None]]) -> None:
        # a connection per agent, as real agents each hold their own: a shared pool smaller than the fleet
        # queues requests inside the client (2,000 agents on 256 connections read as seconds of "latency")
        n = len(agents) + self.users + 8
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
            gate = asyncio.Semaphore(64)

            async def claim(a: Agent) -> None:
                async with gate:
                    await self.claim(client, a)

            started = time.monotonic()
            await asyncio.gather(*(claim(a) for a in agents))
            self.say(f"agents: {len(agents)} claimed in {time.monotonic() - started:.1f}s")
            for proc in servers:
                rss["claimed"].append(rss_mib(proc.pid))
            self.cpu_at = ([cpu_s(p.pid) for p in servers], time.process_time(), time.monotonic())
            spec = load_job_spec(COUNT_YAML).model_dump(mode="json")
            t0 = asyncio.get_running_loop().time()
            tasks = [self.run_agent(client, a, t0, warm=self.interval) for a in agents]
            tasks += [self.run_user(client, urls[i % len(urls)], t0, spec) for i in range(self.users)]
            tasks.append(self.watch_lag(t0))
            await asyncio.gather(*tasks)
            before, mine, wall = self.cpu_at
            after = [cpu_s(p.pid) for p in servers]
            self.cpu = {"server_cpu_s": [round(b - a, 1) if a is not None and b is not None else None
                                         for a, b in zip(before, after, strict=True)],
                        "client_cpu_s": round(time.process_time() - mine, 1),
                        "load_wall_s": round(time.monotonic() - wall, 1)}

    # --- the whole run ---

    def run(self) -> dict[str, Any]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        rds = RedisProc(self.workdir / "redis")
        rds.start()
        servers: list[tuple[subprocess.Popen[bytes], str]] = []
        client = redis.Redis.from_url(rds.url, decode_responses=True)
        try:
            servers = self.start_servers(rds.url)
            procs, urls = [p for p, _ in servers], [u for _, u in servers]
            rss: dict[str, list[float | None]] = {"started": [rss_mib(p.pid) for p in procs], "claimed": [],
                                                  "end": []}
            agents = self.make_jobs(JobStore(client), urls)
            self.say(f"agents: {self.n} jobs booted; {self.n_servers} API process(es) {urls}")
            asyncio.run(self.drive(agents, urls, procs, rss))
            rss["end"] = [rss_mib(p.pid) for p in procs]
            return self.figures(rss)
        finally:
            for proc, _ in servers:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            client.close()
            rds.stop()

    def figures(self, rss: dict[str, list[float | None]]) -> dict[str, Any]:
        t = self.tally
        measured = self.seconds - self.interval
        return {
            "agents": self.n, "servers": self.n_servers, "seconds": self.seconds, "interval_s": self.interval,
            "heartbeats": len(t.beats), "heartbeats_all": t.beats_all,
            "heartbeats_per_s": round(len(t.beats) / measured, 1) if measured > 0 else None,
            "heartbeat_p50_ms": ms(quantile(t.beats, 0.5)), "heartbeat_p99_ms": ms(quantile(t.beats, 0.99)),
            "heartbeat_max_ms": ms(max(t.beats, default=None)),
            "commits": len(t.commits), "commit_p50_ms": ms(quantile(t.commits, 0.5)),
            "commit_p99_ms": ms(quantile(t.commits, 0.99)),
            "user_submits": len(t.submits), "submit_p99_ms": ms(quantile(t.submits, 0.99)),
            "user_lists": len(t.lists), "list_p99_ms": ms(quantile(t.lists, 0.99)),
            "errors": sum(t.errors.values()), "error_kinds": dict(t.errors),
            "client_loop_lag_p99_ms": ms(quantile(t.lag, 0.99)),
            "server_rss_mib": rss,
            **self.cpu,
            "machine_load_1m": round(os.getloadavg()[0], 2),
        }


def report(out: dict[str, Any]) -> str:
    rss = out["server_rss_mib"]
    return "\n".join([
        (f"{out['agents']} agents on {out['servers']} API process(es), heartbeat every {out['interval_s']:.0f}s,"
        f" {out['seconds']:.0f}s"),
        (f"heartbeats   {out['heartbeats']} measured ({out['heartbeats_per_s']}/s): p50 {out['heartbeat_p50_ms']} ms,"
        f" p99 {out['heartbeat_p99_ms']} ms, max {out['heartbeat_max_ms']} ms"),
        (f"checkpoints  {out['commits']} committed (presign, PUT, commit): p50 {out['commit_p50_ms']} ms,"
        f" p99 {out['commit_p99_ms']} ms"),
        (f"users        {out['user_submits']} submits (p99 {out['submit_p99_ms']} ms), {out['user_lists']} lists of"
        f" 100 (p99 {out['list_p99_ms']} ms)"),
        f"errors       {out['errors']} {out['error_kinds'] or ''}",
        f"server RSS   started {rss['started']} MiB, agents claimed {rss['claimed']} MiB, end {rss['end']} MiB",
        (f"client loop lag p99 {out['client_loop_lag_p99_ms']} ms (this process; a slow client would read as a"
        " slow server)"),
        (f"CPU          servers {out['server_cpu_s']} s, this client {out['client_cpu_s']} s, in {out['load_wall_s']} s"
         f" of load; machine load average {out['machine_load_1m']}"),
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=120.0, help="how long the agents beat")
    ap.add_argument("--interval", type=float, default=10.0, help="heartbeat interval in seconds")
    ap.add_argument("--servers", type=int, default=1, help="API processes on the same Redis")
    ap.add_argument("--checkpoint-every", type=float, default=120.0, help="mean seconds between an agent's commits")
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still ends every process it started
    out = Load(args.agents, args.seconds, args.interval, args.servers, args.checkpoint_every, args.users,
               args.workdir).run()
    print(report(out), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        print(json.dumps(out))
    return 0 if out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
