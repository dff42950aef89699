"""`vastfleet status` on bounded listings: summaries, a page size, the cursor to the older page, and text
that rich would otherwise read as markup (real API, real redis-server)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.spine.conftest import TOKEN, FakeClock, make_spec
from vastfleet.cli import app
from vastfleet.queue import JobStore
from vastfleet.spec import JobState


@pytest.fixture
def cli(api: str) -> CliRunner:
    return CliRunner(env={"VASTFLEET_URL": api, "VASTFLEET_TOKEN": TOKEN})


def test_status_pages_the_most_recent_jobs(cli: CliRunner, store: JobStore, clock: FakeClock) -> None:
    ids = []
    for i in range(5):
        clock.advance(1)
        ids.append(store.submit(make_spec(name=f"job-{i}")).id)
    page = cli.invoke(app, ["status", "--limit", "2"])
    assert page.exit_code == 0, page.output
    assert ids[3] in page.stdout and ids[4] in page.stdout and ids[2] not in page.stdout
    assert f"older: --before {ids[3]}" in page.stderr
    older = cli.invoke(app, ["status", "--limit", "2", "--before", ids[3]])
    assert ids[1] in older.stdout and ids[2] in older.stdout and ids[3] not in older.stdout
    listed = json.loads(cli.invoke(app, ["status", "--json", "--limit", "3"]).stdout)
    assert [j["id"] for j in listed] == ids[2:]
    assert {"id", "name", "state", "epoch", "priority", "reason", "progress"} <= set(listed[0])
    assert "spec" not in listed[0] and listed[0]["name"] == "job-2"
    oldest = cli.invoke(app, ["status", "--before", ids[0]])
    assert oldest.exit_code == 0 and f"no jobs before {ids[0]}" in oldest.stdout
    bad = cli.invoke(app, ["status", "--before", "j-nope"])
    assert bad.exit_code == 2 and "before: no job 'j-nope'" in bad.stderr
    too_many = cli.invoke(app, ["status", "--limit", "5000"])
    assert too_many.exit_code == 2


def test_status_prints_reasons_as_they_are_not_as_markup(cli: CliRunner, store: JobStore) -> None:
    """Before: a reason holding `[/...]` (an error text, a path) made rich raise instead of printing."""
    job = store.submit(make_spec()).id
    store.transition(job, JobState.PLACING, "create failed: [/v1/instances] said [bold]no[/bold]")
    table = cli.invoke(app, ["status"])
    assert table.exit_code == 0, table.output
    assert "[/v1/instances]" in table.stdout and "[bold]no[/bold]" in table.stdout
    details = cli.invoke(app, ["status", job])
    assert details.exit_code == 0 and "[/v1/instances]" in details.stdout
    events = cli.invoke(app, ["events", job])
    assert events.exit_code == 0 and "[bold]no[/bold]" in events.stdout


def test_status_of_a_quarantined_job_is_one_clear_line(cli: CliRunner, store: JobStore, redis_client) -> None:
    job = store.submit(make_spec()).id
    redis_client.hset(f"vf:job:{job}", "progress", "{oops")
    listing = cli.invoke(app, ["status"])
    assert listing.exit_code == 0 and "no jobs" in listing.stdout
    one = cli.invoke(app, ["status", job])
    assert one.exit_code == 1
    assert one.stderr.strip() == (f"error: job {job} is quarantined: field 'progress' is not valid JSON"
                                  " (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))")
