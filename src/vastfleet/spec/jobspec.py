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

Validation never lets a bad spec through: unknown keys, wrong units, negative prices, zero GPUs, unknown
GPU names, NaN or infinite numbers, NUL and control characters, and oversized fields (`vastfleet.spec.limits`)
all fail with a message that names the key (`load_job_spec` turns pydantic's errors into one `SpecError`).
Secrets are names only; their values are resolved by the control plane at instance creation and never
stored with the job.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vastfleet.errors import BadInput, SpecError
from vastfleet.spec import limits
from vastfleet.spec.durations import parse_duration, parse_time
from vastfleet.spec.gpus import canonical_gpu
from vastfleet.spec.limits import show

# fullmatch, never `$`: Python's `$` also matches before a trailing newline ("FOO\n" would pass).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_ENV = ("VASTFLEET_",)
_MAX_PROBLEMS = 20  # a spec with a million bad entries gets the first ones and a count, not a megabyte


class Strict(BaseModel):
    # allow_inf_nan=False: NaN and infinity are no number a user means, and JSON cannot store them (they
    # became null, and a null interval made every later read of the job fail).
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)


OneLine = Annotated[str, AfterValidator(limits.one_line)]
Text = Annotated[str, AfterValidator(limits.text)]


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
    regions: list[Annotated[OneLine, Field(max_length=limits.MAX_REGION_CHARS)]] | None = Field(
        None, max_length=limits.MAX_REGIONS, description="geolocation codes, e.g. US, DE")
    verified: bool = True

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("name at least one GPU model")
            # Bounded before the name lookup: each unknown name costs a "did you mean" search.
            if len(value) > limits.MAX_GPU_NAMES:
                raise ValueError(f"at most {limits.MAX_GPU_NAMES} GPU models, not {len(value)}")
            for name in value:
                if isinstance(name, str):
                    if len(name) > limits.MAX_GPU_NAME_CHARS:
                        raise ValueError(f"{show(name)}: a GPU name has at most {limits.MAX_GPU_NAME_CHARS}"
                                         " characters")
                    limits.one_line(name)
            try:
                return [canonical_gpu(v) if isinstance(v, str) else v for v in value]
            except BadInput as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("disk_gb", "min_gpu_ram_gb", mode="before")
    @classmethod
    def _gigabytes(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(f"{show(value)}: give a plain number of GB (e.g. 40), not a string with units")
        return value

    @field_validator("max_price_per_hour", mode="before")
    @classmethod
    def _dollars(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError(f"{show(value)}: give a plain number of dollars per hour (e.g. 0.5)")
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
    image: OneLine = Field(..., min_length=1, max_length=512)
    run: Text = Field(..., min_length=1, max_length=8192)
    setup: Text | None = Field(None, max_length=8192)
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
    env: dict[str, Text] = Field(default_factory=dict, max_length=limits.MAX_ENV_ENTRIES)
    secrets: list[str] = Field(default_factory=list, max_length=limits.MAX_SECRETS,
                               description="names of secrets the control plane holds")
    runtime: Runtime = Runtime.plain
    ports: list[int] = Field(default_factory=list)

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, (datetime, date)):  # a caller's datetime: kept as the ISO 8601 text it means
            value = plain_value(value)
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
        total = 0
        for key, item in value.items():
            if len(key) > limits.MAX_ENV_NAME_CHARS or not _ENV_NAME.fullmatch(key):
                raise ValueError(f"{show(key)} is not a valid environment variable name")
            if key.startswith(_RESERVED_ENV):
                raise ValueError(f"{key!r}: names starting with VASTFLEET_ are set by vastfleet")
            size = limits.utf8_size(item)
            if size > limits.MAX_ENV_VALUE_BYTES:
                raise ValueError(f"{key}: the value is {size} bytes; at most {limits.kib(limits.MAX_ENV_VALUE_BYTES)}"
                                 " per value (put large data in the image or fetch it in setup)")
            total += size + len(key)
        if total > limits.MAX_ENV_TOTAL_BYTES:
            raise ValueError(f"names and values come to {total} bytes; at most"
                             f" {limits.kib(limits.MAX_ENV_TOTAL_BYTES)} in all")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(v, str):
                    out[k] = v
                    continue
                try:  # allow_nan=False: a YAML .nan would otherwise become the text "NaN"
                    out[k] = json.dumps(v, allow_nan=False)
                except ValueError:
                    raise ValueError(f"{show(k)}: NaN and infinity are not numbers a job can use; quote the"
                                     " value if you mean the text") from None
            return out
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: list[str]) -> list[str]:
        for name in value:
            if len(name) > limits.MAX_ENV_NAME_CHARS or not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{show(name)} is not a valid secret name (letters, digits, underscore)")
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
        size = len(self.model_dump_json())
        if size > limits.MAX_SPEC_BYTES:
            raise ValueError(f"the spec is {size} bytes as JSON; at most {limits.kib(limits.MAX_SPEC_BYTES)}")
        return self

    def check_deadline(self, now: float) -> None:
        """At submit only (a stored job whose deadline passed must still load): a deadline already past is
        refused, naming the time it gives and now. A duration is counted from now, so it is never past."""
        at = self.deadline_at(now)
        if at is not None and at <= now:
            given, current = iso_utc(at), iso_utc(now)
            message = f"deadline: {self.deadline} ({given}) is already past; now is {current}"
            raise SpecError(f"invalid job spec:\n  {message}",
                            [("deadline", f"{given} is already past; now is {current}")])

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
    errors = exc.errors()
    for err in errors[:_MAX_PROBLEMS]:
        loc = location(err["loc"])
        msg = str(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        msg = msg.removeprefix("Value error, ")
        problems.append((loc, msg))
    lines = [f"  {loc}: {msg}" for loc, msg in problems]
    if len(errors) > _MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - _MAX_PROBLEMS} more problems")
    return SpecError(f"invalid {what}:\n" + "\n".join(lines), problems)


def location(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """`resources.max_price_per_hour` from pydantic's location; a part that is not plain printable text (a
    key with a NUL or a newline, a megabyte-long key) is shown as a cut repr, so the message stays one
    readable, encodable line per problem."""
    parts = []
    for part in loc:
        text = str(part)
        parts.append(text if text.isprintable() and len(text) <= 60 else show(text))
    return ".".join(parts) or "(top level)"


def iso_utc(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain_value(value: Any) -> Any:
    """YAML's own types as the JSON a spec is made of: an unquoted `2030-01-01T00:00:00Z` (the form the README
    shows) loads as a datetime and `2030-01-01` as a date; both become their ISO 8601 text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_value(v) for v in value]
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`--set resources.gpus=2` style overrides; the value is read as YAML (so `2` is an int)."""
    out = json.loads(json.dumps(plain_value(data)))
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected key=value", [(item, "expected key=value")])
        key, raw = item.split("=", 1)
        path = [p for p in key.strip().split(".") if p]
        if not path:
            raise SpecError(f"--set {item!r}: empty key", [(item, "empty key")])
        try:
            value = plain_value(yaml.safe_load(raw))
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
    return plain_value(data)  # type: ignore[no-any-return]


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
