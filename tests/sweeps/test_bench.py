"""bench/sweep.py's machinery on a small seeded market: every strategy runs the same 64 trials to the same
ends, the pools hold their 16 workers, ours stays within max_parallel, and the figures are reproducible."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vastfleet.sim.replay import load_market, write_events
from vastfleet.sim.replay.generate import make_trace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import sweep_replay as sr


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    meta, events = make_trace(3, 72.0, 40, "mid")
    path = tmp_path_factory.mktemp("trace") / "mid.jsonl"
    write_events(path, meta, events)
    return load_market(path)


def test_three_strategies_run_the_same_trials(market) -> None:  # type: ignore[no-untyped-def]
    out = {s: sr.run_one(market, s, seed=2) for s in sr.STRATEGIES}
    # the same ends (a pruned trial stops at the first step each strategy reports at or past its rung)
    ends = {s: sorted((t.number, t.complete) for t in o.trials) for s, o in out.items()}
    assert len(ends["ours"]) == sr.TRIALS and ends["ours"] == ends["on_demand_pool"] == ends["greedy_spot_pool"]
    assert out["on_demand_pool"].peak == out["greedy_spot_pool"].peak == sr.PARALLEL
    assert 0 < out["ours"].peak <= sr.PARALLEL
    assert out["ours"].dollars < out["on_demand_pool"].dollars
    assert out["on_demand_pool"].best_value == out["ours"].best_value  # the same best point, found by all
    again = sr.run_one(market, "ours", seed=2)
    assert again.row() == out["ours"].row()  # no clock, no unseeded randomness
