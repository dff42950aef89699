"""Fixtures of the market adapter's tests: a simulator and a `VastMarketplace` pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim_fixtures import SimHandle, running_sim
from vastfleet.market.retry import RetryPolicy
from vastfleet.market.vast import VastMarketplace


class CallLog(list[tuple[str, str, float]]):
    """What `on_call` saw: (operation, code, seconds) per request."""

    def codes(self, operation: str) -> list[str]:
        return [code for op, code, _ in self if op == operation]


@pytest.fixture
def vsim(tmp_path: Path) -> Iterator[SimHandle]:
    with running_sim(tmp_path, seed=7) as handle:
        yield handle


@pytest.fixture
def calls() -> CallLog:
    return CallLog()


@pytest.fixture
def market(vsim: SimHandle, calls: CallLog) -> VastMarketplace:
    return VastMarketplace(
        vsim.api_key, vsim.url, retry=RetryPolicy.fast(attempts=3), on_call=lambda *c: calls.append(c)
    )
