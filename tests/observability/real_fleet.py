"""The real thing for the dashboard tests: `vastfleet server` (API + scheduler + workers, as a subprocess) on
its own redis-server, driving the simulator, with a small workload that exercises every panel.

The workload (`RealFleet.run_workload`): one marketplace 503 (retried by the adapter), two short count jobs
submitted with `vastfleet submit` (the first with a budget, a $/h cap and `interruptible: auto`), the first
one's host taken offline once it has checkpointed, the second one's bid instance preempted by a higher bid
once it has checkpointed, and
both jobs run to SUCCEEDED on new instances; meanwhile a small sweep of examples/sweep.yaml (3 short
trials, 2 at once) submitted with `vastfleet sweep submit` runs to FINISHED. Jobs are followed through the
job store on the same Redis.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.e2e.harness import COUNT_YAML, FAST
from tests.helpers import RedisServer, clean_env, free_port, wait_for
from tests.sim_fixtures import SimHandle, running_sim
from vastfleet.queue import JobStore
from vastfleet.spec.job import Job, JobState

VASTFLEET = [sys.executable, "-m", "vastfleet.cli"]
TOKEN = "obs-e2e-token"
RUN = "python3 count_steps.py --steps 30 --every 5 --sleep 0.1"
SWEEP_YAML = COUNT_YAML.parent / "sweep.yaml"
SWEEP_SETS = ["max_trials=3", "max_parallel=2", "early_stop.type=none", "budget_usd=1",
              "job.run=python3 sweep_trial.py --steps 20 --every 5 --sleep 0.1"]


@dataclass
class RealFleet:
    sim: SimHandle
    store: JobStore
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]
    job_ids: list[str] = field(default_factory=list)
    sweep_id: str = ""
    succeeded: int = 0  # jobs SUCCEEDED at the end of the workload (the count jobs and the sweep's trials)
    started_at: float = 0.0  # workload start and end (Unix time), the window the panels are evaluated over
    ended_at: float = 0.0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VASTFLEET, *args], check=False, env=self.env, capture_output=True, text=True,
                              timeout=60)

    def submit(self, *sets: str) -> str:
        args = ["submit", str(COUNT_YAML), "--set", f"run={RUN}", "--json"]
        for item in sets:
            args += ["--set", item]
        done = self.cli(*args)
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["id"])

    def checkpointed(self, job_id: str) -> Job | None:
        """The job while RUNNING with a checkpoint committed in its current attempt, and a later heartbeat
        that reports work past it (so an interruption now loses some work)."""
        job = self.store.get(job_id)
        ref = job.latest_checkpoint
        ok = job.state == JobState.RUNNING and job.instance_id is not None and ref is not None \
            and ref.epoch == job.epoch and ref.step is not None \
            and int(job.progress.get("step", 0)) >= ref.step + 2 and job.updated_at > ref.committed_at
        return job if ok else None

    def run_workload(self) -> None:
        self.started_at = time.time()
        self.sim.admin.fault(503, count=1)  # one marketplace call fails and is retried: the error panels
        # The first searches on-demand offers too (interruptible: auto), which prices its bid's savings.
        sweep = self.cli("sweep", "submit", str(SWEEP_YAML), *[x for item in SWEEP_SETS for x in ("--set", item)])
        assert sweep.returncode == 0, sweep.stderr
        self.sweep_id = sweep.stdout.strip()
        self.job_ids = [self.submit("budget_usd=5", "resources.max_price_per_hour=5", "interruptible=auto"),
                        self.submit()]
        first, second = self.job_ids
        disrupt = {first: self.take_host_offline, second: self.preempt}

        def disrupted() -> bool:  # each job once, as soon as its attempt has checkpointed (both run at once)
            for job_id in list(disrupt):
                job = self.checkpointed(job_id)
                if job is not None:
                    disrupt.pop(job_id)(job)
                elif self.store.get(job_id).state.terminal:
                    raise AssertionError(f"job {job_id} finished before it could be interrupted")
            return not disrupt

        wait_for(disrupted, 60, interval=0.05, what="both jobs to checkpoint and be interrupted")

        def finished() -> bool:
            return all(self.store.get(j).state.terminal for j in self.job_ids)

        wait_for(finished, 90, interval=0.2, what="both jobs to finish")
        states = {j: self.store.get(j) for j in self.job_ids}
        assert all(j.state == JobState.SUCCEEDED for j in states.values()), (
            {k: (j.state, j.reason) for k, j in states.items()}, self.log.read_text()[-3000:])
        assert all(j.preemptions >= 1 for j in states.values()), "each job was interrupted once"

        def sweep_over() -> bool:
            done = self.cli("sweep", "status", self.sweep_id, "--json")
            return done.returncode == 0 and json.loads(done.stdout)["sweep"]["state"] != "RUNNING"

        wait_for(sweep_over, 90, interval=0.3, what="the sweep to finish")
        self.succeeded = self.store.counts()[JobState.SUCCEEDED]
        self.ended_at = time.time()

    def preempt(self, job: Job) -> None:
        """Outbid: the interruptible instance is paused by a higher bid."""
        self.sim.admin.preempt(job.instance_id)

    def take_host_offline(self, job: Job) -> None:
        self.sim.admin.host_offline(self.sim.admin.instance(job.instance_id)["host_id"])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_real_fleet(stack: ExitStack, tmp: Path) -> RealFleet:
    """Simulator, redis-server and `vastfleet server` (stopped by `stack`), the server answering."""
    redis_server = RedisServer(tmp / "redis").start()
    stack.callback(redis_server.stop)
    sim = stack.enter_context(running_sim(tmp, seed=5, hosts=12, boot_delay=0.2))
    port = free_port()
    env = clean_env(
        VASTFLEET_TOKEN=TOKEN, VASTFLEET_URL=f"http://127.0.0.1:{port}", VAST_API_KEY=sim.api_key,
        VASTFLEET_MARKET_URL=sim.url, VASTFLEET_AGENT_SECRET="s" * 32, VASTFLEET_STORAGE_SECRET="t" * 32,
        VASTFLEET_DATA_DIR=str(tmp / "plane"), HOME=str(tmp),
        **{f"VASTFLEET_{k.upper()}": str(v) for k, v in FAST.items()},
    )
    log = tmp / "server.log"
    proc = subprocess.Popen([*VASTFLEET, "server", "--port", str(port), "--redis-url", redis_server.url],
                            env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    stack.callback(client.close)
    fleet = RealFleet(sim, JobStore(client, prefix="vf"), port, env, log, proc)
    stack.callback(fleet.stop)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"vastfleet server exited {proc.returncode}: {log.read_text()[-3000:]}")
        return fleet.cli("status", "--json").returncode == 0

    wait_for(up, 30, interval=0.2, what="vastfleet server")
    return fleet
