"""The loop's unit tests decide with doubles: any attempt to build the real marketplace adapter fails."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_real_marketplace(monkeypatch: pytest.MonkeyPatch) -> None:
    from vastfleet.market import vast

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a loop unit test must not build the real VastMarketplace (use a double)")

    monkeypatch.setattr(vast.VastMarketplace, "__init__", refuse)
