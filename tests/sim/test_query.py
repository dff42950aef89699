"""vast's query language evaluated by the simulator, case by case (values as the client sends them)."""

from __future__ import annotations

from typing import Any

import pytest

from vastfleet.sim.entities import SimError
from vastfleet.sim.query import matches, order_rows

ROW: dict[str, Any] = {
    "gpu_name": "RTX 4090",
    "num_gpus": 2,
    "gpu_ram": 24000.0,
    "verified": True,
    "rentable": True,
    "rented": False,
    "reliability": 0.981,
    "geolocation": "Quebec, CA",
    "driver_version": "550.54.15",
    "dph_total": 0.81,
    "cuda_max_good": 12.4,
    "label": None,
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"gpu_name": {"eq": "RTX 4090"}}, True),
        ({"gpu_name": {"eq": "rtx 4090"}}, True),
        ({"gpu_name": {"in": ["RTX 3090", "RTX 4090"]}}, True),
        ({"gpu_name": {"notin": ["RTX 4090"]}}, False),
        ({"num_gpus": {"eq": "2"}}, True),
        ({"num_gpus": {"gte": "3"}}, False),
        ({"gpu_ram": {"gte": 24000.0}}, True),
        ({"verified": {"eq": True}}, True),
        ({"verified": {"eq": "false"}}, False),
        ({"rented": {"eq": False}, "rentable": {"eq": "true"}}, True),
        ({"reliability": {"gt": "0.98"}}, True),
        ({"reliability": {"gt": "0.99"}}, False),
        ({"geolocation": {"eq": "CA"}}, True),
        ({"geolocation": {"in": ["US", "CA"]}}, True),
        ({"geolocation": {"notin": ["CA"]}}, False),
        ({"driver_version": {"gte": 535086005}}, True),
        ({"driver_version": {"gte": "560.0.0"}}, False),
        ({"cuda_max_good": {"gte": "12.4", "lt": "12.8"}}, True),
        ({"label": {"eq": None}}, True),
        ({"label": {"in": [None, "a"]}}, True),
        ({"dph_total": {"lte": "0.8"}}, False),
        ({"order": [["dph_total", "asc"]], "type": "bid", "limit": 3}, True),
    ],
)
def test_filters(query: dict[str, Any], expected: bool) -> None:
    assert matches(ROW, query) is expected


def test_bad_queries_are_refused() -> None:
    with pytest.raises(SimError) as err:
        matches(ROW, {"gpu_nme": {"eq": "x"}}, known=ROW)
    assert err.value.status == 400 and "gpu_nme" in err.value.msg
    with pytest.raises(SimError):
        matches(ROW, {"num_gpus": {"like": "2"}})
    with pytest.raises(SimError):
        matches(ROW, {"num_gpus": {"gt": "many"}})


def test_order_by_several_keys_with_missing_values_last() -> None:
    rows = [
        {"id": 1, "a": 2, "b": 1.0},
        {"id": 2, "a": 1, "b": None},
        {"id": 3, "a": 2, "b": 3.0},
        {"id": 4, "a": 1, "b": 0.5},
    ]
    assert [r["id"] for r in order_rows(rows, [["a", "desc"], ["b", "asc"]])] == [1, 3, 4, 2]
    assert [r["id"] for r in order_rows(rows, [{"col": "b", "dir": "desc"}])] == [3, 1, 4, 2]
