"""The user's path, end to end: `vastfleet server` (API + scheduler + workers) against the simulator, a job
submitted with `vastfleet submit`, followed with `vastfleet status` and `vastfleet events` until it succeeds,
and nothing of ours left at the simulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import COUNT_YAML, FAST, ours_left
from tests.helpers import clean_env, free_port, wait_for
from tests.sim_fixtures import running_sim

pytestmark = pytest.mark.slow

VASTFLEET = [sys.executable, "-m", "vastfleet.cli"]
TOKEN = "cli-e2e-token"


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VASTFLEET, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_server_runs_a_submitted_job_to_success_and_leaves_nothing(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    with running_sim(tmp_path, seed=5, hosts=12, boot_delay=0.2) as sim:
        env = clean_env(
            VASTFLEET_TOKEN=TOKEN, VASTFLEET_URL=f"http://127.0.0.1:{port}", VAST_API_KEY=sim.api_key,
            VASTFLEET_MARKET_URL=sim.url, VASTFLEET_AGENT_SECRET="s" * 32, VASTFLEET_STORAGE_SECRET="t" * 32,
            VASTFLEET_DATA_DIR=str(tmp_path / "plane"), HOME=str(tmp_path),
            **{f"VASTFLEET_{k.upper()}": str(v) for k, v in FAST.items()},
        )
        server = subprocess.Popen([*VASTFLEET, "server", "--port", str(port), "--redis-url", redis_url],
                                  env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("w"),
                                  start_new_session=True)
        try:
            wait_for(lambda: cli(["status", "--json"], env).returncode == 0, 30, what="vastfleet server")
            bad = cli(["submit", str(COUNT_YAML), "--set", "resources.gpus=0"], env)
            assert bad.returncode == 2 and "resources.gpus" in bad.stderr
            assert json.loads(cli(["status", "--json"], env).stdout) == []  # the refused spec wrote nothing

            run = "python3 count_steps.py --steps 20 --every 5 --sleep 0.05"
            submitted = cli(["submit", str(COUNT_YAML), "--set", f"run={run}", "--json"], env)
            assert submitted.returncode == 0, submitted.stderr
            job_id = json.loads(submitted.stdout)["id"]

            def state() -> str:
                return str(json.loads(cli(["status", job_id, "--json"], env).stdout)["state"])

            wait_for(lambda: state() in ("SUCCEEDED", "FAILED", "CANCELLED"), 90, interval=0.5, what="the job")
            assert state() == "SUCCEEDED", (tmp_path / "server.log").read_text()[-3000:]
            events = cli(["events", job_id, "--json"], env)
            seen = [e["to_state"] for e in json.loads(events.stdout) if e["kind"] == "transition"]
            assert seen == ["PLACING", "BOOTING", "RUNNING", "SUCCEEDED"]
            wait_for(lambda: not ours_left(sim), 30, what="the instance to be destroyed")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
