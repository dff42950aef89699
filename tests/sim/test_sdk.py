"""The real vastai SDK (`vastai.VastAI`) against the simulator's HTTP server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import requests
import vastai

from tests.helpers import wait_for
from tests.sim_fixtures import SimHandle, running_sim

QUERY = "gpu_name=RTX_4090 num_gpus=1 verified=true rentable=true direct_port_count>=1"


@pytest.fixture
def vast(sim: SimHandle) -> vastai.VastAI:
    return vastai.VastAI(api_key=sim.api_key, server_url=sim.url)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.mark.parametrize(
    ("query", "order", "check"),
    [
        (
            QUERY,
            "dph_total",
            lambda o: (
                o["gpu_name"] == "RTX 4090"
                and o["num_gpus"] == 1
                and o["verified"]
                and o["rentable"]
                and o["direct_port_count"] >= 1
            ),
        ),
        (
            "reliability>0.97 gpu_ram>=40 num_gpus>=2",
            "num_gpus-,dph_total",
            lambda o: o["reliability"] > 0.97 and o["gpu_ram"] >= 40_000 and o["num_gpus"] >= 2,
        ),
        (
            "geolocation in [US,CA] cuda_vers>=12.4",
            "dlperf-",
            lambda o: o["geolocation"][-2:] in ("US", "CA") and o["cuda_max_good"] >= 12.4,
        ),
        (
            "gpu_name in [RTX_3090,A100_SXM4] dph<2 driver_version>=550.0.0",
            "dph_total",
            lambda o: (
                o["gpu_name"] in ("RTX 3090", "A100 SXM4")
                and o["dph_total"] < 2
                and tuple(int(x) for x in o["driver_version"].split(".")) >= (550, 0, 0)
            ),
        ),
        (
            "verified=any geolocation notin [CN,VN] disk_space>=500",
            "reliability-",
            lambda o: o["geolocation"][-2:] not in ("CN", "VN") and o["disk_space"] >= 500,
        ),
    ],
)
def test_search_filters_and_ordering_hold_on_every_offer(
    vast: vastai.VastAI, query: str, order: str, check: object
) -> None:
    offers = vast.search_offers(query=query, order=order)
    assert offers, query
    assert all(check(o) for o in offers)  # type: ignore[operator]
    keys = [(f.rstrip("-"), f.endswith("-")) for f in order.split(",")]
    rows = [tuple(-o[k] if desc else o[k] for k, desc in keys) for o in offers]
    assert rows == sorted(rows)


def test_search_types_limit_and_the_new_endpoint(vast: vastai.VastAI) -> None:
    on_demand = vast.search_offers(query="gpu_name=RTX_4090", order="dph_total", storage=20)
    bids = vast.search_offers(query="gpu_name=RTX_4090", order="dph_total", type="bid", storage=20)
    assert all(not o["is_bid"] for o in on_demand) and all(o["is_bid"] for o in bids)
    by_id = {o["id"]: o for o in on_demand}
    for o in bids:
        assert o["dph_total"] < by_id[o["id"]]["dph_total"]  # interruptible is priced at min_bid
        assert o["dph_total"] == pytest.approx(o["min_bid"] + o["storage_total_cost"], abs=1e-5)
    assert len(vast.search_offers(query="gpu_name=RTX_4090", limit=2)) == 2
    new = vast.search_offers_new(query={"gpu_name": {"eq": "RTX 4090"}}, order=[["dph_total", "asc"]])
    assert [o["id"] for o in new] == [
        o["id"] for o in vast.search_offers(query="gpu_name=RTX_4090", order="dph_total")
    ]


def test_create_show_stop_start_destroy_on_demand(vast: vastai.VastAI, sim: SimHandle) -> None:
    offer = vast.search_offers(query=QUERY, order="dph_total")[0]
    made = vast.create_instance(
        offer["id"],
        image="pytorch/pytorch",
        disk=16,
        label="job-1:0",
        env="-e JOB=one -p 8081:8081",
        onstart_cmd="echo started; sleep 600",
    )
    assert made["success"] is True
    iid = made["new_contract"]
    row = vast.show_instance(iid)
    assert row["actual_status"] == "running" and row["intended_status"] == "running" and not row["is_bid"]
    assert row["label"] == "job-1:0" and row["machine_id"] == offer["machine_id"]
    assert row["extra_env"]["JOB"] == "one" and isinstance(row["start_date"], float)
    assert set(row["ports"]) == {"22/tcp", "8081/tcp"} and isinstance(
        row["ports"]["8081/tcp"][0]["HostPort"], str
    )
    assert [r["id"] for r in vast.show_instances()] == [iid]
    pid = sim.admin.instance(iid)["process"]["pid"]
    assert _alive(pid)

    vast.stop_instance(iid)
    row = vast.show_instance(iid)
    assert (row["actual_status"], row["intended_status"], row["cur_state"]) == (
        "stopped",
        "stopped",
        "stopped",
    )
    assert not _alive(pid) and sim.sandbox(iid).is_dir()  # the disk stays
    vast.start_instance(iid)
    assert vast.show_instance(iid)["actual_status"] == "running"
    assert sim.admin.instance(iid)["starts"] == 2
    vast.label_instance(iid, "job-1:1")
    assert vast.show_instance(iid)["label"] == "job-1:1"

    vast.destroy_instance(iid)
    assert vast.show_instance(iid) is None and vast.show_instances() == []
    assert not sim.sandbox(iid).exists()
    with pytest.raises(requests.HTTPError):
        vast.create_instance(offer["id"], image="x")  # the offer was rented: no_such_ask


def test_preemption_kills_the_process_group_and_resume_reruns_onstart(
    vast: vastai.VastAI, sim: SimHandle
) -> None:
    offer = vast.search_offers(query="gpu_name=RTX_4090", order="dph_total", type="bid")[0]
    onstart = "echo run $CONTAINER_ID; sleep 600 & echo $! > child.pid; wait"
    iid = vast.create_instance(offer["id"], image="x", price=offer["min_bid"], onstart_cmd=onstart)[
        "new_contract"
    ]
    assert vast.show_instance(iid)["is_bid"] is True
    child = sim.sandbox(iid) / "child.pid"
    wait_for(child.exists, what="the onstart child")
    child_pid = int(child.read_text())
    assert _alive(child_pid)

    out = sim.admin.outbid(iid, price=offer["min_bid"] * 2)
    assert out["paused"] is True
    row = vast.show_instance(iid)
    assert row["actual_status"] != "running" and row["intended_status"] == "running" and row["is_bid"]
    wait_for(lambda: not _alive(child_pid), what="the child to die")  # SIGKILL to the whole group
    child.unlink()

    vast.change_bid(iid, price=offer["min_bid"] * 3)  # outbid the rival back
    assert vast.show_instance(iid)["actual_status"] == "running"
    wait_for(child.exists, what="onstart to run again")
    assert vast.logs(iid).count(f"run {iid}") == 2
    vast.destroy_instance(iid)
    wait_for(lambda: not _alive(int(child.read_text())) if child.exists() else True, what="destroy kills")


def test_outage_and_the_scheduling_trap_through_the_api(vast: vastai.VastAI, sim: SimHandle) -> None:
    offer = vast.search_offers(query="num_gpus=1", order="dph_total")[0]
    iid = vast.create_instance(offer["id"], image="x", onstart_cmd="echo up; sleep 600")["new_contract"]
    truth = sim.admin.instance(iid)
    pid = truth["process"]["pid"]
    sim.admin.host_offline(truth["host_id"])
    assert vast.show_instance(iid)["actual_status"] == "offline" and not _alive(pid)
    assert all(o["machine_id"] != offer["machine_id"] for o in vast.search_offers(query="num_gpus>=1"))
    sim.admin.host_online(truth["host_id"])
    assert vast.show_instance(iid)["actual_status"] == "running"
    wait_for(lambda: vast.logs(iid).count("up") == 2, what="onstart to run again after the outage")

    vast.stop_instance(iid)  # the Scheduling trap: a stopped instance keeps no GPU
    rival = next(
        o for o in vast.search_offers(query=f"machine_id={offer['machine_id']}") if o["num_gpus"] == 1
    )
    sim.admin.take_offer(rival["id"])
    vast.start_instance(iid)
    row = vast.show_instance(iid)
    assert (row["actual_status"], row["intended_status"]) == ("stopped", "running")
    assert "Scheduling" in row["status_msg"]
    sim.admin.clear_claims()
    assert vast.show_instance(iid)["actual_status"] == "running"


def test_error_bursts_quirk_fails_calls_as_json(sim: SimHandle) -> None:
    sim.admin.set_knobs(error_rate=1.0)
    sim.admin.set_quirks(error_bursts=True)
    api = httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {sim.api_key}"})
    answers = [api.get("/api/v0/users/current/") for _ in range(3)]
    assert all(a.status_code in (500, 502, 503) and a.json()["success"] is False for a in answers)
    sim.admin.set_quirks(error_bursts=False)
    sim.admin.clear_faults()
    assert api.get("/api/v0/users/current/").status_code == 200


def test_logs_env_and_fake_nvidia_smi(vast: vastai.VastAI, sim: SimHandle) -> None:
    offer = vast.search_offers(query="gpu_name=A100_SXM4 num_gpus=2", order="dph_total")[0]
    onstart = (
        "echo ws=$VASTFLEET_SIM_WORKSPACE home=$HOME label=$VAST_CONTAINERLABEL port=$VAST_TCP_PORT_8081;"
        " nvidia-smi --query-gpu=name,memory.total,uuid --format=csv,noheader; nvidia-smi -L; nvidia-smi"
    )
    iid = vast.create_instance(offer["id"], image="x", onstart_cmd=onstart, env={"-p 8081:8081": "1"})[
        "new_contract"
    ]
    wait_for(lambda: "NVIDIA-SMI" in vast.logs(iid), what="onstart output")
    text = vast.logs(iid)
    port = vast.show_instance(iid)["ports"]["8081/tcp"][0]["HostPort"]
    sandbox = sim.sandbox(iid)
    assert f"ws={sandbox} home={sandbox} label=C.{iid} port={port}" in text
    csv = [line for line in text.splitlines() if line.startswith("NVIDIA A100")]
    assert len(csv) == 2 and all(line.count(", ") == 2 and "MiB" in line for line in csv)
    assert text.count("(UUID: GPU-") == 2
    assert vast.logs(iid, tail="1").strip() == text.strip().splitlines()[-1]
    assert vast.logs(iid, filter="UUID").count("\n") == 2


def test_cloud_copy_moves_files_bills_bandwidth_and_works_while_stopped(
    vast: vastai.VastAI, sim: SimHandle
) -> None:
    offer = vast.search_offers(query="inet_up_cost>0", order="dph_total")[0]
    iid = vast.create_instance(
        offer["id"], image="x", onstart_cmd="mkdir -p ckpt && head -c 300000 /dev/zero > ckpt/a.bin"
    )["new_contract"]
    wait_for(
        lambda: (
            (sim.sandbox(iid) / "ckpt" / "a.bin").exists()
            and (sim.sandbox(iid) / "ckpt" / "a.bin").stat().st_size == 300000
        ),
        what="the checkpoint",
    )
    vast.stop_instance(iid)
    assert vast.show_connections()[0]["id"] == 1001
    done = vast.cloud_copy(
        src="/workspace/ckpt",
        dst="/jobs/j1",
        instance=str(iid),
        connection="1001",
        transfer="Instance To Cloud",
    )
    assert done["success"] and done["bytes"] == 300000
    assert (sim.cloud_dir(1001) / "jobs" / "j1" / "a.bin").stat().st_size == 300000
    back = vast.cloud_copy(
        src="/jobs/j1",
        dst="/workspace/restored",
        instance=str(iid),
        connection="1001",
        transfer="Cloud To Instance",
    )
    assert back["bytes"] == 300000 and (sim.sandbox(iid) / "restored" / "a.bin").exists()
    acct = sim.admin.ledger()["instances"][str(iid)]
    assert acct["bytes_up"] == 300000 and acct["bytes_down"] == 300000
    assert acct["bandwidth"] == pytest.approx(
        300000 / 1e9 * (offer["inet_up_cost"] + offer["inet_down_cost"])
    )
    vast.destroy_instance(iid)
    with pytest.raises(requests.HTTPError):
        vast.cloud_copy(src="/workspace", dst="/x", instance=str(iid), connection="1001")


def test_ledger_adds_up_and_the_balance_follows(vast: vastai.VastAI, sim: SimHandle) -> None:
    offers = vast.search_offers(query="num_gpus=1", order="dph_total")
    running = vast.create_instance(offers[0]["id"], image="x", disk=40)["new_contract"]
    stopped = vast.create_instance(offers[1]["id"], image="x", disk=100)["new_contract"]
    vast.stop_instance(stopped)
    sim.admin.advance(3600)
    book = sim.admin.ledger()
    for iid in (running, stopped):
        acct = book["instances"][str(iid)]
        held = sum(s for phase, s in acct["seconds"].items() if phase in ("loading", "running"))
        assert acct["compute"] == pytest.approx(acct["compute_rate"] * held / 3600)
        assert acct["storage"] == pytest.approx(acct["storage_rate"] * sum(acct["seconds"].values()) / 3600)
    assert book["instances"][str(stopped)]["compute"] < 0.001  # a stopped instance bills its disk only
    assert book["instances"][str(running)]["compute"] == pytest.approx(offers[0]["dph_base"], rel=0.01)
    assert book["total"] == pytest.approx(sum(a["total"] for a in book["instances"].values()))
    assert vast.show_user()["credit"] == pytest.approx(book["credit"] - book["total"], abs=0.01)


def test_listing_pages_through_more_than_one_page(vast: vastai.VastAI) -> None:
    offers = vast.search_offers(query="num_gpus=1", order="dph_total", type="bid")
    made = [
        vast.create_instance(o["id"], image="x", price=o["min_bid"], label=f"b{i}")["new_contract"]
        for i, o in enumerate(offers[:27])
    ]
    assert len(made) == 27
    assert [r["id"] for r in vast.show_instances()] == sorted(made)
    page = vast.show_instances_v1({"select_filters": {"label": {"in": ["b1", "b2"]}}, "limit": 25})
    assert page["total_instances"] == 2 and page["next_token"] is None


def test_http_details_the_client_relies_on(sim: SimHandle) -> None:
    api = httpx.Client(base_url=sim.url)
    for path in ("/api/v0/users/current", "/api/v0/users/current/"):
        resp = api.get(path, headers={"Authorization": f"Bearer {sim.api_key}"})
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert api.get("/api/v0/users/current/", params={"api_key": sim.api_key}).status_code == 200
    bad = api.get("/api/v0/users/current/", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json() == {
        "success": False,
        "error": "auth_error",
        "msg": "Invalid user key",
    }
    assert api.get("/api/v0/gpu_names/unique/").json()["gpu_names"]
    gone = api.get("/api/v0/instances/", headers={"Authorization": f"Bearer {sim.api_key}"})
    assert gone.status_code == 410 and gone.headers["content-type"] == "application/json"
    assert api.get("/api/v0/instances/123/", params={"owner": "me", "api_key": sim.api_key}).json() == {
        "instances": None
    }


def test_injected_429s_are_retried_by_the_client_and_5xx_bursts_surface(
    vast: vastai.VastAI, sim: SimHandle
) -> None:
    sim.admin.fault(429, count=2, path="/api/v0/bundles")
    assert vast.search_offers(query="num_gpus=1", limit=1)
    assert sim.admin.requests()["counts"]["POST /api/v0/bundles/"] == 3
    sim.admin.fault(503, count=3)
    with pytest.raises(requests.HTTPError):
        vast.show_user()


def test_quirks_ghost_lies_and_rate_limits(vast: vastai.VastAI, sim: SimHandle) -> None:
    sim.admin.set_quirks(destroyed_ghost=True, cur_state_lies=True)
    sim.admin.set_knobs(ghost_seconds=30)
    iid = vast.create_instance(vast.search_offers(query="num_gpus=1", limit=1)[0]["id"], image="x")[
        "new_contract"
    ]
    row = vast.show_instance(iid)
    assert row["actual_status"] == "running" and row["cur_state"] == "stopped"  # cur_state lies
    vast.destroy_instance(iid)
    assert vast.show_instance(iid)["actual_status"] == "stopped"  # the ghost
    sim.admin.advance(31)
    assert vast.show_instance(iid) is None
    with pytest.raises(httpx.HTTPStatusError, match="unknown knob"):
        sim.admin.set_knobs(bootdelay=1)
    with pytest.raises(httpx.HTTPStatusError, match="Unknown quirk"):
        sim.admin.set_quirks(zombies=True)
    sim.admin.set_quirks(rate_limits=True)
    sim.admin.set_knobs(rate_limit_interval=60)
    api = httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {sim.api_key}"})
    assert api.get("/api/v0/users/current/").status_code == 200
    limited = api.get("/api/v0/users/current/")
    assert limited.status_code == 429 and "msg" in limited.json()


def test_same_seed_same_market(tmp_path: Path) -> None:
    def offers(seed: int, sub: str) -> list[dict[str, object]]:
        with running_sim(tmp_path / sub, seed=seed, ticker=False) as handle:
            api = vastai.VastAI(api_key=handle.api_key, server_url=handle.url)
            rows = api.search_offers(query="num_gpus>=1", order="dph_total")
        return [
            {k: v for k, v in row.items() if k != "end_date"} for row in rows
        ]  # end_date follows the clock

    a = offers(3, "a")
    assert a == offers(3, "b")
    assert a != offers(4, "c")
