"""`vastfleet offers` over a recording double of the Marketplace protocol; the policy's import boundary."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import typer

import vastfleet.market.config as market_config
from tests.policy.factories import make_offer
from vastfleet.scheduler import offers_cli
from vastfleet.spec import OfferQuery

POLICY_DIR = Path(offers_cli.__file__).parent / "policy"


class RecordingMarket:
    def __init__(self, offers):
        self.offers = offers
        self.queries: list[OfferQuery] = []

    def search_offers(self, query: OfferQuery):
        self.queries.append(query)
        return list(self.offers)


@pytest.fixture
def market(monkeypatch):
    m = RecordingMarket([make_offer(id=1, min_bid=0.15), make_offer(id=2, gpu_name="RTX 3090", dlperf=22.0,
                                                                   dph_total=0.3, min_bid=0.2),
                         make_offer(id=3, verified=False)])
    monkeypatch.setattr(market_config, "marketplace_from_env", lambda *a, **k: m)
    return m


def test_offers_json_ranks_by_expected_cost_for_a_job(market, tmp_path, capsys):
    spec = tmp_path / "job.yaml"
    spec.write_text("name: t\nimage: img\nrun: python x.py\nresources: {gpu: [RTX_4090, RTX_3090]}\n")
    offers_cli.offers_command(spec, explain=False, as_json=True)
    out = json.loads(capsys.readouterr().out)
    assert market.queries[0].gpu_names == ["RTX 4090", "RTX 3090"]
    costs = [o["expected_cost"] for o in out["offers"]]
    assert costs == sorted(costs) and out["offers"][0]["offer_id"] == 1
    assert out["rejected"]["verified"] == 1
    assert {"hazard_per_hour", "checkpoint_interval_s", "expected_hours"} <= set(out["offers"][0]["terms"])


def test_offers_rank_for_the_specs_work_and_deadline_as_the_allocator_would(monkeypatch, tmp_path, capsys):
    # 10 h of work by a deadline 12 h away: the slow cheap bid cannot finish in time on demand, and the fast
    # offer's on-demand row is the only on-demand row left (on time); with no deadline the cheap one leads
    fast = make_offer(id=1, dlperf=44.0, dph_total=0.8, min_bid=0.5)
    slow = make_offer(id=2, dlperf=22.0, dph_total=0.3, min_bid=0.1)
    monkeypatch.setattr(market_config, "marketplace_from_env", lambda *a, **k: RecordingMarket([fast, slow]))
    spec = tmp_path / "job.yaml"

    def ranked(extra: str) -> list[dict]:
        spec.write_text("name: t\nimage: img\nrun: python x.py\nresources: {gpu: [RTX_4090]}\nwork_hours: 10\n"
                        + extra)
        offers_cli.offers_command(spec, explain=False, as_json=True)
        return json.loads(capsys.readouterr().out)["offers"]

    relaxed = ranked("")
    assert relaxed[0]["offer_id"] == 2 and relaxed[0]["terms"]["expected_hours"] > 20  # 10 h at half speed
    tight = ranked("deadline: 12h\n")
    assert [(o["offer_id"], o["kind"]) for o in tight if o["kind"] == "on_demand"] == [(1, "on_demand")]
    assert tight[0]["terms"]["slack_hours"] < 2
    assert min(o["expected_cost"] for o in tight) > min(o["expected_cost"] for o in relaxed)


def test_offers_explain_without_a_job(market, capsys):
    offers_cli.offers_command(None, explain=True, as_json=False)
    text = capsys.readouterr().out
    assert "offers considered" in text and "expected $" in text


def test_bad_job_file_exits_2(market, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: t\nimage: img\nrun: x\nresources: {gpu: [RTX_9999]}\n")
    with pytest.raises(typer.Exit) as exc:
        offers_cli.offers_command(spec, explain=False, as_json=True)
    assert exc.value.exit_code == 2


def test_policy_imports_no_io_libraries():
    forbidden = {"redis", "vastai", "boto3", "httpx", "requests", "socket", "subprocess", "vastfleet.sim",
                 "vastfleet.market", "vastfleet.queue"}
    for path in POLICY_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), (path.name, name)
