"""The sweep benchmark's machinery (bench/sweep.py runs it): the search every strategy runs, the replay engine
taking trials as a sweep starts them, ours (the autoscaler and the scheduler's policy, as the live driver uses
them: admission by `decide`, survivors paced by `survivor_deadline` on the trial job's deadline) and the
fixed pools of workers that pull trials.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from vastfleet.scheduler.policy import JobView, PolicyParams
from vastfleet.scheduler.policy.autoscale import (
    AutoscaleParams,
    EarlyStopModel,
    RunningTrial,
    SweepNow,
    TrialRecord,
    decide,
    market_view,
    remaining_share,
    survival,
    survivor_deadline,
)
from vastfleet.sim.replay.baselines import GreedySpot, OnDemand
from vastfleet.sim.replay.engine import Action, JobRun, Options, Place, Release, Replay
from vastfleet.sim.replay.ours import Ours
from vastfleet.sim.replay.trace import Market
from vastfleet.sim.replay.workload import WorkJob

optuna.logging.set_verbosity(optuna.logging.WARNING)
TRIALS, PARALLEL, MAX_STEP, MIN_STEP, RF = 64, 16, 2700, 100, 3
WORK_H = 4.0  # a whole trial, work-hours at the reference GPU
WARM_S = 60.0  # a pool worker between two trials: the next run's process start and data load
ASHA = EarlyStopModel("asha", MIN_STEP, MAX_STEP, RF)
CHECKPOINT_S = 1800.0  # the trial's own cadence (its job spec's checkpoint.interval), the same in every strategy
CEILING_FACTOR = 20.0  # x the catalogue's $/GPU-hour: above every trace's prices (vast-like ones are within 1.35x)


def loss(params: dict[str, Any], step: float) -> float:
    """examples/sweep_trial.py's curve: the best point is lr = 10^-2.5, bs = 64."""
    final = 0.1 + 0.5 * (math.log10(params["lr"]) + 2.5) ** 2 + 0.1 * (math.log2(params["bs"]) - 6) ** 2
    return final + (1.5 - final) * math.exp(-step / (MAX_STEP / 5.0))


class Search:
    """The search every strategy runs: Optuna's TPE (seeded) proposing, ASHA stopping. Its decisions are made
    once, in a reference sweep of `PARALLEL` workers that run every trial at the same speed with no boot and no
    interruption (Optuna asked and told in the order that sweep runs them); each strategy then runs the same
    trials, each to the step where ASHA stopped it. So the figures compare fleets, not lucky search paths (in
    wall-clock order, a strategy that finishes trials in another order gets other proposals and other stops)."""

    def __init__(self, seed: int) -> None:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
                                    pruner=optuna.pruners.SuccessiveHalvingPruner(MIN_STEP, RF))
        dist = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
                "bs": optuna.distributions.CategoricalDistribution([16, 32, 64, 128])}
        report_every = MIN_STEP // 4
        running: dict[int, tuple[optuna.trial.Trial, int]] = {}  # worker -> (trial, step)
        self.fates: list[tuple[dict[str, Any], int]] = []  # per trial number: (params, the step it stops at)
        asked = 0
        while asked < TRIALS or running:
            for w in range(PARALLEL):
                if w not in running and asked < TRIALS:
                    trial = study.ask(dist)
                    running[w] = (trial, 0)
                    self.fates.append((dict(trial.params), MAX_STEP))
                    asked += 1
            for w, (trial, step) in sorted(running.items()):
                step = min(step + report_every, MAX_STEP)
                trial.report(loss(trial.params, step), step)
                if step >= MAX_STEP:
                    study.tell(trial, loss(trial.params, MAX_STEP))
                    del running[w]
                elif trial.should_prune():
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    self.fates[trial.number] = (dict(trial.params), step)
                    del running[w]
                else:
                    running[w] = (trial, step)
        self.next = 0

    def ask(self) -> tuple[int, dict[str, Any]]:
        number = self.next
        self.next += 1
        return number, self.fates[number][0]

    def report(self, number: int, step: int) -> bool:
        """True when the trial has reached the step where ASHA stops it."""
        return step >= self.fates[number][1] and self.fates[number][1] < MAX_STEP

    def end(self, number: int, complete: bool) -> None:
        """Nothing to tell: the decisions were made once for all strategies."""


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    started: float
    job: str = ""  # ours: the engine job running it
    step: int = 0
    ended: float | None = None
    complete: bool = False


@dataclass
class Outcome:
    dollars: float = 0.0
    last_h: float = 0.0
    best_h: float = 0.0
    best_value: float = math.inf
    complete: int = 0
    pruned: int = 0
    peak: int = 0
    interruptions: int = 0
    trials: list[Trial] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {"dollars": round(self.dollars, 2), "hours_to_last": round(self.last_h, 2),
                "hours_to_best": round(self.best_h, 2), "best_value": round(self.best_value, 4),
                "complete": self.complete, "pruned": self.pruned, "peak_instances": self.peak,
                "interruptions": self.interruptions}


class SweepReplay(Replay):
    """The replay engine with jobs added as a sweep starts them and ended when it stops them, and a driver
    called every tick before the placement policy."""

    def add(self, job: WorkJob) -> None:
        self.runs[job.id] = JobRun(job, submitted=True)
        self.order.append(job.id)

    def end(self, job_id: str, k: int, now: float) -> None:
        """Destroy the job's instance now (billing stops) and take the job out (pruned, or a pool at its end)."""
        self._apply([Release(job_id)], k, now)
        self.runs[job_id].done_at = now

    def sweep(self, policy: Any, driver: Any) -> None:
        dt = float(self.m.tick)
        for k in range(self.m.n_ticks):
            now = k * dt
            if k > 0:
                for run in self.active():
                    self._advance(run, now - dt, now, k - 1)
            driver.tick(self, k, now)
            if driver.done:
                return
            self._market_effects(k, now)
            for _ in range(4):
                acts: list[Action] = policy.step(self, k, now)
                if not acts:
                    break
                before = self.used.sum()
                self._apply(acts, k, now)
                if self.used.sum() == before:
                    break
            driver.peak = max(driver.peak, sum(1 for r in self.active() if r.rental is not None and not r.rental.paused))
        raise RuntimeError("the trace ended before the sweep did")


def trial_shape(m: Market) -> tuple[tuple[str, ...], int, float]:
    """The trace's GPUs (every model it lists), the smallest GPU count, and the reference DLPerf."""
    names = tuple(sorted({str(g) for g in m.gpu}))
    n = int(m.num_gpus.min())
    return names, n, float(np.median(m.dlperf[m.num_gpus == n]))


class FixedCadence:
    """The scheduler's policy placing trials whose job spec fixes `checkpoint: {interval: 30m}`: a numeric
    interval is kept (as the live placer keeps it), so every strategy checkpoints the same trials alike."""

    def __init__(self, inner: Ours) -> None:
        self.inner = inner
        self.name = inner.name

    def step(self, sim: Replay, k: int, now: float) -> list[Action]:
        return [dataclasses.replace(a, tau=CHECKPOINT_S) if isinstance(a, Place) else a
                for a in self.inner.step(sim, k, now)]


class OursDriver:
    def __init__(self, m: Market, search: Search, policy: Ours, budget: float | None, start: float) -> None:
        self.search, self.policy, self.budget, self.start = search, policy, budget, start
        self.names, self.gpus, self.ref = trial_shape(m)
        self.trials: list[Trial] = []
        self.done, self.peak = False, 0

    def tick(self, sim: SweepReplay, k: int, now: float) -> None:
        for t in self.trials:
            if t.ended is not None:
                continue
            run = sim.runs[t.job]
            if run.done_at is not None:
                t.ended, t.complete, t.step = run.done_at, True, MAX_STEP
                self.search.end(t.number, True)
                continue
            step = int(sim.progress(run, now) / WORK_H * MAX_STEP)
            if step > t.step:
                t.step = step
                if self.search.report(t.number, step):
                    sim.end(t.job, k, now)
                    t.ended = now
                    self.search.end(t.number, False)
        if len(self.trials) == TRIALS and all(t.ended is not None for t in self.trials):
            self.done = True
            return
        self._admit(sim, k, now)

    def _admit(self, sim: SweepReplay, k: int, now: float) -> None:
        p = self.policy._params(sim)
        running = []
        for t in self.trials:
            if t.ended is not None:
                continue
            r = sim.runs[t.job].rental
            rate = 0.0 if r is None or r.paused else (r.bid if r.kind == "bid" else float(sim.m.dph[k, r.offer]))
            running.append(RunningTrial(t.number, step=t.step, placed=r is not None, rate_usd_h=rate,
                                        speed=r.speed if r is not None else 1.0, started_at=t.started))
        history = tuple(TrialRecord(t.step, t.ended is not None and not t.complete) for t in self.trials if t.step)
        spent = sum(sim.runs[t.job].dollars for t in self.trials)
        state = SweepNow(max_parallel=PARALLEL, trials_left=TRIALS - len(self.trials), work_hours=WORK_H,
                         budget_usd=self.budget, spent_usd=spent, burn_usd_h=sum(r.rate_usd_h for r in running),
                         reserve_s=float(sim.m.tick), running=tuple(running), history=history, early_stop=ASHA)
        x, s = survival(ASHA, history, AutoscaleParams())
        avail = np.flatnonzero(sim.available(k))
        view = JobView("trial", self.names, num_gpus=self.gpus, ref_dlperf=self.ref,
                       checkpoint_cost_s=sim.o.checkpoint_cost_s)
        market = market_view(view, self.policy.table(sim, k, avail), self.policy.fleet, now, p,
                             WORK_H * remaining_share(x, s, 0.0), capacity=sim.m.capacity[avail] - sim.used[avail])
        scale = decide(state, market, now)
        for r in running:  # a survivor's deadline, as the live driver sets it; it only ever moves earlier
            t = next(t for t in self.trials if t.number == r.number)
            run = sim.runs[t.job]
            due = survivor_deadline(r, state, market, p.restart_overhead_s)
            if due is not None and (run.job.deadline_at is None or due < run.job.deadline_at - 60.0):
                run.job = dataclasses.replace(run.job, deadline=due - run.job.submit)
        for number in scale.stop:
            t = next(t for t in self.trials if t.number == number)
            sim.end(t.job, k, now)
            t.ended = now
            self.search.end(number, False)
        for _ in range(scale.admit):
            number, params = self.search.ask()
            job = WorkJob(f"t{number}", now, WORK_H, self.ref, self.names, self.gpus)
            sim.add(job)
            self.trials.append(Trial(number, params, now, job.id))


class PoolDriver:
    """N workers rented for the whole sweep, each pulling the next trial when its last one ends."""

    def __init__(self, m: Market, search: Search, sim: SweepReplay, n: int) -> None:
        self.search = search
        names, gpus, ref = trial_shape(m)
        self.workers = [f"w{i}" for i in range(n)]
        for w in self.workers:  # a worker is a job that never ends by itself
            sim.add(WorkJob(w, 0.0, 1e7, ref, names, gpus))
        self.assigned: dict[str, tuple[Trial, float]] = {}  # worker -> (trial, worker work at its start)
        self.trials: list[Trial] = []
        self.done, self.peak = False, 0

    def _next(self, worker: str, base: float, now: float) -> None:
        if len(self.trials) >= TRIALS:
            self.assigned.pop(worker, None)
            return
        number, params = self.search.ask()
        trial = Trial(number, params, now)
        self.trials.append(trial)
        self.assigned[worker] = (trial, base)

    def tick(self, sim: SweepReplay, k: int, now: float) -> None:
        for w in self.workers:
            run = sim.runs[w]
            r = run.rental
            if r is None or r.paused:
                work = run.work
            else:
                work = sim.progress(run, now)
            warm = (r.speed if r is not None else 1.0) * WARM_S / 3600.0
            if w not in self.assigned:
                if r is not None and not r.paused:
                    self._next(w, work, now)  # a freshly booted worker starts its first trial at once
                continue
            trial, base = self.assigned[w]
            base = min(base, work)  # the worker lost the trial's work since its last checkpoint: from there
            done = work - base
            if done >= WORK_H:  # ended within the tick: at the moment its work was done
                speed = r.speed if r is not None else 1.0
                trial.ended, trial.complete, trial.step = now - (done - WORK_H) / speed * 3600.0, True, MAX_STEP
                self.search.end(trial.number, True)
                self._next(w, base + WORK_H + warm, now)
                continue
            step = int(max(done, 0.0) / WORK_H * MAX_STEP)
            if step > trial.step:
                trial.step = step
                if self.search.report(trial.number, step):
                    trial.ended = now
                    self.search.end(trial.number, False)
                    self._next(w, work + warm, now)
                    continue
            self.assigned[w] = (trial, base)
        if len(self.trials) == TRIALS and all(t.ended is not None for t in self.trials):
            for w in self.workers:  # the pool is given back with the sweep's end
                sim.end(w, k, now)
            self.done = True


def run_one(m: Market, strategy: str, seed: int, budget: float | None = None) -> Outcome:
    options = Options()
    sim = SweepReplay(m, [], options)
    search = Search(seed)
    driver: OursDriver | PoolDriver
    if strategy == "ours":
        # the fleet's price ceiling is a multiple of the GPU catalogue's (vast) prices; on the public clouds'
        # traces (AWS V100 at $3.06/h against the catalogue's $0.25) an operator sets it above their prices
        policy: Any = Ours(PolicyParams(restart_overhead_s=options.restart_overhead_s,
                                        resume_overhead_s=options.resume_overhead_s, launch_gb=options.launch_gb,
                                        max_price_factor=CEILING_FACTOR))
        driver = OursDriver(m, search, policy, budget, 0.0)
        policy = FixedCadence(policy)
    else:
        policy = OnDemand(CHECKPOINT_S) if strategy == "on_demand_pool" else GreedySpot(CHECKPOINT_S)
        driver = PoolDriver(m, search, sim, PARALLEL)
    sim.sweep(policy, driver)
    out = Outcome(trials=driver.trials, peak=driver.peak)
    out.dollars = sum(r.dollars for r in sim.runs.values())
    out.interruptions = sum(len(r.interruptions) for r in sim.runs.values())
    ended = [t.ended for t in driver.trials if t.ended is not None]
    out.last_h = max(ended) / 3600.0
    complete = [t for t in driver.trials if t.complete]
    best = min(complete, key=lambda t: loss(t.params, MAX_STEP))
    out.best_h, out.best_value = (best.ended or 0.0) / 3600.0, loss(best.params, MAX_STEP)
    out.complete, out.pruned = len(complete), len(driver.trials) - len(complete)
    return out


STRATEGIES = ("on_demand_pool", "greedy_spot_pool", "ours")
