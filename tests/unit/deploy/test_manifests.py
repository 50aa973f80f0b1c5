"""Every deployment file under deploy/ parses and agrees with the service and the Dockerfile.

Probes (/healthz liveness, /readyz readiness), the port (8000), the image reference
(`aeserve:<project version>`), the settings (AESERVE_* names the server knows), the metrics the
alerts and the dashboard query, and the README's deploy commands. No docker, no cluster.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml parses the manifests")

from aeserve.serving.metrics import Metrics  # noqa: E402
from aeserve.serving.routes import health  # noqa: E402
from aeserve.serving.settings import Settings  # noqa: E402
from tests.container.commands import (  # noqa: E402
    README_COMMANDS,
    ROOT,
    as_in_readme,
    image_ref,
    project_version,
)

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PORT = 8000
LIVENESS, READINESS = "/healthz", "/readyz"


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects() -> dict[str, dict]:
    """deploy/k8s's objects by kind (one of each)."""
    objects: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            assert doc["kind"] not in objects, f"two {doc['kind']}s in deploy/k8s"
            objects[doc["kind"]] = doc
    return objects


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def split_volume(volume: str) -> tuple[str, str, str]:
    """A compose short-syntax volume: (source, target, mode); the source may be `${VAR:-x}`."""
    match = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+))?", volume)
    assert match, f"not a volume: {volume}"
    return match.group(1), match.group(2), match.group(3) or "rw"


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def dockerfile_instruction(name: str) -> str:
    """The last instruction `name` of the Dockerfile (the runtime stage), continuation lines
    joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile())
    lines = [line for line in text.splitlines() if line.split(" ", 1)[0] == name]
    assert lines, f"no {name} in the Dockerfile"
    return lines[-1].split(" ", 1)[1].strip()


def image_user() -> int:
    return int(dockerfile_instruction("USER").split(":")[0])


def setting_names() -> set[str]:
    return {f"AESERVE_{name.upper()}" for name in Settings.model_fields}


def check_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Every AESERVE_* variable is one the server reads, and its value is valid."""
    unknown = {k for k in env if k.startswith("AESERVE_")} - setting_names()
    assert not unknown, f"not settings of the server: {sorted(unknown)}"
    for key in list(setting_names()):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key.startswith("AESERVE_"):
            monkeypatch.setenv(key, str(value))
    return Settings()


def container_port(container: dict, port: int | str) -> int:
    """A probe's or a Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named[port]


def check_probes(container: dict) -> None:
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert live["path"] == LIVENESS
    assert ready["path"] == READINESS
    assert container_port(container, live["port"]) == PORT
    assert container_port(container, ready["port"]) == PORT
    assert [p["containerPort"] for p in container["ports"]] == [PORT]
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == LIVENESS


def check_container_security(container: dict) -> None:
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and \
        {"cpu", "memory"} <= set(resources["limits"])


def metric_names() -> set[str]:
    """Every series name the server can expose."""
    names = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"],
                    "gauge": [""]}[family.type]
        names |= {family.name + suffix for suffix in suffixes}
    return names


def queried_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\baeserve_[a-z_]+\b", expr))


# --- the files themselves -----------------------------------------------------------------


def test_every_deploy_file_parses():
    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
    assert files
    for path in files:
        if path.suffix in (".yml", ".yaml"):
            assert load_all(path), f"{path} is empty"
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".Dockerfile":
            lines = [line for line in path.read_text().splitlines()
                     if line and not line.startswith("#")]
            assert lines[0].startswith("FROM ") and lines[-1].startswith("CMD ["), path
        elif path.suffix == ".sh":  # bash parses it without running it
            checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stderr
            assert os.access(path, os.X_OK), f"{path} is not executable"
        else:
            pytest.fail(f"unexpected file in deploy/: {path}")


def test_service_routes_are_the_probed_ones():
    paths = {route.path for route in health.router.routes}
    assert {LIVENESS, READINESS, "/metrics"} <= paths


# --- the Dockerfile ------------------------------------------------------------------------


def test_dockerfile_runtime_stage():
    assert dockerfile_instruction("EXPOSE") == str(PORT)
    assert image_user() != 0
    assert LIVENESS in dockerfile_instruction("HEALTHCHECK")
    cmd = json.loads(dockerfile_instruction("CMD"))
    assert cmd[0] == "serve" and cmd[cmd.index("--port") + 1] == str(PORT)
    assert json.loads(dockerfile_instruction("ENTRYPOINT")) == ["aeserve"]
    assert "AESERVE_MODELS_DIR=/models" in dockerfile_instruction("ENV")
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile()
    assert "COPY models/ /models/" in dockerfile()
    # the default build installs the serving extra only: torch needs EXTRAS=serve,train
    assert re.search(r"^ARG EXTRAS=serve$", dockerfile(), re.MULTILINE)


# --- docker compose ------------------------------------------------------------------------


def test_compose_server(monkeypatch):
    spec = compose()
    server = spec["services"]["aeserve"]
    assert server["image"] == image_ref()
    context = (DEPLOY / server["build"]["context"]).resolve()
    assert context == ROOT and (context / server["build"]["dockerfile"]).is_file()
    assert [p.rsplit(":", 1)[1] for p in server["ports"]] == [str(PORT)]
    assert json.loads(dockerfile_instruction("CMD")) == server["command"]
    assert LIVENESS in " ".join(server["healthcheck"]["test"])
    assert server["restart"] in ("always", "unless-stopped", "on-failure")
    assert {"cpus", "memory"} <= set(server["deploy"]["resources"]["limits"])
    settings = check_settings(server["environment"], monkeypatch)
    models = [m for m in map(split_volume, server["volumes"]) if m[1] == str(settings.models_dir)]
    assert len(models) == 1 and models[0][2] == "ro", "the models folder, mounted read-only"


def test_compose_monitoring_files_exist():
    spec = compose()
    for name in ("prometheus", "grafana"):
        for volume in spec["services"][name]["volumes"]:
            source = split_volume(volume)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts a missing {source}"


def test_compose_trainer_writes_where_the_server_reads():
    spec = compose()
    server, trainer = spec["services"]["aeserve"], spec["services"]["trainer"]
    assert trainer["profiles"] == ["train"]
    assert trainer["image"] == f"aeserve-train:{project_version()}"
    assert trainer["build"]["args"]["EXTRAS"] == "serve,train"
    server_models = next(m for m in map(split_volume, server["volumes"]) if m[2] == "ro")
    trainer_models = [m for m in map(split_volume, trainer["volumes"])
                      if m[0] == server_models[0]]
    assert len(trainer_models) == 1 and trainer_models[0][2] == "rw", "shared, writable"
    command = trainer["command"]
    assert command[0] == "train"
    assert command[command.index("--models-dir") + 1] == trainer_models[0][1]


def test_compose_stream_runner_reads_the_brokers_topics_and_the_servers_models():
    spec = compose()
    server, broker, runner = (spec["services"][name] for name in ("aeserve", "mosquitto",
                                                                  "stream"))
    assert broker["profiles"] == runner["profiles"] == ["streams"]
    assert runner["image"] == f"aeserve-stream:{project_version()}"
    assert runner["build"]["args"]["EXTRAS"] == "stream"
    assert runner["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    command = runner["command"]
    assert command[0] == "stream"
    for flag in ("--source", "--sink", "--errors"):
        assert command[command.index(flag) + 1].startswith("mqtt://mosquitto:1883/")
    models = next(m for m in map(split_volume, server["volumes"]) if m[2] == "ro")
    assert command[command.index("--model") + 1].startswith(models[1] + "/")
    assert any(split_volume(v)[:2] == models[:2] for v in runner["volumes"])
    assert "9100" in " ".join(runner["healthcheck"]["test"])
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "aeserve-stream"]
    assert job["static_configs"][0]["targets"] == [f"stream:{command[-1]}"]
    dockerfile = DEPLOY / broker["build"]["context"] / broker["build"]["dockerfile"]
    assert "listener 1883 0.0.0.0" in dockerfile.read_text()


def test_the_stream_image_keeps_the_batch_code_the_runner_is_part_of():
    removal = next(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                   if "rm -rf aeserve/batch" in line)
    assert "*,stream,*" in removal


# --- Prometheus and Grafana ----------------------------------------------------------------


def test_prometheus_scrapes_the_server_and_alerts():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "aeserve"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"aeserve:{PORT}"]
    mounts = {split_volume(v)[0]: split_volume(v)[1]
              for v in compose()["services"]["prometheus"]["volumes"]}
    assert config["rule_files"] == [mounts["./prometheus/alerts.yml"]]

    rules = [r for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
             ["groups"] for r in g["rules"]]
    known = metric_names()
    for rule in rules:
        assert queried_metrics(rule["expr"]) <= known, rule["expr"]
    alerts = {r["alert"]: " ".join(r["expr"].split()) for r in rules if "alert" in r}
    assert any("sum by (model) (rate(aeserve_anomalies_total[5m])) / sum by (model) "
               "(rate(aeserve_scored_rows_total[5m]))" in e for e in alerts.values())
    assert any('aeserve_requests_total{status=~"5.."}' in e for e in alerts.values())


def test_grafana_dashboard_queries_what_the_server_exposes():
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "aeserve.yml").read_text())["providers"]
    mounts = {split_volume(v)[0]: split_volume(v)[1]
              for v in compose()["services"]["grafana"]["volumes"]}
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "aeserve.json").read_text())
    known = metric_names()
    exprs = []
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == datasource["uid"]
            assert queried_metrics(target["expr"]) <= known, target["expr"]
            exprs.append(target["expr"])
    every = " ".join(exprs)
    for wanted in ("aeserve_requests_total", "aeserve_request_duration_seconds_bucket",
                   "aeserve_batch_rows_bucket", "aeserve_anomalies_total",
                   "aeserve_scored_rows_total", "aeserve_score_threshold_ratio_bucket",
                   "aeserve_shadow_rows_total", "aeserve_feedback_labels_total",
                   "aeserve_stream_series_in_alarm", "aeserve_alarm_events_total"):
        assert wanted in every, f"no panel queries {wanted}"
    assert "histogram_quantile(0.99" in every
    # the drift panel reads the PSI that the alert rules record from the server's gauges
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    recorded = {rule["record"]: rule["expr"] for group in alerts["groups"]
                for rule in group["rules"] if "record" in rule}
    assert "aeserve:drift_psi" in every and "aeserve:drift_psi" in recorded
    assert queried_metrics(recorded["aeserve:drift_psi"]) == {
        "aeserve_drift_window_rows", "aeserve_drift_reference_share"} <= known


# --- Kubernetes ----------------------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    (image,) = kustomization["images"]
    assert f"{image['name']}:{image['newTag']}" == image_ref()


def test_deployment(monkeypatch):
    objects = k8s_objects()
    deployment, config = objects["Deployment"], objects["ConfigMap"]
    pod = deployment["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"] == image_ref()
    assert server["args"] == json.loads(dockerfile_instruction("CMD"))
    check_probes(server)
    check_container_security(server)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_user()

    sources = {next(iter(s.values()))["name"] for s in server["envFrom"]}
    assert config["metadata"]["name"] in sources
    settings = check_settings(config["data"], monkeypatch)
    assert pod["terminationGracePeriodSeconds"] >= settings.drain_seconds + 15
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    models_volume = mounts[str(settings.models_dir)]
    for init in pod.get("initContainers", []):
        assert init["image"] == image_ref()
        check_container_security(init)
        assert models_volume in {m["name"] for m in init["volumeMounts"]}
    assert models_volume in {v["name"] for v in pod["volumes"]}
    assert "/tmp" in mounts, "a writable /tmp beside the read-only root"


def test_service_hpa_and_pdb_select_the_pods():
    objects = k8s_objects()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (server,) = deployment["spec"]["template"]["spec"]["containers"]

    service = objects["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == PORT and container_port(server, port["targetPort"]) == PORT

    hpa = objects["HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    pdb = objects["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a node can still drain"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(out.stdout)}
    assert kinds == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget"}
    assert f"image: {image_ref()}" in out.stdout


# --- KServe --------------------------------------------------------------------------------


def test_kserve_custom_container_on_v2(monkeypatch):
    (isvc,) = load_all(DEPLOY / "kserve" / "inferenceservice.yaml")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == image_ref()
    assert container["args"] == json.loads(dockerfile_instruction("CMD"))
    env = {e["name"]: e["value"] for e in container["env"]}
    # A custom container's protocol is its PROTOCOL variable (KServe's custom predictor)
    assert env["PROTOCOL"] == "v2"
    check_settings(env, monkeypatch)
    check_probes(container)
    check_container_security(container)
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["runAsUser"] == image_user()


# --- README --------------------------------------------------------------------------------


def test_readme_shows_the_commands_the_container_test_runs():
    readme = (ROOT / "README.md").read_text()
    assert "## Deploy" in readme
    deploy = readme.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    for command in README_COMMANDS:
        assert as_in_readme(command) in deploy, f"README's Deploy section lacks: {command}"
    for command in ("kubectl apply -k deploy/k8s",
                    "kubectl apply -f deploy/kserve/inferenceservice.yaml",
                    "docker compose -f deploy/docker-compose.yml up -d",
                    "make test-container"):
        assert command in deploy, command
    for block in re.findall(r"```sh\n(.*?)```", deploy, re.DOTALL):
        for line in block.splitlines():
            if line.strip() and not line.startswith("#"):
                shlex.split(line.rstrip("\\"))  # every shown command is well-formed


# --- KubeRay ------------------------------------------------------------------------------


def test_the_rayjob_runs_the_ray_engine_on_a_shared_volume():
    (job,) = load_all(DEPLOY / "kuberay" / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    command = job["spec"]["entrypoint"].split()
    assert command[:2] == ["aeserve", "train"] and "--engine" in command
    assert command[command.index("--engine") + 1] == "ray"
    workers = int(command[command.index("--workers") + 1])
    cluster = job["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    # One CPU per training worker and one for Ray Data's reads in each pod: every worker fits.
    assert group["replicas"] * (int(group["rayStartParams"]["num-cpus"]) - 1) >= workers
    pods = [cluster["headGroupSpec"]["template"], group["template"]]
    for pod in pods:  # every pod reads the data and the driver publishes: one shared volume
        (container,) = pod["spec"]["containers"]
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "aeserve-data"
