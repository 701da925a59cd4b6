"""Deployment files: the compose stack, the Kubernetes overlays, Prometheus and the Grafana dashboard.

Validation uses the real tools where they exist (docker-compose 1.29 reads a file without an
engine; kubectl kustomize; kubernetes-validate's schemas; promtool) and skips with the reason
when one is missing. The dashboard's metric names are checked against a live service's /metrics.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "sa2crq.json"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
OVERLAYS = ("cpu", "gpu")
SERVICES = {"redis", "indexer", "service", "service-gpu", "prometheus", "grafana"}
SETTINGS_VARS = {f"SA2CRQ_{name.upper()}" for name in Settings.model_fields}


def _tool(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed ({install}); CI installs it")
    return path


def _run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # A developer's SA2CRQ_* variables would flow into the rendered compose file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SA2CRQ_")}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _mounts(service: dict) -> dict[str, str]:
    """target -> source of a rendered compose service (docker-compose 1.29 prints "src:dst:mode")."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v["source"], v["target"]
        out[target] = source
    return out


# -- docker compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = _tool("docker-compose", "apt-get install docker-compose")
    done = _run(exe, "-f", str(COMPOSE), "--profile", "gpu", "config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.mark.extras  # docker-compose / promtool: CI installs them
def test_compose_validates_and_names_every_service(compose):
    assert set(compose["services"]) == SERVICES
    exe = shutil.which("docker-compose")
    listed = _run(exe, "-f", str(COMPOSE), "config", "--services")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES


@pytest.mark.extras  # docker-compose / promtool: CI installs them
def test_compose_wires_redis_indexer_and_service(compose):
    s = compose["services"]
    assert s["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert _mounts(s["redis"])["/data"] == "redis-data"
    # Redis is published to the host's loopback only
    assert [p if isinstance(p, str) else f"{p['host_ip']}:{p['published']}:{p['target']}" for p in s["redis"]["ports"]] \
        in (["127.0.0.1:6380:6379/tcp"], ["127.0.0.1:6380:6379"])
    indexer = s["indexer"]["command"]
    assert indexer[:2] == ["sa2crq", "demo"] and "--no-serve" in indexer
    assert indexer[indexer.index("--redis") + 1] == "redis://redis:6379/0"
    workdir = indexer[indexer.index("--workdir") + 1]
    for name, engine in (("service", "torch"), ("service-gpu", "vllm")):
        svc = s[name]
        env = svc["environment"]
        assert env["SA2CRQ_REDIS_URL"] == "redis://redis:6379/0"
        assert "SA2CRQ_STORE" not in env  # releases (index and decoder) come from Redis
        assert env["SA2CRQ_HOST"] == "0.0.0.0"
        assert env["SA2CRQ_ENGINE"] == engine
        assert set(env) <= SETTINGS_VARS, set(env) - SETTINGS_VARS
        assert env["SA2CRQ_ADMIN_TOKEN"] is None  # not set at all (an empty token is not "no token")
        assert svc["depends_on"]["indexer"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "sa2crq-service" in svc["networks"]["default"]["aliases"]
        # no shared volume: the indexer publishes the decoder to Redis, the service fetches it there
        assert "/data" not in _mounts(svc) and _mounts(s["indexer"])["/data"] == "demo-data"
        assert workdir.startswith("/data")
    assert "profiles" not in s["service"]
    assert s["service-gpu"]["profiles"] == ["gpu"]
    (device,) = s["service-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert Path(_mounts(s["prometheus"])["/etc/prometheus/prometheus.yml"]) == PROMETHEUS
    mounts = _mounts(s["grafana"])
    assert Path(mounts["/etc/grafana/provisioning"]) == DOCKER / "grafana" / "provisioning"
    assert Path(mounts["/var/lib/grafana/dashboards"]) == DASHBOARD.parent


@pytest.mark.extras  # docker-compose / promtool: CI installs them
def test_compose_validation_rejects_a_broken_file(tmp_path):
    exe = _tool("docker-compose", "apt-get install docker-compose")
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["service"]["depends_on"]["indexer"]["condition"] = "whenever"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    done = _run(exe, "-f", str(path), "config")
    assert done.returncode != 0 and "condition" in done.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_are_non_root_and_copy_what_exists(dockerfile):
    text = (DOCKER / dockerfile).read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) == 2  # build stage, then a runtime stage without build leftovers
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r'^CMD \["sa2crq", "serve"\]$', text, re.M)
    assert re.search(r"pip install .*-c /(src/requirements\.lock|tmp/gpu-constraints\.txt)", text)  # the lock's versions
    copied = re.findall(r"^COPY (?!--from)(.+) /src/", text, re.M)
    paths = [p for line in copied for p in line.split()]
    assert paths and all((ROOT / p).exists() for p in paths), paths
    # the Dockerfile's own ignore file excludes everything but what it copies
    ignore = [line.rstrip("/") for line in (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*" and {f"!{p}" for p in paths} <= set(ignore)


def test_images_install_from_the_lock_cpu_torch_from_the_cpu_index_and_gpu_image_has_vllm():
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    assert "torch==2.13.0+cpu" in lock  # only the CPU index serves it: no silent CUDA download
    cpu = (DOCKER / "Dockerfile").read_text()
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in cpu
    assert 'pip install --extra-index-url "${TORCH_INDEX_URL}" -c /src/requirements.lock /src' in cpu
    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    assert "grep -v '^torch==' /src/requirements.lock > /tmp/gpu-constraints.txt" in gpu
    assert 'pip install -c /tmp/gpu-constraints.txt torch==2.13.0 "/src[vllm]"' in gpu
    assert "SA2CRQ_ENGINE=vllm" in gpu


# -- Kubernetes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    exe = _tool("kubectl", "https://kubernetes.io/docs/tasks/tools/")
    done = _run(exe, "kustomize", str(ROOT / "k8s" / "overlays" / request.param))
    assert done.returncode == 0, done.stderr
    return request.param, [d for d in yaml.safe_load_all(done.stdout) if d]


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def test_overlay_manifests_validate_against_kubernetes_schemas(overlay):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the dev extra)")
    _, docs = overlay
    for doc in docs:
        kv.validate(doc, kv.latest_version(), strict=True)
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"}


def test_schema_validation_catches_a_misspelled_field(overlay):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the dev extra)")
    deployment = copy.deepcopy(_one(overlay[1], "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecondz"] = 5
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, kv.latest_version(), strict=True)


def test_overlay_deployment_probes_config_secret_and_scrape(overlay):
    name, docs = overlay
    deployment = _one(docs, "Deployment", "sa2crq-service")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8000", "prometheus.io/path": "/metrics"}
    config = _one(docs, "ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert set(config["data"]) <= SETTINGS_VARS, set(config["data"]) - SETTINGS_VARS
    assert config["data"]["SA2CRQ_HOST"] == "0.0.0.0" and config["data"]["SA2CRQ_PORT"] == "8000"
    assert config["data"]["SA2CRQ_REDIS_URL"] == "redis://redis:6379/0"
    Settings(_env_file=None, **{k.removeprefix("SA2CRQ_").lower(): v for k, v in config["data"].items()})  # values parse
    token = next(e for e in container["env"] if e["name"] == "SA2CRQ_ADMIN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "sa2crq-admin"
    images = [c["image"] for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])]
    job = _one(docs, "Job", "sa2crq-indexer")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "sa2crq:cpu"
    assert images == [f"sa2crq:{name}"]
    cache = next(e["value"] for e in container["env"] if e["name"] == "SA2CRQ_CACHE_DIR")
    assert {m["mountPath"]: m["name"] for m in container["volumeMounts"]}[cache] == "cache"
    gpu = container["resources"]["limits"].get("nvidia.com/gpu")
    assert (config["data"]["SA2CRQ_ENGINE"], gpu) == (("vllm", "1") if name == "gpu" else ("torch", None))


def test_overlay_objects_point_at_each_other(overlay):
    _, docs = overlay
    deployment = _one(docs, "Deployment", "sa2crq-service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _one(docs, "Service", "sa2crq-service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = _one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sa2crq-service"}
    redis = _one(docs, "StatefulSet", "redis")
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert _one(docs, "Service", "redis")["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    # No ReadWriteMany volume between the indexer and the replicas: decoders travel through Redis.
    claims = [v for d in (deployment, _one(docs, "Job")) for v in d["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == []
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"sa2crq"}


# -- Prometheus and Grafana ----------------------------------------------------------------------


def test_prometheus_config_scrapes_the_service_alias():
    compose = yaml.safe_load(COMPOSE.read_text())
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "sa2crq"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["port"] == 8000
    for name in ("service", "service-gpu"):
        assert set(sd["names"]) <= set(compose["services"][name]["networks"]["default"]["aliases"])
    promtool = shutil.which("promtool")
    if promtool:
        done = _run(promtool, "check", "config", str(PROMETHEUS))
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_grafana_provisioning_matches_the_dashboard(dashboard):
    (ds,) = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/sa2crq.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert p["datasource"]["uid"] == ds["uid"]
        assert p["targets"] and all(t["datasource"]["uid"] == ds["uid"] and t["expr"] for t in p["targets"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0


def test_dashboard_has_the_required_panels(dashboard):
    exprs = _exprs(dashboard)
    joined = "\n".join(exprs)
    assert 'sum(rate(sa2crq_requests_total{endpoint="/retrieve"' in joined  # QPS
    for q in ("0.50", "0.99"):  # TP50 and TP99 over the latency histogram
        assert f'histogram_quantile({q}, sum by (le) (rate(sa2crq_request_latency_seconds_bucket{{endpoint="/retrieve"' in joined
    assert 'status=~"5..|429"' in joined  # error rate
    for name in ("sa2crq_batch_size_bucket", "sa2crq_result_sid_length_bucket", "sa2crq_index_info"):
        assert name in joined
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for word in ("QPS", "TP99", "TP50", "Error rate", "Batch size", "SID length", "Index"):
        assert word in titles


@pytest.mark.extras  # docker-compose / promtool: CI installs them
def test_dashboard_promql_parses(dashboard, tmp_path):
    promtool = _tool("promtool", "apt-get install prometheus")
    # Grafana's variables replaced by what they stand for, each expression as a recording rule.
    rules = [{"record": f"dashboard:expr_{i}",
              "expr": e.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$instance", ".*")}
             for i, e in enumerate(_exprs(dashboard))]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = _run(promtool, "check", "rules", str(path))
    assert done.returncode == 0 and f"SUCCESS: {len(rules)} rules found" in done.stdout, done.stdout + done.stderr


def _exported(metrics_text: str) -> set[str]:
    """Every series name a scrape can hold, including families with no sample yet."""
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def test_every_dashboard_metric_is_exported_by_the_live_service(dashboard, live_service):
    titles = [json.loads(line)["title"] for line in (Path(live_service.data_dir) / "items.jsonl").open()]
    with httpx.Client(base_url=live_service.url, timeout=30) as client:
        for title in titles[:3]:
            assert client.post("/retrieve", json={"query": title, "k": 5}).status_code == 200
        text = client.get("/metrics").text
    exported = _exported(text)
    used = {m for e in _exprs(dashboard) for m in re.findall(r"\bsa2crq_[a-z_]+", e)}
    assert len(used) >= 15
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    # the label values the panels select on are the ones the service writes
    assert re.search(r'sa2crq_requests_total\{[^}]*endpoint="/retrieve"[^}]*status="200"', text) or \
        re.search(r'sa2crq_requests_total\{[^}]*status="200"[^}]*endpoint="/retrieve"', text)
    assert re.search(r'sa2crq_request_latency_seconds_bucket\{[^}]*endpoint="/retrieve"', text)
