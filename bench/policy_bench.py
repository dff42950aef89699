"""The policy benchmark over the public traces and three seeded vast-like volatilities.

Run: .venv/bin/python bench/policy_bench.py [--seed 1] [--out bench/traces] [--json]
Converts the public traces (../shared/data/traces or --data), generates the seeded traces and workloads,
writes them under --out (small files; regenerated identically from the seed), replays every policy and
prints one markdown table (the one in docs/bench.md).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from vastfleet.sim.replay import Options, load_market, run_bench, write_events, write_workload
from vastfleet.sim.replay.convert import convert_h100, convert_v100
from vastfleet.sim.replay.generate import make_trace, make_workload

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "traces" / "skynomad-artifact"


def cases(data: Path, out: Path, seed: int) -> list[tuple[str, Path, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    made = []
    specs = [("aws-v100", lambda: convert_v100(data), 40, (4.0, 36.0)),
             ("gcp-h100x8", lambda: convert_h100(data), 30, (2.0, 24.0))]
    for vol in ("low", "mid", "high"):
        specs.append((f"vast-{vol}", lambda v=vol: make_trace(seed, 168.0, 60, v), 30, (2.0, 24.0)))
    for name, build, jobs, hours in specs:
        trace, wl = out / f"{name}.jsonl", out / f"{name}.workload.jsonl"
        if name.startswith("vast") or data.is_dir():
            meta, events = build()
            write_events(trace, meta, events)
        elif not trace.exists():
            print(f"skipping {name}: no public data at {data}")
            continue
        write_workload(wl, make_workload(load_market(trace), seed, jobs, hours))
        made.append((name, trace, wl))
    return made


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "traces")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = []
    for name, trace, wl in cases(args.data, args.out, args.seed):
        t0 = time.perf_counter()
        res = run_bench(load_market(trace), __import__("vastfleet.sim.replay", fromlist=["x"]).load_workload(wl),
                        Options())
        res["trace"], res["seconds"] = name, round(time.perf_counter() - t0, 1)
        results.append(res)
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return
    print("| trace | policy | dollars | ratio to optimum | vs per-job bound | p50 job | p90 job | misses | "
          "interruptions | GPU-h lost |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for res in results:
        for r in res["policies"]:
            print(f"| {res['trace']} | {r['policy']} | {r['dollars']:.2f} | {r['ratio_to_optimum']:.3f} | "
                  f"{r['ratio_to_per_job_bound']:.3f} | {r['p50_job_ratio']:.3f} | {r['p90_job_ratio']:.3f} | "
                  f"{r['deadline_misses']} | {r['interruptions']} | {r['gpu_hours_lost']:.1f} |")
    print()
    ckpt_h = Options().checkpoint_cost_s / 3600.0
    for res in results:
        opt = res["policies"][-1]
        ours = next(r for r in res["policies"] if r["policy"] == "ours")
        # Young/Daly's floor at the hazard ours met on its bids: what checkpoints and lost work cost any
        # online policy at zero notice, and the bound pays none of it
        hazard = ours["interruptions"] / ours["bid_hours"] if ours.get("bid_hours") else 0.0
        floor = math.sqrt(2.0 * ckpt_h * hazard)
        print(f"{res['trace']}: optimum {opt['dollars']:.2f} by {opt['bound']}, per-job sum {opt['per_job_bound']:.2f} "
              f"({(opt['ratio_to_per_job_bound'] - 1) * 100:+.1f}%), {opt['contended_cells']} contended cells, "
              f"{res['seconds']} s; ours met {hazard:.3f} interruptions per bid-hour: Young/Daly floor F = "
              f"{floor:.3f}, ratio {ours['ratio_to_optimum']:.3f} against 1 + F + 0.04 = {1 + floor + 0.04:.3f}")


if __name__ == "__main__":
    main()
