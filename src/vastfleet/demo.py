"""`vastfleet demo`: the whole system on its embedded defaults, in about a minute, with real processes.

Starts the marketplace simulator (in-process HTTP server; its instances run as local process groups), the
control plane (`runtime`: an embedded redis-server child when one is on the PATH, else fakeredis with a loud
warning; local checkpoint storage served by the API; the API, the scheduler loop and the RQ action workers in
this process), submits `--jobs` copies of the count example (package data, `vastfleet/examples/count.yaml`:
a command that counts steps and checkpoints), preempts `--preemptions` running instances through the
simulator, shows a live table until every job is done, and ends with a summary: jobs succeeded, preemptions
by kind (injected here, or the market's own: rival bids, outages) and how each was survived (moved to a
new offer, or re-bid / resumed in place on the same instance), steps lost or counted twice (read from each
job's last committed checkpoint), instances of ours left running or stopped, and the simulator ledger's
cost against the same rental time on demand. `--json` prints the summary as one JSON object on the last
line. Everything it started is stopped on the way out, Ctrl-C included.

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
from rich.text import Text

from vastfleet.errors import VastfleetError
from vastfleet.examples import example_path
from vastfleet.runtime import Runtime, Settings, build_runtime
from vastfleet.scheduler.labels import parse_label
from vastfleet.spec.job import Job, JobEvent, JobState
from vastfleet.spec.jobspec import JobSpec, load_job_spec
from vastfleet.storage.manifest import object_key

EXAMPLE = example_path("count.yaml")  # package data: the demo runs from an installed wheel

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
        raise FileNotFoundError(f"the demo job {EXAMPLE} is missing: the package is incomplete (reinstall it)")
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
        self.injected: list[tuple[str, int, float]] = []  # (job, instance, when)
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
        hit = {job_id for job_id, _, _ in self.injected}
        candidates = [j for j in jobs if j.state == JobState.RUNNING and j.instance_id is not None
                      and j.latest_checkpoint is not None and j.latest_checkpoint.epoch == j.epoch]
        candidates.sort(key=lambda j: (j.id in hit, j.id))  # spread them over the jobs
        if not candidates:
            return
        job = candidates[0]
        assert job.instance_id is not None
        at = time.time()  # the store's clock: the preemption that follows is this one, not the market's
        self.admin.preempt(job.instance_id)  # a rival bid takes the GPUs: the container is SIGKILLed at once
        self.injected.append((job.id, job.instance_id, at))

    def table(self, jobs: list[Job]) -> Table:
        title = (f"vastfleet demo — {len(self.injected)}/{self.n_preempt} preemptions injected,"
                 f" {time.monotonic() - self.started:.0f}s")
        return live_table(jobs, title, wide=Console().width >= 110)

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

    def events(self, jobs: list[Job]) -> dict[str, list[JobEvent]]:
        assert self.runtime is not None and self.runtime.store is not None
        return {j.id: self.runtime.store.events(j.id, limit=10_000) for j in jobs}

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
        kinds = preemption_kinds(self.events(jobs), self.injected)
        assert self.runtime is not None
        return {
            "jobs": len(jobs),
            "succeeded": sum(j.state == JobState.SUCCEEDED for j in jobs),
            "failed": sum(j.state == JobState.FAILED for j in jobs),
            **kinds,
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
        ("preemptions", f"{r['preemptions_injected'] + r['preemptions_from_market']}: {r['preemptions_injected']}"
                        f" injected here, {r['preemptions_from_market']} from the market"
                        + (f" ({_causes(r['market_causes'])})" if r["market_causes"] else "")),
        ("preemptions survived", (f"{r['preemptions_survived']}: {r['survived_by_moving']} by moving to a new offer,"
                                 f" {r['survived_in_place']} by re-bidding or resuming in place")),
        ("steps lost / counted twice", f"{r['steps_lost']} / {r['steps_counted_twice']} (of {r['steps_per_job']} per job)"),
        ("instances of ours left running / stopped", f"{r['instances_left_running']} / {r['instances_left_stopped']}"),
        ("cost (simulator ledger)", f"${r['cost_usd']:.4f}"),
        ("same rental time on demand", f"${r['on_demand_usd']:.4f} (saved {r['savings_pct']}%)"),
        ("wall time", f"{r['seconds']}s on {r['redis']}"),
    ]
    for k, v in rows:
        t.add_row(Text(k), Text(v))
    console.print(t)


def _causes(causes: dict[str, int]) -> str:
    return ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items()))


# --- pure parts: the live table and the preemption count --------------------------------------------------

STATE_WIDTH = max(len(s.value) for s in JobState)
STYLES = {"SUCCEEDED": "green", "FAILED": "red", "RUNNING": "cyan", "CANCELLED": "red"}


def shown_step(job: Job, total: int) -> int:
    """The step to show: never below the committed checkpoint (a resumed attempt starts from it, and its first
    heartbeat may still carry the previous attempt's figure or none); a success counted to the end."""
    if job.state == JobState.SUCCEEDED:
        return total
    reported = job.progress.get("step") if job.progress else None
    step = int(reported) if isinstance(reported, (int, float)) and not isinstance(reported, bool) else 0
    committed = job.latest_checkpoint.step if job.latest_checkpoint and job.latest_checkpoint.step else 0
    return max(step, committed)


def live_table(jobs: list[Job], title: str, wide: bool) -> Table:
    """Every cell is plain text (a reason may hold `[/x]`, which rich would read as markup and fail on), and
    every column has a fixed width, so the table keeps its shape from frame to frame."""
    t = Table(title=title)
    widths = {"job": max([len(j.id) for j in jobs] + [12]), "state": STATE_WIDTH, "try": 3, "step": 7, "ckpt": 4,
              "preempted": 9, "instance": 10}
    for col, width in widths.items():
        t.add_column(col, no_wrap=True, width=width, justify="left" if col in ("job", "state") else "right")
    if wide:  # the reason fits only a wide terminal; an 80-column one keeps the figures
        t.add_column("reason", no_wrap=True, overflow="ellipsis", width=48)
    for j in jobs:
        total = j.progress.get("of", STEPS) if j.progress else STEPS
        total = int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) else STEPS
        ckpt = j.latest_checkpoint.step if j.latest_checkpoint and j.latest_checkpoint.step is not None else None
        cells = [Text(j.id), Text(j.state.value, style=STYLES.get(j.state.value, "yellow")), Text(str(j.epoch)),
                 Text(f"{shown_step(j, total)}/{total}"), Text("-" if ckpt is None else str(ckpt)),
                 Text(str(j.preemptions)), Text(str(j.instance_id or "-"))]
        t.add_row(*cells, *([Text(j.reason)] if wide else []))
    return t


def preemption_kinds(events: dict[str, list[JobEvent]], injected: list[tuple[str, int, float]]) -> dict[str, Any]:
    """Every preemption in the jobs' histories, by where it came from and how it ended.

    A preemption starts where an attempt goes PAUSED, or INTERRUPTED without a pause before it. It was injected
    when it is the first on an instance the demo preempted, after it did so; otherwise it came from the market
    (its cause read from the reason: a rival bid, the host offline...). It was survived by moving when the
    attempt was re-queued and the job went on to succeed, in place when the same attempt went RUNNING again
    (the bid re-raised, or the auction came back). Counted from events, not from `Job.preemptions`, which
    counts only attempts that ended."""
    todo = {(job, inst): at for job, inst, at in injected}
    out: dict[str, Any] = {"preemptions_injected": len(injected), "preemptions_from_market": 0, "market_causes": {},
           "survived_by_moving": 0, "survived_in_place": 0, "preemptions_survived": 0}
    causes: dict[str, int] = {}
    for job_id, history in events.items():
        instance: dict[int, int] = {}  # epoch -> its instance
        open_at: dict[int, tuple[float, str]] = {}  # epoch -> (when the preemption started, its cause)
        moved = in_place = 0
        succeeded = False
        for ev in history:
            to = ev.to_state
            if ev.kind != "transition" or to is None:
                continue
            if to == JobState.BOOTING and isinstance(ev.data.get("instance_id"), int):
                instance[ev.epoch] = ev.data["instance_id"]
            if to in (JobState.PAUSED, JobState.INTERRUPTED) and ev.epoch not in open_at:
                open_at[ev.epoch] = (ev.at, _cause(ev.reason))
                key = (job_id, instance.get(ev.epoch, -1))
                if key in todo and ev.at >= todo[key] - 1.0:
                    del todo[key]
                else:
                    out["preemptions_from_market"] += 1
                    causes[open_at[ev.epoch][1]] = causes.get(open_at[ev.epoch][1], 0) + 1
            elif to == JobState.RUNNING and ev.epoch in open_at:
                del open_at[ev.epoch]  # the same attempt runs again: survived where it was
                in_place += 1
            elif to == JobState.PENDING and ev.epoch in open_at:
                del open_at[ev.epoch]
                moved += 1
            succeeded = succeeded or to == JobState.SUCCEEDED
        if succeeded:
            out["survived_by_moving"] += moved
            out["survived_in_place"] += in_place
    out["preemptions_survived"] = out["survived_by_moving"] + out["survived_in_place"]
    out["market_causes"] = causes
    return out


def _cause(reason: str) -> str:
    if reason.startswith(("paused by a rival bid", "outbid")):
        return "rival bid"
    if reason.startswith("paused by the marketplace"):
        return "paused by the marketplace"
    head = reason.split(":", 1)[0].strip()
    return {"host_offline": "host offline", "gone": "instance gone", "heartbeat_lost": "agent silent",
            "exited": "container exited", "agent": "agent fault"}.get(head, head or "unknown")
