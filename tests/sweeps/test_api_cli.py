"""`/v1/sweeps` and `vastfleet sweep ...` against the real API (uvicorn on loopback) and redis-server; the dry
run's prices from the simulator through the real `vastai` client, or from the GPU catalogue without a key."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis
from typer.testing import CliRunner

from tests.sim_fixtures import SimHandle
from tests.spine.conftest import TOKEN
from tests.sweeps.test_spec import EXAMPLE, ISSUE
from vastfleet.cli import app
from vastfleet.queue import JobStore
from vastfleet.sweeps.store import SweepStore


@pytest.fixture
def cli(api: str, tmp_path: Path) -> CliRunner:
    # HOME: no vastai key file of the machine's user is ever read
    return CliRunner(env={"VASTFLEET_URL": api, "VASTFLEET_TOKEN": TOKEN, "HOME": str(tmp_path), "VAST_API_KEY": "",
                          "VASTFLEET_MARKET_URL": ""})


def sweep_keys(client: redis.Redis) -> list[str]:
    return [k for k in client.keys("vf:sweep*")]


def test_the_routes_submit_list_show_and_cancel(http: httpx.Client, api: str, store: JobStore) -> None:
    created = http.post("/v1/sweeps", json=ISSUE)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    assert [s["id"] for s in http.get("/v1/sweeps").json()] == [sweep_id]
    status = http.get(f"/v1/sweeps/{sweep_id}").json()
    assert status["sweep"]["state"] == "RUNNING" and status["trials"]["COMPLETE"] == 0 and status["best"] is None
    assert http.get(f"/v1/sweeps/{sweep_id}/best").json() == []
    assert [e["kind"] for e in http.get(f"/v1/sweeps/{sweep_id}/events").json()] == ["submitted"]
    journal = http.get(f"/v1/sweeps/{sweep_id}/journal").json()
    assert journal["records"] and journal["records"][0]["study_name"] == sweep_id  # the study is created at submit
    assert http.post(f"/v1/sweeps/{sweep_id}/cancel").json()["state"] == "CANCELLED"
    again = http.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert again.status_code == 409 and "already CANCELLED" in again.json()["detail"]
    assert http.get("/v1/sweeps/s-nosuchsweep").status_code == 404
    assert httpx.get(f"{api}/v1/sweeps").status_code == 401  # under the user token


def test_a_bad_spec_gets_the_clis_message_and_nothing_is_written(http: httpx.Client, redis_client: redis.Redis) -> None:
    bad = {**ISSUE, "parameters": {"lr": {"distribution": "uniform", "min": 1.0, "max": 0.1}}}
    answer = http.post("/v1/sweeps", json=bad)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "invalid sweep spec:\n  parameters.lr: min 1.0 is above max 0.1"
    assert http.post("/v1/sweeps", json=[1, 2]).status_code == 422
    assert sweep_keys(redis_client) == []


def test_the_cli_submits_shows_and_cancels(cli: CliRunner, store: JobStore) -> None:
    submitted = cli.invoke(app, ["sweep", "submit", str(EXAMPLE), "--set", "max_trials=3"])
    assert submitted.exit_code == 0, submitted.output
    sweep_id = submitted.stdout.strip()
    sweep = SweepStore(store.redis).get(sweep_id)
    assert sweep.spec.max_trials == 3 and sweep.spec.name == "demo-sweep"
    shown = cli.invoke(app, ["sweep", "status", sweep_id])
    assert shown.exit_code == 0 and "RUNNING" in shown.stdout and "of $0.5000" in shown.stdout
    as_json = json.loads(cli.invoke(app, ["sweep", "status", sweep_id, "--json"]).stdout)
    assert as_json["sweep"]["id"] == sweep_id
    listed = cli.invoke(app, ["sweep", "status"])
    assert sweep_id in listed.stdout
    assert "no trial is complete yet" in cli.invoke(app, ["sweep", "best", sweep_id]).stdout
    cancelled = cli.invoke(app, ["sweep", "cancel", sweep_id])
    assert cancelled.exit_code == 0 and cancelled.stdout.strip() == f"{sweep_id} CANCELLED"
    watched = cli.invoke(app, ["sweep", "status", sweep_id, "--watch", "--interval", "0.2"])
    assert watched.exit_code == 0 and "CANCELLED" in watched.stdout  # the live view ends with the sweep
    again = cli.invoke(app, ["sweep", "cancel", sweep_id])
    assert again.exit_code == 1 and "already CANCELLED" in again.stderr
    missing = cli.invoke(app, ["sweep", "status", "s-nosuchsweep"])
    assert missing.exit_code == 1 and "no sweep s-nosuchsweep" in missing.stderr


def test_a_bad_spec_exits_2_naming_the_key_and_writes_nothing(cli: CliRunner, tmp_path: Path,
                                                              redis_client: redis.Redis) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("method: tpe", "method: annealing"))
    result = cli.invoke(app, ["sweep", "submit", str(bad)])
    assert result.exit_code == 2 and "method: Input should be 'grid', 'random' or 'tpe'" in result.stderr
    unknown = cli.invoke(app, ["sweep", "submit", str(EXAMPLE), "--set", "max_trails=3"])
    assert unknown.exit_code == 2 and "max_trails: unknown key" in unknown.stderr
    assert sweep_keys(redis_client) == []


def test_the_dry_run_prices_from_the_catalogue_without_a_key(cli: CliRunner, redis_client: redis.Redis) -> None:
    result = cli.invoke(app, ["sweep", "submit", str(EXAMPLE), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["trials"] == 16 and plan["parallelism"] == 4 and plan["binding"] == "parallel"
    assert "catalogue" in plan["priced_from"] and plan["expected_trial_usd"] > 0
    assert plan["expected_total_usd"] == pytest.approx(16 * plan["expected_trial_usd"], rel=1e-4)
    assert 0 < plan["work_share"] < 0.5  # ASHA: most trials stop early
    table = cli.invoke(app, ["sweep", "submit", str(EXAMPLE), "--dry-run"])
    assert "nothing submitted" in table.stdout and "expected $ per trial" in table.stdout
    assert sweep_keys(redis_client) == []


def test_the_dry_run_prices_from_the_marketplace(cli: CliRunner, sim: SimHandle) -> None:
    env = {"VAST_API_KEY": sim.api_key, "VASTFLEET_MARKET_URL": sim.url}
    result = cli.invoke(app, ["sweep", "submit", str(EXAMPLE), "--dry-run", "--json", "--set", "budget_usd=0.002"],
                        env=env)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["priced_from"] == "the marketplace" and plan["offers"] > 0
    assert plan["trials_the_budget_affords"] < 16  # a budget this small cannot pay every trial
