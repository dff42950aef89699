"""Acceptance, end to end on a real redis-server, the real `vastai` client and the simulator:

* a 16-trial ASHA sweep, `max_parallel: 4`, three preemptions, and the control plane (scheduler, sweep driver
  and action workers: one `python -m vastfleet.runtime` process) killed with SIGKILL and started again in the
  middle: our instances holding GPUs rise to 4, never pass it, and return to 0; every trial ends COMPLETE,
  PRUNED or FAILED with a reason; no trial is lost or run twice; the best trial reported is the best of the
  points tried (the objective is known); the simulator's ledger for the sweep's instances is within budget.
* a budget too small for every trial stops admitting trials before it is spent, and the sweep says why.

The API runs in the test process (agents keep talking to it); a monitor thread samples the simulator's
truth every 20 ms.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.e2e.harness import settings
from tests.e2e.test_crash_safety import scheduler_env
from tests.helpers import wait_for
from tests.sim_fixtures import SimHandle, running_sim
from tests.sweeps.test_spec import EXAMPLE
from vastfleet.queue import JobStore, Lease
from vastfleet.runtime import build_runtime
from vastfleet.scheduler.labels import parse_label
from vastfleet.scheduler.policy import PolicyParams
from vastfleet.spec.job import JobState
from vastfleet.sweeps import service
from vastfleet.sweeps import study as st
from vastfleet.sweeps.models import Sweep, TrialState
from vastfleet.sweeps.spec import SweepSpec, load_sweep_spec
from vastfleet.sweeps.store import SweepStore

pytestmark = pytest.mark.slow


def true_final(params: dict[str, Any]) -> float:
    """examples/sweep_trial.py's objective at the end of a trial."""
    return 0.1 + 0.5 * (math.log10(params["lr"]) + 2.5) ** 2 + 0.1 * (math.log2(params["bs"]) - 6) ** 2


class Monitor(threading.Thread):
    """Our instances in the simulator: how many hold GPUs (loading or running) at each sample."""

    def __init__(self, sim: SimHandle) -> None:
        super().__init__(daemon=True)
        self.sim = sim
        self.stop = threading.Event()
        self.peak = 0
        self.labels: set[str] = set()

    def holding(self) -> int:
        market = self.sim.sim.market
        with market.lock:
            live = [(i.label, i.phase.value) for i in market.instances.values()]
        ours = [(label, phase) for label, phase in live if parse_label(label) is not None]
        self.labels |= {str(label) for label, _ in ours}
        return sum(phase in ("loading", "running") for _, phase in ours)

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.holding())


def sweep_spec(**sets: Any) -> SweepSpec:
    return load_sweep_spec(EXAMPLE, [f"{k}={v}" for k, v in sets.items()])


def ledger_of(sim: SimHandle, jobs: set[str]) -> float:
    rows = sim.admin.ledger()["instances"].values()
    return sum(r["total"] for r in rows if (p := parse_label(r.get("label"))) is not None and p[0] in jobs)


def test_a_16_trial_asha_sweep_survives_preemptions_and_a_sigkill_of_the_control_plane(
        tmp_path: Path, redis_url: str) -> None:
    budget = 0.2
    spec = sweep_spec(budget_usd=budget)
    with running_sim(tmp_path, seed=3, hosts=16, boot_delay=0.3) as sim:
        # the secrets the control plane's two processes share (a split deployment sets them both)
        plane = settings(sim, redis_url, tmp_path, run_scheduler=False, workers=0, agent_secret="a" * 32,
                         storage_secret="s" * 32)
        api = build_runtime(plane).start()
        assert api.store is not None and api.redis is not None
        env = scheduler_env(api.settings, api.public_url)
        log = (tmp_path / "control-plane.log").open("ab")
        procs: list[subprocess.Popen[bytes]] = []

        def start() -> subprocess.Popen[bytes]:
            proc = subprocess.Popen([sys.executable, "-m", "vastfleet.runtime"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            procs.append(proc)
            return proc

        monitor = Monitor(sim)
        monitor.start()
        sweeps = SweepStore(api.redis)
        try:
            sweep = service.submit(sweeps, spec)
            proc = start()
            preempted: list[tuple[str, int]] = []  # (job, instance)
            killed = False
            lease = Lease(api.redis, "sweeps", 1.0)

            def disrupt() -> bool:
                nonlocal proc, killed
                trials = sweeps.trials(sweep.id)
                if not killed and len(trials) >= 7 and lease.holder() is not None:
                    os.killpg(proc.pid, signal.SIGKILL)  # scheduler, sweep driver and workers at once
                    proc.wait()
                    killed = True
                    proc = start()
                if len(preempted) < 3:
                    preempt_one(api.store, sim, sweeps, sweep, preempted)  # type: ignore[arg-type]
                return killed and len(preempted) == 3

            try:
                wait_for(disrupt, 150, interval=0.1, what="three preemptions and a SIGKILL mid-sweep")
            except TimeoutError as exc:
                seen = [(t.number, t.state.value, (j := api.store.get(t.job_id)).state.value, j.bid, j.epoch,
                         j.latest_checkpoint.epoch if j.latest_checkpoint else None)
                        for t in sweeps.trials(sweep.id) if t.job_id]
                raise AssertionError(f"{exc}; killed={killed} preempted={preempted}; trials {seen}") from None
            wait_for(lambda: sweeps.get(sweep.id).state.over, 180, interval=0.3, what="the sweep to finish")
            wait_for(lambda: monitor.holding() == 0 and not ours_left(sim), 30, what="every instance destroyed")
            monitor.stop.set()
            monitor.join(5)
            check_the_sweep(api.store, sweeps, sweep.id, sim, monitor, budget, preempted)
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


def ours_left(sim: SimHandle) -> list[dict[str, Any]]:
    return [i for i in sim.admin.instances() if parse_label(i.get("label")) is not None]


def preempt_one(store: JobStore, sim: SimHandle, sweeps: SweepStore, sweep: Sweep,
                done: list[tuple[str, int]]) -> None:
    """A rival bid takes the GPUs of a running trial that ASHA promoted past its last rung before the end (it
    will run to its end) and that committed a checkpoint in this attempt: SIGKILL, no notice. Once per instance."""
    study = st.open_study(sweeps.redis, "vf", sweep.id, sweep.spec)
    promoted = {t.number for t in study.get_trials(deepcopy=False) if "completed_rung_1" in t.system_attrs}
    for t in sweeps.trials(sweep.id):
        if t.job_id is None or t.state.over or t.number not in promoted:
            continue
        job = store.get(t.job_id)
        ckpt = job.latest_checkpoint
        # a bid (an on-demand rental, e.g. a survivor the pace rule moved, cannot be outbid)
        if job.state == JobState.RUNNING and job.instance_id is not None and job.bid is not None \
                and job.instance_id not in {i for _, i in done} \
                and ckpt is not None and ckpt.epoch == job.epoch and not sweeps.trial(sweep.id, t.number).state.over:  # type: ignore[union-attr]
            sim.admin.preempt(job.instance_id)
            done.append((job.id, job.instance_id))
            return


def check_the_sweep(store: JobStore, sweeps: SweepStore, sweep_id: str, sim: SimHandle, monitor: Monitor,
                    budget: float, preempted: list[tuple[str, int]]) -> None:
    sweep = sweeps.get(sweep_id)
    trials = sweeps.trials(sweep_id)
    facts = f"{sweep.state} {sweep.reason}; {[(t.number, t.state.value, t.reason) for t in trials]}"
    # 4 at once at the peak, never more, none at the end
    assert monitor.peak == 4, facts
    # every trial ended, with a reason; the 16 of them, numbered 0..15
    assert [t.number for t in trials] == list(range(16)), facts
    assert all(t.state.over and t.reason for t in trials), facts
    assert sweep.state.value == "FINISHED" and sweep.reason == "all 16 trials ran", facts
    # none lost, none run twice: one job per trial, and no other job carries the sweep's exports
    job_ids = [t.job_id for t in trials]
    assert len(set(job_ids)) == 16 and None not in job_ids
    marked = [j.id for j in store.list(limit=1000) if j.spec.run.startswith(f"export VASTFLEET_SWEEP_ID={sweep_id}\n")]
    assert sorted(marked) == sorted(job_ids)  # type: ignore[arg-type]
    # Optuna's journal agrees, trial by trial
    study = st.open_study(sweeps.redis, "vf", sweep_id, sweep.spec)
    states = {TrialState.COMPLETE: optuna.trial.TrialState.COMPLETE, TrialState.PRUNED: optuna.trial.TrialState.PRUNED,
              TrialState.FAILED: optuna.trial.TrialState.FAIL}
    assert [(f.number, f.state) for f in study.get_trials()] == [(t.number, states[t.state]) for t in trials]
    # the preemptions were survived by the same trials: a preempted job was paused (its bid raised, or re-queued
    # from its checkpoint) and its trial went on to its own end, never a failure. (A preemption landing in the
    # very pass that ASHA stops the trial is not seen as one: at most one such.)
    assert len(preempted) == 3, facts
    by_job = {t.job_id: t for t in trials}
    paused = 0
    for job_id, _ in preempted:
        seen = [e.to_state for e in store.events(job_id) if e.kind == "transition"]
        paused += bool({JobState.PAUSED, JobState.INTERRUPTED} & set(seen))
        assert by_job[job_id].state != TrialState.FAILED, facts
    assert paused >= 2, facts
    # the best reported is the best of the points run to the end
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = service.status(sweeps, sweep_id).best
    assert complete and best is not None
    assert best.number == min(complete, key=lambda t: true_final(t.params)).number
    assert study.best_trial.number == best.number
    # the marketplace's own bill for the sweep's instances is within the budget
    assert 0 < ledger_of(sim, {j for j in job_ids if j}) <= budget
    assert monitor.labels and not ours_left(sim)


def test_a_budget_too_small_stops_admitting_trials_before_it_is_spent(tmp_path: Path, redis_url: str) -> None:
    budget = 0.0006  # about half of what 16 trials cost here even when ASHA prunes most of them early (~$0.00008 each)
    spec = sweep_spec(budget_usd=budget)
    with running_sim(tmp_path, seed=5, hosts=12, boot_delay=0.3) as sim:
        runtime = build_runtime(settings(sim, redis_url, tmp_path)).start()
        try:
            assert runtime.sweeps is not None and runtime.redis is not None
            # the cost model's restart overhead as the simulator boots (seconds, not vast's minutes), so the
            # projection prices a trial near what it really costs here
            runtime.sweeps.policy = PolicyParams(restart_overhead_s=3.0)
            sweeps = SweepStore(runtime.redis)
            sweep = service.submit(sweeps, spec)
            wait_for(lambda: sweeps.get(sweep.id).state.over, 150, interval=0.3, what="the sweep to end")
            wait_for(lambda: not ours_left(sim), 30, what="every instance destroyed")
            done = sweeps.get(sweep.id)
            trials = sweeps.trials(sweep.id)
            facts = f"{done.state} {done.reason} spent={done.spent_usd} decision={done.decision}; {[(t.number, t.state.value) for t in trials]}"
            assert done.state.value == "FINISHED" and done.reason.startswith("budget:"), facts
            assert "trials not started" in done.reason and 0 < len(trials) < 16, facts
            assert all(t.state.over for t in trials), facts
            assert any(e.kind == "budget" for e in sweeps.events(sweep.id)), facts
            assert done.spent_usd <= budget, facts
            assert ledger_of(sim, {t.job_id for t in trials if t.job_id}) <= budget, facts
        finally:
            runtime.stop()
