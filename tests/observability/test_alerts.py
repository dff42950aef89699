"""The alert and recording rules, checked and unit-tested by Prometheus's own promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "vastfleet.rules.yml"
RULE_TESTS = REPO / "alerts" / "tests" / "vastfleet.rules.test.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed (apt-get install -y prometheus)")
    return path


def test_rules_check() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_unit_tests_pass() -> None:
    out = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_required_alerts_are_defined_and_tested() -> None:
    alerts = {
        r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    required = {
        "VastfleetBudgetBurn",
        "VastfleetStoppedInstance",
        "VastfleetHeartbeatLost",
        "VastfleetPreemptionStorm",
    }
    assert required <= set(alerts)
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing_tested = {
        case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case["exp_alerts"]
    }
    quiet_tested = {
        case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if not case["exp_alerts"]
    }
    assert set(alerts) <= firing_tested, "every alert has a case where it fires"
    assert set(alerts) <= quiet_tested, "every alert has a case where it stays quiet"
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """The promtool tests have teeth: the stopped-instance alert with a wrong threshold fails them."""
    broken = RULES.read_text().replace(
        "max(vastfleet_stopped_instances) > 0", "max(vastfleet_stopped_instances) > 1"
    )
    assert broken != RULES.read_text()
    (tmp_path / "vastfleet.rules.yml").write_text(broken)
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    out = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=tests,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "VastfleetStoppedInstance" in out.stdout + out.stderr
