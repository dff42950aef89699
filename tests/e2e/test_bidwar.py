"""40 jobs on one simulated market, quiet and lively: the fleet never outbids itself and its bids stay bounded.

Runs `bench/bidwar.py`'s scenario (the whole control plane against the simulator's HTTP server, real agents
in real process groups, a job that only sleeps) and checks its figures: never two of our instances wanting
one GPU, no bid above min(on-demand price, job cap, fleet ceiling), at least 90% of our rentals holding their
GPUs once placements settle, and the ledger's spend within the expected cost the placements announced.
Before the fleet guard, the quiet case had up to 22 of our instances stacked on shared GPUs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bidwar", ROOT / "bench" / "bidwar.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bidwar"] = module  # its market runs in a spawned process, which imports it by this name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("lively", [False, True], ids=["quiet", "lively"])
def test_forty_jobs_never_share_a_gpu_and_bid_within_bounds(tmp_path: Path, lively: bool) -> None:
    out = _bench().run(40, seconds=40.0, job_s=15.0, lively=lively, workdir=tmp_path)
    assert out["shared_gpu"] == 0, out
    assert 0 < out["max_bid_over_bound"] <= 1.0, out
    assert out["running_share"] >= 0.9, out
    assert out["spend_over_expected"] is not None and out["spend_over_expected"] <= 1.0, out
    assert out["states"].get("SUCCEEDED", 0) >= 36, out
