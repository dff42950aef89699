"""`vastfleet demo --sweep`: an autoscaled sweep on the embedded defaults, in about a minute.

Starts the simulator and the whole control plane in this process (as `vastfleet demo` does), submits
examples/sweep.yaml (16 trials of a synthetic curve with a known best point, ASHA, 4 at once, a budget),
preempts running trials (a rival bid, no notice) and shows a live table until the sweep is over. The summary:
trials complete / pruned / failed, the best found against the true best, dollars (the simulator's ledger for
the sweep's instances) against the budget, peak and final instance counts. Exits non-zero if any check
fails. CLI wiring: it may import `vastfleet.sim`.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from vastfleet.demo import DEMO_SETTINGS
from vastfleet.errors import VastfleetError
from vastfleet.runtime import Runtime, Settings, build_runtime
from vastfleet.scheduler.labels import parse_label
from vastfleet.spec.job import JobState
from vastfleet.sweeps import service
from vastfleet.sweeps.models import SweepStatus, TrialState
from vastfleet.sweeps.spec import SweepSpec, load_sweep_spec
from vastfleet.sweeps.store import SweepStore

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sweep.yaml"
TRUE_BEST = {"lr": 10 ** -2.5, "bs": 64}
TIMEOUT_S = 300.0


def objective(params: dict[str, Any]) -> float:
    """examples/sweep_trial.py's final validation loss (0.1 at the true best)."""
    return 0.1 + 0.5 * (math.log10(float(params["lr"])) + 2.5) ** 2 + 0.1 * (math.log2(float(params["bs"])) - 6) ** 2


class SweepDemo:
    def __init__(self, preemptions: int, workdir: Path, seed: int = 7) -> None:
        from vastfleet.sim.simulator import SimServer, Simulator

        self.n_preempt = preemptions
        self.sim = Simulator(workdir / "sim", seed=seed, hosts=24, api_key="demo-key", knobs={"boot_delay": 1.0})
        self.server = SimServer(self.sim)
        self.workdir = workdir
        self.runtime: Runtime | None = None
        self.admin: Any = None
        self.sweeps: SweepStore | None = None
        self.sweep_id = ""
        self.spec: SweepSpec | None = None
        self.injected: list[int] = []
        self.peak = 0
        self.started = time.monotonic()

    def start(self) -> None:
        from vastfleet.sim.admin_client import SimAdmin

        if not EXAMPLE.exists():
            raise FileNotFoundError(f"the demo sweep {EXAMPLE} is missing (run the demo from a source checkout)")
        self.server.start()
        self.sim.start_ticker()
        self.admin = SimAdmin(self.server.url, self.sim.api_key)
        settings = Settings(**{**DEMO_SETTINGS, "vast_api_key": self.sim.api_key, "vast_url": self.server.url,
                               "data_dir": self.workdir / "plane", "api_token": secrets.token_urlsafe(24)})
        self.runtime = build_runtime(settings).start()
        assert self.runtime.redis is not None
        self.sweeps = SweepStore(self.runtime.redis, settings.prefix)
        self.spec = load_sweep_spec(EXAMPLE)
        self.sweep_id = service.submit(self.sweeps, self.spec).id

    def stop(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
        if self.admin is not None:
            self.admin.close()
        self.server.stop()
        self.sim.close()

    # --- watching and injecting -------------------------------------------------------------------------

    def status(self) -> SweepStatus:
        assert self.sweeps is not None
        return service.status(self.sweeps, self.sweep_id)

    def holding(self) -> int:
        """Our instances holding GPUs now (the simulator's truth)."""
        ours = [i for i in self.admin.instances() if parse_label(i.get("label")) is not None]
        now = sum(i["phase"] in ("loading", "running") for i in ours)
        self.peak = max(self.peak, now)
        return now

    def maybe_preempt(self, status: SweepStatus) -> None:
        """A running trial past the first rung that has committed a checkpoint in this attempt; once per instance."""
        if len(self.injected) >= self.n_preempt or self.runtime is None or self.runtime.store is None:
            return
        for t in status.trial_list:
            if t.job_id is None or t.state != TrialState.RUNNING or (t.step or 0) <= 11:
                continue
            job = self.runtime.store.get(t.job_id)
            ckpt = job.latest_checkpoint
            if job.state == JobState.RUNNING and job.instance_id is not None and job.instance_id not in self.injected \
                    and ckpt is not None and ckpt.epoch == job.epoch:
                self.admin.preempt(job.instance_id)
                self.injected.append(job.instance_id)
                return

    def table(self, status: SweepStatus) -> Table:
        s, d = status.sweep, status.sweep.decision
        t = Table(title=f"vastfleet demo --sweep: {s.id} {s.state.value}, {len(self.injected)}/{self.n_preempt}"
                  f" preemptions injected, {time.monotonic() - self.started:.0f}s")
        for col in ("trial", "state", "step", "val_loss", "lr", "bs", "cost", "reason"):
            t.add_column(col, no_wrap=col != "reason", overflow="ellipsis", max_width=40 if col == "reason" else None)
        for tr in status.trial_list:
            style = {"COMPLETE": "green", "PRUNED": "yellow", "FAILED": "red", "RUNNING": "cyan"}.get(tr.state.value, "")
            t.add_row(str(tr.number), f"[{style}]{tr.state.value}[/]" if style else tr.state.value,
                      "-" if tr.step is None else str(tr.step), "-" if tr.value is None else f"{tr.value:.4f}",
                      f"{tr.params.get('lr', 0):.2e}", str(tr.params.get("bs", "-")), f"${tr.cost_usd:.5f}", tr.reason)
        budget = s.spec.budget_usd or 0.0
        t.caption = (f"spent ${s.spent_usd:.4f} of ${budget:.2f}; instances {d.actual if d else 0}/{d.target if d else 0}"
                     f" ({d.binding if d else '-'}); peak {self.peak}")
        return t

    # --- the summary ------------------------------------------------------------------------------------

    def summary(self, status: SweepStatus) -> dict[str, Any]:
        assert self.spec is not None
        jobs = {t.job_id for t in status.trial_list if t.job_id}
        rows = self.admin.ledger()["instances"].values()
        cost = sum(r["total"] for r in rows if (p := parse_label(r.get("label"))) is not None and p[0] in jobs)
        complete = [t for t in status.trial_list if t.state == TrialState.COMPLETE]
        best = status.best
        tried_best = min(complete, key=lambda t: objective(t.params)) if complete else None
        return {
            "sweep": self.sweep_id, "state": status.sweep.state.value, "reason": status.sweep.reason,
            "trials": len(status.trial_list), "complete": status.trials["COMPLETE"],
            "pruned": status.trials["PRUNED"], "failed": status.trials["FAILED"],
            "best_value": None if best is None else best.value, "best_params": None if best is None else best.params,
            "best_true_value": None if best is None else round(objective(best.params), 6),
            "true_best_value": 0.1, "true_best_params": TRUE_BEST,
            "best_is_best_tried": best is not None and tried_best is not None and best.number == tried_best.number,
            "cost_usd": round(cost, 6), "spent_usd": round(status.sweep.spent_usd, 6),
            "budget_usd": self.spec.budget_usd, "peak_instances": self.peak, "max_parallel": self.spec.max_parallel,
            "final_instances": self.holding(), "preemptions_injected": len(self.injected),
            "seconds": round(time.monotonic() - self.started, 1),
        }


def checks(r: dict[str, Any], preemptions: int) -> list[str]:
    """What must hold; each failure is named."""
    failed = []
    if r["state"] != "FINISHED":
        failed.append(f"the sweep ended {r['state']}: {r['reason']}")
    if r["complete"] == 0 or not r["best_is_best_tried"]:
        failed.append("the best reported is not the best of the points run to the end")
    if r["failed"]:
        failed.append(f"{r['failed']} trials failed")
    if r["budget_usd"] is not None and r["cost_usd"] > r["budget_usd"]:
        failed.append(f"the ledger ${r['cost_usd']} passed the budget ${r['budget_usd']}")
    if r["peak_instances"] > r["max_parallel"] or r["final_instances"]:
        failed.append(f"instances: peak {r['peak_instances']} (at most {r['max_parallel']}), {r['final_instances']} left")
    if r["preemptions_injected"] < preemptions:
        failed.append(f"only {r['preemptions_injected']} of {preemptions} preemptions could be injected")
    return failed


def sweep_demo_command(preemptions: int = 3, as_json: bool = False) -> int:
    if preemptions < 0 or preemptions > 10:
        print("vastfleet demo --sweep: --preemptions must be 0..10", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "uvicorn", "uvicorn.error", "rq.worker"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    console = Console(stderr=as_json)
    with tempfile.TemporaryDirectory(prefix="vastfleet-sweep-demo-") as tmp:
        demo = SweepDemo(preemptions, Path(tmp))
        try:
            demo.start()
            deadline = time.monotonic() + TIMEOUT_S
            with Live(demo.table(demo.status()), console=console, refresh_per_second=4) as live:
                while time.monotonic() < deadline:
                    status = demo.status()
                    demo.holding()
                    demo.maybe_preempt(status)
                    live.update(demo.table(status))
                    if status.sweep.state.over and all(t.state.over for t in status.trial_list):
                        break
                    time.sleep(0.25)
            settle = time.monotonic() + 30  # teardown is the control plane's: wait until it destroyed ours
            while demo.holding() and time.monotonic() < settle:
                time.sleep(0.25)
            result = demo.summary(demo.status())
        except KeyboardInterrupt:
            console.print("[red]interrupted: stopping everything the demo started[/]")
            return 130
        except (VastfleetError, FileNotFoundError) as exc:
            console.print(f"[red]vastfleet demo --sweep: {exc}[/]")
            return 1
        finally:
            demo.stop()
    failed = checks(result, preemptions)
    result["checks_failed"] = failed
    _print_summary(console, result)
    if as_json:
        print(json.dumps(result, sort_keys=True))
    return 1 if failed else 0


def _print_summary(console: Console, r: dict[str, Any]) -> None:
    console.print()
    t = Table(title="summary", show_header=False)
    t.add_column("what")
    t.add_column("value")
    best = "-" if r["best_value"] is None else (
        f"{r['best_value']:.4f} at {json.dumps(r['best_params'], sort_keys=True)} (true loss there"
        f" {r['best_true_value']:.4f}; the true best is 0.1 at lr=3.16e-03, bs=64)")
    for k, v in [
        ("sweep", f"{r['sweep']} {r['state']}: {r['reason']}"),
        ("trials complete / pruned / failed", f"{r['complete']} / {r['pruned']} / {r['failed']} of {r['trials']}"),
        ("best found", best),
        ("dollars (simulator ledger) / budget", f"${r['cost_usd']:.4f} / ${r['budget_usd']:.2f}"),
        ("instances: peak / final", f"{r['peak_instances']} (max_parallel {r['max_parallel']}) / {r['final_instances']}"),
        ("preemptions injected", str(r["preemptions_injected"])),
        ("wall time", f"{r['seconds']}s"),
        ("checks", "all passed" if not r["checks_failed"] else "; ".join(r["checks_failed"])),
    ]:
        t.add_row(k, v)
    console.print(t)
