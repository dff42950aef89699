"""Property tests of the job spec parser: valid specs round-trip; junk only ever raises SpecError."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vastfleet.errors import SpecError
from vastfleet.spec import JobSpec, job_spec_from_dict
from vastfleet.spec.gpus import GPU_MODELS
from vastfleet.spec.jobspec import apply_overrides, parse_spec_text

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True).filter(lambda n: not n.startswith("VASTFLEET_"))
durations = st.one_of(st.integers(1, 10**6), st.sampled_from(["90s", "15m", "12h", "2d", "1h30m", "1w"]))
words = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)

resources = st.fixed_dictionaries(
    {"gpu": st.lists(st.sampled_from([m.name.replace(" ", "_") for m in GPU_MODELS]), min_size=1, max_size=3)},
    optional={
        "gpus": st.integers(1, 16),
        "disk_gb": st.floats(0.5, 4096),
        "min_reliability": st.floats(0, 1),
        "max_price_per_hour": st.floats(0.01, 50),
        "direct_ports": st.integers(0, 64),
        "regions": st.lists(st.sampled_from(["US", "DE", "CA", "JP"]), max_size=3),
        "verified": st.booleans(),
    },
)


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    env = draw(st.dictionaries(env_names, words, max_size=3))
    secrets = draw(st.lists(env_names.filter(lambda n: n not in env), max_size=3, unique=True))
    spec = draw(st.fixed_dictionaries(
        {
            "name": st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,20}[a-z0-9])?", fullmatch=True),
            "image": words,
            "run": words,
            "resources": resources,
        },
        optional={
            "setup": words,
            "interruptible": st.sampled_from(["auto", "always", "never"]),
            "deadline": durations,
            "budget_usd": st.floats(0.01, 10_000),
            "work_hours": st.floats(0.01, 10_000),
            "priority": st.integers(-1000, 1000),
            "retries_on_error": st.integers(0, 100),
            "max_preemptions": st.integers(0, 10_000),
            "checkpoint": st.fixed_dictionaries({}, optional={"interval": st.one_of(st.just("auto"), durations),
                                                               "required": st.booleans()}),
            "runtime": st.sampled_from(["plain", "ray"]),
            "ports": st.lists(st.integers(1, 65535), max_size=5),
        },
    ))
    spec["env"], spec["secrets"] = env, secrets
    return spec


KEYS = ["name", "image", "run", "setup", "resources", "gpu", "gpus", "disk_gb", "deadline", "priority", "env",
        "secrets", "checkpoint", "interval", "ports", "interruptible", "max_price_per_hour", "runtime"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8),
                                                                inner, max_size=4),
    max_leaves=20,
)


@FAST
@given(valid_specs())
def test_valid_specs_round_trip(data: dict[str, Any]) -> None:
    spec = job_spec_from_dict(data)
    assert job_spec_from_dict(spec.model_dump(mode="json")) == spec
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    assert job_spec_from_dict(parse_spec_text(json.dumps(data))) == spec


@FAST
@given(valid_specs(), st.dictionaries(st.sampled_from(KEYS), json_values, min_size=1, max_size=4))
def test_junk_fields_raise_only_spec_errors(data: dict[str, Any], junk: dict[str, Any]) -> None:
    for candidate in (junk, {**data, **junk}, {**data, "resources": {**data["resources"], **junk}}):
        try:
            job_spec_from_dict(candidate)
        except SpecError as exc:
            assert str(exc).startswith("invalid job spec:") and exc.problems


@FAST
@given(st.text(max_size=200))
def test_junk_text_raises_only_spec_errors(text: str) -> None:
    try:
        job_spec_from_dict(parse_spec_text(text))
    except SpecError:
        pass  # the property is that nothing else escapes


@FAST
@given(valid_specs(), st.lists(st.text(max_size=30), min_size=1, max_size=3))
def test_junk_overrides_raise_only_spec_errors(data: dict[str, Any], overrides: list[str]) -> None:
    try:
        job_spec_from_dict(apply_overrides(data, overrides))
    except SpecError:
        pass  # the property is that nothing else escapes
