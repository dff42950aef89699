"""Search, property-based: every returned offer meets every filter, every offer left out fails one, and the
order holds (checked against plain Python comparisons, not the simulator's own query code)."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vastfleet.sim.server import search
from vastfleet.sim.simulator import Simulator

NUMERIC = {
    "num_gpus": [1, 2, 4, 8],
    "gpu_ram": [12000.0, 24000.0, 48000.0, 80000.0],
    "dph_total": [0.2, 0.5, 1.0, 3.0],
    "reliability": [0.9, 0.95, 0.98],
    "cuda_max_good": [12.2, 12.4, 12.8],
    "direct_port_count": [1, 50],
    "inet_down": [500.0, 2000.0],
    "disk_space": [250.0, 1000.0],
}
OPS = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "eq": operator.eq,
    "neq": operator.ne,
}
GPUS = ["RTX 4090", "RTX 3090", "A100 SXM4", "H100 SXM", "L40S"]


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = Simulator(Path(tmp_path_factory.mktemp("simprop")), seed=13, hosts=60)
    yield sim
    sim.close()


numeric_filter = st.sampled_from(sorted(NUMERIC)).flatmap(
    lambda f: st.tuples(st.just(f), st.sampled_from(sorted(OPS)), st.sampled_from(NUMERIC[f]))
)


@settings(max_examples=60, deadline=None)
@given(
    filters=st.lists(numeric_filter, max_size=3, unique_by=lambda t: t[0]),
    gpus=st.one_of(st.none(), st.lists(st.sampled_from(GPUS), min_size=1, max_size=3, unique=True)),
    verified=st.sampled_from([None, True, False]),
    kind=st.sampled_from(["on-demand", "bid"]),
    order=st.sampled_from(
        [[["dph_total", "asc"]], [["dlperf", "desc"], ["id", "asc"]], [["reliability", "desc"]]]
    ),
)
def test_search_is_exact(
    simulator: Simulator,
    filters: list[tuple[str, str, Any]],
    gpus: list[str] | None,
    verified: bool | None,
    kind: str,
    order: list[list[str]],
) -> None:
    query: dict[str, Any] = {f: {op: str(v)} for f, op, v in filters}  # the client sends strings
    if gpus:
        query["gpu_name"] = {"in": list(gpus)}
    if verified is not None:
        query["verified"] = {"eq": verified}
    everything = search(simulator, {"type": kind, "order": [["id", "asc"]]})["offers"]
    found = search(simulator, {**query, "type": kind, "order": order})["offers"]

    def ok(offer: dict[str, Any]) -> bool:
        if gpus and offer["gpu_name"] not in gpus:
            return False
        if verified is not None and offer["verified"] is not verified:
            return False
        return all(OPS[op](offer[f], v) for f, op, v in filters)

    assert sorted(o["id"] for o in found) == sorted(o["id"] for o in everything if ok(o))
    key_rows = [tuple(-o[f] if d == "desc" else o[f] for f, d in order) for o in found]
    assert key_rows == sorted(key_rows)
