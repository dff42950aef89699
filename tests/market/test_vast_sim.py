"""`VastMarketplace` on the real `vastai` client against the simulator's HTTP server."""

from __future__ import annotations

import pytest

from tests.helpers import wait_for
from tests.market.conftest import CallLog
from tests.sim_fixtures import SimHandle
from vastfleet.errors import InstanceGone, MarketAuthError, MarketError, MarketUnavailable, OfferUnavailable
from vastfleet.market.retry import RetryPolicy
from vastfleet.market.vast import VastMarketplace
from vastfleet.spec.market import BidKind, CreateRequest, Instance, Offer, OfferQuery


def request(label: str = "vf:job-1:1", bid: float | None = None, onstart: str = "sleep 60") -> CreateRequest:
    return CreateRequest(
        image="python:3.11-slim",
        disk_gb=16,
        label=label,
        onstart=onstart,
        env={"VF_JOB": "job-1"},
        ports=[8080],
        bid=bid,
    )


def cheapest(market: VastMarketplace, kind: BidKind = BidKind.on_demand, n: int = 1) -> list[Offer]:
    offers = market.search_offers(OfferQuery(kind=kind, limit=n, verified=None))
    assert len(offers) == n
    return offers


def test_search_filters_and_order_hold_on_every_offer(market: VastMarketplace) -> None:
    q = OfferQuery(
        gpu_names=["RTX 4090", "RTX_3090"],
        min_gpu_ram_gb=20,
        min_cuda=12.0,
        min_reliability=0.9,
        min_direct_ports=2,
        min_inet_down_mbps=50,
        max_dph=3.0,
        verified=True,
        geolocations=["US", "CA"],
        order=[("dph_total", "asc")],
        limit=50,
    )
    offers = market.search_offers(q)
    assert offers, "the seeded market has 4090/3090 offers in North America"
    for o in offers:
        assert o.gpu_name in ("RTX 4090", "RTX 3090")
        assert o.gpu_ram_gb >= 20 and o.cuda_max_good >= 12.0 and o.reliability >= 0.9
        assert o.direct_port_count >= 2 and o.inet_down >= 50 and o.dph_total <= 3.0 and o.verified
        assert o.geolocation.endswith((", US", ", CA")) and not o.is_bid
    prices = [o.dph_total for o in offers]
    assert prices == sorted(prices)

    by_rel = market.search_offers(OfferQuery(kind=BidKind.bid, order=[("reliability", "desc")], limit=10))
    assert len(by_rel) == 10 and all(o.is_bid for o in by_rel)
    assert [o.reliability for o in by_rel] == sorted((o.reliability for o in by_rel), reverse=True)
    assert market.search_offers(OfferQuery(gpu_names=["No Such GPU"])) == []


def test_create_on_demand_and_bid_then_get(vsim: SimHandle, market: VastMarketplace) -> None:
    on_demand, interruptible = cheapest(market, n=2)
    iid = market.create_instance(on_demand.id, request("vf:job-1:1"))
    inst = market.get_instance(iid)
    assert inst is not None and inst.id == iid and inst.label == "vf:job-1:1" and not inst.is_bid
    assert "8080/tcp" in inst.ports  # the -p 8080:8080 env entry mapped the port
    truth = vsim.admin.instance(iid)
    assert truth["is_bid"] is False and truth["label"] == "vf:job-1:1"

    bid = round(max(interruptible.min_bid, 0.01) * 1.5, 4)
    bid_id = market.create_instance(interruptible.id, request("vf:job-2:1", bid=bid))
    got = market.get_instance(bid_id)
    assert got is not None and got.is_bid
    assert vsim.admin.instance(bid_id)["price"] == pytest.approx(bid)

    with pytest.raises(OfferUnavailable):  # rented: the offer is gone
        market.create_instance(on_demand.id, request("vf:job-3:1"))
    assert market.get_instance(987654321) is None


def test_list_follows_pages_and_lifecycle_calls(vsim: SimHandle, calls: CallLog) -> None:
    market = VastMarketplace(
        vsim.api_key, vsim.url, retry=RetryPolicy.fast(), page_size=2, on_call=lambda *c: calls.append(c)
    )
    offers = cheapest(market, n=5)
    ids = [market.create_instance(o.id, request(f"vf:j{i}:1")) for i, o in enumerate(offers)]
    listed = market.list_instances()
    assert sorted(i.id for i in listed) == sorted(ids)
    assert calls.codes("list_instances") == ["ok", "ok", "ok"]  # 5 rows, 2 a page
    one = market.list_instances(label="vf:j3:1")  # what a create looks for before it rents: one request
    assert [i.id for i in one] == [ids[3]] and calls.codes("list_instances") == ["ok"] * 4

    market.stop_instance(ids[0])
    stopped = market.get_instance(ids[0])
    assert stopped is not None and stopped.intended_status == "stopped" and stopped.actual_status == "stopped"
    market.start_instance(ids[0])

    def running() -> Instance | None:
        inst = market.get_instance(ids[0])
        return inst if inst is not None and inst.actual_status == "running" else None

    restarted = wait_for(running, timeout=10, what="restart")
    assert restarted is not None and restarted.intended_status == "running"

    market.destroy_instance(ids[1])
    market.destroy_instance(ids[1])  # already gone: still success
    assert market.get_instance(ids[1]) is None
    assert ids[1] not in {i.id for i in market.list_instances()}
    assert calls.codes("destroy_instance") == ["ok", "404"]
    with pytest.raises(InstanceGone):
        market.stop_instance(ids[1])


def test_change_bid_logs_balance_cloud_copy(vsim: SimHandle, market: VastMarketplace) -> None:
    offer = cheapest(market, kind=BidKind.bid)[0]
    iid = market.create_instance(
        offer.id, request(bid=round(offer.min_bid * 2, 4) + 0.01, onstart="echo hello-from-onstart; sleep 60")
    )
    market.change_bid(iid, 3.25)
    assert vsim.admin.instance(iid)["price"] == pytest.approx(3.25)

    text = wait_for(lambda: market.request_logs(iid, tail=50), timeout=10, what="logs")
    assert "hello-from-onstart" in text

    balance = market.balance()
    assert balance == pytest.approx(vsim.admin.ledger()["balance"], abs=0.5)
    assert 990.0 < balance <= 1000.0  # the starting credit less what the rentals have cost so far

    (vsim.sandbox(iid) / "ckpt").mkdir(parents=True, exist_ok=True)
    (vsim.sandbox(iid) / "ckpt" / "state.bin").write_bytes(b"weights")
    market.cloud_copy(iid, "/workspace/ckpt", "/salvage/ckpt", "1001", to_cloud=True)
    copied = list(vsim.cloud_dir(1001).rglob("state.bin"))
    assert copied and copied[0].read_bytes() == b"weights"

    od = market.create_instance(cheapest(market)[0].id, request("vf:od:1"))
    with pytest.raises(MarketError, match="not_interruptible|on demand"):
        market.change_bid(od, 1.0)


def test_wrong_key_is_an_auth_error_without_the_key(vsim: SimHandle) -> None:
    wrong = "wrong-key-5f3c9a1d7e"
    market = VastMarketplace(wrong, vsim.url, retry=RetryPolicy.fast())
    for call in (market.balance, market.list_instances, lambda: market.search_offers(OfferQuery())):
        with pytest.raises(MarketAuthError) as info:
            call()
        assert wrong not in str(info.value) and wrong not in repr(info.value.context)
        assert "401" in str(info.value)
    assert wrong not in repr(market)


def test_transient_faults_are_retried(vsim: SimHandle, market: VastMarketplace, calls: CallLog) -> None:
    vsim.admin.fault(503, count=2, path="/api/v0/users/current")
    assert market.balance() > 0
    assert calls.codes("balance") == ["503", "503", "ok"]

    vsim.admin.fault(429, count=1, path="/api/v1/instances", text=True)  # vast's 429s are sometimes text
    assert market.list_instances() == []
    assert calls.codes("list_instances") == ["429", "ok"]


def test_persistent_faults_become_market_unavailable(
    vsim: SimHandle, market: VastMarketplace, calls: CallLog
) -> None:
    vsim.admin.fault(429, count=50, path="/api/v0/bundles")
    with pytest.raises(MarketUnavailable, match="429"):
        market.search_offers(OfferQuery())
    assert calls.codes("search_offers") == ["429"] * 3  # our 3 attempts; the client itself tries once each
    assert (
        vsim.admin.requests()["counts"]["POST /api/v0/bundles/"] == 3
    )  # no hidden repeats inside the client
    vsim.admin.clear_faults()

    vsim.admin.fault(500, count=50, path="/api/v1/instances")
    with pytest.raises(MarketUnavailable):  # never [] for a listing that failed
        market.list_instances()
    vsim.admin.clear_faults()


def test_create_is_not_repeated_after_a_server_error(
    vsim: SimHandle, market: VastMarketplace, calls: CallLog
) -> None:
    offer = cheapest(market)[0]
    vsim.admin.fault(502, count=1, path="/api/v0/asks", method="PUT")
    with pytest.raises(MarketUnavailable):
        market.create_instance(offer.id, request())
    assert calls.codes("create_instance") == ["502"]  # a repeat could rent twice
    log = vsim.admin.requests()["log"]
    creates = [r for r in log if r["method"] == "PUT" and r["path"].startswith("/api/v0/asks/")]
    assert len(creates) == 1
    vsim.admin.fault(429, count=1, path="/api/v0/asks", method="PUT")
    iid = market.create_instance(offer.id, request())  # a 429 was not acted on: safe to repeat
    assert calls.codes("create_instance") == ["502", "429", "ok"] and market.get_instance(iid) is not None


def test_a_create_answered_too_late_is_not_repeated_and_is_found_by_its_label(
    vsim: SimHandle, calls: CallLog
) -> None:
    """vast's API can act on a call whose answer the client gave up on: a slow answer (the simulator holds it
    past the client's timeout, then serves it) reads as a timeout, is not tried again, and the rental it made
    shows in the listing under its label (what the create action adopts)."""
    slow = VastMarketplace(vsim.api_key, vsim.url, retry=RetryPolicy.fast(attempts=3), timeout_s=0.3,
                           on_call=lambda *c: calls.append(c))
    offer = cheapest(slow)[0]
    vsim.admin.fault(0, count=1, path="/api/v0/asks", method="PUT", delay=1.5)
    with pytest.raises(MarketUnavailable):
        slow.create_instance(offer.id, request(label="vf:slow:1"))
    assert calls.codes("create_instance") == ["timeout"]
    found = wait_for(lambda: slow.list_instances(label="vf:slow:1"), 10, what="the held create to be served")
    assert len(found) == 1
    creates = [r for r in vsim.admin.requests()["log"] if r["method"] == "PUT" and r["path"].startswith("/api/v0/asks/")]
    assert len(creates) == 1
    vsim.admin.fault(503, count=1, path="/api/v1/instances", delay=0.1)  # held, then refused
    assert slow.list_instances() != []
    assert calls.codes("list_instances")[-2:] == ["503", "ok"]


def test_the_adapter_never_prints(
    vsim: SimHandle, market: VastMarketplace, capfd: pytest.CaptureFixture[str]
) -> None:
    offer = cheapest(market)[0]
    iid = market.create_instance(offer.id, request())
    market.list_instances()
    market.get_instance(iid)
    market.destroy_instance(iid)
    market.destroy_instance(iid)
    vsim.admin.fault(503, count=10, path="/api/v0/users")
    with pytest.raises(MarketUnavailable):
        market.balance()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
