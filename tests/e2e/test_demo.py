"""`vastfleet demo` end to end, small: every job succeeds through its preemptions, nothing is left behind,
and --json's last line is the summary."""

from __future__ import annotations

import json

import pytest

from vastfleet.demo import demo_command

pytestmark = pytest.mark.slow


def test_demo_runs_clean_and_prints_its_summary_as_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    rc = demo_command(jobs=2, preemptions=2, as_json=True)
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert rc == 0, summary
    assert summary["succeeded"] == 2 and summary["preemptions_survived"] == 2
    assert summary["steps_lost"] == 0 and summary["steps_counted_twice"] == 0
    assert summary["instances_left_running"] == 0 and summary["instances_left_stopped"] == 0
    assert 0 < summary["cost_usd"] < summary["on_demand_usd"], "interruptible capacity costs less"


def test_demo_refuses_bad_arguments() -> None:
    assert demo_command(jobs=0, preemptions=1) == 2
