"""The KServe InferenceServices under docker/kserve: their predictor pod passes the Kubernetes
schemas, every BITPATCH_* variable is a setting with a valid value, the probes name real v2
routes, and the exposed port is the one the server listens on for its protocol."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bitpatch.server.app import create_app
from bitpatch.server.settings import Settings

KSERVE = Path(__file__).resolve().parents[1] / "docker" / "kserve"
KUBERNETES = "1.37"
MANIFESTS = {
    "inferenceservice.yaml": "BITPATCH_PORT",
    "inferenceservice-grpc.yaml": "BITPATCH_GRPC_PORT",
}


@pytest.fixture(params=sorted(MANIFESTS))
def manifest(request) -> tuple[dict, str]:
    return yaml.safe_load((KSERVE / request.param).read_text()), MANIFESTS[request.param]


def container_of(service: dict) -> dict:
    (container,) = service["spec"]["predictor"]["containers"]
    return container


def test_it_is_a_v2_inference_service(manifest):
    service, _ = manifest
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["kind"] == "InferenceService"
    assert service["spec"]["predictor"]["protocolVersion"] == "v2"
    assert container_of(service)["name"] == "kserve-container"


def test_the_predictor_pod_passes_the_kubernetes_schemas(manifest):
    service, _ = manifest
    predictor = service["spec"]["predictor"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor"},
        "spec": {"containers": predictor["containers"], "volumes": predictor["volumes"]},
    }
    kubernetes_validate.validate(pod, KUBERNETES, strict=True)


def test_settings_ports_and_probes_are_real(manifest):
    service, port_variable = manifest
    container = container_of(service)
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = {
        name.removeprefix("BITPATCH_").lower(): value
        for name, value in env.items()
        if name.startswith("BITPATCH_")
    }
    assert set(settings) <= set(Settings.model_fields)
    parsed = Settings(**settings)
    (port,) = container["ports"]
    assert port["containerPort"] == int(env[port_variable])
    if port_variable == "BITPATCH_GRPC_PORT":
        assert port["name"] == "h2c" and parsed.grpc_port == port["containerPort"]
    paths = set(create_app(parsed).openapi()["paths"])
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in paths and get["port"] == parsed.port
