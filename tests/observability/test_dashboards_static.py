"""The committed dashboards: generated from dashboards/generate.py without drift, shaped as Grafana expects
(datasource variable, unique ids, layout on the 24-column grid), and referring only to metrics that exist."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.observability.dashboard_queries import (
    DASHBOARDS,
    dashboard_names,
    dashboard_queries,
    load,
    substitute,
)
from vastfleet.metrics import FleetMetrics, JobStoreCollector
from vastfleet.sweeps.metrics import SweepCollector

REPO = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vastfleet_dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def exported_names() -> set[str]:
    """Every series name the exporter can produce, the recording rules' included."""
    metrics = FleetMetrics()
    store_families = JobStoreCollector(None).describe()  # type: ignore[arg-type]  # names only, no store
    families = list(metrics.registry.collect()) + list(store_families) + list(SweepCollector(None).describe())
    names = set()
    for family in families:
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        if family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        if family.type == "summary":
            names |= {family.name + s for s in ("_sum", "_count")}
    rules = yaml.safe_load((REPO / "alerts" / "vastfleet.rules.yml").read_text())
    names |= {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return names


def test_generated_files_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert generator().main(["--check"]) == 0, capsys.readouterr().err


def test_the_five_dashboards() -> None:
    titles = {load(n)["title"] for n in dashboard_names()}
    assert titles == {
        "vastfleet / Cost",
        "vastfleet / Preemptions and recovery",
        "vastfleet / Queue and jobs",
        "vastfleet / Fleet",
        "vastfleet / Sweeps",
    }
    uids = [load(n)["uid"] for n in dashboard_names()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", ["cost", "preemptions", "queue", "fleet", "sweeps"])
def test_dashboard_structure(name: str) -> None:
    dash = load(name)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            substitute(target["expr"])  # only variables the dashboard defines or Grafana provides


def test_panels_query_only_metrics_that_exist() -> None:
    known = exported_names()
    for query in dashboard_queries():
        for name in re.findall(r"\b(vastfleet[_:][a-z0-9_:]+)", query.expr):
            assert name in known, f"{query.id} uses {name}, which nothing exports"


def test_rules_use_only_metrics_that_exist() -> None:
    known = exported_names()
    text = (REPO / "alerts" / "vastfleet.rules.yml").read_text()
    rules = yaml.safe_load(text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in re.findall(r"\b(vastfleet[_:][a-z0-9_:]+)", rule["expr"]):
                assert name in known, f"{rule.get('alert') or rule.get('record')} uses {name}"


def test_required_panels_exist() -> None:
    exprs = {
        q.dashboard: " ".join(x.expr for x in dashboard_queries() if x.dashboard == q.dashboard)
        for q in dashboard_queries()
    }
    needed = {
        "cost": [
            "vastfleet_spend_dollars_total",
            "vastfleet_fleet_spend_rate_dollars_per_hour",
            "vastfleet_job_cost_dollars",
            "vastfleet_on_demand_equivalent_dollars_total",
            "vastfleet_budget_total_dollars",
        ],
        "preemptions": [
            "vastfleet_preemptions_total",
            "vastfleet_recovery_seconds_bucket",
            "vastfleet_work_lost_gpu_seconds_total",
            "vastfleet_hosts_excluded",
        ],
        "queue": [
            "vastfleet_queue_depth",
            "vastfleet_jobs",
            "vastfleet_job_wait_seconds_bucket",
            "vastfleet_jobs_finished_total",
        ],
        "fleet": [
            "vastfleet_instances",
            "vastfleet_fleet_spend_rate_dollars_per_hour",
            "vastfleet_heartbeat_age_max_seconds",
            "vastfleet_stopped_instances",
        ],
        "sweeps": [
            "vastfleet_sweep_spent_dollars",
            "vastfleet_sweep_projected_dollars",
            "vastfleet_sweep_budget_dollars",
            "vastfleet_sweep_trials",
            "vastfleet_sweep_target_instances",
            "vastfleet_sweep_instances",
            "vastfleet_sweep_binding_limit",
            "vastfleet_sweep_best_value",
            "vastfleet_sweep_trial_cost_dollars_sum",
        ],
    }
    for dash, names in needed.items():
        for name in names:
            assert name in exprs[dash], f"{dash} lacks {name}"
    stopped = next(p for p in load("fleet")["panels"] if p["title"].startswith("Stopped instances"))
    steps = stopped["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 1} in steps  # any stopped instance shows red


def test_provisioning_files() -> None:
    provider = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "vastfleet.yml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"
    datasource = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"


def test_dashboards_are_built_with_grafana_foundation_sdk() -> None:
    """The JSON is the SDK's (its schema version and encoder), not hand-written dictionaries."""
    from grafana_foundation_sdk.builders.dashboard import Dashboard as SdkDashboard

    module = generator()
    for name, dash in module.DASHBOARDS.items():
        assert isinstance(dash.builder(), SdkDashboard), name
        assert load(name)["schemaVersion"] == dash.builder().build().schema_version
    sweep_vars = {v["name"] for v in load("sweeps")["templating"]["list"]}
    assert {"datasource", "sweep"} <= sweep_vars
