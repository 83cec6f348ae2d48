"""docs/: every path, image, port, flag and metric the guides quote exists and agrees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .helpers import COMPOSE_FILE, K8S, ROOT, TRITON_IMAGE, TRITON_PORTS

DOCS = sorted((ROOT / "docs").glob("*.md"))
# Metric families of Triton 2.51 seen on the local server (nvidia-pytriton 0.7.0) after an
# inference, plus the GPU families it adds on a GPU (--allow-gpu-metrics).
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_pending_request_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
}
_PATH = re.compile(
    r"`((?:deploy|docker|docs|model_repository|models|tests|export|client|train|benchmarks"
    r"|scripts)/[^`\s]*)`"
)


def test_docs_exist() -> None:
    assert {p.name for p in DOCS} >= {"deployment.md", "runbook.md", "security.md"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_quoted_paths_and_links_exist(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    paths = set(_PATH.findall(text))
    for link in re.findall(r"\]\(([^)#\s]+)\)", text):
        if "://" not in link:
            paths.add(str((doc.parent / link).resolve().relative_to(ROOT)))
    for rel in sorted(paths):
        rel = rel.rstrip("/").split("<")[0]
        found = list(ROOT.glob(rel)) if "*" in rel else [ROOT / rel] * (ROOT / rel).exists()
        assert found, f"{doc.name} quotes {rel}, which does not exist"


def test_metrics_quoted_are_triton_metrics() -> None:
    adapter = (K8S / "monitoring/prometheus-adapter-config.yaml").read_text()
    quoted = set()
    for text in [adapter, *(d.read_text() for d in DOCS)]:
        quoted |= set(re.findall(r"\bnv_[a-z_]+\b", text))
    assert quoted, "no metric quoted"
    assert quoted <= TRITON_METRICS, f"not Triton metrics: {sorted(quoted - TRITON_METRICS)}"
    runbook = (ROOT / "docs/runbook.md").read_text()
    for needed in (
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_pending_request_count",
        "nv_gpu_utilization",
    ):
        assert needed in runbook


def test_deployment_guide_names_the_pinned_images_and_ports() -> None:
    text = (ROOT / "docs/deployment.md").read_text()
    assert TRITON_IMAGE in text and "Triton 2.51" in text
    seaweed = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["s3"]["image"]
    assert seaweed in text
    for port in TRITON_PORTS.values():
        assert f"**{port}**" in text


def test_runbook_tunables_exist_in_the_configs() -> None:
    text = (ROOT / "docs/runbook.md").read_text()
    unet = (ROOT / "model_repository/unet/config.pbtxt").read_text()
    for knob in ("instance_group", "preferred_batch_size", "max_queue_delay_microseconds"):
        assert knob in text and knob in unet
    from aspects_export.tensorrt_build import PROFILE_BATCH

    assert f"PROFILE_BATCH = {PROFILE_BATCH}" in text


def test_security_notes_quote_real_tls_options() -> None:
    import dataclasses

    from aspects_client.cli import build_parser
    from aspects_client.inference import InferenceSettings

    text = (ROOT / "docs/security.md").read_text()
    for flag in ("--grpc-use-ssl", "--grpc-server-cert", "--grpc-server-key", "--grpc-root-cert"):
        assert flag in text
    args = build_parser().parse_args(
        ["segment", "s3://b/k.nii.gz", "-o", "out/", "--tls", "--root-certificates", "ca.pem"]
    )
    assert args.tls is True and args.root_certificates == "ca.pem"
    fields = {f.name for f in dataclasses.fields(InferenceSettings)}
    assert {"ssl", "root_certificates"} <= fields
    assert "--tls --root-certificates" in text and "ssl=True" in text
