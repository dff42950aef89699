"""End to end: SIGKILL the scheduler process at random (seeded) moments; no job is lost, nothing is rented
twice, nothing is left behind.

The API runs in the test process (the agents keep talking to it); the scheduler and its RQ action workers
run as a separate `python -m vastfleet.runtime` process sharing the same redis-server. A monitor thread
reads the simulator's truth every few milliseconds and records every instance per label (job + epoch).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.harness import FAST, count_spec, ours_left, settings
from tests.helpers import wait_for
from tests.sim_fixtures import SimHandle, running_sim
from vastfleet.queue import Lease
from vastfleet.runtime import build_runtime
from vastfleet.scheduler.labels import parse_label
from vastfleet.spec.job import JobState

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


class Monitor(threading.Thread):
    """Every instance the simulator holds, sampled continuously: labels seen with two live instances."""

    def __init__(self, sim: SimHandle) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.stop = threading.Event()
        self.ever: dict[str, set[int]] = {}
        self.doubles: list[tuple[str, list[int]]] = []

    def run(self) -> None:
        market = self.sim.sim.market
        while not self.stop.wait(0.01):
            with market.lock:
                live = [(i.id, i.label) for i in market.instances.values()]
            per: dict[str, list[int]] = {}
            for iid, label in live:
                if parse_label(label) is not None:
                    per.setdefault(str(label), []).append(iid)
                    self.ever.setdefault(str(label), set()).add(iid)
            self.doubles += [(label, ids) for label, ids in per.items() if len(ids) > 1]


def scheduler_env(plane_settings, public_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VASTFLEET_", "VAST_"))}
    values = {**FAST, "redis_url": plane_settings.redis_url, "vast_api_key": plane_settings.vast_api_key,
              "vast_url": plane_settings.vast_url, "agent_secret": plane_settings.agent_secret,
              "storage_secret": plane_settings.storage_secret, "public_url": public_url, "run_api": "false",
              "workers": 1, "log_level": "INFO", "data_dir": plane_settings.data_dir}
    # one data directory: the secrets the API keeps there (made at its first start) are the scheduler's too
    env.update({f"VASTFLEET_{k.upper()}": str(v) for k, v in values.items()})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_kill_minus_nine_of_the_scheduler_never_loses_a_job_nor_rents_twice(tmp_path: Path, redis_url: str) -> None:
    rng = random.Random(20261124)
    with running_sim(tmp_path, seed=3, hosts=16, boot_delay=0.3) as sim:
        plane = settings(sim, redis_url, tmp_path, run_scheduler=False, workers=0)
        api = build_runtime(plane).start()
        env = scheduler_env(plane, api.public_url)
        log = (tmp_path / "scheduler.log").open("ab")
        procs: list[subprocess.Popen[bytes]] = []

        def start_scheduler() -> subprocess.Popen[bytes]:
            proc = subprocess.Popen([sys.executable, "-m", "vastfleet.runtime"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            return proc

        monitor = Monitor(sim)
        monitor.start()
        try:
            jobs = [api.store.submit(count_spec(steps=80, every=5, sleep=0.08)) for _ in range(2)]
            proc = start_scheduler()
            kills = 0
            preempted = 0
            lease = Lease(api.redis, "scheduler", 1.0, prefix=plane.prefix)
            token = 0
            while kills < 6:
                # Wait until this process leads (a new fencing token), then kill it at a seeded random moment.
                held = wait_for(lambda t=token: (h := lease.holder()) is not None and h[1] > t and h, 30,
                                what="the restarted scheduler to lead")
                token = held[1]
                threading.Event().wait(rng.uniform(0.05, 1.5))
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                kills += 1
                if kills in (2, 4):  # recovery work for the restarted scheduler to redo
                    running = [j for j in (api.store.get(x.id) for x in jobs) if j.state == JobState.RUNNING]
                    if running:
                        sim.admin.preempt(running[0].instance_id)
                        preempted += 1
                proc = start_scheduler()
            wait_for(lambda: all(api.store.get(x.id).state.terminal for x in jobs), 90,
                     what="every job to finish after the kills")
            final = [api.store.get(x.id) for x in jobs]
            assert [j.state for j in final] == [JobState.SUCCEEDED] * len(jobs), [j.reason for j in final]
            wait_for(lambda: not ours_left(sim), 30, what="every instance of ours destroyed")
            monitor.stop.set()
            monitor.join(5)
            assert monitor.doubles == [], "two live instances carried one attempt's label"
            assert all(len(ids) == 1 for ids in monitor.ever.values()), f"an attempt rented twice: {monitor.ever}"
            facts = f"epochs={[j.epoch for j in final]} ever={monitor.ever} preempted={preempted}"
            # Under load a slow heartbeat may add a (safe) interruption of its own, and a preemption may land
            # as a job finishes: the recovery work happened, and every attempt is accounted for below.
            assert preempted >= 1 and sum(j.preemptions for j in final) >= 1, facts
            rented = sum(len(ids) for ids in monitor.ever.values())
            assert rented == sum(j.epoch for j in final), f"one rental per attempt, none unaccounted for: {facts}"
        finally:
            monitor.stop.set()
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(15)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
            log.close()
            api.stop()
