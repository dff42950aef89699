"""The sweep spec a user writes (YAML or JSON): one ordinary job spec, a metric, a search space in W&B's
parameter syntax, early stopping, limits and a dollar budget.

```yaml
kind: sweep
name: lr-sweep
job: {image: ..., run: python train.py --lr "$VASTFLEET_PARAM_LR", resources: {...}, work_hours: 2}
metric: {name: val_loss, goal: minimize}
method: tpe                        # grid | random | tpe
parameters:
  lr: {distribution: log_uniform_values, min: 1.0e-5, max: 1.0e-2}
  bs: {values: [32, 64, 128]}
early_stop: {type: asha, min_step: 100, max_step: 2700, reduction_factor: 3}
max_trials: 64
max_parallel: 16
budget_usd: 150
deadline: 24h
```

Validation is the job spec's: every problem names its key (`parameters.lr: min 0.01 is above max 1e-05`),
W&B keys that mean something else here get a hint, and nothing is accepted that the search (Optuna) or the
trial's shell cannot take. Imports nothing of the project but the job spec and errors.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from vastfleet.errors import SpecError
from vastfleet.spec.durations import parse_duration, parse_time
from vastfleet.spec.jobspec import JobSpec, Strict, apply_overrides, format_validation_error, parse_spec_text
from vastfleet.spec.limits import show

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
MAX_PARAMETERS = 64
MAX_VALUES = 1000
MAX_GRID = 100_000
MAX_RUN_CHARS = 8192  # JobSpec.run's own cap: the trial's exports are prepended to the command
# Keys of the progress file that mean something to vastfleet already: never the metric.
RESERVED_PROGRESS_KEYS = ("step", "fraction", "remaining_hours", "total_hours")
# W&B sweep keys a user porting a config may bring, and what they are called here.
WANDB_HINTS = {
    "early_terminate": "vastfleet calls it early_stop: {type: asha, min_step, max_step, reduction_factor}",
    "run_cap": "vastfleet calls it max_trials",
    "program": "the trial's command is job.run",
    "command": "the trial's command is job.run",
    "project": "a sweep has no W&B project",
    "entity": "a sweep has no W&B entity",
}
# W&B distributions Optuna cannot sample as written, and what to write instead.
UNSUPPORTED = {
    "normal": "Optuna samples no normal distribution; use uniform with min and max",
    "q_normal": "Optuna samples no normal distribution; use q_uniform with min, max and q",
    "log_normal": "Optuna samples no log-normal distribution; use log_uniform_values with min and max",
    "q_log_normal": "Optuna samples no log-normal distribution; use log_uniform_values with min and max",
    "inv_log_uniform": "Optuna samples no inverse log-uniform distribution; use log_uniform_values",
    "inv_log_uniform_values": "Optuna samples no inverse log-uniform distribution; use log_uniform_values",
    "q_log_uniform": "Optuna has no quantized log distribution; use q_log_uniform_values with integer min, max and q: 1",
}
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform_values",
                 "log_uniform", "q_log_uniform_values", *UNSUPPORTED)

Scalar = bool | int | float | str | None


class Method(str, Enum):
    grid = "grid"  # every point of a discrete search space, in a seeded order
    random = "random"
    tpe = "tpe"  # Optuna's Tree-structured Parzen Estimator (W&B's "bayes" plays this part)


class Goal(str, Enum):
    minimize = "minimize"
    maximize = "maximize"


class Metric(Strict):
    name: str = Field(..., min_length=1, max_length=64, description="a key the trial writes to its progress file")
    goal: Goal = Goal.minimize

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value in RESERVED_PROGRESS_KEYS:
            raise ValueError(f"{value!r} is a progress key vastfleet reads itself ({', '.join(RESERVED_PROGRESS_KEYS)});"
                             " name the metric the trial reports next to it, e.g. val_loss")
        if not value.isprintable():
            raise ValueError(f"{show(value)} is not a printable key")
        return value


class Parameter(Strict):
    """One W&B parameter: `value`, `values`, or a `distribution` with `min`/`max` (and `q`)."""

    value: Scalar = None
    values: list[Scalar] | None = Field(None, min_length=1, max_length=MAX_VALUES)
    distribution: str | None = None
    min: int | float | None = None
    max: int | float | None = None
    q: int | float | None = Field(None, gt=0)
    mu: float | None = None
    sigma: float | None = None
    probabilities: list[float] | None = None
    parameters: dict[str, Any] | None = None  # W&B's nested parameters

    @model_validator(mode="before")
    @classmethod
    def _given(cls, data: Any) -> Any:
        if isinstance(data, (dict, Parameter)):
            return data
        raise ValueError("a parameter is a mapping such as {values: [1, 2]} or {distribution: uniform, min: 0, max: 1}")

    @model_validator(mode="after")
    def _resolve(self) -> Parameter:
        kind = self.kind
        if self.parameters is not None:
            raise ValueError("nested parameters are not supported; give each leaf its own name (e.g. optimizer_lr)")
        if self.probabilities is not None:
            raise ValueError("probabilities are not supported: Optuna samples categorical values uniformly")
        if kind in UNSUPPORTED:
            raise ValueError(f"distribution {kind}: {UNSUPPORTED[kind]}")
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {show(kind)}; known: "
                             f"{', '.join(d for d in DISTRIBUTIONS if d not in UNSUPPORTED)}")
        if kind == "constant":
            if self.values is not None or self.min is not None or self.max is not None:
                raise ValueError("a constant takes only value")
            return self
        if kind == "categorical":
            if self.values is None:
                raise ValueError("a categorical parameter needs values: [...]")
            if len({json.dumps(v) for v in self.values}) != len(self.values):
                raise ValueError("values repeat")
            return self
        if self.value is not None or self.values is not None:
            raise ValueError(f"distribution {kind} takes min and max, not value or values")
        if self.min is None or self.max is None:
            raise ValueError(f"distribution {kind} needs min and max")
        lo, hi = self.min, self.max
        if lo > hi:
            raise ValueError(f"min {lo} is above max {hi}")
        if kind in ("int_uniform", "q_log_uniform_values") and not (_is_int(lo) and _is_int(hi)):
            raise ValueError(f"distribution {kind} needs integer min and max (got {lo} and {hi})")
        if kind == "log_uniform_values" and lo <= 0:
            raise ValueError(f"log_uniform_values needs min > 0 (got {lo})")
        if kind == "q_log_uniform_values":
            if lo <= 0:
                raise ValueError(f"q_log_uniform_values needs min > 0 (got {lo})")
            if self.q not in (None, 1):
                raise ValueError("q_log_uniform_values takes q: 1 only: Optuna has no other quantized log distribution")
        if kind == "log_uniform" and (hi > 700 or lo < -700):
            raise ValueError("log_uniform takes min and max as exponents of e; these overflow (did you mean"
                             " log_uniform_values?)")
        if kind == "q_uniform" and self.q is None:
            raise ValueError("q_uniform needs q, the step")
        return self

    @property
    def kind(self) -> str:
        """The distribution, with W&B's defaults when none is named."""
        if self.distribution is not None:
            return self.distribution
        if self.values is not None:
            return "categorical"
        if self.min is not None or self.max is not None:
            both_int = _is_int(self.min) and _is_int(self.max)
            return "int_uniform" if both_int else "uniform"
        return "constant"

    def grid_values(self) -> list[Scalar] | None:
        """Every value this parameter takes, when it is discrete (None when it is continuous)."""
        kind = self.kind
        if kind == "constant":
            return [self.value]
        if kind == "categorical":
            return list(self.values or [])
        assert self.min is not None and self.max is not None
        if kind == "int_uniform" or (kind == "q_log_uniform_values" and self.max - self.min < MAX_VALUES):
            step = int(self.q or 1)
            return list(range(int(self.min), int(self.max) + 1, step))
        if kind == "q_uniform" and self.q is not None:
            n = math.floor((self.max - self.min) / self.q + 1e-9)
            return [round(self.min + i * self.q, 12) for i in range(n + 1)]
        return None

    def widest_text(self) -> str:
        """The longest text a value of this parameter takes as an env value (for the run command's cap)."""
        if self.kind in ("constant", "categorical"):
            return max((env_text(v) for v in (self.values or [self.value])), key=len)
        return "-1.2345678901234567e-300"


class EarlyStop(Strict):
    """Optuna's pruners: asha (SuccessiveHalvingPruner), median (MedianPruner), none."""

    type: Literal["asha", "median", "none"] = "none"
    min_step: int | None = Field(None, ge=1, description="asha: the first rung; median: warm-up steps")
    max_step: int | None = Field(None, ge=1, description="the step a trial that runs to the end reports last")
    reduction_factor: int = Field(3, ge=2, le=10, description="asha: 1 in this many trials goes on at a rung")
    startup_trials: int = Field(5, ge=0, le=1000, description="median: trials finished before any is pruned")

    @model_validator(mode="after")
    def _steps(self) -> EarlyStop:
        if self.type != "none" and (self.min_step is None or self.max_step is None):
            raise ValueError(f"early stopping {self.type} needs min_step and max_step")
        if self.min_step is not None and self.max_step is not None and self.min_step >= self.max_step:
            raise ValueError(f"min_step {self.min_step} must be below max_step {self.max_step}")
        return self


class SweepSpec(Strict):
    kind: Literal["sweep"] = "sweep"
    name: str = Field(..., min_length=1, max_length=48, pattern=r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
    job: JobSpec = Field(..., description="an ordinary job spec: every trial is one job")
    metric: Metric
    method: Method = Method.tpe
    parameters: dict[str, Parameter] = Field(..., min_length=1, max_length=MAX_PARAMETERS)
    early_stop: EarlyStop = EarlyStop()
    max_trials: int | None = Field(None, ge=1, le=10_000, description="default: the grid's size (grid only)")
    max_parallel: int = Field(4, ge=1, le=1000, description="trials running at once, at most")
    max_failed_trials: int = Field(5, ge=0, le=10_000, description="the sweep stops after more failures")
    budget_usd: float | None = Field(None, gt=0, description="the whole sweep, preemptions included")
    deadline: float | str | None = Field(None, description="a duration from submission (24h) or an ISO 8601 time")
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="before")
    @classmethod
    def _job_name(cls, data: Any) -> Any:
        """A trial's job is named after the sweep unless the spec names it."""
        if isinstance(data, dict) and isinstance(data.get("job"), dict) and "name" not in data["job"]:
            name = data.get("name")
            if isinstance(name, str):
                data = {**data, "job": {**data["job"], "name": name}}
        return data

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: dict[str, Parameter]) -> dict[str, Parameter]:
        seen: dict[str, str] = {}
        for name in value:
            if not _NAME.fullmatch(name):
                raise ValueError(f"{show(name)}: a parameter name is letters, digits and underscores (at most 40),"
                                 " as it becomes VASTFLEET_PARAM_<NAME> in the trial's environment")
            upper = name.upper()
            if upper in seen:
                raise ValueError(f"{seen[upper]!r} and {name!r} are the same environment variable"
                                 f" VASTFLEET_PARAM_{upper}")
            seen[upper] = name
        return value

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, value: object) -> object:
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError:
            if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value.strip()):
                parse_time(value)
                return value.strip()
            raise

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.method == Method.grid:
            continuous = [n for n, p in self.parameters.items() if p.grid_values() is None]
            if continuous:
                raise ValueError(f"method: grid needs discrete parameters; continuous: {', '.join(continuous)}"
                                 " (give values: [...], int_uniform or q_uniform)")
            if self.grid_size() > MAX_GRID:
                raise ValueError(f"parameters: the grid has {self.grid_size()} points; at most {MAX_GRID}")
        elif self.max_trials is None:
            raise ValueError(f"max_trials: required with method {self.method.value} (only a grid has an end)")
        widest = trial_exports("s-xxxxxxxxxx", 99999, {n: p.widest_text() for n, p in self.parameters.items()})
        if len(widest) + 1 + len(self.job.run) > MAX_RUN_CHARS:
            raise ValueError(f"job.run: with the trial's exports ({len(widest)} characters) the command exceeds"
                             f" {MAX_RUN_CHARS} characters; shorten it or move it to a script")
        return self

    # --- what the sweep runs ------------------------------------------------------------------------

    def grid_size(self) -> int:
        size = 1
        for p in self.parameters.values():
            size *= len(p.grid_values() or [None])
        return size

    def trial_count(self) -> int:
        """How many trials the sweep runs at most."""
        if self.method == Method.grid:
            return min(self.max_trials or self.grid_size(), self.grid_size())
        assert self.max_trials is not None
        return self.max_trials

    def grid(self) -> dict[str, list[Scalar]]:
        return {n: p.grid_values() or [] for n, p in self.parameters.items()}

    def deadline_at(self, submitted_at: float) -> float | None:
        if self.deadline is None:
            return None
        if isinstance(self.deadline, str):
            return parse_time(self.deadline)
        return submitted_at + float(self.deadline)

    def trial_job(self, sweep_id: str, number: int, params: dict[str, Any], now: float | None = None,
                  deadline_at: float | None = None) -> JobSpec:
        """The job of one trial: the spec's job, named `<name>-t<n>`, its command and setup preceded by the
        trial's exports. Exports, not the job's env: VASTFLEET_ names are reserved there, and the exports
        show in the job's record who set them. With the sweep's `deadline_at`, the job is due then too (or by
        its own deadline, if earlier): the scheduler's deadline rule then finishes it in time."""
        exports = trial_exports(sweep_id, number, params)
        suffix = f"-t{number}"
        name = self.job.name[: 63 - len(suffix)].rstrip("-._") + suffix
        data = self.job.model_dump(mode="json")
        data.update(name=name, run=f"{exports}\n{self.job.run}")
        if self.job.setup:
            data["setup"] = f"{exports}\n{self.job.setup}"
        own = self.job.deadline_at(now) if now is not None else None
        if deadline_at is not None and (own is None or deadline_at < own):
            data["deadline"] = datetime.fromtimestamp(deadline_at, timezone.utc).isoformat()
        return JobSpec.model_validate(data)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def env_text(value: Any) -> str:
    """A parameter value as its env text: strings as they are, numbers and booleans as JSON writes them."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def trial_exports(sweep_id: str, number: int, params: dict[str, Any]) -> str:
    """The shell lines that put a trial's parameters in its environment (quoted for any POSIX shell)."""
    pairs = [("VASTFLEET_SWEEP_ID", sweep_id), ("VASTFLEET_TRIAL_NUMBER", str(number))]
    pairs += [(f"VASTFLEET_PARAM_{name.upper()}", env_text(v)) for name, v in sorted(params.items())]
    pairs.append(("VASTFLEET_TRIAL_PARAMS", json.dumps(params, sort_keys=True, separators=(",", ":"))))
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in pairs)


def grid_points(spec: SweepSpec) -> list[dict[str, Scalar]]:
    grid = spec.grid()
    names = sorted(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]


# --- loading --------------------------------------------------------------------------------------------


def sweep_spec_from_dict(data: dict[str, Any]) -> SweepSpec:
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        error = format_validation_error(exc, "sweep spec")
    problems = [_hint(loc, msg, data) for loc, msg in error.problems]
    extra = len(error.message.splitlines()) - 1 - len(problems)
    lines = [f"  {loc}: {msg}" for loc, msg in problems] + ([f"  ... and {extra} more problems"] if extra > 0 else [])
    raise SpecError("invalid sweep spec:\n" + "\n".join(lines), problems) from None


def _hint(loc: str, msg: str, data: dict[str, Any]) -> tuple[str, str]:
    """The problem's location and message, with a hint for W&B users; a whole-spec check that names the key
    it is about (`max_trials: required ...`) is reported at that key."""
    if loc == "(top level)" and ": " in msg:
        key, rest = msg.split(": ", 1)
        if re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", key) and key.split(".")[0] in SweepSpec.model_fields:
            return key, rest
    if msg == "unknown key" and loc in WANDB_HINTS:
        return loc, f"unknown key ({WANDB_HINTS[loc]})"
    if loc == "method" and data.get("method") == "bayes":
        return loc, f"{msg} (W&B's bayes: use tpe, Optuna's Bayesian sampler)"
    return loc, msg


def load_sweep_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {file}: {exc.strerror}", [("(file)", "unreadable")]) from None
    data = parse_spec_text(text, str(file))
    return sweep_spec_from_dict(apply_overrides(data, overrides or []))
