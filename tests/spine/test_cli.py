"""The `vastfleet` command against the real API and redis-server; the entry point itself in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis
from typer.testing import CliRunner

from tests.helpers import clean_env, free_port, wait_for
from tests.spine.conftest import TOKEN, FakeClock
from vastfleet.cli import app
from vastfleet.queue import JobStore
from vastfleet.spec import JobState

VASTFLEET = [sys.executable, "-m", "vastfleet.cli"]
SPEC = """\
name: llama-lora
image: pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime
run: python train.py
resources: {gpu: [RTX_4090, RTX_3090], gpus: 1}
priority: 2
"""


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real entry point in a child process (what a user's shell runs)."""
    return subprocess.run([*VASTFLEET, *args], env=env, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def cli(api: str) -> CliRunner:
    return CliRunner(env={"VASTFLEET_URL": api, "VASTFLEET_TOKEN": TOKEN})


def test_submit_prints_the_id_and_the_job_is_queued(cli: CliRunner, spec_file: Path, store: JobStore) -> None:
    result = cli.invoke(app, ["submit", str(spec_file), "--set", "resources.gpus=2", "--set", "priority=7"])
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    job = store.get(job_id)
    assert (job.spec.name, job.spec.resources.gpus, job.spec.priority, job.state) == (
        "llama-lora", 2, 7, JobState.PENDING)
    as_json = cli.invoke(app, ["submit", str(spec_file), "--json"])
    assert json.loads(as_json.stdout)["spec"]["resources"]["gpu"] == ["RTX 4090", "RTX 3090"]


def test_bad_spec_exits_2_with_the_message_on_stderr_and_writes_nothing(
        cli: CliRunner, spec_file: Path, redis_client: redis.Redis) -> None:
    result = cli.invoke(app, ["submit", str(spec_file), "--set", "resources.gpus=0", "--set", "gpu_count=2"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "resources.gpus: Input should be greater than or equal to 1" in result.stderr
    assert "gpu_count: unknown key" in result.stderr
    missing = cli.invoke(app, ["submit", str(spec_file.with_name("nope.yaml"))])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    assert redis_client.dbsize() == 0


def test_status_cancel_and_events(cli: CliRunner, store: JobStore, spec_file: Path, clock: FakeClock) -> None:
    first = cli.invoke(app, ["submit", str(spec_file)]).stdout.strip()
    clock.advance(5)
    second = cli.invoke(app, ["submit", str(spec_file), "--set", "name=second"]).stdout.strip()
    store.transition(second, JobState.PLACING, "offer 9 at $0.28/h")

    table = cli.invoke(app, ["status"])
    assert table.exit_code == 0 and first in table.stdout and second in table.stdout and "PLACING" in table.stdout
    listed = json.loads(cli.invoke(app, ["status", "--json", "--state", "placing"]).stdout)
    assert [j["id"] for j in listed] == [second]
    details = cli.invoke(app, ["status", second])
    assert "offer 9 at $0.28/h" in details.stdout and "epoch" in details.stdout
    assert json.loads(cli.invoke(app, ["status", second, "--json"]).stdout)["epoch"] == 1

    cancelled = cli.invoke(app, ["cancel", first])
    assert cancelled.exit_code == 0 and cancelled.stdout.strip() == f"{first} CANCELLED"
    again = cli.invoke(app, ["cancel", first])
    assert again.exit_code == 1 and "already CANCELLED" in again.stderr

    history = json.loads(cli.invoke(app, ["events", first, "--json"]).stdout)
    assert [e["to_state"] for e in history] == ["PENDING", "CANCELLED"]
    assert "cancelled by user" in cli.invoke(app, ["events", first]).stdout
    unknown = cli.invoke(app, ["status", "j-nope"])
    assert unknown.exit_code == 1 and unknown.stderr.strip() == "error: no job j-nope"


def test_wrong_token_is_a_clear_error(api: str) -> None:
    result = CliRunner(env={"VASTFLEET_URL": api, "VASTFLEET_TOKEN": "wrong"}).invoke(app, ["status"])
    assert result.exit_code == 1 and result.stderr.strip() == "error: wrong bearer token"
    result = CliRunner(env={"VASTFLEET_URL": api, "VASTFLEET_TOKEN": ""}).invoke(app, ["status"])
    assert result.exit_code == 1 and "VASTFLEET_TOKEN" in result.stderr


def test_entry_point_unreachable_server_is_one_line_naming_the_url(spec_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = clean_env(VASTFLEET_URL=url, VASTFLEET_TOKEN="x")
    for args in (["status"], ["submit", str(spec_file)], ["events", "j-abc"]):
        done = run_cli(args, env)
        assert done.returncode == 1
        assert len(done.stderr.strip().splitlines()) == 1 and url in done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""


def test_entry_point_bad_spec_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Bad Name\nimage: x\nrun: y\nresources: {gpu: RTX_9999}\n")
    env = clean_env(VASTFLEET_URL=f"http://127.0.0.1:{free_port()}", VASTFLEET_TOKEN="x")
    done = run_cli(["submit", str(bad)], env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "name: String should match pattern" in done.stderr and "unknown GPU 'RTX_9999'" in done.stderr


def test_server_command_serves_the_api(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    no_token = run_cli(["server", "--port", str(port), "--redis-url", redis_url], clean_env())
    assert no_token.returncode == 2 and "VASTFLEET_TOKEN is not set" in no_token.stderr

    no_key = run_cli(["server", "--port", str(port), "--redis-url", redis_url],
                     clean_env(VASTFLEET_TOKEN=TOKEN, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path)))
    assert no_key.returncode == 2 and "VAST_API_KEY" in no_key.stderr and "--no-scheduler" in no_key.stderr

    proc = subprocess.Popen([*VASTFLEET, "server", "--port", str(port), "--redis-url", redis_url,
                             "--no-scheduler"],
                            env=clean_env(VASTFLEET_TOKEN=TOKEN), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=20, what="vastfleet server")
        listed = httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert listed.status_code == 200 and listed.json() == []
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_unreachable_at_server_start_hides_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    done = run_cli(["server", "--redis-url", url], clean_env(VASTFLEET_TOKEN=TOKEN))
    assert done.returncode == 1 and "cannot reach Redis" in done.stderr and "hunter2" not in done.stderr
