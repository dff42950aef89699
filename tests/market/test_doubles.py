"""The recording double other parts' tests use: it records, forbids, and behaves like the protocol."""

from __future__ import annotations

import pytest

from tests.market_doubles import ForbiddenMarketCall, RecordingMarketplace, make_offer
from vastfleet.errors import MarketUnavailable, OfferUnavailable
from vastfleet.market.protocol import Marketplace
from vastfleet.spec.market import CreateRequest, OfferQuery


def test_double_records_and_forbids() -> None:
    market = RecordingMarketplace(offers=[make_offer(id=1, dph_total=0.5), make_offer(id=2, dph_total=0.3)])
    assert isinstance(market, Marketplace)
    offers = market.search_offers(OfferQuery(max_dph=0.4))
    assert [o.id for o in offers] == [2]
    req = CreateRequest(image="x", disk_gb=10, label="vf:j:1", onstart="true", bid=0.25)
    iid = market.create_instance(2, req)
    inst = market.get_instance(iid)
    assert inst is not None and inst.label == "vf:j:1" and inst.is_bid
    with pytest.raises(OfferUnavailable):
        market.create_instance(2, req)
    market.destroy_instance(iid)
    market.destroy_instance(iid)
    assert market.methods_called() == [
        "search_offers",
        "create_instance",
        "get_instance",
        "create_instance",
        "destroy_instance",
        "destroy_instance",
    ]
    market.reset_calls()
    with market.forbidding(), pytest.raises(ForbiddenMarketCall):
        market.list_instances()
    assert market.calls == []
    market.fail_next("balance", MarketUnavailable("rate limited"))
    with pytest.raises(MarketUnavailable):
        market.balance()
    assert market.balance() == 100.0
