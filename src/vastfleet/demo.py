"""`vastfleet demo`: the whole system on its embedded defaults, in about a minute, with real processes.

Starts the marketplace simulator (in-process HTTP server; its instances run as local process groups), the
control plane (`runtime`: an embedded redis-server child when one is on the PATH, else fakeredis with a loud
warning; local checkpoint storage served by the API; the API, the scheduler loop and the RQ action workers in
this process), submits `--jobs` copies of examples/count.yaml (a command that counts steps and checkpoints),
preempts `--preemptions` running instances through the simulator, shows a live table until every job is
done, and ends with a summary: jobs succeeded, preemptions survived, steps lost or counted twice (read from
each job's last committed checkpoint), instances of ours left running or stopped, and the simulator
ledger's cost against the same rental time on demand. `--json` prints the summary as one JSON object on the
last line. Everything it started is stopped on the way out, Ctrl-C included.

This is CLI wiring: it may import `vastfleet.sim` (nothing else outside the simulator does).
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from vastfleet.errors import VastfleetError
from vastfleet.runtime import Runtime, Settings, build_runtime
from vastfleet.scheduler.labels import parse_label
from vastfleet.spec.job import Job, JobState
from vastfleet.spec.jobspec import JobSpec, load_job_spec
from vastfleet.storage.manifest import object_key

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "count.yaml"

# Demo timings: recovery in a few seconds (production defaults live in `Settings`).
DEMO_SETTINGS: dict[str, Any] = {
    "api_port": 0, "pass_interval_s": 0.3, "heartbeat_interval_s": 0.4, "heartbeat_lost_s": 3.0,
    "boot_timeout_s": 30.0, "scheduling_timeout_s": 10.0, "outbid_wait_s": 0.3, "gone_grace_s": 3.0,
    "agent_poll_s": 0.2, "lease_ttl_s": 3.0, "create_lock_s": 10.0, "action_requeue_s": 5.0,
    "checkpoint_interval_s": 30.0, "log_level": "WARNING", "workers": 2,
}
STEPS, EVERY, SLEEP = 60, 5, 0.12
TIMEOUT_S = 240.0


def demo_spec(steps: int = STEPS, every: int = EVERY, sleep: float = SLEEP) -> JobSpec:
    if not EXAMPLE.exists():
        raise FileNotFoundError(f"the demo job {EXAMPLE} is missing (run the demo from a source checkout)")
    return load_job_spec(EXAMPLE, [f"run=python3 count_steps.py --steps {steps} --every {every} --sleep {sleep}"])


class Demo:
    def __init__(self, jobs: int, preemptions: int, workdir: Path, seed: int = 7) -> None:
        from vastfleet.sim.simulator import SimServer, Simulator

        self.n_jobs, self.n_preempt = jobs, preemptions
        self.sim = Simulator(workdir / "sim", seed=seed, hosts=24, api_key="demo-key", knobs={"boot_delay": 1.0})
        self.server = SimServer(self.sim)
        self.runtime: Runtime | None = None
        self.admin: Any = None
        self.workdir = workdir
        self.jobs: list[str] = []
        self.injected: list[tuple[str, int]] = []
        self.on_demand_rate: dict[int, float] = {}  # instance id -> on-demand $/h of its machine
        self.started = time.monotonic()

    # --- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        from vastfleet.sim.admin_client import SimAdmin

        self.server.start()
        self.sim.start_ticker()
        self.admin = SimAdmin(self.server.url, self.sim.api_key)
        settings = Settings(**{**DEMO_SETTINGS, "vast_api_key": self.sim.api_key, "vast_url": self.server.url,
                               "data_dir": self.workdir / "plane", "api_token": secrets.token_urlsafe(24)})
        self.runtime = build_runtime(settings).start()
        spec = demo_spec()
        assert self.runtime.store is not None
        self.jobs = [self.runtime.store.submit(spec).id for _ in range(self.n_jobs)]

    def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
        if self.admin is not None:
            self.admin.close()
        self.server.stop()
        self.sim.close()  # kills every instance process group still alive

    # --- observing and injecting ------------------------------------------------------------------------

    def current(self) -> list[Job]:
        assert self.runtime is not None and self.runtime.store is not None
        return [self.runtime.store.get(j) for j in self.jobs]

    def ours(self) -> list[dict[str, Any]]:
        """Instances of ours the simulator holds (its admin API's truth), noting each one's on-demand rate."""
        out = [i for i in self.admin.instances() if parse_label(i.get("label")) is not None]
        for inst in out:
            machine = self.sim.market.machines.get(inst["machine_id"])
            if machine is not None:
                self.on_demand_rate[inst["id"]] = machine.dph_per_gpu * len(inst.get("gpu_ids") or [0])
        return out

    def maybe_preempt(self, jobs: list[Job]) -> None:
        """One preemption at a time: a running job whose current attempt committed a checkpoint of its own."""
        if len(self.injected) >= self.n_preempt:
            return
        if any(j.state in (JobState.INTERRUPTED, JobState.PENDING, JobState.PLACING, JobState.BOOTING)
               and j.preemptions > 0 for j in jobs):
            return  # let the last recovery finish first: the demo shows each one
        hit = {job_id for job_id, _ in self.injected}
        candidates = [j for j in jobs if j.state == JobState.RUNNING and j.instance_id is not None
                      and j.latest_checkpoint is not None and j.latest_checkpoint.epoch == j.epoch]
        candidates.sort(key=lambda j: (j.id in hit, j.id))  # spread them over the jobs
        if not candidates:
            return
        job = candidates[0]
        assert job.instance_id is not None
        self.admin.preempt(job.instance_id)  # a rival bid takes the GPUs: the container is SIGKILLed at once
        self.injected.append((job.id, job.instance_id))

    def table(self, jobs: list[Job]) -> Table:
        t = Table(title=f"vastfleet demo — {len(self.injected)}/{self.n_preempt} preemptions injected,"
                  f" {time.monotonic() - self.started:.0f}s")
        wide = Console().width >= 110  # the reason fits only a wide terminal; an 80-column one keeps the figures
        for col in ("job", "state", "try", "step", "ckpt", "preempted", "instance"):
            t.add_column(col, no_wrap=True)
        if wide:
            t.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=48)
        for j in jobs:
            prog = j.progress or {}
            of = prog.get("of", STEPS)
            # the last heartbeat may predate the final step; success means the command counted to the end
            step = f"{of}/{of}" if j.state == JobState.SUCCEEDED else f"{prog.get('step', 0)}/{of}"
            ckpt = str(j.latest_checkpoint.step) if j.latest_checkpoint else "-"
            style = {"SUCCEEDED": "green", "FAILED": "red", "RUNNING": "cyan"}.get(j.state.value, "yellow")
            t.add_row(j.id, f"[{style}]{j.state.value}[/]", str(j.epoch), step, ckpt, str(j.preemptions),
                      str(j.instance_id or "-"), *([j.reason] if wide else []))
        return t

    # --- the summary ------------------------------------------------------------------------------------

    def steps_check(self, job: Job) -> tuple[int, int]:
        """(lost, counted twice) from the job's last committed checkpoint: its `counted` list must be 1..N."""
        assert self.runtime is not None and self.runtime.ckpt is not None
        ref = job.latest_checkpoint
        if ref is None:
            return STEPS, 0
        rel = next((r for r in ref.files if r.endswith("state.json")), None)
        if rel is None:
            return STEPS, 0
        key = object_key(ref.prefix, rel, ref.files[rel])  # a reused object lives under an earlier checkpoint
        counted = json.loads(self.runtime.ckpt.path_for(key).read_text()).get("counted", [])
        lost = len(set(range(1, STEPS + 1)) - set(counted))
        return lost, len(counted) - len(set(counted))

    def summary(self, jobs: list[Job]) -> dict[str, Any]:
        left = self.ours()
        ledger = self.admin.ledger()
        cost = on_demand = 0.0
        for iid, row in ledger["instances"].items():
            if parse_label(row.get("label")) is None:
                continue
            cost += row["total"]
            held = sum(v for k, v in row["seconds"].items() if k in ("loading", "running"))
            on_demand += held / 3600.0 * self.on_demand_rate.get(int(iid), row["compute_rate"]) + row["storage"]
        checks = [self.steps_check(j) for j in jobs if j.state == JobState.SUCCEEDED]
        assert self.runtime is not None
        return {
            "jobs": len(jobs),
            "succeeded": sum(j.state == JobState.SUCCEEDED for j in jobs),
            "failed": sum(j.state == JobState.FAILED for j in jobs),
            "preemptions_injected": len(self.injected),
            "preemptions_survived": sum(j.preemptions for j in jobs if j.state == JobState.SUCCEEDED),
            "steps_per_job": STEPS,
            "steps_lost": sum(c[0] for c in checks),
            "steps_counted_twice": sum(c[1] for c in checks),
            "instances_left_running": sum(i["phase"] in ("running", "loading") for i in left),
            "instances_left_stopped": sum(i["phase"] not in ("running", "loading") for i in left),
            "cost_usd": round(cost, 6),
            "on_demand_usd": round(on_demand, 6),
            "savings_pct": round(100.0 * (1 - cost / on_demand), 1) if on_demand > 0 else 0.0,
            "seconds": round(time.monotonic() - self.started, 1),
            "redis": self.runtime.redis_kind,
        }


def demo_command(jobs: int = 3, preemptions: int = 3, as_json: bool = False) -> int:
    """Run the demo; 0 when every job succeeded with no step lost or doubled and nothing left behind."""
    if jobs < 1 or jobs > 20 or preemptions < 0 or preemptions > 50:
        print("vastfleet demo: --jobs must be 1..20 and --preemptions 0..50", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "uvicorn", "uvicorn.error", "rq.worker"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    console = Console(stderr=as_json)
    with tempfile.TemporaryDirectory(prefix="vastfleet-demo-") as tmp:
        demo = Demo(jobs, preemptions, Path(tmp))
        try:
            demo.start()
            deadline = time.monotonic() + TIMEOUT_S
            with Live(demo.table(demo.current()), console=console, refresh_per_second=4) as live:
                while time.monotonic() < deadline:
                    current = demo.current()
                    demo.ours()
                    demo.maybe_preempt(current)
                    live.update(demo.table(current))
                    if all(j.state.terminal for j in current):
                        break
                    time.sleep(0.25)
            # Teardown is the control plane's: wait (bounded) until it has destroyed every instance of ours.
            settle = time.monotonic() + 20
            while demo.ours() and time.monotonic() < settle:
                time.sleep(0.25)
            result = demo.summary(demo.current())
        except KeyboardInterrupt:
            console.print("[red]interrupted: stopping everything the demo started[/]")
            return 130
        except (VastfleetError, FileNotFoundError) as exc:
            console.print(f"[red]vastfleet demo: {exc}[/]")
            return 1
        finally:
            demo.stop()
    _print_summary(console, result)
    if as_json:
        print(json.dumps(result, sort_keys=True))
    ok = result["succeeded"] == jobs and result["steps_lost"] == 0 and result["steps_counted_twice"] == 0 \
        and result["instances_left_running"] == 0 and result["instances_left_stopped"] == 0
    return 0 if ok else 1


def _print_summary(console: Console, r: dict[str, Any]) -> None:
    console.print()
    t = Table(title="summary", show_header=False)
    t.add_column("what")
    t.add_column("value")
    rows = [
        ("jobs succeeded", f"{r['succeeded']}/{r['jobs']}"),
        ("preemptions survived", f"{r['preemptions_survived']} (injected {r['preemptions_injected']})"),
        ("steps lost / counted twice", f"{r['steps_lost']} / {r['steps_counted_twice']} (of {r['steps_per_job']} per job)"),
        ("instances of ours left running / stopped", f"{r['instances_left_running']} / {r['instances_left_stopped']}"),
        ("cost (simulator ledger)", f"${r['cost_usd']:.4f}"),
        ("same rental time on demand", f"${r['on_demand_usd']:.4f} (saved {r['savings_pct']}%)"),
        ("wall time", f"{r['seconds']}s on {r['redis']}"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
