"""The sweep spec: W&B parameter syntax, the trial's job and environment, and refusals that name the key."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vastfleet.errors import SpecError
from vastfleet.sweeps.spec import Method, grid_points, load_sweep_spec, sweep_spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sweep.yaml"

# the issue's spec, as written there
ISSUE: dict[str, Any] = {
    "kind": "sweep", "name": "lr-sweep",
    "job": {"image": "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime",
            "run": 'python train.py --lr "$VASTFLEET_PARAM_LR" --bs "$VASTFLEET_PARAM_BS"',
            "resources": {"gpu": ["RTX_4090", "RTX_3090"], "gpus": 1, "max_price_per_hour": 0.5}, "work_hours": 2},
    "metric": {"name": "val_loss", "goal": "minimize"}, "method": "tpe",
    "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1.0e-5, "max": 1.0e-2},
                   "bs": {"values": [32, 64, 128]}},
    "early_stop": {"type": "asha", "min_step": 100, "max_step": 2700, "reduction_factor": 3},
    "max_trials": 64, "max_parallel": 16, "max_failed_trials": 5, "budget_usd": 150, "deadline": "24h", "seed": 7,
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(ISSUE)), **changes}


def refusal(data: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        sweep_spec_from_dict(data)
    return info.value


def test_the_issues_spec_loads_with_the_job_named_after_the_sweep() -> None:
    spec = sweep_spec_from_dict(ISSUE)
    assert spec.job.name == "lr-sweep" and spec.trial_count() == 64 and spec.deadline == 24 * 3600
    assert spec.parameters["lr"].kind == "log_uniform_values" and spec.parameters["bs"].kind == "categorical"


def test_the_example_loads_and_embeds_its_trial_script_verbatim() -> None:
    spec = load_sweep_spec(EXAMPLE)
    assert spec.job.setup is not None
    body = spec.job.setup.split("<<'SWEEP_TRIAL_EOF'\n", 1)[1].rsplit("SWEEP_TRIAL_EOF", 1)[0]
    assert body == (ROOT / "examples" / "sweep_trial.py").read_text()


def test_wandb_defaults_when_no_distribution_is_named() -> None:
    spec = sweep_spec_from_dict(with_(parameters={"a": {"min": 1, "max": 5}, "b": {"min": 0.1, "max": 0.5},
                                                  "c": {"value": "adam"}, "d": {"values": ["x", "y"]}}))
    assert [spec.parameters[n].kind for n in "abcd"] == ["int_uniform", "uniform", "constant", "categorical"]


@pytest.mark.parametrize(("change", "where", "words"), [
    ({"colour": "red"}, "colour", "unknown key"),
    ({"parameters": {"lr": {"distribution": "uniform", "min": 0.1, "max": 0.001}}}, "parameters.lr",
     "min 0.1 is above max 0.001"),
    ({"method": "annealing"}, "method", "'grid', 'random' or 'tpe'"),
    ({"method": "bayes"}, "method", "use tpe"),
    ({"metric": {"name": "step"}}, "metric.name", "progress key"),
    ({"metric": None}, "metric", "valid dictionary"),
    ({"early_terminate": {"type": "hyperband"}}, "early_terminate", "early_stop"),
    ({"parameters": {"lr": {"distribution": "normal", "mu": 0, "sigma": 1}}}, "parameters.lr", "normal"),
    ({"parameters": {"lr": {"values": [1, 1]}}}, "parameters.lr", "values repeat"),
    ({"parameters": {"lr": {"min": 1, "max": 5}, "LR": {"value": 3}}}, "parameters", "VASTFLEET_PARAM_LR"),
    ({"parameters": {"learning-rate": {"value": 1}}}, "parameters", "letters, digits and underscores"),
    ({"parameters": {"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}}, "parameters.lr", "min > 0"),
    ({"parameters": {"lr": {"distribution": "int_uniform", "min": 0.5, "max": 3}}}, "parameters.lr", "integer"),
    ({"parameters": {"lr": {"values": [1, 2], "probabilities": [0.2, 0.8]}}}, "parameters.lr", "uniformly"),
    ({"method": "grid"}, "method", "continuous: lr"),
    ({"max_trials": None}, "max_trials", "required with method tpe"),
    ({"early_stop": {"type": "asha", "min_step": 100}}, "early_stop", "needs min_step and max_step"),
    ({"early_stop": {"type": "asha", "min_step": 100, "max_step": 50}}, "early_stop", "below max_step"),
    ({"max_parallel": 0}, "max_parallel", "greater than or equal to 1"),
    ({"budget_usd": -5}, "budget_usd", "greater than 0"),
    ({"deadline": "soon"}, "deadline", "not a duration"),
])
def test_a_bad_spec_names_the_key(change: dict[str, Any], where: str, words: str) -> None:
    error = refusal(with_(**change))
    assert error.exit_code == 2
    assert any(loc == where and words in msg for loc, msg in error.problems), error.message
    assert error.message.startswith("invalid sweep spec:\n")


def test_a_bad_job_inside_is_located_under_job() -> None:
    data = with_()
    data["job"]["resources"]["gpu"] = ["RTX_4909"]
    error = refusal(data)
    assert [loc for loc, _ in error.problems] == ["job.resources.gpu"] and "RTX_4090" in error.message


def test_grid_enumerates_discrete_parameters_and_caps_trials() -> None:
    spec = sweep_spec_from_dict(with_(method="grid", max_trials=None, parameters={
        "bs": {"values": [32, 64]}, "layers": {"distribution": "int_uniform", "min": 1, "max": 3},
        "drop": {"distribution": "q_uniform", "min": 0.0, "max": 0.2, "q": 0.1}}))
    assert spec.method == Method.grid and spec.grid_size() == 2 * 3 * 3 == spec.trial_count()
    points = grid_points(spec)
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 18
    assert {p["drop"] for p in points} == {0.0, 0.1, 0.2}


def test_the_trials_environment_through_a_real_shell() -> None:
    """The exports reach the command's environment intact, whatever the values hold (quotes, spaces, $)."""
    spec = sweep_spec_from_dict(with_(parameters={"lr": {"value": 0.001}, "opt": {"values": ["it's $HOME", "b"]}}))
    job = spec.trial_job("s-abcdefghij", 7, {"lr": 0.001, "opt": "it's $HOME"})
    assert job.name == "lr-sweep-t7"
    script = job.run.replace('python train.py --lr "$VASTFLEET_PARAM_LR" --bs "$VASTFLEET_PARAM_BS"',
                             'python3 -c "import os, json; print(json.dumps({k: v for k, v in os.environ.items()'
                             ' if k.startswith(\'VASTFLEET_\')}))"')
    env = json.loads(subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, check=True,
                                    env={"PATH": "/usr/bin:/bin"}).stdout)
    assert env["VASTFLEET_PARAM_LR"] == "0.001" and env["VASTFLEET_PARAM_OPT"] == "it's $HOME"
    assert json.loads(env["VASTFLEET_TRIAL_PARAMS"]) == {"lr": 0.001, "opt": "it's $HOME"}
    assert env["VASTFLEET_SWEEP_ID"] == "s-abcdefghij" and env["VASTFLEET_TRIAL_NUMBER"] == "7"


def test_a_run_command_too_long_for_the_exports_is_refused() -> None:
    data = with_()
    data["job"]["run"] = "x" * 8100
    assert any(loc == "job.run" for loc, _ in refusal(data).problems)


def test_a_trial_is_due_by_the_sweeps_deadline_unless_its_own_is_earlier() -> None:
    spec = sweep_spec_from_dict(ISSUE)
    now = 1_800_000_000.0
    due = spec.trial_job("s-abcdefghij", 0, {"lr": 0.001, "bs": 64}, now, now + 24 * 3600)
    assert due.deadline_at(now) == now + 24 * 3600
    data = with_()
    data["job"]["deadline"] = "2h"
    own = sweep_spec_from_dict(data).trial_job("s-abcdefghij", 0, {"lr": 0.001, "bs": 64}, now, now + 24 * 3600)
    assert own.deadline_at(now) == now + 2 * 3600
    assert spec.trial_job("s-abcdefghij", 0, {"lr": 0.001, "bs": 64}).deadline is None
