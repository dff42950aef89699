"""The job spec a user writes (YAML or JSON), close to what SkyPilot and dstack users already know.

```yaml
name: llama-lora
image: pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime
setup: pip install -r requirements.txt
run: python train.py --resume-from "$VASTFLEET_CKPT_DIR"
resources: {gpu: [RTX_4090, RTX_3090], gpus: 1, disk_gb: 40, max_price_per_hour: 0.5}
interruptible: auto
deadline: 12h
work_hours: 6          # estimate on the first GPU listed; the job's progress reports replace it
checkpoint: {interval: auto}
secrets: [HF_TOKEN]
```

Validation never lets a bad spec through: unknown keys, wrong units, negative prices, zero GPUs and
unknown GPU names all fail with a message that names the key (`load_job_spec` turns pydantic's errors into
one `SpecError`). Secrets are names only; their values are resolved by the control plane at instance
creation and never stored with the job.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vastfleet.errors import BadInput, SpecError
from vastfleet.spec.durations import parse_duration, parse_time
from vastfleet.spec.gpus import canonical_gpu

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_ENV = ("VASTFLEET_",)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


PositiveFloat = Annotated[float, Field(gt=0)]


class Interruptible(str, Enum):
    auto = "auto"  # the scheduler picks bid or on-demand by expected cost and deadline slack
    always = "always"  # bid capacity only
    never = "never"  # on-demand only


class Runtime(str, Enum):
    plain = "plain"  # run the command as it is
    ray = "ray"  # start a Ray head on the instance's GPUs first and set RAY_ADDRESS


class Resources(Strict):
    gpu: list[str] = Field(..., description="acceptable vast GPU names, best first")
    gpus: int = Field(1, ge=1, le=16, description="GPUs on one machine")
    min_gpu_ram_gb: float | None = Field(None, gt=0)
    min_cuda: float | None = Field(None, gt=0)
    disk_gb: float = Field(20, gt=0, le=4096)
    min_reliability: float = Field(0.9, ge=0, le=1)
    max_price_per_hour: float | None = Field(None, gt=0, description="cap on the whole instance, $/h")
    direct_ports: int = Field(0, ge=0, le=64)
    min_inet_down_mbps: float | None = Field(None, gt=0)
    regions: list[str] | None = Field(None, description="geolocation codes, e.g. US, DE")
    verified: bool = True

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("name at least one GPU model")
            try:
                return [canonical_gpu(v) if isinstance(v, str) else v for v in value]
            except BadInput as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("disk_gb", "min_gpu_ram_gb", mode="before")
    @classmethod
    def _gigabytes(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(f"{value!r}: give a plain number of GB (e.g. 40), not a string with units")
        return value

    @field_validator("max_price_per_hour", mode="before")
    @classmethod
    def _dollars(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(f"{value!r}: give a plain number of dollars per hour (e.g. 0.5)")
        return value


class Checkpoint(Strict):
    interval: float | Literal["auto"] = Field("auto", description="seconds between checkpoints, or auto")
    required: bool = Field(True, description="False: the job writes no checkpoints (restart from scratch)")

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: object) -> object:
        if value == "auto":
            return value
        return parse_duration(value)


class JobSpec(Strict):
    name: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
    image: str = Field(..., min_length=1, max_length=512)
    run: str = Field(..., min_length=1, max_length=8192)
    setup: str | None = Field(None, max_length=8192)
    resources: Resources
    interruptible: Interruptible = Interruptible.auto
    deadline: float | str | None = Field(
        None, description="a duration from submission (e.g. 12h) or an ISO 8601 time"
    )
    budget_usd: float | None = Field(None, gt=0, description="total spend cap for the job")
    work_hours: float | None = Field(
        None, gt=0, le=100_000,
        description="estimated hours of work on the first GPU of resources.gpu: what deadlines and expected "
                    "costs use until the job's heartbeats report progress",
    )
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    retries_on_error: int = Field(0, ge=0, le=100)
    max_preemptions: int = Field(20, ge=0, le=10000)
    checkpoint: Checkpoint = Checkpoint()
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list, description="names of secrets the control plane holds")
    runtime: Runtime = Runtime.plain
    ports: list[int] = Field(default_factory=list)

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, value: object) -> object:
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError:
            if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value.strip()):
                parse_time(value)  # raises with its own message
                return value.strip()
            raise

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.startswith(_RESERVED_ENV):
                raise ValueError(f"{key!r}: names starting with VASTFLEET_ are set by vastfleet")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid secret name (letters, digits, underscore)")
        if len(set(value)) != len(value):
            raise ValueError("a secret is named twice")
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is outside 1-65535")
        if len(value) > 64:
            raise ValueError("vast maps at most 64 ports")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        overlap = set(self.env) & set(self.secrets)
        if overlap:
            raise ValueError(f"{sorted(overlap)} appear both in env and secrets")
        return self

    def deadline_at(self, submitted_at: float) -> float | None:
        """The deadline as epoch seconds, given the submission time."""
        if self.deadline is None:
            return None
        if isinstance(self.deadline, str):
            return parse_time(self.deadline)
        return submitted_at + float(self.deadline)


# --- loading ------------------------------------------------------------------------------------------


def format_validation_error(exc: ValidationError, what: str = "job spec") -> SpecError:
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        msg = msg.removeprefix("Value error, ")
        problems.append((loc, msg))
    lines = [f"  {loc}: {msg}" for loc, msg in problems]
    return SpecError(f"invalid {what}:\n" + "\n".join(lines), problems)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`--set resources.gpus=2` style overrides; the value is read as YAML (so `2` is an int)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected key=value", [(item, "expected key=value")])
        key, raw = item.split("=", 1)
        path = [p for p in key.strip().split(".") if p]
        if not path:
            raise SpecError(f"--set {item!r}: empty key", [(item, "empty key")])
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"--set {item!r}: {part} is not a mapping", [(key, "not a mapping")])
            node = child
        node[path[-1]] = value
    return out


def parse_spec_text(text: str, source: str = "job spec") -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML or JSON: {exc}", [("(file)", "not valid YAML or JSON")])
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of keys at the top level", [("(top level)", "not a mapping")])
    return data


def job_spec_from_dict(data: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc) from None


def load_job_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {file}: {exc.strerror}", [("(file)", "unreadable")]) from None
    data = parse_spec_text(text, str(file))
    return job_spec_from_dict(apply_overrides(data, overrides or []))
