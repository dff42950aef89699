"""What a new user meets first (issue 16): deadlines as the README writes them, `status` that reads well,
a token message for a CLI user, help texts at 80 columns. Real API, real redis-server; the entry point itself
in subprocesses where the rendering is what is tested."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis
from typer.testing import CliRunner

from tests.helpers import clean_env
from tests.spine.conftest import TOKEN, spec_dict
from vastfleet.cli import app, format_progress
from vastfleet.queue import JobStore
from vastfleet.spec.jobspec import load_job_spec
from vastfleet.spec.money import format_price, format_usd

ROOT = Path(__file__).resolve().parents[2]
SPEC = """\
name: llama-lora
image: pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime
run: python train.py
resources: {gpu: [RTX_4090], gpus: 1}
"""


@pytest.fixture
def cli(api: str) -> CliRunner:
    return CliRunner(env={"VASTFLEET_URL": api, "VASTFLEET_TOKEN": TOKEN})


# --- deadlines ---------------------------------------------------------------------------------------


def test_an_unquoted_iso_deadline_in_yaml_is_accepted_and_submitted(cli: CliRunner, tmp_path: Path,
                                                                    store: JobStore) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC + "deadline: 2030-01-01T00:00:00Z\n")  # YAML reads it as a datetime, not a string
    assert load_job_spec(spec).deadline_at(0) == 1893456000.0
    done = cli.invoke(app, ["submit", str(spec), "--json"])
    assert done.exit_code == 0, done.output
    job = json.loads(done.stdout)
    assert store.get(job["id"]).deadline_at == 1893456000.0
    # an override in the same form, and a date alone (midnight UTC)
    over = cli.invoke(app, ["submit", str(spec), "--set", "deadline=2031-01-01T00:00:00Z"])
    assert over.exit_code == 0, over.output
    assert store.get(over.stdout.strip()).deadline_at == 1924992000.0
    spec.write_text(SPEC + "deadline: 2030-01-01\n")
    assert load_job_spec(spec).deadline_at(0) == 1893456000.0


def test_a_deadline_already_past_is_refused_at_submit_naming_it_and_now(
        cli: CliRunner, tmp_path: Path, http: httpx.Client, redis_client: redis.Redis) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC + "deadline: 2020-01-01T00:00:00Z\n")
    done = cli.invoke(app, ["submit", str(spec)])
    assert done.exit_code == 2 and done.stdout == ""
    assert "deadline" in done.stderr and "2020-01-01T00:00:00Z" in done.stderr and "already past" in done.stderr
    assert re.search(r"now is 20\d\d-\d\d-\d\dT", done.stderr) and "Traceback" not in done.stderr
    # the API refuses it too (a client that does not go through the CLI), against the store's own clock
    answer = http.post("/v1/jobs", json=spec_dict(deadline="2020-01-01T00:00:00Z"))
    assert answer.status_code == 422
    assert "2020-01-01T00:00:00Z" in answer.json()["detail"] and "now is 2023-" in answer.json()["detail"]
    assert redis_client.dbsize() == 0, "nothing written"


def test_json_output_never_crashes_on_a_value_json_does_not_know(capsys: pytest.CaptureFixture[str]) -> None:
    import datetime

    from vastfleet.cli import print_json

    print_json({"at": datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)})
    assert "2030-01-01" in capsys.readouterr().out


# --- status ------------------------------------------------------------------------------------------


def test_status_shows_progress_as_a_fraction_and_cost_with_the_precision_it_needs(
        cli: CliRunner, store: JobStore, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    job_id = cli.invoke(app, ["submit", str(spec)]).stdout.strip()
    store.update(job_id, expected_epoch=0, progress={"step": 28, "of": 60, "loss": 0.3141}, cost_usd=0.00066)
    details = cli.invoke(app, ["status", job_id])
    assert details.exit_code == 0, details.output
    assert "28/60 (47%)" in details.stdout and "loss 0.3141" in details.stdout
    assert '{"step"' not in details.stdout
    assert "$0.00066" in details.stdout and "$0.00 " not in details.stdout + " "


def test_progress_and_money_formats() -> None:
    assert format_progress({"step": 28, "total": 60}) == "28/60 (47%)"
    assert format_progress({"fraction": 0.25, "epoch": 2}) == "25%, epoch 2"
    assert format_progress({"step": 7}) == "step 7"
    assert format_progress({}) == "-"
    assert [format_usd(x) for x in (0.00066, 0.0638, 0.5, 12.345, 0)] == [
        "$0.00066", "$0.064", "$0.50", "$12.35", "$0.00"]
    assert [format_price(x) for x in (0.0638, 0.151, 2.5)] == ["$0.064/h", "$0.151/h", "$2.50/h"]


def test_a_missing_token_tells_a_cli_user_to_set_VASTFLEET_TOKEN(api: str) -> None:
    done = CliRunner(env={"VASTFLEET_URL": api, "VASTFLEET_TOKEN": ""}).invoke(app, ["status"])
    assert done.exit_code == 1
    assert "set VASTFLEET_TOKEN" in done.stderr and "Authorization" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_readme_and_the_help_of_submit_and_status_name_VASTFLEET_URL() -> None:
    readme = (ROOT / "README.md").read_text()
    using = readme.split("## Using it", 1)[1].split("\n## ", 1)[0]
    assert "VASTFLEET_URL" in using
    for command in ("submit", "status"):
        assert "VASTFLEET_URL" in " ".join(help_text([command]).split())


# --- help texts --------------------------------------------------------------------------------------

COMMANDS = [[], ["server"], ["submit"], ["status"], ["cancel"], ["events"], ["demo"], ["offers"], ["sim"],
            ["sim", "serve"], ["bench", "policy"]]


def help_text(command: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "vastfleet.cli", *command, "--help"], capture_output=True,
                          text=True, timeout=60, check=False, env=clean_env(COLUMNS="80", TERM="dumb"))
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "vastfleet")
def test_help_reads_well_at_80_columns(command: list[str]) -> None:
    text = help_text(command)
    assert not re.search(r"<(bool|int|str|path|float|list|int range|float range)[^>]*>", text), text
    assert "…" not in text, f"something was cut:\n{text}"
    assert "[[" not in text and "{file}" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert text.lstrip().startswith("Usage: vastfleet")


def test_help_shows_sane_metavars() -> None:
    submit, status = help_text(["submit"]), help_text(["status"])
    assert "FILE" in submit and "KEY=VALUE" in submit
    assert "[JOB]" in status and "--limit" in status and " N " in status
