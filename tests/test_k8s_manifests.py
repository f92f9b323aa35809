"""The Kubernetes manifests: each overlay rendered by `kubectl kustomize`, every object checked
against the Kubernetes schemas (kubernetes-validate, strict) and against the server."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bitpatch.server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "docker" / "k8s"
OVERLAYS = ("cpu", "gpu", "prometheus-operator")
KUBERNETES = "1.37"


def render(overlay: str) -> list[dict]:
    kubectl = Path(sys.executable).with_name("kubectl")
    out = subprocess.run(
        [str(kubectl), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict]) -> dict[str, dict]:
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {o["kind"]: o for o in objects}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, dict[str, dict]]:
    return request.param, by_kind(render(request.param))


def test_every_object_passes_the_kubernetes_schemas(rendered):
    _, objects = rendered
    for kind, obj in objects.items():
        if kind == "ServiceMonitor":  # a Prometheus Operator CRD: checked below
            continue
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_the_schema_check_can_fail():
    deployment = by_kind(render("cpu"))["Deployment"]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def pod_of(objects: dict[str, dict]) -> dict:
    return objects["Deployment"]["spec"]["template"]


def test_deployment_probes_drain_and_security(rendered):
    _, objects = rendered
    pod = pod_of(objects)
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    drain = container["lifecycle"]["preStop"]["exec"]["command"]
    assert drain[0] == "sleep" and int(drain[1]) < pod["spec"]["terminationGracePeriodSeconds"]
    assert "USER 10001" in (ROOT / "Dockerfile").read_text()
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # the one writable path the image needs (HF_HOME is under it)
    assert "memory" in container["resources"]["limits"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])


def test_configuration_is_only_bitpatch_and_aws_variables(rendered):
    _, objects = rendered
    (container,) = pod_of(objects)["spec"]["containers"]
    config = objects["ConfigMap"]
    refs = container["envFrom"]
    assert refs[0]["configMapRef"]["name"] == config["metadata"]["name"]
    assert refs[1]["secretRef"]["name"] == "bitpatch-secrets"
    fields = {f"BITPATCH_{name.upper()}" for name in Settings.model_fields}
    names = set(config["data"]) | {e["name"] for e in container["env"]}
    for name in names:
        assert name in fields or name.startswith("AWS_"), name
    Settings(**{k.removeprefix("BITPATCH_").lower(): v for k, v in config["data"].items()
                if k.startswith("BITPATCH_")})  # fmt: skip
    assert config["data"]["BITPATCH_STORE"].startswith("s3://")  # shared by every replica


def test_service_autoscaler_and_disruption_budget_select_the_pods(rendered):
    _, objects = rendered
    labels = pod_of(objects)["metadata"]["labels"]
    selectors = (
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        objects["Deployment"]["spec"]["selector"]["matchLabels"],
    )
    for selector in selectors:
        assert selector and selector.items() <= labels.items()
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 3 > objects["PodDisruptionBudget"]["spec"]["maxUnavailable"]
    assert "replicas" not in objects["Deployment"]["spec"]  # the autoscaler owns the count


def test_gpu_overlays_ask_for_a_gpu_and_cpu_does_not(rendered):
    overlay, objects = rendered
    spec = pod_of(objects)["spec"]
    (container,) = spec["containers"]
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    if overlay == "cpu":
        assert gpus is None and "tolerations" not in spec
        assert container["image"].endswith(":cpu")
    else:
        assert gpus == 1
        assert spec["nodeSelector"] and spec["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_service_monitor_scrapes_the_service():
    objects = by_kind(render("prometheus-operator"))
    monitor, service = objects["ServiceMonitor"], objects["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
