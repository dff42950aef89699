"""A small builder of Grafana dashboard JSON: panels (timeseries, stat, bargauge) laid out in rows on the
24-column grid, a Prometheus datasource variable, an optional GPU-model variable, annotations.

Owns the JSON shape Grafana expects (schemaVersion 39); never what the panels show (vf_dashboards.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}
GPU = 'gpu_model=~"$gpu_model"'
RI = "$__rate_interval"


@dataclass
class Panel:
    title: str
    exprs: list[tuple[str, str]]  # (PromQL, legend)
    kind: str = "timeseries"  # timeseries | stat | bargauge
    unit: str = "short"
    description: str = ""
    w: int = 12
    h: int = 8
    thresholds: list[tuple[float | None, str]] = field(default_factory=list)
    stack: bool = False

    def render(self, pid: int, x: int, y: int) -> dict[str, Any]:
        steps = [{"color": c, "value": v} for v, c in (self.thresholds or [(None, "green")])]
        defaults: dict[str, Any] = {"unit": self.unit, "thresholds": {"mode": "absolute", "steps": steps}}
        options: dict[str, Any]
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10,
                "showPoints": "never",
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
            }
            options = {
                "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        elif self.kind == "stat":
            defaults["color"] = {"mode": "thresholds"}
            options = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background" if self.thresholds else "value",
                "graphMode": "area",
                "textMode": "auto",
                "justifyMode": "auto",
                "orientation": "auto",
            }
        else:
            options = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "orientation": "horizontal",
                "displayMode": "gradient",
                "showUnfilled": True,
            }
        return {
            "id": pid,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DS,
            "gridPos": {"h": self.h, "w": self.w, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options,
            "targets": [
                {
                    "datasource": DS,
                    "refId": chr(ord("A") + i),
                    "expr": expr,
                    "legendFormat": legend,
                    "range": self.kind == "timeseries",
                    "instant": self.kind != "timeseries",
                }
                for i, (expr, legend) in enumerate(self.exprs)
            ],
        }


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[list[Panel]]
    gpu_variable: bool = True
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def render(self) -> dict[str, Any]:
        panels, pid, y = [], 1, 0
        for row in self.rows:
            x = 0
            for panel in row:
                panels.append(panel.render(pid, x, y))
                pid, x = pid + 1, x + panel.w
            y += max(p.h for p in row)
        variables: list[dict[str, Any]] = [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
                "regex": "",
                "options": [],
            }
        ]
        if self.gpu_variable:
            variables.append(
                {
                    "name": "gpu_model",
                    "label": "GPU model",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(vastfleet_spend_dollars_total, gpu_model)",
                        "refId": "gpu",
                    },
                    "definition": "label_values(vastfleet_spend_dollars_total, gpu_model)",
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "refresh": 2,
                    "sort": 1,
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "hide": 0,
                    "options": [],
                }
            )
        builtin = {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["vastfleet"],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables},
            "annotations": {"list": [builtin, *self.annotations]},
            "links": [
                {"title": "vastfleet", "type": "dashboards", "tags": ["vastfleet"], "asDropdown": True}
            ],
            "panels": panels,
        }


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RI}])))",
            f"p{int(q * 100)}{suffix}",
        )
        for q in qs
    ]
