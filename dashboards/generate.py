"""Generates vastfleet's Grafana dashboards to JSON, with the provisioning files and the Helm chart's copies.

    python dashboards/generate.py          # write dashboards/*.json, provisioning and the chart's copies
    python dashboards/generate.py --check  # exit 1 when a committed file differs (the drift test runs this)

The dashboards themselves are written in vf_dashboards.py and vf_sweeps.py, built with grafana-foundation-sdk
through the small layer in vf_grafana.py. Every panel queries Prometheus through the `${datasource}` variable;
`$gpu_model` filters by GPU model, `$sweep` by sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # the sibling modules, when run as a script or loaded by the tests

from vf_dashboards import DASHBOARDS

REPO = ROOT.parent
CHART = REPO / "helm" / "vastfleet"
RULES = REPO / "alerts" / "vastfleet.rules.yml"

PROVIDER = """\
# Grafana provisioning: load the vastfleet dashboards from this folder's ../ (mount it at the path below).
apiVersion: 1
providers:
  - name: vastfleet
    orgId: 1
    folder: vastfleet
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: /var/lib/grafana/dashboards/vastfleet
      foldersFromFilesStructure: false
"""

DATASOURCE = """\
# Grafana provisioning: a Prometheus datasource the dashboards' ${datasource} variable can pick.
apiVersion: 1
datasources:
  - name: Prometheus
    type: prometheus
    access: proxy
    url: http://prometheus:9090
    isDefault: true
    jsonData:
      timeInterval: 15s
"""


def outputs() -> dict[Path, str]:
    """Every generated file and its text."""
    files: dict[Path, str] = {}
    for name, dash in DASHBOARDS.items():
        text = json.dumps(dash.render(), indent=2, sort_keys=True) + "\n"
        files[ROOT / f"{name}.json"] = text
        files[CHART / "dashboards" / f"{name}.json"] = text
    files[ROOT / "provisioning" / "dashboards" / "vastfleet.yml"] = PROVIDER
    files[ROOT / "provisioning" / "datasources" / "prometheus.yml"] = DATASOURCE
    if RULES.exists():  # the chart ships the alert rules as a PrometheusRule: the same file, copied
        files[CHART / "rules" / "vastfleet.rules.yml"] = RULES.read_text()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="generate vastfleet's Grafana dashboards")
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path.relative_to(REPO))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(
            "out of date (run python dashboards/generate.py): " + ", ".join(map(str, stale)), file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
