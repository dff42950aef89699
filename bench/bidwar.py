"""Many jobs on one market: does the fleet outbid itself, and do its bids stay bounded?

Runs the whole control plane (an embedded redis-server, the API, the scheduler and its RQ workers) against
the simulator's HTTP server, submits N copies of a job that only sleeps, and samples the simulator's truth
every quarter second while the fleet places, boots and runs them. The scheduler that rents makes every
decision; this script only submits and watches. Prints:

    shared_gpu           the most of our instances ever found wanting a GPU another of ours wants (must be 0)
    max_bid_over_bound   the highest bid of ours over its bound: min(the machine's on-demand price, the job's
                         cap, the fleet's ceiling) (must be <= 1)
    running_share        of our rentals, the share holding their GPUs (running or loading), averaged once the
                         placements settle (the market has room when some of its offers are still free)
    spend_over_expected  the simulator's ledger for our instances over the expected cost the placements
                         announced (each placement's expected dollars to finish)

`--json` prints one object with those keys (and the counts behind them) on the last line.
Usage: python bench/bidwar.py [--jobs 40] [--lively] [--seconds 90] [--hosts H] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import secrets
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from light_agents import LightAgents

from vastfleet.runtime import Runtime, Settings, build_runtime
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.policy import PolicyParams
from vastfleet.sim.model import Market
from vastfleet.sim.simulator import LIVELY_KNOBS, SimServer, Simulator
from vastfleet.spec.gpus import gpu_model
from vastfleet.spec.job import JobState
from vastfleet.spec.jobspec import JobSpec, job_spec_from_dict

GPUS = ["RTX 4090", "RTX 3090", "RTX 5090", "RTX A6000", "L40S", "A40", "RTX 3080", "RTX A4000"]

# Recovery in seconds for a bench of minutes (production defaults live in `Settings`).
FAST: dict[str, Any] = {
    "pass_interval_s": 0.5, "heartbeat_interval_s": 0.5, "heartbeat_lost_s": 5.0, "boot_timeout_s": 60.0,
    "scheduling_timeout_s": 20.0, "outbid_wait_s": 2.0, "gone_grace_s": 5.0, "agent_poll_s": 0.5,
    "lease_ttl_s": 5.0, "create_lock_s": 20.0, "action_requeue_s": 10.0, "log_level": "WARNING", "workers": 2,
}


# Hundreds of agents beating twice a second would load the API more than any fleet does: at scale, production
# heartbeats (every 5 s) and a pass every 2 s.
AT_SCALE: dict[str, Any] = {"pass_interval_s": 2.0, "heartbeat_interval_s": 5.0, "heartbeat_lost_s": 30.0,
                            "outbid_wait_s": 10.0, "agent_poll_s": 5.0}


def sleep_spec(seconds: float, interruptible: str = "always") -> JobSpec:
    return job_spec_from_dict({
        "name": "sleeper", "image": "python:3.11-slim", "run": f"sleep {seconds:g}",
        "resources": {"gpu": GPUS, "gpus": 1, "disk_gb": 10, "min_reliability": 0.0},
        "interruptible": interruptible, "work_hours": max(seconds / 3600.0, 1e-4),
        "checkpoint": {"required": False}, "max_preemptions": 1000,
    })


class Watch:
    """Samples the simulator's truth about our instances (in-process, under the market's lock)."""

    def __init__(self, market: Market, params: PolicyParams, prefix: str = "vf") -> None:
        self.market, self.params, self.prefix = market, params, prefix
        self.shared_gpu = 0
        self.max_bid_over_bound = 0.0
        self.worst_bid: dict[str, Any] = {}
        self.shares: list[float] = []
        self.samples = 0
        self.peak_ours = 0

    def bound(self, inst: Any) -> float:
        m = self.market.machines[inst.machine_id]
        n = len(inst.gpu_ids)
        ceiling = min(gpu_model(m.gpu_name).dph * getattr(self.params, "max_price_factor", 3.0),
                      getattr(self.params, "max_price_per_gpu_hour", 50.0)) * n  # (older versions lack them)
        return min(m.dph_per_gpu * n, ceiling)

    def sample(self, settled: bool) -> None:
        with self.market.lock:
            ours = [i for i in self.market.instances.values() if parse_label(i.label, self.prefix) is not None]
            wanting = collections.Counter((i.machine_id, g) for i in ours if i.intended == "running"
                                          for g in i.gpu_ids)
            shared = sum(1 for i in ours if i.intended == "running"
                         and any(wanting[(i.machine_id, g)] > 1 for g in i.gpu_ids))
            for inst in ours:
                if inst.is_bid:
                    ratio = inst.price / self.bound(inst)
                    if ratio > self.max_bid_over_bound:
                        self.max_bid_over_bound = ratio
                        self.worst_bid = {"instance": inst.id, "bid": inst.price, "bound": self.bound(inst)}
            holding = sum(1 for i in ours if i.holds_gpus)
        self.samples += 1
        self.shared_gpu = max(self.shared_gpu, shared)
        self.peak_ours = max(self.peak_ours, len(ours))
        if settled and ours:
            self.shares.append(holding / len(ours))


def announced_cost(runtime: Runtime, job_ids: list[str]) -> float:
    """The expected dollars every placement announced (PENDING -> PLACING events carry them)."""
    assert runtime.store is not None
    total = 0.0
    for job_id in job_ids:
        for ev in runtime.store.events(job_id):
            if ev.kind == "transition" and ev.to_state == JobState.PLACING:
                total += float(ev.data.get("expected_cost_usd") or 0.0)
    return total


def our_spend(sim: Simulator, prefix: str = "vf") -> float:
    snap = sim.market.ledger.snapshot(sim.market.clock())
    return sum(r["total"] for r in snap["instances"].values() if parse_label(r["label"], prefix) is not None)


def default_hosts(jobs: int) -> int:
    return max(40, jobs // 2 if jobs <= 100 else jobs)


def market_process(conn: Connection, workdir: str, seed: int, hosts: int, knobs: dict[str, Any],
                   light: bool) -> None:
    """The marketplace in a process of its own (as vast is another party): the simulator, its instances (real
    agents, or light ones) and the watch over them. Answers its URL, then samples until told to stop and
    answers the figures."""
    sim = Simulator(Path(workdir) / "sim", seed=seed, hosts=hosts, api_key="bidwar", knobs=knobs,
                    runner=LightAgents() if light else None)
    server = SimServer(sim)
    watch = Watch(sim.market, PolicyParams())
    try:
        server.start()
        sim.start_ticker()
        conn.send(server.url)
        settled = False
        while True:
            if conn.poll(0.25):
                order = conn.recv()
                if order == "settled":
                    settled = True
                elif order == "stop":
                    break
            watch.sample(settled)
        conn.send({"shared_gpu": watch.shared_gpu, "max_bid_over_bound": round(watch.max_bid_over_bound, 4),
                   "worst_bid": watch.worst_bid, "peak_instances": watch.peak_ours, "samples": watch.samples,
                   "running_share": round(sum(watch.shares) / len(watch.shares), 4) if watch.shares else 0.0,
                   "spend_usd": round(our_spend(sim), 6)})
    finally:
        server.stop()
        sim.close()


def run(jobs: int = 40, *, seconds: float = 90.0, hosts: int | None = None, seed: int = 0, lively: bool = False,
        job_s: float = 30.0, settings: dict[str, Any] | None = None, workdir: Path | None = None,
        progress: bool = False, light: bool | None = None) -> dict[str, Any]:
    """The scenario: returns the figures (see the module's docstring). `light`: in-process agents in the
    market's process (default above 100 jobs, where real ones would not fit this machine's memory)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="vastfleet-bidwar-"))
    knobs: dict[str, Any] = dict(LIVELY_KNOBS) if lively else {}
    knobs["boot_delay"] = 1.0
    hosts = hosts or default_hosts(jobs)
    light = jobs > 100 if light is None else light
    ours, theirs = mp.get_context("spawn").Pipe()
    market = mp.get_context("spawn").Process(target=market_process, name="bidwar-market",
                                             args=(theirs, str(workdir), seed, hosts, knobs, light))
    market.start()
    runtime: Runtime | None = None
    started = time.monotonic()
    figures: dict[str, Any] = {}
    try:
        if not ours.poll(120):
            raise RuntimeError("the simulator process did not start")
        url = ours.recv()
        values = {**FAST, **(AT_SCALE if jobs > 100 else {}), **(settings or {}), "api_port": 0, "vast_api_key": "bidwar", "vast_url": url,
                  "data_dir": workdir / "plane", "api_token": secrets.token_urlsafe(24)}
        runtime = build_runtime(Settings(**values)).start()
        assert runtime.store is not None
        spec = sleep_spec(job_s)
        ids = [runtime.store.submit(spec).id for _ in range(jobs)]
        settle_at = started + seconds / 3.0
        told = False
        while time.monotonic() - started < seconds:
            if not told and time.monotonic() >= settle_at:
                ours.send("settled")
                told = True
            if progress:
                counts = runtime.store.counts()
                print(f"  t={time.monotonic() - started:5.0f}s "
                      + " ".join(f"{s.value}={n}" for s, n in counts.items() if n), file=sys.stderr)
            time.sleep(5.0 if progress else 1.0)
        counts = {s.value: n for s, n in runtime.store.counts().items() if n}
        expected = announced_cost(runtime, ids)
        runtime.stop()  # before the market goes: a control plane never watches its marketplace vanish
        runtime = None
        ours.send("stop")
        figures = ours.recv() if ours.poll(120) else {}
    finally:
        if runtime is not None:
            runtime.stop()
        if market.is_alive():
            ours.send("stop")
            market.join(30)
        if market.is_alive():
            market.kill()
    spend = float(figures.get("spend_usd", 0.0))
    return {
        "jobs": jobs, "hosts": hosts, "lively": lively, "seconds": seconds, "agents": "light" if light else "real",
        **figures,
        "spend_over_expected": round(spend / expected, 4) if expected > 0 else None,
        "expected_usd": round(expected, 6), "states": counts,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--hosts", type=int, default=None, help="hosts in the market (default: max(40, jobs/2))")
    ap.add_argument("--seconds", type=float, default=90.0, help="how long to watch")
    ap.add_argument("--job-seconds", type=float, default=30.0, help="how long each job sleeps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lively", action="store_true", help="rival bids, on-demand renters and outages")
    ap.add_argument("--agents", choices=("real", "light"), default=None,
                    help="real agent processes, or in-process light ones (default: light above 100 jobs)")
    ap.add_argument("--pass-interval", type=float, default=None, help="seconds between scheduler passes")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args()
    over = {} if args.pass_interval is None else {"pass_interval_s": args.pass_interval}
    out = run(args.jobs, seconds=args.seconds, hosts=args.hosts, seed=args.seed, lively=args.lively,
              job_s=args.job_seconds, progress=not args.json, settings=over,
              light=None if args.agents is None else args.agents == "light")
    if args.json:
        print(json.dumps(out))
    else:
        for key in ("jobs", "hosts", "agents", "lively", "shared_gpu", "max_bid_over_bound", "running_share",
                    "spend_over_expected", "spend_usd", "expected_usd", "peak_instances", "states"):
            print(f"{key:20} {out[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
