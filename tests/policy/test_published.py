"""The published settings of bench/published.py: their construction, and the bound below every policy on a tiny case."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from vastfleet.sim.replay.engine import Options, Replay
from vastfleet.sim.replay.trace import compile_market
from vastfleet.sim.replay.workload import WorkJob

_PATH = Path(__file__).resolve().parents[2] / "bench" / "published.py"
_spec = importlib.util.spec_from_file_location("bench_published", _PATH)
assert _spec is not None and _spec.loader is not None
P = importlib.util.module_from_spec(_spec)
sys.modules["bench_published"] = P
_spec.loader.exec_module(P)


def test_skynomad_windows_are_the_artifacts() -> None:
    """SkyNomad's v100 rows: deadline 59.908 h, task 39.939 h, env_start_hours of windows 3, 5, 7, 8, 14."""
    s = P.SKYNOMAD
    deadline_h = s["window_ticks"] * P.TICK / 3600
    assert deadline_h == pytest.approx(59.90833333, abs=1e-6)
    assert deadline_h / s["deadline_ratio"] == pytest.approx(39.93888889, abs=1e-6)
    starts = [w * s["window_ticks"] * P.TICK / 3600 for w in s["windows"]]
    assert starts == pytest.approx([179.725, 299.5416667, 419.3583333, 479.2666667, 838.7166667], abs=1e-6)
    assert P.egress_per_gb("us-east-1c", "us-east-2b") == 0.01
    assert P.egress_per_gb("us-east-2b", "us-west-2a") == 0.02
    assert P.egress_per_gb("us-west-2a", "us-west-2c") == 0.0


def _market(avail: dict[str, list[int]], prices: dict[str, list[float]], tick: int = 600):
    ev = []
    for i, (z, a) in enumerate(avail.items()):
        ev.append({"t": 0, "type": "offer", "id": z, "host": i, "gpu_name": "Tesla V100", "num_gpus": 1,
                   "dph_total": 3.06, "min_bid": prices[z][0], "reliability": 0.99, "dlperf": 20.0, "capacity": 64})
        if not a[0]:
            ev.append({"t": 0, "type": "bid", "id": z, "price": 3.06})
        for k in range(1, len(a)):
            if prices[z][k] != prices[z][k - 1]:
                ev.append({"t": k * tick, "type": "price", "id": z, "min_bid": prices[z][k]})
            if a[k] != a[k - 1]:
                ev.append({"t": k * tick, "type": "bid_end" if a[k] else "bid", "id": z, "price": 3.06})
    for no, e in enumerate(ev, 1):
        e["_no"] = no
    n = len(next(iter(avail.values())))
    return compile_market({"tick": tick, "horizon": (n - 1) * tick}, ev)


def test_bound_below_every_policy_and_cloud_spot_billing() -> None:
    a = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    b = [0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    pa = [0.92] * 2 + [1.05] * 24  # a rise of the spot price while a runs
    m = _market({"us-east-2b": a, "us-west-2a": b}, {"us-east-2b": pa, "us-west-2a": [0.95] * 26})
    o = Options(restart_overhead_s=720, resume_overhead_s=720, checkpoint_cost_s=0.0, launch_gb=0.0,
                spot_pays_market=True)
    job = WorkJob("j", 0.0, 2.0, 20.0, ("Tesla V100",), 1, 4 * 3600.0)
    res = P.run_case(m, job, o, ["on_demand", "greedy_spot", "uniform_progress", "ours"], checkpoint_gb=50.0)
    assert res["optimum"]["feasible"]
    for name in ("on_demand", "greedy_spot", "uniform_progress", "ours"):
        assert not res[name]["late"], name
        assert res["optimum"]["dollars"] <= res[name]["dollars"] + 1e-9, name
    # cloud spot: the price rise at tick 2 is billed, it does not interrupt a bid that covers no competing bid
    run = Replay(m, [job], o).run(P.make("greedy_spot", o))["j"]
    assert all(t != 2 * 600 for t in run.interruptions)
    vast = Replay(m, [job], Options(restart_overhead_s=720, resume_overhead_s=720, checkpoint_cost_s=0.0,
                                    launch_gb=0.0)).run(P.make("greedy_spot", o))["j"]
    assert vast.compute != pytest.approx(run.compute)  # vast's model pays the bid and is paused by the rise
