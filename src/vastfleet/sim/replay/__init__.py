"""The discrete-event replay of a market trace in virtual time, for policy benchmarks (`vastfleet bench`).

trace: the JSON Lines market format; workload: jobs; engine: the replay; baselines and ours: policies;
optimum: the omniscient lower bound; metrics: figures; generate/convert: seeded and public traces.
Imported only by the CLI wiring, the benchmark scripts and tests.
"""

from vastfleet.sim.replay.engine import Options, Replay
from vastfleet.sim.replay.metrics import POLICIES, make_policy, run_bench
from vastfleet.sim.replay.optimum import job_bound, optimum
from vastfleet.sim.replay.trace import Market, compile_market, load_market, parse_lines, write_events
from vastfleet.sim.replay.workload import WorkJob, load_workload, parse_workload, write_workload

__all__ = ["POLICIES", "Market", "Options", "Replay", "WorkJob", "compile_market", "job_bound", "load_market",
           "load_workload", "make_policy", "optimum", "parse_lines", "parse_workload", "run_bench", "write_events",
           "write_workload"]
