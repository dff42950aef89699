"""A 64-trial sweep replayed on the policy benchmark's market traces, three ways, in one run:

* ours: the sweep autoscaler (`scheduler.policy.autoscale`: trials at once under max_parallel, the market's
  good-value slots and a budget; a survivor of the last rung kept on its expected pace by a deadline) starting
  trials, the scheduler's own policy placing them (bid or on demand by expected cost, `sim.replay.ours.Ours`),
  ASHA stopping the losers; a trial's instance goes when the trial ends;
* a fixed pool of N on-demand workers pulling trials, as W&B agents and Katib run (`OnDemand` placement);
* a fixed pool of N greedy-spot workers (min_bid on the cheapest offer, relaunched after a preemption; the
  trial resumes from its checkpoint) (`GreedySpot`).
Every strategy runs the same trials: Optuna's TPE (seeded) and ASHA decide, once, which points are tried and
where each stops (sweep_replay.Search). A trial is 4 work-hours on the trace's reference GPU, 2700 steps,
rungs at 100/300/900, checkpointed every 30 minutes. A pool keeps its N workers until the last trial ends and
starts a worker's next trial after a 60 s warm start; ours boots an instance per trial (the engine's restart
overhead) and has a budget: what the on-demand pool paid. Figures: dollars (compute, storage, bandwidth, from
the replay engine), hours from the start to the last trial's end and to the best trial's end.

Run: .venv/bin/python bench/sweep.py [--seed 1] [--search-seeds 7] [--data DIR] [--json]
(--search-seeds N: also replay N other searches on the same traces and count where the checks hold.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sweep_replay.py beside it, when run as a script

from sweep_replay import PARALLEL, STRATEGIES, WORK_H, Outcome, run_one

from vastfleet.sim.replay import load_market, write_events
from vastfleet.sim.replay.convert import convert_h100, convert_v100
from vastfleet.sim.replay.generate import make_trace
from vastfleet.sim.replay.trace import Market

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "traces" / "skynomad-artifact"


def markets(seed: int, data: Path, out: Path) -> list[tuple[str, Market]]:
    out.mkdir(parents=True, exist_ok=True)
    specs: list[tuple[str, Any]] = []
    if data.is_dir():
        specs += [("aws-v100", lambda: convert_v100(data)), ("gcp-h100x8", lambda: convert_h100(data))]
    else:
        print(f"(no public traces at {data}: the seeded ones only)", file=sys.stderr)
    specs += [(f"vast-{v}", lambda v=v: make_trace(seed, 168.0, 60, v)) for v in ("low", "mid", "high")]
    made = []
    for name, build in specs:
        meta, events = build()
        write_events(out / f"{name}.jsonl", meta, events)
        made.append((name, load_market(out / f"{name}.jsonl")))
    return made


def bench(seed: int, traces: list[tuple[str, Market]], search_seed: int | None = None) -> list[dict[str, Any]]:
    results = []
    for name, m in traces:
        t0 = time.perf_counter()
        rows: dict[str, Outcome] = {}
        for strategy in STRATEGIES:
            # ours gets a budget: what the on-demand pool paid for the same sweep
            budget = rows["on_demand_pool"].dollars if strategy == "ours" else None
            rows[strategy] = run_one(m, strategy, seed if search_seed is None else search_seed, budget)
        fastest = min(o.last_h for o in rows.values())
        cheapest = min(rows, key=lambda s: rows[s].dollars)
        results.append({"trace": name, "seconds": round(time.perf_counter() - t0, 1),
                        "budget_ours": round(rows["on_demand_pool"].dollars, 2),
                        "cheapest": cheapest, "ours_hours_vs_fastest": round(rows["ours"].last_h / fastest, 3),
                        "strategies": {s: o.row() for s, o in rows.items()}})
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "vastfleet-sweep-traces")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--search-seeds", type=int, default=0, help="also replay this many other searches")
    args = ap.parse_args()
    traces = markets(args.seed, args.data, args.out)
    results = bench(args.seed, traces)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        print(f"64 trials (TPE + ASHA, {WORK_H:g} work-hours each at most), pools of {PARALLEL}, ours max_parallel"
              f" {PARALLEL}. Each cell: dollars / hours to the last trial / hours to the best trial.")
        print("| trace | on-demand pool | greedy-spot pool | ours | ours vs fastest |")
        print("|---|---|---|---|---:|")
        for res in results:
            cells = [res["strategies"][s] for s in STRATEGIES]
            text = [f"{c['dollars']:.2f} / {c['hours_to_last']:.2f} / {c['hours_to_best']:.2f}" for c in cells]
            text[2] = f"**{text[2]}**"
            print(f"| {res['trace']} | {' | '.join(text)} | {res['ours_hours_vs_fastest']:.2f}x |")
    ok = all(r["cheapest"] == "ours" and r["ours_hours_vs_fastest"] <= 1.25 for r in results)
    if args.search_seeds:
        cases, held = 0, []
        for other in range(args.seed + 1, args.seed + 1 + args.search_seeds):
            for r in bench(args.seed, traces, other):
                cases += 1
                if r["cheapest"] == "ours" and r["ours_hours_vs_fastest"] <= 1.25:
                    held.append((r["trace"], other))
                else:
                    s = r["strategies"]
                    print(f"search seed {other}, {r['trace']}: cheapest {r['cheapest']}, ours ${s['ours']['dollars']}"
                          f" at {r['ours_hours_vs_fastest']}x the fastest's hours", file=sys.stderr)
        print(f"other searches: both checks held in {len(held)} of {cases} (trace, search seed) cases")
    if not ok:
        print("CHECK FAILED: ours must be the cheapest on every trace, within 1.25x the hours of the fastest",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
