"""The sweeps' gauges, read from Redis at scrape time, labelled by sweep (its id), never by trial.

    vastfleet_sweep_info{sweep, name, method, goal}      1
    vastfleet_sweep_state{sweep, state}                  1 for the sweep's state, 0 for the others
    vastfleet_sweep_trials{sweep, state}                 trials by state (QUEUED .. FAILED)
    vastfleet_sweep_target_instances{sweep}              the autoscaler's target
    vastfleet_sweep_instances{sweep}                     the sweep's instances holding GPUs now
    vastfleet_sweep_binding_limit{sweep, limit}          1 for the limit that binds (budget, parallel, ...)
    vastfleet_sweep_spent_dollars{sweep}                 what its instances billed (its own accrual)
    vastfleet_sweep_projected_dollars{sweep}             spent + reserve + running trials' expected rest
    vastfleet_sweep_budget_dollars{sweep}                the budget (0: none)
    vastfleet_sweep_best_value{sweep}                    the best final metric so far (absent before one)
    vastfleet_sweep_trial_cost_dollars{sweep, outcome}   a summary (_sum, _count) of finished trials' costs

Read at scrape time, like the job store's gauges, so every API replica reports the same figures and a
restarted driver loses none. Only sweeps running or ended in the last `keep_s` are exported (series stay
bounded). A Redis outage yields no sweep series (the job store's `vastfleet_jobstore_up` says why).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from vastfleet.sweeps.models import Sweep, SweepState, Trial, TrialState, best_trials
from vastfleet.sweeps.store import SweepStore

log = logging.getLogger(__name__)

LIMITS = ("budget", "parallel", "market", "runnable", "deadline")
OUTCOMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAILED: "failed"}


class SweepCollector(Collector):
    def __init__(self, client: redis.Redis | None, prefix: str = "vf", keep_s: float = 86400.0,
                 max_sweeps: int = 50, clock: Callable[[], float] = time.time) -> None:
        self.store = SweepStore(client, prefix, clock) if client is not None else None
        self.keep_s = keep_s
        self.max_sweeps = max_sweeps
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        fam = self._families()
        if self.store is None:
            return
        try:
            sweeps = self.store.recent(self.max_sweeps)
            now = self.clock()
            for sweep in sweeps:
                if sweep.state.over and now - (sweep.ended_at or now) > self.keep_s:
                    continue
                self._one(fam, sweep.id, sweep, self.store.trials(sweep.id))
        except redis.RedisError as exc:
            log.warning("metrics: sweeps unreadable: %s", exc)
            return
        yield from fam.values()

    def _one(self, fam: dict[str, Any], sid: str, sweep: Sweep, trials: list[Trial]) -> None:
        spec = sweep.spec
        fam["info"].add_metric([sid, spec.name, spec.method.value, spec.metric.goal.value], 1)
        for state in SweepState:
            fam["state"].add_metric([sid, state.value], 1.0 if sweep.state == state else 0.0)
        counts = dict.fromkeys(TrialState, 0)
        cost = {o: [0.0, 0.0] for o in OUTCOMES.values()}
        for t in trials:
            counts[t.state] += 1
            if t.state in OUTCOMES:
                c = cost[OUTCOMES[t.state]]
                c[0] += t.cost_usd
                c[1] += 1
        for trial_state, n in counts.items():
            fam["trials"].add_metric([sid, trial_state.value], n)
        d = sweep.decision
        fam["target"].add_metric([sid], d.target if d is not None and not sweep.state.over else 0)
        fam["actual"].add_metric([sid], d.actual if d is not None and not sweep.state.over else 0)
        for limit in LIMITS:
            fam["binding"].add_metric([sid, limit], 1.0 if d is not None and d.binding == limit else 0.0)
        fam["spent"].add_metric([sid], sweep.spent_usd)
        fam["projected"].add_metric([sid], max(d.projected_usd, sweep.spent_usd) if d is not None else sweep.spent_usd)
        fam["budget"].add_metric([sid], spec.budget_usd or 0.0)
        best = best_trials(trials, spec.metric.goal.value, 1)
        if best and best[0].value is not None:
            fam["best"].add_metric([sid], best[0].value)
        for outcome, (total, finished) in cost.items():
            fam["cost"].add_metric([sid, outcome], count_value=int(finished), sum_value=total)

    @staticmethod
    def _families() -> dict[str, Any]:
        s = ["sweep"]
        return {
            "info": GaugeMetricFamily("vastfleet_sweep_info", "A sweep's name, method and goal.",
                                      labels=[*s, "name", "method", "goal"]),
            "state": GaugeMetricFamily("vastfleet_sweep_state", "1 for the sweep's state.", labels=[*s, "state"]),
            "trials": GaugeMetricFamily("vastfleet_sweep_trials", "Trials by state.", labels=[*s, "state"]),
            "target": GaugeMetricFamily("vastfleet_sweep_target_instances", "The autoscaler's target parallelism.",
                                        labels=s),
            "actual": GaugeMetricFamily("vastfleet_sweep_instances", "The sweep's instances holding GPUs.", labels=s),
            "binding": GaugeMetricFamily("vastfleet_sweep_binding_limit", "1 for the limit that binds the target.",
                                         labels=[*s, "limit"]),
            "spent": GaugeMetricFamily("vastfleet_sweep_spent_dollars", "What the sweep's instances billed.", labels=s),
            "projected": GaugeMetricFamily("vastfleet_sweep_projected_dollars",
                                           "Spent plus the running trials' expected rest.", labels=s),
            "budget": GaugeMetricFamily("vastfleet_sweep_budget_dollars", "The sweep's budget (0: none).", labels=s),
            "best": GaugeMetricFamily("vastfleet_sweep_best_value", "The best final metric so far.", labels=s),
            "cost": SummaryMetricFamily("vastfleet_sweep_trial_cost_dollars", "Finished trials' costs by outcome.",
                                        labels=[*s, "outcome"]),
        }
