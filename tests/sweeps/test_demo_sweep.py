"""`vastfleet demo --sweep` end to end on the embedded defaults: the sweep finishes within its budget, the best
reported is the best of the points run to the end, instances rise to max_parallel at most and none is left."""

from __future__ import annotations

import json

import pytest

from vastfleet.sweeps.demo import sweep_demo_command

pytestmark = pytest.mark.slow


def test_the_sweep_demo_passes_its_checks_and_prints_its_summary_last(capsys: pytest.CaptureFixture[str]) -> None:
    rc = sweep_demo_command(preemptions=1, as_json=True)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0, summary["checks_failed"]
    assert summary["state"] == "FINISHED" and summary["trials"] == 16
    assert summary["complete"] + summary["pruned"] + summary["failed"] == 16 and summary["pruned"] > 0
    assert summary["best_is_best_tried"] and summary["best_value"] >= summary["true_best_value"]
    assert 0 < summary["cost_usd"] <= summary["budget_usd"]
    assert 1 <= summary["peak_instances"] <= 4 and summary["final_instances"] == 0
    assert summary["preemptions_injected"] == 1


def test_the_sweep_demo_refuses_bad_arguments() -> None:
    assert sweep_demo_command(preemptions=11) == 2
