"""The PromQL of the committed dashboards (panels and annotations), and the substitution of Grafana's
variables the way Grafana would expand them for an instant query."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"

# What Grafana puts in place of its variables; `$gpu_model` at "All" is the variable's allValue.
VARIABLES = {
    "$__rate_interval": "1m",  # >= 4 scrape intervals of the test's 1 s scrapes
    "$__range": "5m",
    "$__interval": "15s",
    "$gpu_model": ".*",
    "$sweep": ".*",
}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.panel}:{self.ref}"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return data


def dashboard_names() -> list[str]:
    return sorted(p.stem for p in DASHBOARDS.glob("*.json"))


def dashboard_queries() -> list[Query]:
    out = []
    for name in dashboard_names():
        dash = load(name)
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                out.append(Query(name, panel["title"], target["refId"], target["expr"]))
        for ann in dash["annotations"]["list"]:
            if "expr" in ann:
                out.append(Query(name, f"annotation {ann['name']}", "ann", ann["expr"]))
    return out


def substitute(expr: str) -> str:
    for var in sorted(VARIABLES, key=len, reverse=True):  # $__rate_interval before $__range
        expr = expr.replace(var, VARIABLES[var])
    left = re.findall(r"\$\{?\w+", expr)
    if left:
        raise ValueError(f"unknown dashboard variables {left} in {expr!r}")
    return expr
