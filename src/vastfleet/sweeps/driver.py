"""One pass of the sweep driver over one sweep: read the trials' jobs, report their metrics to Optuna, prune,
tell the ends, stop what the budget cannot pay, and start new trials up to the autoscaler's target.

Order of a new trial, each step durable before the next: ask (the journal holds the trial and its params)
-> the trial's record (number, params, no job yet) -> submit its job -> the record names the job. A driver
killed between any two finds the gap on its next pass: a journal trial without a record, or a record
without a job (the job store is searched for the trial's exports first), and closes it; so no trial is
lost and none gets two jobs. Every write to the job store goes through `JobStore` (submit, transition,
cancel); the job's state machine stays the only writer of job states.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState as OptunaState

from vastfleet.errors import IllegalTransition, NotFound, StaleEpoch
from vastfleet.queue import JobQuarantined, JobStore
from vastfleet.scheduler.policy.autoscale import (
    AutoscaleParams,
    EarlyStopModel,
    MarketView,
    RunningTrial,
    Scale,
    SweepNow,
    TrialRecord,
    decide,
    remaining_share,
    survival,
    survivor_deadline,
)
from vastfleet.spec.job import Job, JobState
from vastfleet.sweeps import study as st
from vastfleet.sweeps.models import Decision, Sweep, SweepState, Trial, TrialState
from vastfleet.sweeps.spend import accrue
from vastfleet.sweeps.store import SweepStore
from vastfleet.sweeps.trials import find_job, metric_of, rank, step_of, trial_state

log = logging.getLogger(__name__)


@dataclass
class Observed:
    """What the driver saw of the world this pass (shared by every sweep): instances by job, and a market
    view per sweep (None when the market could not be searched)."""

    now: float
    previous: float | None = None  # the last pass's time (this process), for instances first seen now
    instances: dict[str, list[Any]] = field(default_factory=dict)  # job id -> its instances in the listing
    market: Callable[[Sweep, float], MarketView | None] = lambda sweep, work_h: None
    speed: Callable[[Sweep, Any], float] = lambda sweep, inst: 1.0
    restart_overhead_s: float = 300.0  # the cost model's boot time (the scheduler's PolicyParams)


@dataclass
class DriverParams:
    reserve_s: float = 60.0  # billing while a stop takes effect: driver + scheduler passes and the destroy
    autoscale: AutoscaleParams = field(default_factory=AutoscaleParams)


def early_stop_model(sweep: Sweep) -> EarlyStopModel:
    e = sweep.spec.early_stop
    return EarlyStopModel(type=e.type, min_step=e.min_step, max_step=e.max_step, reduction_factor=e.reduction_factor)


def holds_gpu(inst: Any) -> bool:
    return (inst.actual_status or "").lower() not in ("stopped", "exited", "offline", "unknown")


class SweepDriver:
    def __init__(self, jobs: JobStore, sweeps: SweepStore, fenced: Callable[[], bool] = lambda: True,
                 params: DriverParams | None = None) -> None:
        self.jobs = jobs
        self.sweeps = sweeps
        self.fenced = fenced
        self.params = params or DriverParams()
        self._studies: dict[str, optuna.Study] = {}  # the journal's replay, kept between passes (it syncs)

    def study(self, sweep: Sweep) -> optuna.Study:
        if sweep.id not in self._studies:
            self._studies[sweep.id] = st.open_study(self.sweeps.redis, self.sweeps.prefix, sweep.id, sweep.spec,
                                                    create=True)
        return self._studies[sweep.id]

    # --- the pass -----------------------------------------------------------------------------------

    def drive(self, sweep_id: str, seen: Observed) -> Decision | None:
        sweep = self.sweeps.get(sweep_id)
        study = self.study(sweep)
        self._recover(sweep, study)
        trials = {t.number: t for t in self.sweeps.trials(sweep.id)}
        jobs = self._jobs(trials)
        accrue(self.sweeps, sweep, trials, seen)
        for _, trial in sorted(trials.items()):
            if not trial.state.over and self.fenced():
                self._follow(sweep, study, trial, jobs.get(trial.job_id or ""))
        trials = {t.number: t for t in self.sweeps.trials(sweep.id)}
        sweep = self.sweeps.get(sweep.id)
        failed = sum(t.state == TrialState.FAILED for t in trials.values())
        if sweep.state == SweepState.RUNNING and failed > sweep.spec.max_failed_trials:
            self.sweeps.end(sweep.id, SweepState.FAILED, f"{failed} trials failed, more than max_failed_trials"
                            f" {sweep.spec.max_failed_trials}; the last: {self._last_failure(trials)}")
            sweep = self.sweeps.get(sweep.id)
        if sweep.state.over:
            self._wind_down(sweep, study, trials, jobs)
            return None
        decision = self._scale(sweep, study, trials, jobs, seen)
        self._maybe_finish(sweep, decision)
        return decision

    # --- recovery of a pass cut short -------------------------------------------------------------------

    def _recover(self, sweep: Sweep, study: optuna.Study) -> None:
        records = {t.number: t for t in self.sweeps.trials(sweep.id)}
        for ft in study.get_trials(deepcopy=False, states=(OptunaState.RUNNING,)):
            if ft.number not in records:  # asked, then killed before the record: record it now
                self.sweeps.intend(sweep.id, Trial(number=ft.number, params=dict(ft.params),
                                                   started_at=self.sweeps.clock(), reason="recovered after a restart"))
                records[ft.number] = Trial(number=ft.number, params=dict(ft.params))
        for number, trial in records.items():
            if trial.job_id is not None or trial.state.over:
                continue
            job = find_job(self.jobs, sweep.id, number, trial.started_at or sweep.created_at)
            if job is not None:
                trial.job_id, trial.state = job.id, trial_state(job)
                self.sweeps.put_trial(sweep.id, trial)
                self.sweeps.event(sweep.id, "recovered", f"trial {number}: its job {job.id} found after a restart")
            elif sweep.state == SweepState.RUNNING and self.fenced():
                self._submit(sweep, trial)
            else:
                self._close(sweep, study, trial, TrialState.FAILED, "the sweep ended before its job was submitted")

    # --- one trial ----------------------------------------------------------------------------------

    def _jobs(self, trials: dict[int, Trial]) -> dict[str, Job]:
        out = {}
        for t in trials.values():
            if t.job_id is None:
                continue
            try:
                out[t.job_id] = self.jobs.get(t.job_id)
            except (NotFound, JobQuarantined):
                continue
        return out

    def _follow(self, sweep: Sweep, study: optuna.Study, trial: Trial, job: Job | None) -> None:
        if job is None:
            if trial.job_id is not None:
                self._close(sweep, study, trial, TrialState.FAILED, f"its job {trial.job_id} cannot be read")
            return
        changed = self._progress(sweep, study, trial, job)
        if job.state.terminal:
            self._ended(sweep, study, trial, job)
            return
        state = trial_state(job)
        ckpt = job.latest_checkpoint
        where = f"epoch {ckpt.epoch} step {ckpt.step}" if ckpt is not None else None
        if (state, job.state.value, where) != (trial.state, trial.job_state, trial.checkpoint):
            trial.state, trial.job_state, trial.checkpoint, changed = state, job.state.value, where, True
        if changed:
            self.sweeps.put_trial(sweep.id, trial)
            if self._should_prune(study, trial):
                self._prune(sweep, study, trial, job)

    def _progress(self, sweep: Sweep, study: optuna.Study, trial: Trial, job: Job) -> bool:
        """Report the heartbeat's value at its step; a step reported again (after a resume) replaces it."""
        value = metric_of(job.progress, sweep.spec.metric.name)
        step = step_of(job.progress)
        if value is None or (value, step) == (trial.value, trial.step):
            return False
        trial.value, trial.step = value, step
        if step is not None:
            study._storage.set_trial_intermediate_value(st.trial_id(study, trial.number), step, value)
        return True

    def _should_prune(self, study: optuna.Study, trial: Trial) -> bool:
        if trial.step is None:
            return False
        try:
            return bool(optuna.trial.Trial(study, st.trial_id(study, trial.number)).should_prune())
        except (RuntimeError, ValueError):  # the trial was told meanwhile
            return False

    def _prune(self, sweep: Sweep, study: optuna.Study, trial: Trial, job: Job) -> None:
        """Cancel the trial's job with reason `pruned`; `force`: teardown destroys its instance at the next
        scheduler pass without waiting for an upload (the last committed checkpoint stays in storage)."""
        try:
            self.jobs.transition(job.id, JobState.CANCELLED, "pruned", cancel_requested=True, force=True)
        except IllegalTransition:
            return  # it finished meanwhile: the next pass tells its end
        why = f"pruned at step {trial.step} ({sweep.spec.early_stop.type}): {sweep.spec.metric.name} {trial.value:g}"
        self.jobs.note(job.id, "pruned", why, {"sweep": sweep.id, "trial": trial.number})
        self._close(sweep, study, trial, TrialState.PRUNED, why)

    def _ended(self, sweep: Sweep, study: optuna.Study, trial: Trial, job: Job) -> None:
        metric = sweep.spec.metric.name
        if job.state == JobState.SUCCEEDED:
            final = metric_of(job.progress, metric)
            value = final if final is not None else trial.value
            if value is None:
                keys = ", ".join(sorted(job.progress)) or "nothing"
                self._close(sweep, study, trial, TrialState.FAILED,
                            f"exited 0 but never reported the metric {metric!r} in $VASTFLEET_PROGRESS_FILE"
                            f" (it reported: {keys})", job)
                return
            trial.value = value
            self._close(sweep, study, trial, TrialState.COMPLETE, f"complete: {metric} {value:g}", job)
        elif job.state == JobState.FAILED:
            self._close(sweep, study, trial, TrialState.FAILED, f"job failed: {job.reason}", job)
        elif job.reason.startswith("sweep budget"):
            self._close(sweep, study, trial, TrialState.PRUNED, f"stopped: {job.reason}", job)
        elif job.reason == "pruned":
            self._close(sweep, study, trial, TrialState.PRUNED, "pruned", job)
        else:
            self._close(sweep, study, trial, TrialState.FAILED, f"job cancelled: {job.reason}", job)

    def _close(self, sweep: Sweep, study: optuna.Study, trial: Trial, state: TrialState, reason: str,
               job: Job | None = None) -> None:
        """Tell Optuna (once: a repeated tell after a restart is skipped) and record the trial's end."""
        optuna_state = {TrialState.COMPLETE: OptunaState.COMPLETE, TrialState.PRUNED: OptunaState.PRUNED,
                        TrialState.FAILED: OptunaState.FAIL}[state]
        try:
            tid = st.trial_id(study, trial.number)
            storage = study._storage
            if storage.get_trial(tid).state == OptunaState.RUNNING:
                storage.set_trial_user_attr(tid, "vastfleet_reason", reason)
                if trial.job_id:
                    storage.set_trial_user_attr(tid, "vastfleet_job", trial.job_id)
            values = trial.value if state == TrialState.COMPLETE else None
            study.tell(trial.number, values, state=optuna_state, skip_if_finished=True)
        except KeyError:
            log.warning("sweep %s: trial %s is not in the journal", sweep.id, trial.number)
        trial.state, trial.reason, trial.ended_at = state, reason, self.sweeps.clock()
        if job is not None:
            trial.job_state = job.state.value
            ckpt = job.latest_checkpoint
            trial.checkpoint = f"epoch {ckpt.epoch} step {ckpt.step}" if ckpt is not None else trial.checkpoint
        self.sweeps.put_trial(sweep.id, trial)
        self.sweeps.event(sweep.id, state.value.lower(), f"trial {trial.number}: {reason}",
                          {"trial": trial.number, "job": trial.job_id, "value": trial.value})
        log.info("sweep %s trial %s %s: %s", sweep.id, trial.number, state.value, reason)

    # --- the fleet of trials ----------------------------------------------------------------------------

    def _scale(self, sweep: Sweep, study: optuna.Study, trials: dict[int, Trial], jobs: dict[str, Job],
               seen: Observed) -> Decision:
        spec = sweep.spec
        stop = early_stop_model(sweep)
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        done_or_reported = list(frozen.values())
        minimize = spec.metric.goal.value == "minimize"
        running: list[RunningTrial] = []
        live_instances = 0
        held_elsewhere = 0
        burn = 0.0
        for t in trials.values():
            insts = [i for i in seen.instances.get(t.job_id or "", ()) if holds_gpu(i)]
            live_instances += len(insts)
            burn += sum(float(i.dph_total or 0.0) for i in insts)
            job = jobs.get(t.job_id or "")
            if t.state.over or job is None or job.state.terminal:
                held_elsewhere += len(insts)
                continue
            current = [i for i in insts if i.id == job.instance_id]
            held_elsewhere += len(insts) - len(current)
            ft = frozen.get(t.number)
            running.append(RunningTrial(
                number=t.number, step=float(t.step or 0), placed=bool(current) or job.state in (
                    JobState.PLACING, JobState.BOOTING), rate_usd_h=float(current[0].dph_total or 0.0) if current else 0.0,
                speed=seen.speed(sweep, current[0]) if current else 1.0,
                rank=rank(done_or_reported, ft, stop, minimize) if ft is not None else None,
                started_at=t.started_at or sweep.created_at))
        history = tuple(TrialRecord(step=float(t.step or 0), stopped_early=t.state in (TrialState.PRUNED, TrialState.FAILED))
                        for t in trials.values() if t.step is not None or t.state.over)
        trials_left = max(spec.trial_count() - len(trials), 0)
        work_h = float(spec.job.work_hours or 1.0)
        now_state = SweepNow(max_parallel=spec.max_parallel, trials_left=trials_left, work_hours=work_h,
                             budget_usd=spec.budget_usd, spent_usd=sweep.spent_usd, burn_usd_h=burn,
                             reserve_s=self.params.reserve_s, deadline_at=sweep.deadline_at, running=tuple(running),
                             history=history, early_stop=stop, held_elsewhere=held_elsewhere)
        share = 1.0
        if stop.max_step:
            x, s = survival(stop, history, self.params.autoscale)
            share = remaining_share(x, s, 0.0)
        market = seen.market(sweep, work_h * share) or MarketView(np.zeros(0), np.zeros(0), float("inf"))
        scale = decide(now_state, market, seen.now, self.params.autoscale)
        self._pace_survivors(sweep, trials, jobs, now_state, market, seen)
        for number in scale.stop:
            self._stop_for_budget(sweep, study, trials[number], jobs.get(trials[number].job_id or ""), scale)
        admitted = 0
        for _ in range(scale.admit):
            if not self.fenced():
                break
            self._start(sweep, study, len(trials) + admitted)
            admitted += 1
        decision = Decision(at=seen.now, target=scale.target, binding=scale.binding, admit=admitted,
                            actual=live_instances, expected_trial_usd=scale.expected_trial_usd,
                            expected_trial_hours=scale.expected_trial_hours, running_usd=scale.running_usd,
                            projected_usd=scale.projected_usd, work_share=scale.work_share, reason=scale.reason,
                            stopped=list(scale.stop))
        self._remember(sweep, decision, scale)
        return decision

    def _pace_survivors(self, sweep: Sweep, trials: dict[int, Trial], jobs: dict[str, Job], state: SweepNow,
                        market: MarketView, seen: Observed) -> None:
        """A trial past the last rung gets the autoscaler's pace deadline on its job (only ever earlier), which
        the scheduler's deadline rule reads: on demand when interruptions make the survivor fall behind."""
        for r in state.running:
            due = survivor_deadline(r, state, market, seen.restart_overhead_s, self.params.autoscale)
            job = jobs.get(trials[r.number].job_id or "")
            # a minute earlier at least: the pace follows the market a little every pass, the job need not
            if due is None or job is None or (job.deadline_at is not None and job.deadline_at <= due + 60.0):
                continue
            try:
                self.jobs.update(job.id, expected_epoch=job.epoch, deadline_at=due)
            except (StaleEpoch, NotFound):
                continue  # it moved meanwhile: the next pass sets it
            self.sweeps.event(sweep.id, "paced", f"trial {r.number} survived the last rung: its job is due by"
                              f" {due:.0f} (the deadline rule keeps it on pace)", {"trial": r.number, "due": due})

    def _remember(self, sweep: Sweep, decision: Decision, scale: Scale) -> None:
        old = sweep.decision
        if old is None or (old.binding, old.target) != (decision.binding, decision.target):
            self.sweeps.event(sweep.id, "scaled", decision.reason,
                              {"target": decision.target, "binding": decision.binding, "actual": decision.actual})
        if scale.exhausted and (old is None or old.reason != decision.reason):
            self.sweeps.event(sweep.id, "budget", decision.reason)
        self.sweeps.set_decision(sweep.id, decision)

    def _stop_for_budget(self, sweep: Sweep, study: optuna.Study, trial: Trial, job: Job | None, scale: Scale) -> None:
        reason = (f"sweep budget: ${scale.projected_usd:.4f} projected against ${sweep.spec.budget_usd:.4f};"
                  f" trial {trial.number} was the worst running at its rung")
        if job is not None and not job.state.terminal:
            try:
                self.jobs.transition(job.id, JobState.CANCELLED, reason, cancel_requested=True, force=True)
            except IllegalTransition:
                return
        self._close(sweep, study, trial, TrialState.PRUNED, f"stopped: {reason}", job)

    def _start(self, sweep: Sweep, study: optuna.Study, expected_number: int) -> None:
        ask = st.ask(study, sweep.spec, expected_number)
        trial = Trial(number=ask.number, params=dict(ask.params), started_at=self.sweeps.clock())
        if not self.sweeps.intend(sweep.id, trial):
            log.warning("sweep %s: trial %s already recorded", sweep.id, ask.number)
            return
        self._submit(sweep, trial)

    def _submit(self, sweep: Sweep, trial: Trial) -> None:
        job = self.jobs.submit(sweep.spec.trial_job(sweep.id, trial.number, trial.params, self.sweeps.clock(),
                                                    sweep.deadline_at))
        trial.job_id, trial.state, trial.job_state = job.id, TrialState.QUEUED, job.state.value
        self.sweeps.put_trial(sweep.id, trial)
        self.sweeps.event(sweep.id, "started", f"trial {trial.number}: job {job.id}",
                          {"trial": trial.number, "job": job.id, "params": trial.params})
        log.info("sweep %s trial %s started as %s: %s", sweep.id, trial.number, job.id, trial.params)

    # --- the end --------------------------------------------------------------------------------------

    def _maybe_finish(self, sweep: Sweep, decision: Decision) -> None:
        trials = self.sweeps.trials(sweep.id)
        if any(not t.state.over for t in trials):
            return
        left = sweep.spec.trial_count() - len(trials)
        if left <= 0:
            why = f"all {len(trials)} trials ran"
        elif decision.binding == "deadline" and decision.admit == 0 and "deadline has passed" in decision.reason:
            why = f"the deadline passed with {left} trials not started"
        elif decision.admit == 0 and decision.reason.startswith("budget:"):
            why = f"{decision.reason} ({left} trials not started)"
        else:
            return
        self.sweeps.end(sweep.id, SweepState.FINISHED, why)

    def _wind_down(self, sweep: Sweep, study: optuna.Study, trials: dict[int, Trial], jobs: dict[str, Job]) -> None:
        """An ended sweep: every trial's job is cancelled (teardown destroys their instances, their committed
        checkpoints stay), each trial is told; then the sweep leaves the driver's set."""
        for t in trials.values():
            job = jobs.get(t.job_id or "")
            if t.state.over:
                continue
            if job is not None and not job.state.terminal:
                try:
                    job = self.jobs.cancel(job.id, f"sweep {sweep.state.value.lower()}: {sweep.reason}")
                except IllegalTransition:
                    job = self.jobs.get(job.id)
            if job is not None and job.state == JobState.SUCCEEDED:
                self._ended(sweep, study, t, job)
            else:
                self._close(sweep, study, t, TrialState.FAILED, f"sweep {sweep.state.value.lower()}", job)
        self.sweeps.settle(sweep.id)
        self._studies.pop(sweep.id, None)

    @staticmethod
    def _last_failure(trials: dict[int, Trial]) -> str:
        failed = [t for t in trials.values() if t.state == TrialState.FAILED]
        return max(failed, key=lambda t: t.ended_at or 0.0).reason if failed else "-"
