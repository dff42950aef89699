"""How fast a lost attempt is seen, decided on and resumed, with the production timings.

Runs the control plane (embedded redis-server, API, scheduler, RQ workers) against the simulator with real
agents, the production timings (heartbeat 5 s, pass 5 s) and a 3 s image load, on counting jobs that
checkpoint every few seconds. It injects faults one job at a time, round robin: a rival's bid preempts the
instance (`preempt`), the host goes offline (`offline`), the agent process is killed on an instance the
marketplace still shows running (`agent_killed`). For each it reads the job's history:

    detection   fault -> the attempt leaves RUNNING (PAUSED or INTERRUPTED)
    decision    fault -> PLACING on a new offer
    resume      fault -> RUNNING again, the agent having restored the committed checkpoint
    work lost   the steps counted past the committed checkpoint, in seconds, beside Young/Daly's
                expectation for that cadence, (interval + checkpoint cost) / 2

Two witnesses decide a loss: a marketplace status (paused, offline, gone) and two missed heartbeats, so the
first two kinds are seen within about two heartbeats and one pass. A killed agent on an instance the
marketplace calls running is a partition until `heartbeat_lost_s` (60 s) says otherwise: it is reported
apart. `--json` prints one object (detection and resume over the marketplace-witnessed faults, every kind in
`by_kind`, `faults` counts) on the last line.
Usage: python bench/recovery.py [--jobs 6] [--minutes 5] [--seed 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vastfleet.runtime import Runtime, Settings, build_runtime
from vastfleet.sim.simulator import SimServer, Simulator
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.jobspec import load_job_spec

S = JobState
ROOT = Path(__file__).resolve().parents[1]
KINDS = ("preempt", "offline", "agent_killed")
STEP_S, EVERY = 0.5, 10  # a step every 0.5 s, a checkpoint every 10 steps: every 5 s
PRODUCTION: dict[str, Any] = {  # Settings' defaults, spelled out: what an operator runs
    "pass_interval_s": 5.0, "heartbeat_interval_s": 5.0, "heartbeat_lost_s": 60.0, "outbid_wait_s": 10.0,
    "log_level": "WARNING",
}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 2)


class Fault:
    def __init__(self, kind: str, job: Job, at: float, steps_at: int) -> None:
        self.kind, self.job_id, self.epoch, self.at = kind, job.id, job.epoch, at
        self.committed = job.latest_checkpoint.step if job.latest_checkpoint else 0
        self.steps_at = steps_at
        self.detected: float | None = None
        self.placed: float | None = None
        self.resumed: float | None = None


def steps_done(sim: Simulator, instance_id: int) -> int:
    try:
        lines = (sim.runner.sandbox(instance_id) / "steps.log").read_text().split()
    except OSError:
        return 0
    return int(lines[-1]) if lines else 0


def inject(kind: str, sim: Simulator, job: Job) -> None:
    assert job.instance_id is not None
    market = sim.market
    with market.lock:
        inst = market.instances[job.instance_id]
        if kind == "preempt":
            from vastfleet.sim import disruptions

            disruptions.preempt(market, inst.id, price=None, ondemand=True, duration=600.0)
        elif kind == "offline":
            from vastfleet.sim import disruptions

            disruptions.host_offline(market, inst.host_id, 600.0)
    if kind == "agent_killed":  # the agent dies, its container runs on: the marketplace still says running
        for pid in _agents(sim, job.instance_id):
            os.kill(pid, signal.SIGKILL)


def _agents(sim: Simulator, instance_id: int) -> list[int]:
    marker = f"VASTFLEET_SIM_INSTANCE={sim.runner.marker(instance_id)}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in env and b"agent.py" in cmd and b"--guard" not in cmd:
            found.append(int(entry))
    return found


def follow(runtime: Runtime, fault: Fault) -> None:
    assert runtime.store is not None
    for ev in runtime.store.events(fault.job_id):
        if ev.at < fault.at or ev.kind != "transition":
            continue
        if fault.detected is None and ev.from_state == S.RUNNING and ev.epoch == fault.epoch:
            fault.detected = ev.at
        if fault.placed is None and ev.to_state == S.PLACING and ev.epoch > fault.epoch:
            fault.placed = ev.at
        if fault.resumed is None and ev.to_state == S.RUNNING and ev.epoch > fault.epoch:
            fault.resumed = ev.at


def run(jobs: int = 6, minutes: float = 5.0, seed: int = 3, workdir: Path | None = None,
        progress: bool = True) -> dict[str, Any]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="vastfleet-recovery-"))
    # hosts enough that the jobs' GPUs outlast the hosts each fault takes out (excluded for hours after it)
    sim = Simulator(workdir / "sim", seed=seed, hosts=max(60, 10 * jobs), api_key="recovery",
                    knobs={"boot_delay": 3.0})
    server = SimServer(sim)
    runtime: Runtime | None = None
    faults: list[Fault] = []
    try:
        server.start()
        sim.start_ticker()
        runtime = build_runtime(Settings(**{**PRODUCTION, "api_port": 0, "vast_api_key": "recovery",
                                            "vast_url": server.url, "data_dir": workdir / "plane",
                                            "api_token": "t" * 24})).start()
        assert runtime.store is not None
        spec = load_job_spec(ROOT / "examples" / "count.yaml", [
            f"run=python3 count_steps.py --steps 100000 --every {EVERY} --sleep {STEP_S}", "max_preemptions=1000",
            "resources.gpu=[RTX_4090, RTX_3090, RTX_5090, RTX_A6000, L40S, A40]"])
        ids = [runtime.store.submit(spec).id for _ in range(jobs)]
        end = time.time() + minutes * 60.0
        turn = 0
        while time.time() < end:
            busy = {f.job_id for f in faults if f.resumed is None}
            ready = [j for j in (runtime.store.get(i) for i in ids) if j.id not in busy and j.state == S.RUNNING
                     and j.latest_checkpoint is not None and j.latest_checkpoint.epoch == j.epoch]
            if ready and len(busy) < max(1, jobs // 2):
                job = ready[turn % len(ready)]
                kind = KINDS[turn % len(KINDS)]
                turn += 1
                fault = Fault(kind, job, time.time(), steps_done(sim, job.instance_id or 0))
                inject(kind, sim, job)
                faults.append(fault)
                if progress:
                    print(f"  {time.time() - end + minutes * 60:5.0f}s {kind} {job.id} (epoch {job.epoch})",
                          file=sys.stderr)
            for fault in faults:
                if fault.resumed is None:
                    follow(runtime, fault)
            time.sleep(2.0)
        settle = time.time() + 150.0
        while time.time() < settle and any(f.resumed is None for f in faults):
            for fault in faults:
                if fault.resumed is None:
                    follow(runtime, fault)
            time.sleep(2.0)
        for fault in faults:
            if fault.resumed is None and progress:
                seen = [(round(e.at - fault.at, 1), e.epoch, e.from_state, e.to_state, e.reason[:80])
                        for e in runtime.store.events(fault.job_id) if e.at >= fault.at and e.kind == "transition"]
                print(f"  unresolved {fault.kind} {fault.job_id}: {seen}", file=sys.stderr)
    finally:
        if runtime is not None:
            runtime.stop()
        server.stop()
        sim.close()
    return summarize(faults)


def summarize(faults: list[Fault]) -> dict[str, Any]:
    def spans(kinds: tuple[str, ...], attr: str) -> list[float]:
        return [getattr(f, attr) - f.at for f in faults if f.kind in kinds and getattr(f, attr) is not None]

    witnessed = ("preempt", "offline")
    by_kind = {}
    for kind in KINDS:
        lost = [(f.steps_at - f.committed) * STEP_S for f in faults if f.kind == kind]
        by_kind[kind] = {
            "faults": sum(f.kind == kind for f in faults),
            "detection_p50_s": percentile(spans((kind,), "detected"), 0.5),
            "detection_p99_s": percentile(spans((kind,), "detected"), 0.99),
            "decision_p50_s": percentile(spans((kind,), "placed"), 0.5),
            "resume_p50_s": percentile(spans((kind,), "resumed"), 0.5),
            "resume_p99_s": percentile(spans((kind,), "resumed"), 0.99),
            "work_lost_mean_s": round(statistics.mean(lost), 2) if lost else None,
        }
    return {
        "faults": len(faults), "unresolved": sum(f.resumed is None for f in faults),
        "detection_p50_s": percentile(spans(witnessed, "detected"), 0.5),
        "detection_p99_s": percentile(spans(witnessed, "detected"), 0.99),
        "decision_p50_s": percentile(spans(witnessed, "placed"), 0.5),
        "decision_p99_s": percentile(spans(witnessed, "placed"), 0.99),
        "resume_p50_s": percentile(spans(witnessed, "resumed"), 0.5),
        "resume_p99_s": percentile(spans(witnessed, "resumed"), 0.99),
        "young_daly_expected_loss_s": round((EVERY * STEP_S) / 2.0, 2),
        "by_kind": by_kind,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = ap.parse_args()
    out = run(args.jobs, args.minutes, args.seed, progress=not args.json)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
