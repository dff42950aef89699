"""The replay benchmark: determinism, the optimum as a true lower bound, engine mechanics, inputs, CLI."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vastfleet.errors import BadInput
from vastfleet.sim.replay import (
    Options,
    Replay,
    WorkJob,
    compile_market,
    job_bound,
    make_policy,
    parse_lines,
    parse_workload,
    run_bench,
)
from vastfleet.sim.replay.cli import app
from vastfleet.sim.replay.convert import convert_v100
from vastfleet.sim.replay.engine import Place, Raise
from vastfleet.sim.replay.generate import make_trace, make_workload
from vastfleet.sim.replay.ours import Ours

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "skynomad-artifact"


def market_of(events: list[dict], tick: int = 300, horizon: int | None = None):
    meta = {"tick": tick, **({"horizon": horizon} if horizon else {})}
    lines = [json.dumps({"type": "meta", **meta})] + [json.dumps(e) for e in events]
    return compile_market(*parse_lines(lines, "t"), "t")


def small(seed: int, vol: str):
    meta, ev = make_trace(seed, hours=72, hosts=16, volatility=vol)
    m = market_of(ev, meta["tick"], meta["horizon"])
    return m, make_workload(m, seed, jobs=8, work_hours=(2, 10))


def test_same_inputs_same_output_and_progress_counts_every_step():
    m, jobs = small(5, "mid")
    steps: list[tuple[str, int, int]] = []
    a = run_bench(m, jobs, Options(), progress=lambda *s: steps.append(s))
    b = run_bench(m, jobs, Options())
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    total = len(jobs) + 1 + 5
    assert [d for _, d, _ in steps] == list(range(total + 1)) and {t for _, _, t in steps} == {total}
    assert steps[-2][0] == "replay ours" and steps[-1][0] == "done"


def test_a_pool_of_workers_gives_the_same_figures(monkeypatch):
    m, jobs = small(4, "high")
    monkeypatch.setenv("VASTFLEET_BENCH_WORKERS", "1")
    alone = run_bench(m, jobs, Options(), policies=["ours"])
    monkeypatch.setenv("VASTFLEET_BENCH_WORKERS", "2")  # the per-job DPs and the priced ones in two processes
    pooled = run_bench(m, jobs, Options(), policies=["ours"])
    assert json.dumps(alone, sort_keys=True) == json.dumps(pooled, sort_keys=True)


def test_map_ordered_keeps_order_and_reports_each_item():
    from vastfleet.sim.replay.parallel import map_ordered

    seen: list[int] = []
    assert map_ordered(abs, (x for x in range(-9, 0)), 9, 10**9, on_each=seen.append, workers=3) == \
        list(range(9, 0, -1))
    assert seen == list(range(9))


def test_acceptance_properties_on_seeded_small_traces():
    ours_total = greedy_total = 0.0
    for seed, vol in itertools.product((1, 2, 3), ("low", "mid", "high")):
        m, jobs = small(seed, vol)
        rows = {r["policy"]: r for r in run_bench(m, jobs, Options())["policies"]}
        assert rows["ours"]["deadline_misses"] == 0, (seed, vol)
        for name, row in rows.items():
            if row["deadline_misses"] == 0:
                assert row["dollars"] >= rows["optimum"]["dollars"] - 1e-9, (seed, vol, name)
        assert rows["on_demand"]["dollars"] > rows["ours"]["dollars"]
        ours_total += rows["ours"]["dollars"]
        greedy_total += rows["greedy_spot"]["dollars"]
    assert ours_total < greedy_total


def test_outbid_pauses_and_loses_work_since_the_last_checkpoint():
    events = [{"t": 0, "type": "offer", "id": "a", "host": 1, "gpu_name": "RTX 4090", "dph_total": 1.0,
               "min_bid": 0.2, "dlperf": 44.0},
              {"t": 3600 * 2, "type": "bid", "id": "a", "price": 0.5},
              {"t": 3600 * 3, "type": "bid_end", "id": "a"}]
    m = market_of(events, 300, horizon=3600 * 30)
    job = WorkJob("j", 0.0, 4.0, 44.0, ("RTX 4090",), 1, 3600 * 20.0)
    runs = Replay(m, [job], Options()).run(make_policy("greedy_spot"))
    run = runs["j"]
    assert run.interruptions == [7200.0]
    assert run.lost_gpu_h > 0 and run.done_at is not None and run.done_at > 4 * 3600
    assert run.storage == 0.0  # greedy destroys the paused instance and relaunches


def test_trace_errors_name_the_line():
    with pytest.raises(BadInput, match="t:2: not JSON"):
        parse_lines(['{"type":"meta","tick":60}', "{oops"], "t")
    with pytest.raises(BadInput, match="unknown offer"):
        market_of([{"t": 0, "type": "offer", "id": "a", "host": 1, "gpu_name": "X", "dph_total": 1, "min_bid": 0.1,
                    "dlperf": 1}, {"t": 300, "type": "gone", "id": "zz"}])
    with pytest.raises(BadInput, match="multiples of the tick"):
        market_of([{"t": 0, "type": "offer", "id": "a", "host": 1, "gpu_name": "X", "dph_total": 1, "min_bid": 0.1,
                    "dlperf": 1}, {"t": 301, "type": "gone", "id": "a"}])


OFFER = {"t": 0, "type": "offer", "id": "a", "host": 1, "gpu_name": "X", "dph_total": 1, "min_bid": 0.1, "dlperf": 1}


@pytest.mark.parametrize(("line", "message"), [
    ({**OFFER, "dph_total": -1}, "'dph_total' must be a number > 0, not -1"),
    ({**OFFER, "min_bid": float("nan")}, "'min_bid' must be a number >= 0"),
    ({**OFFER, "reliability": 1.5}, "'reliability' must be a number from 0 to 1"),
    ({**OFFER, "num_gpus": 1.5}, "'num_gpus' must be a whole number >= 1"),
    ({**OFFER, "host": "h7"}, "'host' must be a whole number >= 0"),
    ({**OFFER, "dlperf": True}, "'dlperf' must be a number > 0"),
    ({"t": 0, "type": "bid", "id": "a"}, "a 'bid' event needs 'price'"),
    ({"t": 0, "type": "bid", "id": "a", "price": -0.2}, "'price' must be a number >= 0"),
    ({"t": 0, "type": "price", "id": "a"}, "a 'price' event needs 'dph_total' or 'min_bid'"),
])
def test_trace_numbers_out_of_range_name_the_field_and_line(line, message):
    with pytest.raises(BadInput, match=re.escape(f"t:2: {message}")):
        parse_lines(['{"type":"meta","tick":60}', json.dumps(line)], "t")


@pytest.mark.parametrize(("job", "message"), [
    ({"submit": -5}, "submit must be seconds >= 0"),
    ({"work_hours": float("inf")}, "must be finite numbers"),
    ({"deadline": 0}, "deadline must be positive"),
])
def test_workload_numbers_out_of_range_name_the_line(job, message):
    base = {"id": "j", "submit": 0, "work_hours": 2, "ref_dlperf": 80, "gpu_name": ["X"]}
    with pytest.raises(BadInput, match="w:1: .*" + re.escape(message)):
        parse_workload([json.dumps({**base, **job})], "w")


@pytest.mark.skipif(not DATA.is_dir(), reason="public traces not present")
def test_v100_conversion_keeps_the_availability_convention(tmp_path):
    meta, events = convert_v100(DATA, zones=["us-west-2a", "us-east-1a"], ticks=2000)
    m = market_of(events, meta["tick"], meta["horizon"])
    assert m.tick == 195 and len(m.offer_keys) == 2
    # spot available = no competing bid at the on-demand price
    avail = (m.comp == 0).mean(axis=0)
    assert avail[m.offer_keys.index("us-east-1a")] < avail[m.offer_keys.index("us-west-2a")]
    # an inverted 0/1 file is refused
    bad = tmp_path / "v100_1node_2023-02-15_availability"
    bad.mkdir()
    src = (DATA / "v100_1node_2023-02-15_availability" / "us-east-1a_v100_1.csv").read_text().splitlines()
    flipped = [src[0]] + [f"{ln.split(',')[0]},{1 - int(ln.split(',')[1])}" for ln in src[1:]]
    (bad / "us-east-1a_v100_1.csv").write_text("\n".join(flipped) + "\n")
    (tmp_path / "v100_spot_prices.json").write_text((DATA / "v100_spot_prices.json").read_text())
    with pytest.raises(BadInput, match="convention"):
        convert_v100(tmp_path)


def test_cli_make_trace_workload_and_policy_json(tmp_path):
    runner = CliRunner()
    trace, wl = tmp_path / "m.jsonl", tmp_path / "w.jsonl"
    r = runner.invoke(app, ["make-trace", "--seed", "3", "--hours", "48", "--hosts", "8", "--volatility", "high",
                            "--out", str(trace)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["make-workload", "--market", str(trace), "--seed", "3", "--jobs", "3", "--max-hours", "6",
                            "--out", str(wl)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["policy", "--market", str(trace), "--workload", str(wl), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    names = [p["policy"] for p in out["policies"]]
    assert names == ["on_demand", "greedy_spot", "uniform_progress", "up_switch", "ours", "optimum"]
    for p in out["policies"]:
        assert {"dollars", "ratio_to_optimum", "p90_job_ratio", "deadline_misses", "interruptions",
                "gpu_hours_lost"} <= set(p)
    r = runner.invoke(app, ["policy", "--market", str(trace), "--workload", str(wl)], terminal_width=80)
    assert r.exit_code == 0 and "up_switch" in r.output and "GPU-h lost" in r.output  # fits 80 columns
    wl.write_text('{"id": "x", "submit": 0, "work_hours": 2, "ref_dlperf": 80, "gpu_name": ["H100 SXM"], '
                  '"num_gpus": 1, "deadline": 36000}\n')
    r = runner.invoke(app, ["policy", "--market", str(trace), "--workload", str(wl)])
    assert r.exit_code == 2 and "x: no offer in the trace has 1x H100 SXM" in r.output
    wl.write_text('{"id": "x"}\n')
    r = runner.invoke(app, ["policy", "--market", str(trace), "--workload", str(wl)])
    assert r.exit_code == 2 and "bad job line" in r.output
    r = runner.invoke(app, ["make-trace", "--seed", "1", "--volatility", "wild"])
    assert r.exit_code == 2


def test_a_running_bid_is_lowered_when_the_lowest_running_bid_falls():
    events = [{"t": 0, "type": "offer", "id": "a", "host": 1, "gpu_name": "RTX 4090", "dph_total": 1.0,
               "min_bid": 0.4, "dlperf": 44.0, "reliability": 0.999},
              {"t": 3600, "type": "price", "id": "a", "min_bid": 0.2}]
    m = market_of(events, 300, horizon=3600 * 30)
    job = WorkJob("j", 0.0, 4.0, 44.0, ("RTX 4090",), 1, 3600 * 20.0)
    paid = {}
    for rebid in (True, False):
        runs = Replay(m, [job], Options()).run(Ours(rebid=rebid))
        assert runs["j"].done_at is not None and not runs["j"].interruptions
        paid[rebid] = runs["j"].compute
    # three of the four hours at half the price, and the change of bid costs no restart
    assert paid[True] < 0.7 * paid[False]


def test_engine_refuses_a_bid_change_below_the_lowest_running_bid():
    events = [{"t": 0, "type": "offer", "id": "a", "host": 1, "gpu_name": "RTX 4090", "dph_total": 1.0,
               "min_bid": 0.4, "dlperf": 44.0}]
    m = market_of(events, 300, horizon=3600 * 10)
    job = WorkJob("j", 0.0, 2.0, 44.0, ("RTX 4090",), 1, 3600 * 8.0)
    sim = Replay(m, [job], Options())
    sim.runs["j"].submitted = True
    sim._apply([Place("j", 0, "bid", 0.5, 1800.0)], 0, 0.0)
    sim._apply([Raise("j", 0.3)], 0, 0.0)
    assert sim.runs["j"].rental.bid == 0.5  # below min_bid 0.4: refused
    sim._apply([Raise("j", 0.45)], 0, 0.0)
    assert sim.runs["j"].rental.bid == 0.45 and not sim.runs["j"].rental.paused


def test_the_bound_charges_every_job_a_fresh_launch_first():
    events = [{"t": 0, "type": "offer", "id": "a", "host": 1, "gpu_name": "RTX 4090", "dph_total": 1.0,
               "min_bid": 0.36, "dlperf": 44.0, "inet_down_cost": 0.01}]
    m = market_of(events, 300, horizon=3600 * 10)
    job = WorkJob("j", 0.0, 2.0, 44.0, ("RTX 4090",), 1, 3600 * 8.0)
    # the true optimum: 2 h of work plus a 300 s first boot at $0.36/h and a 5 GB download at $0.01/GB; the
    # 60 s resume does not apply to the first start, and its one-time costs are not spread over a long run
    bound = job_bound(m, job, Options(restart_overhead_s=300.0, resume_overhead_s=60.0))
    exact = 0.36 * (2.0 + 300.0 / 3600.0) + 0.05
    assert exact * 0.998 <= bound.dollars <= exact + 1e-9


def test_ours_meets_deadlines_when_the_fastest_offers_are_taken():
    # seed 106 (mid): before the slack was measured on offers that can be rented now, ours ran a job's final
    # on-demand stretch on a slow offer and missed its deadline
    meta, ev = make_trace(106, hours=168, hosts=60, volatility="mid")
    m = market_of(ev, meta["tick"], meta["horizon"])
    jobs = make_workload(m, 106, jobs=30, work_hours=(2.0, 24.0))
    runs = Replay(m, jobs, Options()).run(Ours())
    late = [j.id for j in jobs if runs[j.id].done_at is None or runs[j.id].done_at > j.deadline_at + 1e-6]
    assert late == []
