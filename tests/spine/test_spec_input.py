"""Issue 11: what the job spec refuses at the door, through YAML files and dicts: NaN and infinity in every
numeric field, NUL and control characters, and sizes past the caps. Each refusal names the key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.spine.conftest import spec_dict
from tests.spine.test_spec_properties import FAST, valid_specs
from vastfleet.errors import SpecError
from vastfleet.spec import job_spec_from_dict, load_job_spec
from vastfleet.spec.durations import parse_duration

# The caps of vastfleet.spec.limits, spelled out: the messages below quote them.
ENV_VALUE_BYTES, ENV_ENTRIES, SECRETS = 16 * 1024, 128, 64

BASE = """\
name: train
image: pytorch/pytorch:2.3.0
run: python train.py
resources: {gpu: [RTX_4090]}
"""

# Every number a spec holds that is not an integer, as (path, a valid value): the property below puts
# NaN or an infinity at each.
FLOAT_PATHS: list[tuple[tuple[str, ...], Any]] = [
    (("deadline",), "12h"),
    (("budget_usd",), 10.0),
    (("work_hours",), 3.0),
    (("checkpoint", "interval"), 600),
    (("resources", "min_gpu_ram_gb"), 16.0),
    (("resources", "min_cuda"), 12.1),
    (("resources", "disk_gb"), 40.0),
    (("resources", "min_reliability"), 0.9),
    (("resources", "max_price_per_hour"), 0.5),
    (("resources", "min_inet_down_mbps"), 100.0),
]


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        job_spec_from_dict(data)
    return caught.value.message


def with_value(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return data


# --- non-finite numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", [".inf", "-.inf", ".nan", ".NaN", "+.Inf"])
@pytest.mark.parametrize(("snippet", "key"), [
    ("checkpoint: {interval: %s}", "checkpoint.interval"), ("deadline: %s", "deadline"),
    ("budget_usd: %s", "budget_usd"), ("work_hours: %s", "work_hours"),
    ("resources: {gpu: [RTX_4090], max_price_per_hour: %s}", "resources.max_price_per_hour"),
    ("resources: {gpu: [RTX_4090], min_reliability: %s}", "resources.min_reliability"),
    ("resources: {gpu: [RTX_4090], disk_gb: %s}", "resources.disk_gb"),
    ("resources: {gpu: [RTX_4090], min_cuda: %s}", "resources.min_cuda"),
])
def test_yaml_infinity_and_nan_are_refused_with_the_key_named(tmp_path: Path, snippet: str, key: str,
                                                              literal: str) -> None:
    """Before: `.nan` in checkpoint.interval was stored as null (every later read of the job failed) and
    in deadline/budget_usd/max_price_per_hour it silently meant "none"."""
    text = BASE.replace("resources: {gpu: [RTX_4090]}\n", "") if key.startswith("resources") else BASE
    path = tmp_path / "job.yaml"
    path.write_text(text + (snippet % literal) + "\n")
    with pytest.raises(SpecError) as caught:
        load_job_spec(path)
    assert f"  {key}: " in caught.value.message and "finite" in caught.value.message


def test_env_values_that_are_nan_or_infinity_are_refused_not_turned_into_text(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(BASE + "env: {LR: .nan}\n")
    with pytest.raises(SpecError, match="env: 'LR': NaN and infinity"):
        load_job_spec(path)
    assert job_spec_from_dict(spec_dict(env={"LR": "NaN"})).env == {"LR": "NaN"}  # quoted: the user's text


def test_set_overrides_cannot_bring_infinity_in(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(BASE)
    with pytest.raises(SpecError, match="budget_usd: Input should be a finite number"):
        load_job_spec(path, ["budget_usd=.inf"])


@given(spec=valid_specs(), at=st.sampled_from(FLOAT_PATHS),
       bad=st.sampled_from([math.nan, math.inf, -math.inf, "nan", "inf", "-Infinity", "1e999"]))
@FAST
def test_property_no_non_finite_number_passes_anywhere(spec: dict[str, Any], at: tuple[tuple[str, ...], Any],
                                                       bad: Any) -> None:
    """Any valid spec, with NaN or an infinity (as a number or as the text a JSON or YAML reader may give)
    at any of its numeric keys, is refused with that key named."""
    path, good = at
    job_spec_from_dict(with_value(spec_dict(), path, good))  # the key and a sane value are accepted
    message = refused(with_value(spec, path, bad))
    assert f"  {'.'.join(path)}: " in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1" * 400, "99999999999d", 3651 * 86400])
def test_durations_are_finite_and_bounded(value: Any) -> None:
    with pytest.raises(ValueError, match="finite|at most 3650d"):
        parse_duration(value)
    assert parse_duration("3650d") == 3650 * 86400


# --- NUL and control characters --------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "where"), [
    ({"run": "python train.py\x00--evil"}, "run: contains a NUL character"),
    ({"setup": "pip install x\x00"}, "setup: contains a NUL character"),
    ({"setup": "echo \x1b[31mred"}, "setup: contains the control character '\\x1b'"),
    ({"image": "pytorch/pytorch\x00"}, "image: contains a NUL character"),
    ({"image": "pytorch/pytorch\nRUN evil"}, "image: contains the control character '\\n'"),
    ({"image": "a\u2028b"}, "image: contains the control character '\\u2028'"),
    ({"env": {"A": "x\x00y"}}, "env.A: contains a NUL character at position 1"),
    ({"env": {"A\x00B": "x"}}, "env: 'A\\x00B' is not a valid environment variable name"),
    ({"env": {"A\nB": "x"}}, "env: 'A\\nB' is not a valid environment variable name"),
    ({"name": "train\x00"}, "name: String should match pattern"),
    ({"secrets": ["HF\x00TOKEN"]}, "secrets: 'HF\\x00TOKEN' is not a valid secret name"),
    ({"secrets": ["HF\nTOKEN"]}, "secrets: 'HF\\nTOKEN' is not a valid secret name"),
    ({"resources": {"gpu": ["RTX_4090\nx"]}}, "resources.gpu: contains the control character '\\n'"),
    ({"resources": {"gpu": ["RTX_4090"], "regions": ["US\nDE"]}},
     "resources.regions.0: contains the control character '\\n'"),
    ({"resources": {"gpu": ["RTX_4090"], "regions": ["US\x00"]}}, "resources.regions.0: contains a NUL"),
    ({"deadline": "2030-01-01\x00"}, "deadline: '2030-01-01\\x00' is neither a duration"),
])
def test_nul_and_control_characters_are_refused_with_the_key_named(overrides: dict[str, Any], where: str) -> None:
    message = refused(spec_dict(**overrides))
    assert where in message
    assert "\x00" not in message and message.count("\n") == 1, "one line per problem, control characters escaped"


def test_multi_line_text_keeps_tabs_and_newlines() -> None:
    spec = job_spec_from_dict(spec_dict(run="set -e\n\tpython train.py\r\n", env={"PEM": "-----BEGIN\nabc\n"}))
    assert spec.run.startswith("set -e\n\tpython") and spec.env["PEM"] == "-----BEGIN\nabc"


def test_a_key_with_a_newline_or_nul_is_shown_escaped_in_the_message() -> None:
    message = refused(spec_dict(resources={"gpu": ["RTX_4090"], "bad\x00key\nx": 1}))
    assert "resources.'bad\\x00key\\nx': unknown key" in message


# --- sizes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"env": {"BIG": "x" * (ENV_VALUE_BYTES + 1)}}, "env: BIG: the value is 16385 bytes; at most 16 KiB"),
    ({"env": {"BIG": "é" * (ENV_VALUE_BYTES // 2 + 1)}}, "at most 16 KiB per value"),
    ({"env": {f"V{i}": "x" * 1000 for i in range(40)}}, "env: names and values come to"),
    ({"env": {f"V{i}": "x" for i in range(ENV_ENTRIES + 1)}}, "env: Dictionary should have at most 128"),
    ({"env": {"A" * 200: "x"}}, "is not a valid environment variable name"),
    ({"secrets": [f"S{i}" for i in range(SECRETS + 1)]}, "secrets: List should have at most 64"),
    ({"resources": {"gpu": ["RTX_4090"] * 33}}, "resources.gpu: at most 32 GPU models, not 33"),
    ({"resources": {"gpu": ["x" * 5000]}}, "a GPU name has at most 64 characters"),
    ({"resources": {"gpu": ["RTX_4090"], "regions": ["US"] * 65}}, "resources.regions: List should have at most 64"),
])
def test_fields_have_caps_and_the_message_names_the_limit(overrides: dict[str, Any], needle: str) -> None:
    """Before: a 100 MB env value was accepted, and every listing carried it."""
    message = refused(spec_dict(**overrides))
    assert needle in message
    assert len(message) < 2000, "the message never echoes the oversized value"


def test_the_whole_spec_has_a_cap_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """The field caps keep a spec under the whole-spec cap; the whole-spec check is the backstop for a
    field added later without one (shown by lowering the cap)."""
    from vastfleet.spec import jobspec

    big = spec_dict(run="x" * 8000, setup="y" * 8000, env={f"V{i}": "z" * 250 for i in range(100)})
    job_spec_from_dict(big)
    monkeypatch.setattr(jobspec.limits, "MAX_SPEC_BYTES", 16 * 1024)
    assert "(top level): the spec is" in refused(big) and "at most 16 KiB" in refused(big)


def test_a_flood_of_problems_is_summarised() -> None:
    message = refused(spec_dict(ports=["x"] * 10_000))
    assert message.count("\n") == 21 and "... and 9980 more problems" in message
