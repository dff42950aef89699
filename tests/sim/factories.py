"""Small builders for simulator tests: a market on a fake clock, and create bodies."""

from __future__ import annotations

from typing import Any

from tests.helpers import FakeClock
from vastfleet.sim.entities import Knobs
from vastfleet.sim.model import Market


class RecordingRunner:
    """Remembers what the market asked of the process runner."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def start(self, inst: Any, machine: Any) -> None:
        self.calls.append(("start", inst.id))

    def kill(self, instance_id: int) -> None:
        self.calls.append(("kill", instance_id))

    def remove(self, instance_id: int) -> None:
        self.calls.append(("remove", instance_id))


def make_market(
    seed: int = 0, hosts: int = 40, quirks: dict[str, bool] | None = None, **knobs: float
) -> tuple[Market, FakeClock, RecordingRunner]:
    clock, runner = FakeClock(), RecordingRunner()
    k = Knobs()
    k.update(knobs)
    return Market(seed, hosts, clock=clock, runner=runner, knobs=k, quirks=quirks), clock, runner


def body(price: float | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"image": "pytorch/pytorch", "disk": 20, "onstart": "true", "label": "t", "env": {}}
    if price is not None:
        out["price"] = price
    out.update(extra)
    return out


def offer_on(market: Market, n: int = 1, min_gpus: int = 1, bid: bool = False) -> tuple[int, Any, int, float]:
    """The first open offer of n GPUs on a machine that has at least min_gpus."""
    for ask, machine, count, min_bid in market.open_offers(bid=bid):
        if count == n and machine.num_gpus >= min_gpus:
            return ask, machine, count, min_bid
    raise AssertionError(f"no open offer of {n} GPUs on a machine of >= {min_gpus}")
