"""bench/agents.py, small: agents claim through the real agent API, heartbeat and commit checkpoints (presign,
PUT, commit) against two `vastfleet server --no-scheduler` processes on one Redis while users submit and list;
every call answers, and the figures it prints are all there. (Its latency figures are the benchmark's, not
asserted: wall-clock times depend on the machine.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _bench() -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("agents_bench", ROOT / "bench" / "agents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["agents_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_agents_heartbeat_and_commit_against_two_api_processes(tmp_path: Path) -> None:
    bench = _bench()
    out = bench.Load(agents=60, seconds=8.0, interval=1.0, servers=2, checkpoint_every=2.0, users=2,
                     workdir=tmp_path).run()
    assert out["errors"] == 0, out["error_kinds"]
    assert out["heartbeats"] >= 60 * 5, out  # every agent beat through the measured part of the run
    assert out["commits"] >= 30 and out["user_lists"] >= 4 and out["user_submits"] >= 2, out
    assert out["heartbeat_p50_ms"] is not None and out["heartbeat_p99_ms"] >= out["heartbeat_p50_ms"]
    rss = out["server_rss_mib"]
    assert len(rss["started"]) == len(rss["end"]) == 2 and all(v and v > 10 for v in rss["end"]), rss
    assert "heartbeats" in bench.report(out)
