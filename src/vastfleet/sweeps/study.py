"""The sweep's Optuna study on vastfleet's own Redis: a `JournalStorage` over a `JournalRedisBackend`, one
journal per sweep under `{prefix}:sweep:{id}:journal`.

Why a journal: every ask, report and tell is one appended log record, written atomically (one Lua script
per record on a single Redis), and a study is the replay of its log. A control plane killed at any moment
and started again (or another one taking the lead) replays the journal and finds every trial exactly as
it was: nothing of Optuna lives only in memory. Nothing of Optuna runs on an instance either: the control
plane asks, reports the heartbeats' values and tells.

Samplers are re-made before each ask with a seed derived from the spec's seed and the trial's number, so a
restart never replays a random generator from its start (which would propose the first points again) and a
sweep's proposals are reproducible given its history.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import optuna
import redis
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalRedisBackend

from vastfleet.queue.actions import raw_connection
from vastfleet.sweeps.spec import Goal, Method, Parameter, SweepSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is the driver's to log
log = logging.getLogger(__name__)


class ClientJournalBackend(JournalRedisBackend):
    """Optuna's Redis journal backend on a client we already hold (a real redis-server, or the in-process
    fake of the embedded default), instead of a URL it would connect to by itself."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._url = ""
        self._redis = raw_connection(client)  # bytes: the backend decodes its records itself
        self._use_cluster = False
        self._prefix = prefix

    def __getstate__(self) -> dict[Any, Any]:
        raise TypeError("a journal on a live client cannot be pickled")


def journal_prefix(prefix: str, sweep_id: str) -> str:
    return f"{prefix}:sweep:{sweep_id}:journal"


def storage_for(client: redis.Redis, prefix: str, sweep_id: str) -> JournalStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return JournalStorage(ClientJournalBackend(client, journal_prefix(prefix, sweep_id)))


def distribution(param: Parameter, grid: bool = False) -> BaseDistribution:
    """The Optuna distribution of one W&B parameter (the spec has refused the ones Optuna cannot sample)."""
    kind = param.kind
    if grid or kind in ("constant", "categorical"):
        values = param.grid_values() if grid else (param.values if kind == "categorical" else [param.value])
        return CategoricalDistribution(list(values or []))
    lo, hi = param.min, param.max
    assert lo is not None and hi is not None
    if kind == "int_uniform":
        return IntDistribution(int(lo), int(hi), step=int(param.q or 1))
    if kind == "q_log_uniform_values":
        return IntDistribution(int(lo), int(hi), log=True)
    if kind == "uniform":
        return FloatDistribution(float(lo), float(hi))
    if kind == "q_uniform":
        return FloatDistribution(float(lo), float(hi), step=float(param.q or 1))
    if kind == "log_uniform_values":
        return FloatDistribution(float(lo), float(hi), log=True)
    if kind == "log_uniform":  # W&B: min and max are exponents of e
        import math

        return FloatDistribution(math.exp(lo), math.exp(hi), log=True)
    raise ValueError(f"no Optuna distribution for {kind}")  # pragma: no cover - the spec refused it


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    grid = spec.method == Method.grid
    return {name: distribution(p, grid) for name, p in sorted(spec.parameters.items())}


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    stop = spec.early_stop
    if stop.type == "asha":
        assert stop.min_step is not None
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=stop.min_step,
                                                      reduction_factor=stop.reduction_factor)
    if stop.type == "median":
        assert stop.min_step is not None
        return optuna.pruners.MedianPruner(n_startup_trials=stop.startup_trials, n_warmup_steps=stop.min_step)
    return optuna.pruners.NopPruner()


def make_sampler(spec: SweepSpec, number: int) -> optuna.samplers.BaseSampler:
    seed = (spec.seed * 1_000_003 + number) % (2**32)
    if spec.method == Method.grid:
        return optuna.samplers.GridSampler(spec.grid(), seed=spec.seed)  # the grid's order is the spec's seed
    if spec.method == Method.random:
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials still running count as bad guesses, so parallel asks do not all land together
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def direction(spec: SweepSpec) -> optuna.study.StudyDirection:
    return (optuna.study.StudyDirection.MINIMIZE if spec.metric.goal == Goal.minimize
            else optuna.study.StudyDirection.MAXIMIZE)


def open_study(client: redis.Redis, prefix: str, sweep_id: str, spec: SweepSpec,
               storage: JournalStorage | None = None, create: bool = False) -> optuna.Study:
    """The sweep's study (the study's name is the sweep id); `create` makes it when it is not there yet."""
    storage = storage or storage_for(client, prefix, sweep_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if create:
            return optuna.create_study(storage=storage, study_name=sweep_id, direction=direction(spec),
                                       sampler=make_sampler(spec, 0), pruner=make_pruner(spec),
                                       load_if_exists=True)
        return optuna.load_study(study_name=sweep_id, storage=storage, sampler=make_sampler(spec, 0),
                                 pruner=make_pruner(spec))


def ask(study: optuna.Study, spec: SweepSpec, number: int) -> optuna.trial.Trial:
    """One new trial with every parameter suggested; `number` is the trial number the ask will get."""
    study.sampler = make_sampler(spec, number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return study.ask(distributions(spec))


def trial_id(study: optuna.Study, number: int) -> int:
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
