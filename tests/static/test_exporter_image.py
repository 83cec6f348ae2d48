"""The exporter image (docker/exporter.Dockerfile), read without Docker: CPU-only torch, GPU
access through NVML and cuda-python only, the atlas baked in for the numeric gates, and the
same NGC release as the Triton image."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "exporter.Dockerfile").read_text()


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_torch_is_the_cpu_build_installed_before_the_project() -> None:
    cpu = re.search(r"--index-url https://download\.pytorch\.org/whl/cpu\s*\\\s*\n\s*torch==(\S+)",
                    DOCKERFILE)
    assert cpu, "torch must come from the CPU wheel index"
    project = DOCKERFILE.index("'.[export,gpu]'")  # after the client: ./client[dicom,score]
    assert DOCKERFILE.index("whl/cpu") < project  # so the extra's pin finds it installed
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"torch=={cpu.group(1)}"' in pyproject, "same torch as the [synth] extra pins"
    assert "torch.version.cuda is None" in DOCKERFILE  # the build fails on a CUDA torch


def test_the_gpu_is_reached_without_torch() -> None:
    for module in ("tensorrt_build.py", "releases.py"):
        assert "torch" not in _imported_modules(ROOT / "export" / "aspects_export" / module)
    source = (ROOT / "export" / "aspects_export" / "tensorrt_build.py").read_text()
    assert "pynvml" in source and "cudart" in source


def test_the_atlas_is_baked_in_and_required_by_the_gates() -> None:
    assert re.search(r"ASPECTS_REQUIRE_PHANTOM=1", DOCKERFILE)
    cache = re.search(r"ASPECTS_CACHE_DIR=(\S+)", DOCKERFILE)
    assert cache and not cache.group(1).startswith("/build"), "the atlas must not live on a volume"
    assert "ensure_atlas()" in DOCKERFILE and "verify_cache()" in DOCKERFILE


def test_same_ngc_release_as_triton_and_the_serving_table() -> None:
    from aspects_export.releases import SERVING_TENSORRT

    release = re.search(r"tensorrt:(\d\d\.\d\d)-py3", DOCKERFILE).group(1)
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"tritonserver:{release}-py3" in compose
    assert release in SERVING_TENSORRT
