"""The real `vastai` CLI, as a subprocess, against the simulator (a handful: each start costs ~0.7 s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import clean_env
from tests.sim_fixtures import SimHandle

VASTAI = str(Path(sys.executable).parent / "vastai")


@pytest.fixture
def cli(sim: SimHandle, tmp_path: Path) -> Any:
    home = tmp_path / "home"
    env = clean_env(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_STATE_HOME=str(home / ".state"),
        XDG_DATA_HOME=str(home / ".data"),
        VAST_URL=sim.url,
        VASTAI_NO_UPDATE_CHECK="1",
        COLUMNS="200",
    )

    def run(*args: str, raw: bool = True, key: str | None = None) -> Any:
        cmd = [VASTAI, "--url", sim.url, "--api-key", key or sim.api_key, *(["--raw"] if raw else []), *args]
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        if raw:
            return json.loads(proc.stdout) if proc.stdout.strip() else None
        return proc.stdout + proc.stderr

    return run


def test_cli_search_offers_with_the_issue_query(cli: Any) -> None:
    query = "gpu_name=RTX_4090 num_gpus=1 verified=true rentable=true direct_port_count>=1"
    offers = cli("search", "offers", query, "-o", "dph_total")
    assert offers
    for o in offers:
        assert (o["gpu_name"], o["num_gpus"], o["verified"], o["rentable"]) == ("RTX 4090", 1, True, True)
        assert o["direct_port_count"] >= 1
    assert [o["dph_total"] for o in offers] == sorted(o["dph_total"] for o in offers)
    bids = cli("search", "offers", query, "-o", "dph_total", "--type", "bid")
    assert bids and all(o["is_bid"] and o["dph_total"] < o["dph_base"] for o in bids)
    table = cli("search", "offers", query, "-o", "dph_total", raw=False)
    assert "invalid return Content-Type" not in table and "RTX_4090" in table


def test_cli_bid_lifecycle_with_a_preemption(cli: Any, sim: SimHandle) -> None:
    offer = cli("search", "offers", "num_gpus=1", "-o", "dph_total", "--type", "bid", "--limit", "1")[0]
    made = cli(
        "create",
        "instance",
        str(offer["id"]),
        "--image",
        "pytorch/pytorch",
        "--disk",
        "12",
        "--label",
        "cli-job",
        "--env",
        "-e WHO=cli",
        "--onstart-cmd",
        "echo hello $WHO; sleep 600",
        "--bid_price",
        str(offer["min_bid"]),
    )
    iid = made["new_contract"]
    row = cli("show", "instance", str(iid))
    assert row["actual_status"] == "running" and row["is_bid"] and row["label"] == "cli-job"

    sim.admin.outbid(iid, price=offer["min_bid"] * 2)
    listed = cli("show", "instances")
    assert [(r["id"], r["actual_status"], r["intended_status"]) for r in listed] == [
        (iid, "stopped", "running")
    ]
    assert not sim.admin.instance(iid)["process"]["alive"]

    out = cli("change", "bid", str(iid), "--price", str(offer["min_bid"] * 3), raw=False)
    assert "bid price changed" in out
    assert sim.admin.instance(iid)["phase"] == "running"
    assert "hello cli" in cli("logs", str(iid), raw=False)
    assert "stopping instance" in cli("stop", "instance", str(iid), raw=False)
    assert sim.admin.instance(iid)["phase"] == "stopped"
    assert "starting instance" in cli("start", "instance", str(iid), raw=False)
    assert "destroying instance" in cli("destroy", "instance", str(iid), "-y", raw=False)
    assert cli("show", "instances") == []
    assert cli("show", "user")["credit"] < 1000.0


def test_cli_reports_a_bad_key(cli: Any) -> None:
    out = cli("show", "instances", raw=False, key="wrong")
    assert "401" in out and "Invalid user key" in out
