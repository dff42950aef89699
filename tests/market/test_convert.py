"""OfferQuery -> vast's query dict, CreateRequest -> create arguments, vast rows -> our models."""

from __future__ import annotations

import pytest

from vastfleet.errors import BadInput
from vastfleet.market.convert import create_args, instance_from_row, offer_from_row, offer_search_args
from vastfleet.market.errors import MalformedAnswer
from vastfleet.spec.market import BidKind, CreateRequest, OfferQuery


def test_query_carries_every_filter_in_vast_units() -> None:
    q = OfferQuery(
        gpu_names=["RTX_4090", "A100 SXM4"],
        num_gpus=2,
        min_gpu_ram_gb=24,
        min_cuda=12.1,
        min_disk_gb=50,
        min_reliability=0.98,
        min_direct_ports=4,
        min_inet_down_mbps=300,
        max_dph=1.5,
        verified=True,
        geolocations=["US", "CA"],
        kind=BidKind.bid,
        order=[("dph_total", "asc"), ("reliability", "desc")],
        limit=20,
        disk_gb=40,
    )
    args = offer_search_args(q)
    f = args["query"]
    assert f["gpu_name"] == {"in": ["RTX 4090", "A100 SXM4"]}  # spaces, as vast spells them
    assert f["num_gpus"] == {"eq": 2}
    assert f["gpu_ram"] == {"gte": 24000.0}  # MB: GB x 1000
    assert f["cuda_max_good"] == {"gte": 12.1}
    assert f["disk_space"] == {"gte": 50}
    assert f["reliability"] == {"gte": 0.98}
    assert f["direct_port_count"] == {"gte": 4}
    assert f["inet_down"] == {"gte": 300}
    assert f["dph_total"] == {"lte": 1.5}
    assert f["geolocation"] == {"in": ["US", "CA"]}
    assert f["verified"] == {"eq": True}
    # the client's defaults, sent explicitly because we pass no_default=True
    assert f["external"] == {"eq": False} and f["rentable"] == {"eq": True} and f["rented"] == {"eq": False}
    assert args["offer_type"] == "bid"
    assert args["order"] == [["dph_total", "asc"], ["reliability", "desc"]]
    assert args["limit"] == 20 and args["storage"] == 40.0 and args["no_default"] is True


def test_minimal_query_leaves_unset_filters_out() -> None:
    args = offer_search_args(OfferQuery(gpu_names=["RTX 3090"], verified=None))
    f = args["query"]
    assert f["gpu_name"] == {"eq": "RTX 3090"}
    assert "verified" not in f and "gpu_ram" not in f and "dph_total" not in f
    assert args["offer_type"] == "on-demand"
    assert args["order"] == [["dph_total", "asc"]]


@pytest.mark.parametrize("order", [[("price; drop", "asc")], [("dph_total", "sideways")]])
def test_bad_order_is_refused(order: list[tuple[str, str]]) -> None:
    with pytest.raises(BadInput):
        offer_search_args(OfferQuery(order=order))


def test_create_args_map_bid_ports_env_onstart() -> None:
    req = CreateRequest(
        image="python:3.11",
        disk_gb=32,
        label="vf:job1:3",
        onstart="bash /onstart.sh",
        env={"VF_JOB": "job1"},
        ports=[8080, 9000],
        bid=0.25,
    )
    args = create_args(req)
    assert args["price"] == 0.25
    assert args["env"] == {"VF_JOB": "job1", "-p 8080:8080": "1", "-p 9000:9000": "1"}
    assert args["onstart_cmd"] == "bash /onstart.sh" and args["label"] == "vf:job1:3"
    assert args["disk"] == 32.0 and args["image"] == "python:3.11" and args["runtype"] == "args"
    assert create_args(req.model_copy(update={"bid": None}))["price"] is None  # on demand


def test_create_args_reject_bad_port() -> None:
    with pytest.raises(BadInput):
        create_args(CreateRequest(image="x", disk_gb=1, label="l", onstart="", ports=[70000]))


OFFER_ROW = {
    "id": 42,
    "ask_contract_id": 42,
    "machine_id": 7,
    "host_id": 3,
    "gpu_name": "RTX 4090",
    "num_gpus": 2,
    "gpu_ram": 24564,
    "cuda_max_good": 12.4,
    "dlperf": 150.5,
    "dph_total": 0.81,
    "min_bid": 0.3,
    "storage_cost": 0.15,
    "inet_up": 400.0,
    "inet_down": 800.0,
    "inet_up_cost": 0.01,
    "inet_down_cost": 0.02,
    "disk_space": 512.0,
    "reliability2": 0.995,
    "verified": True,
    "direct_port_count": 20,
    "geolocation": "Sweden, SE",
    "rentable": True,
}


def test_offer_row_converts_units() -> None:
    o = offer_from_row(OFFER_ROW, is_bid=True)
    assert (o.id, o.machine_id, o.host_id, o.num_gpus) == (42, 7, 3, 2)
    assert o.gpu_ram_gb == pytest.approx(24.564)
    assert o.reliability == 0.995  # reliability2 when reliability is absent
    assert o.min_bid == 0.3 and o.dph_total == 0.81 and o.is_bid
    assert o.geolocation == "Sweden, SE" and o.direct_port_count == 20


def test_offer_row_with_nulls_uses_defaults_and_min_bid_falls_back_to_price() -> None:
    row = dict(OFFER_ROW, min_bid=None, storage_cost=None, geolocation=None, inet_down=None)
    o = offer_from_row(row, is_bid=False)
    assert o.min_bid == 0.81 and o.storage_cost == 0.0 and o.geolocation == "" and o.inet_down == 0.0


@pytest.mark.parametrize(
    "row",
    [
        ["not", "an", "object"],
        {"machine_id": 1, "host_id": 1},
        dict(OFFER_ROW, dph_total="cheap"),
        dict(OFFER_ROW, id=None, ask_contract_id=None),
    ],
)
def test_malformed_offer_rows_raise(row: object) -> None:
    with pytest.raises(MalformedAnswer):
        offer_from_row(row, is_bid=False)


def test_instance_row_converts() -> None:
    row = {
        "id": 9001,
        "label": "vf:j:1",
        "machine_id": 7,
        "host_id": 3,
        "gpu_name": "RTX 4090",
        "num_gpus": 1,
        "actual_status": "running",
        "intended_status": "running",
        "cur_state": "running",
        "next_state": "running",
        "status_msg": "ok",
        "start_date": 1700000000.5,
        "dph_total": 0.4,
        "is_bid": True,
        "min_bid": 0.2,
        "disk_space": 32,
        "public_ipaddr": "1.2.3.4",
        "ports": {"8080/tcp": [{"HostIp": "1.2.3.4", "HostPort": "33526"}]},
        "image_uuid": "python:3.11",
        "reliability2": 0.97,
        "extra_env": [["A", "1"]],
    }
    inst = instance_from_row(row)
    assert inst.id == 9001 and inst.label == "vf:j:1" and inst.is_bid and inst.min_bid == 0.2
    assert inst.ports["8080/tcp"][0]["HostPort"] == "33526"
    assert inst.start_date == 1700000000.5 and inst.reliability == 0.97
    bare = instance_from_row({"id": 5, "ports": None, "start_date": None, "actual_status": None})
    assert bare.ports == {} and bare.start_date is None and bare.actual_status is None
    with pytest.raises(MalformedAnswer):
        instance_from_row({"label": "no id"})
