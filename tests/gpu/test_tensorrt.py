"""TensorRT FP16 engine: build, cache key, staleness, agreement with ONNX Runtime (GPU host)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from aspects_client import contract


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (run on a GPU host with the NGC 24.10 TensorRT)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU available"
    return None


_REASON = _gpu_skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(unet.onnx of the demo weights, its FP16 engine) built once."""
    from aspects_export import graphs, tensorrt_build
    from aspects_export.checkpoints import load_model

    d = tmp_path_factory.mktemp("trt")
    model, note = load_model("untrained")
    onnx_path = graphs.export_unet(model, d / "unet.onnx", {"checkpoint": note})
    engine = tensorrt_build.build_engine(onnx_path, d / "unet.plan")
    return onnx_path, engine


def test_engine_and_cache_key(built: tuple[Path, Path]) -> None:
    from aspects_export import tensorrt_build
    from aspects_export.numeric_check import sha256_file

    onnx_path, engine = built
    assert engine.is_file() and engine.stat().st_size > 1_000_000
    key = json.loads(tensorrt_build.key_path(engine).read_text())
    assert key["onnx_sha256"] == sha256_file(onnx_path)
    assert key["precision"] == "fp16"
    assert key["profile_batch"] == [1, 8, contract.MAX_BATCH_SIZE]
    assert not tensorrt_build.engine_is_stale(engine, onnx_path)


def test_stale_when_the_key_changes(built: tuple[Path, Path], tmp_path: Path) -> None:
    from aspects_export import tensorrt_build

    onnx_path, engine = built
    copy = tmp_path / "unet.plan"
    copy.write_bytes(engine.read_bytes())
    assert tensorrt_build.engine_is_stale(copy, onnx_path)  # no key beside it
    key = json.loads(tensorrt_build.key_path(engine).read_text())
    key["tensorrt_version"] = "0.0.0"
    tensorrt_build.key_path(copy).write_text(json.dumps(key))
    assert tensorrt_build.engine_is_stale(copy, onnx_path)


def test_engine_batches_and_agrees_with_onnxruntime(built: tuple[Path, Path]) -> None:
    from aspects_client import preprocessing as pp
    from aspects_export import numeric_check, tensorrt_build

    onnx_path, engine = built
    slices, _ = numeric_check.phantom_slices(4)
    image = pp.network_input(pp.context_stacks(slices))
    assert image.shape == (4, contract.NETWORK_CHANNELS, *contract.NETWORK_SIZE)
    logits = tensorrt_build.run_engine(engine, image)
    assert logits.shape == (4, contract.NUM_CLASSES, *contract.NETWORK_SIZE)
    report = tensorrt_build.compare_with_onnxruntime(engine, onnx_path, slices)
    assert report["label_agreement"] >= tensorrt_build.MIN_LABEL_AGREEMENT, report
