"""A scripted fleet run that feeds a real JobStore (redis-server) and a FleetMetrics the way the reconcile
loop will: jobs submitted at three priorities, placed, run, checkpointed, preempted (outbid and host
offline), recovered on a new offer, finished; spend accrued by kind; marketplace calls with a rate-limit
error; a fleet snapshot each pass.

Used by the dashboard test as the scrape target until the real `vastfleet server` with the simulator can
be pointed at instead (`python -m tests.observability.workload --help` runs it as a process). Every
figure it records comes from the job store's own records and the script's clock; nothing is pre-computed.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from vastfleet.metrics import FleetMetrics
from vastfleet.queue import JobStore
from vastfleet.spec.job import CheckpointRef, Job, JobState
from vastfleet.spec.jobspec import job_spec_from_dict
from vastfleet.spec.market import Instance

GPUS = ("RTX 4090", "A100 SXM4")
ON_DEMAND = {"RTX 4090": 0.60, "A100 SXM4": 1.40}  # $/h
BID = {"RTX 4090": 0.25, "A100 SXM4": 0.70}
PRIORITIES = (5, 0, -3)


@dataclass
class Run:
    """What the script knows of a job's current attempt (the loop would read it from the marketplace)."""

    gpu: str
    bid: bool
    instance_id: int
    started: float
    last_checkpoint: float
    passes: int = 0


@dataclass
class ScriptedFleet:
    store: JobStore
    metrics: FleetMetrics
    clock: Callable[[], float] = time.time
    target_jobs: int = 4
    finish_after: int = 6  # passes a job runs before it succeeds
    preempt_every: int = 3  # one running job is interrupted every this many passes
    runs: dict[str, Run] = field(default_factory=dict)
    interrupted_at: dict[str, float] = field(default_factory=dict)
    excluded_hosts: set[int] = field(default_factory=set)
    passes: int = 0
    spent: float = 0.0
    _next_instance: int = 1000

    def step(self) -> None:
        """One reconcile pass of the script."""
        start = self.clock()
        self.passes += 1
        self._submit()
        self._place()
        self._run()
        if self.passes % self.preempt_every == 0:
            self._preempt()
        self._snapshot()
        self.metrics.set_budget(total_dollars=500.0, hourly_cap_dollars=10.0, spent_dollars=self.spent)
        self.metrics.observe_pass(self.clock() - start)

    def _call(self, operation: str, code: int = 200) -> None:
        t0 = self.clock()
        self.metrics.market_call(operation, code, self.clock() - t0 + 0.02)

    def _submit(self) -> None:
        live = sum(n for s, n in self.store.counts().items() if not s.terminal)
        for i in range(max(0, self.target_jobs - live)):
            priority = PRIORITIES[(self.passes + i) % len(PRIORITIES)]
            spec = job_spec_from_dict(
                {
                    "name": f"train-{self.passes}-{i}",
                    "image": "pytorch/pytorch:2",
                    "run": "python train.py",
                    "priority": priority,
                    "resources": {"gpu": list(GPUS), "gpus": 1},
                }
            )
            self.store.submit(spec)
            self.metrics.job_submitted()

    def _place(self) -> None:
        pending = self.store.pending()
        if pending:
            self._call("search_offers")
        for n, job in enumerate(pending[:2]):  # two placements a pass leaves a visible queue
            if self.passes % 5 == 0 and n == 0:
                self._call("create_instance", 429)  # rate limited: stays PENDING for the next pass
                continue
            now = self.clock()
            gpu = GPUS[(self.passes + n) % len(GPUS)]
            bid = (self.passes + n) % 4 != 0
            job = self.store.transition(job.id, JobState.PLACING, "best offer", offer_id=self.passes)
            self._call("create_instance")
            self._next_instance += 1
            job = self.store.transition(
                job.id,
                JobState.BOOTING,
                "instance created",
                expected_epoch=job.epoch,
                instance_id=self._next_instance,
                bid=BID[gpu] if bid else None,
            )
            job = self.store.transition(job.id, JobState.RUNNING, "first heartbeat", expected_epoch=job.epoch)
            self.metrics.job_started(now - pending[n].updated_at)
            if job.id in self.interrupted_at:
                self.metrics.recovery(now - self.interrupted_at.pop(job.id))
            self.runs[job.id] = Run(gpu, bid, self._next_instance, now, now)

    def _run(self) -> None:
        now = self.clock()
        for job in self.store.list(JobState.RUNNING):
            run = self.runs[job.id]
            run.passes += 1
            hours = max(now - run.started, 1.0) / 3600
            price = BID[run.gpu] if run.bid else ON_DEMAND[run.gpu]
            kind = "bid" if run.bid else "on_demand"
            compute = price * hours
            self.metrics.spend(
                compute, "compute", run.gpu, kind, on_demand_dollars=ON_DEMAND[run.gpu] * hours
            )
            self.metrics.spend(0.01 * hours, "storage", run.gpu, kind)
            self.metrics.spend(0.002, "bandwidth", run.gpu, kind)
            self.spent += compute + 0.01 * hours + 0.002
            run.started = now
            if run.passes % 2 == 0:
                ref = CheckpointRef(
                    epoch=job.epoch,
                    step=run.passes,
                    prefix=f"jobs/{job.id}/{job.epoch}",
                    files={"model.pt": {"size": 4096, "sha256": "0" * 64}},
                    committed_at=now,
                    bytes=4096,
                )
                self.store.commit_checkpoint(job.id, job.epoch, ref)
                self.metrics.checkpoint_upload(ref.bytes, 0.3 + 0.1 * run.passes)
                run.last_checkpoint = now
            if run.passes >= self.finish_after:
                done = self.store.transition(
                    job.id,
                    JobState.SUCCEEDED,
                    "exit 0",
                    expected_epoch=job.epoch,
                    exit_code=0,
                    cost_usd=job.cost_usd + compute,
                )
                self._call("destroy_instance")
                self.metrics.job_finished(done.state, done.cost_usd)
                del self.runs[job.id]
            else:
                self.store.update(job.id, expected_epoch=job.epoch, cost_usd=job.cost_usd + compute)

    def _preempt(self) -> None:
        running = self.store.list(JobState.RUNNING)
        if not running:
            return
        job: Job = running[0]
        run = self.runs.pop(job.id)
        now = self.clock()
        kind = "host_offline" if self.passes % 2 else "outbid"
        self._call("show_instances")
        job = self.store.transition(
            job.id, JobState.INTERRUPTED, kind, expected_epoch=job.epoch, preemptions=job.preemptions + 1
        )
        self.metrics.preemption(run.gpu, kind)
        if kind == "host_offline":
            self.excluded_hosts.add(run.instance_id)
        self.metrics.work_lost(now - run.last_checkpoint, run.gpu)
        self._call("destroy_instance")
        self.store.transition(
            job.id, JobState.PENDING, "re-queued from the last checkpoint", expected_epoch=job.epoch
        )
        self.interrupted_at[job.id] = now

    def _snapshot(self) -> None:
        now = self.clock()
        instances = [
            Instance(
                id=r.instance_id,
                gpu_name=r.gpu,
                num_gpus=1,
                actual_status="running",
                intended_status="running",
                is_bid=r.bid,
                dph_total=ON_DEMAND[r.gpu],
                bid_price=BID[r.gpu] if r.bid else None,
            )
            for r in self.runs.values()
        ]
        self.metrics.fleet_snapshot(instances, heartbeat_ages=[now - r.started for r in self.runs.values()])
        self.metrics.set_hosts_excluded(len(self.excluded_hosts))


class FleetThread:
    """Runs `ScriptedFleet.step()` every `interval` seconds in a daemon thread until stopped."""

    def __init__(self, fleet: ScriptedFleet, interval: float = 0.25) -> None:
        self.fleet = fleet
        self.interval = interval
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True, name="scripted-fleet")

    def _loop(self) -> None:
        try:
            while not self.stopping.is_set():
                self.fleet.step()
                self.stopping.wait(self.interval)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test through .error
            self.error = exc

    def start(self) -> FleetThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


def main() -> None:
    """Serve the scripted fleet's metrics through the real API app, as a process of its own."""
    from vastfleet.api import ApiContext, create_app
    from vastfleet.api.serve import run_forever
    from vastfleet.metrics import metrics_asgi_app

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    store = JobStore(redis.Redis.from_url(args.redis_url, decode_responses=True), prefix="vfobs")
    metrics = FleetMetrics()
    metrics.attach_store(store)
    FleetThread(ScriptedFleet(store, metrics)).start()
    ctx = ApiContext(store=store, token="workload-token", metrics_app=metrics_asgi_app(metrics))
    run_forever(create_app(ctx), "127.0.0.1", args.port, log_level="warning")


if __name__ == "__main__":
    main()
