"""The chaos run, short (bench/chaos.py, about 2.5 minutes): the whole control plane as an operator runs it (two
`vastfleet server` processes, a real redis-server with AOF, the simulator, real agents) under more than 100
seeded faults of every kind; then every job has finished with its steps counted once, nothing of ours is left
in the marketplace, nothing was destroyed before a checkpoint it was told of was copied off, no attempt was
ever rented twice, and the spend vastfleet attributed equals the simulator's ledger within a cent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
def test_a_short_chaos_run_loses_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    chaos = _bench()
    out = chaos.Chaos(minutes=2.5, seed=11, faults_per_minute=80.0, workdir=tmp_path).run()
    d = out["details"]
    assert sum(out["faults"].values()) >= 100 and set(out["faults"]) == set(chaos.KINDS), out["faults"]
    # the run did real work through real faults (zeros below from a run that did nothing would prove nothing)
    assert d["states"].get("SUCCEEDED", 0) >= 5 and d["preemptions"] >= 2 and d["server_starts"] >= 4, d
    assert out["jobs_lost"] == 0, d["lost"]
    assert out["steps_lost"] == 0 and out["steps_duplicated"] == 0, out
    assert out["instances_left"] == 0, d["left"]
    assert out["unverified_destroys"] == 0, d["unverified"]
    assert out["double_rentals"] == 0, d["doubles"]
    assert abs(out["ledger_gap_usd"]) <= 0.01, (out["ledger_gap_usd"], d["ledger_gaps"])
    assert chaos.passed(out)
