"""vastfleet's panels on grafana-foundation-sdk (the Grafana project's dashboards-as-code library): a panel is
described in one short call (title, PromQL with legends, kind, unit), and built with the SDK's builders
(timeseries, stat, bargauge, Prometheus queries, variables, annotations), which lay panels out in rows on
the 24-column grid and write the JSON Grafana loads.

Owns how a vastfleet panel looks (legend as a table, one style of stat and bar gauge, the `${datasource}`
variable on every query); never what the panels show (vf_dashboards.py, vf_sweeps.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

DS = {"type": "prometheus", "uid": "${datasource}"}
DS_REF = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
GPU = 'gpu_model=~"$gpu_model"'
RI = "$__rate_interval"


class PromAnnotationQuery(dm.AnnotationQuery):
    """An annotation driven by a Prometheus query: the SDK's model knows `expr`, and Grafana's Prometheus
    annotation also reads step, titleFormat, textFormat, tagKeys and useValueForTime."""

    def __init__(self, extra: dict[str, Any]) -> None:
        super().__init__()
        self.extra = extra

    def to_json(self) -> dict[str, object]:
        return {**super().to_json(), **self.extra}


class PromAnnotation(db.AnnotationQuery):
    def __init__(self, **extra: Any) -> None:
        super().__init__()
        self._internal = PromAnnotationQuery(extra)


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
    right_axis: list[str] = field(default_factory=list)  # series (legends) drawn on a right-hand axis

    def builder(self, pid: int) -> Any:
        kind = {"timeseries": timeseries.Panel, "stat": stat.Panel, "bargauge": bargauge.Panel}[self.kind]
        steps = [dm.Threshold(value=v, color=c) for v, c in (self.thresholds or [(None, "green")])]
        panel = (kind().id(pid).title(self.title).description(self.description).datasource(DS_REF).unit(self.unit)
                 .span(self.w).height(self.h)
                 .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps)))
        for i, (expr, legend) in enumerate(self.exprs):
            query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i)).datasource(DS_REF)
            panel = panel.with_target(query.range() if self.kind == "timeseries" else query.instant())
        reduce = cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
        if self.kind == "timeseries":
            mode = cm.StackingMode.NORMAL if self.stack else cm.StackingMode.NONE
            panel = (panel.draw_style(cm.GraphDrawStyle.LINE).line_width(1).fill_opacity(10)
                     .show_points(cm.VisibilityMode.NEVER).stacking(cb.StackingConfig().mode(mode).group("A"))
                     .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE)
                             .placement(cm.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull"]))
                     .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)))
            for name in self.right_axis:
                panel = panel.override_by_name(name, [dm.DynamicConfigValue(id_val="custom.axisPlacement",
                                                                            value="right")])
        elif self.kind == "stat":
            panel = (panel.color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS)).reduce_options(reduce)
                     .color_mode(cm.BigValueColorMode.BACKGROUND if self.thresholds else cm.BigValueColorMode.VALUE)
                     .graph_mode(cm.BigValueGraphMode.AREA).text_mode(cm.BigValueTextMode.AUTO)
                     .justify_mode(cm.BigValueJustifyMode.AUTO).orientation(cm.VizOrientation.AUTO))
        else:
            panel = (panel.reduce_options(reduce).orientation(cm.VizOrientation.HORIZONTAL)
                     .display_mode(cm.BarGaugeDisplayMode.GRADIENT).show_unfilled(True))
        return panel


@dataclass
class Variable:
    """A query variable over a label of a metric (All selected by default)."""

    name: str
    label: str
    query: str
    all_value: str = ".*"

    def builder(self) -> Any:
        return (db.QueryVariable(self.name).label(self.label).datasource(DS_REF).query(self.query)
                .include_all(True).all_value(self.all_value).multi(True)
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
                .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"])))


GPU_VARIABLE = Variable("gpu_model", "GPU model", "label_values(vastfleet_spend_dollars_total, gpu_model)")


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[list[Panel]]
    gpu_variable: bool = True
    annotations: list[dict[str, Any]] = field(default_factory=list)
    variables: list[Variable] = field(default_factory=list)

    def builder(self) -> Any:
        dash = (db.Dashboard(self.title).uid(self.uid).description(self.description).tags(["vastfleet"])
                .timezone("browser").editable().tooltip(dm.DashboardCursorSync.CROSSHAIR).time("now-6h", "now")
                .refresh("30s").version(1)
                .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
                .link(db.DashboardLink("vastfleet").type(dm.DashboardLinkType.DASHBOARDS).tags(["vastfleet"])
                      .as_dropdown(True))
                .annotation(db.AnnotationQuery().name("Annotations & Alerts").built_in(1).type("dashboard")
                            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
                            .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)")))
        for var in ([GPU_VARIABLE] if self.gpu_variable else []) + self.variables:
            dash = dash.with_variable(var.builder())
        for ann in self.annotations:
            extra = {k: v for k, v in ann.items() if k not in ("name", "enable", "hide", "iconColor", "expr")}
            dash = dash.annotation(PromAnnotation(**extra).name(ann["name"]).datasource(DS_REF)
                                   .enable(ann.get("enable", True)).hide(ann.get("hide", False))
                                   .icon_color(ann.get("iconColor", "red")).expr(ann["expr"]))
        pid = 1
        for row in self.rows:
            assert sum(p.w for p in row) == 24, f"{self.title}: a row of panels fills the 24 columns"
            for panel in row:
                dash = dash.with_panel(panel.builder(pid))
                pid += 1
        return dash

    def render(self) -> dict[str, Any]:
        """The dashboard's JSON, as the SDK encodes it."""
        return json.loads(json.dumps(self.builder().build(), cls=JSONEncoder))  # type: ignore[no-any-return]


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
