"""A real Prometheus (Debian's /usr/bin/prometheus) on loopback for tests: a generated config scraping the
given targets every second, optional rule files, and helpers to query it through its HTTP API.

Start one per test session: a fresh Prometheus needs a few seconds before its first scrape.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import free_port, wait_for

SCRAPE_JOB = "vastfleet"


class PromQLError(AssertionError):
    """Prometheus refused or failed a query; the message carries its error text."""


@dataclass
class Target:
    address: str  # host:port on loopback
    metrics_path: str = "/metrics"


class PrometheusServer:
    def __init__(
        self, workdir: Path, targets: list[Target], rule_files: list[Path] | None = None, interval: str = "1s"
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install -y prometheus)")
        for target in targets:
            if not target.address.startswith(("127.0.0.1:", "localhost:")):
                raise ValueError(f"tests scrape loopback only, not {target.address}")
        self.binary = binary
        self.workdir = workdir
        self.targets = targets
        self.rule_files = rule_files or []
        self.interval = interval
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": SCRAPE_JOB,
                    "metrics_path": t.metrics_path,
                    "static_configs": [{"targets": [t.address]}],
                }
                for t in self.targets[:1]
            ]
            + [
                {
                    "job_name": f"{SCRAPE_JOB}-{i}",
                    "metrics_path": t.metrics_path,
                    "static_configs": [{"targets": [t.address]}],
                }
                for i, t in enumerate(self.targets[1:], 1)
            ],
        }

    def start(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        args = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
            "--storage.tsdb.retention.time=1h",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        wait_for(self._ready, timeout=30, what=f"prometheus ready on {self.url} (log: {self.log})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
            return resp.status == 200

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    # --- the HTTP API ---------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; returns the result as a list of series (a scalar becomes one series)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        """A range query, as a Grafana panel issues it; returns the series with their `values`."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return list(data["result"])

    def values(self, expr: str) -> list[float]:
        return [float(s["value"][1]) for s in self.query(expr)]

    def wait_first_scrape(self, timeout: float = 30) -> None:
        """Until every target has been scraped successfully once."""

        def scraped() -> bool:
            return self.values(f'count(up{{job=~"{SCRAPE_JOB}.*"}} == 1)') == [float(len(self.targets))]

        wait_for(scraped, timeout=timeout, interval=0.2, what="the first successful scrape")

    def wait_for_samples(self, expr: str, n: int, timeout: float = 30) -> None:
        """Until `expr` (a metric selector) has at least `n` samples in the last minute: rate() needs two."""
        wait_for(
            lambda: any(v >= n for v in self.values(f"count_over_time({expr}[1m])")),
            timeout=timeout,
            interval=0.2,
            what=f"{n} samples of {expr}",
        )

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])
