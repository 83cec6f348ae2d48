"""TensorRT FP16 engine: build, cache key, staleness, agreement with ONNX Runtime (GPU host)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from aspects_client import contract


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (run on a GPU host with the NGC 24.10 TensorRT)"
    for module, package in (("pynvml", "nvidia-ml-py"), ("cuda", "cuda-python")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (the [gpu] extra)"
    from aspects_export.tensorrt_build import nvml_gpu_name

    if nvml_gpu_name() is None:
        return "no NVIDIA GPU visible through NVML"
    return None


_REASON = _gpu_skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


# Agreement bounds of the FP16 engine with ONNX Runtime (FP32, CPU) on the DEMO weights,
# whose logits span about -26..13 (std ~5) on the phantom: FP16 rounding moves them by
# ~1e-3 on average and a few 1e-2 at most (measured with torch half precision on the CPU).
MIN_ARGMAX_AGREEMENT = 0.99  # all pixels
MIN_REGION_ARGMAX_AGREEMENT = 0.95  # pixels that either side labels as a region
MAX_ABS_LOGIT_DIFF = 1.0
MAX_MEAN_ABS_LOGIT_DIFF = 0.05
MIN_REFERENCE_REGIONS = 4  # region classes the reference must find (the untrained net: 0)
N_SLICES = 18  # more than the profile's max batch (16): run_engine must chunk


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(unet.onnx of the DEMO weights, its FP16 engine) built once.

    The demo weights, not the untrained ones: the untrained network labels every pixel
    background on both sides, so any engine would "agree" with ONNX Runtime."""
    from aspects_export import graphs, tensorrt_build
    from aspects_export.checkpoints import load_model

    d = tmp_path_factory.mktemp("trt")
    model, note = load_model("demo")
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
    assert key["gpu_name"] == tensorrt_build.gpu_name()
    assert not tensorrt_build.engine_is_stale(engine, onnx_path)
    # an up-to-date engine is reused, not rebuilt
    stamp = engine.stat().st_mtime_ns
    assert tensorrt_build.build_engine(onnx_path, engine) == engine
    assert engine.stat().st_mtime_ns == stamp


def test_stale_when_any_part_of_the_key_changes(
    built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of ONNX bytes, GPU, TensorRT version and precision, changed ALONE, makes the
    engine stale; the unchanged key does not (so staleness is not simply always true)."""
    import onnx

    from aspects_export import tensorrt_build
    from aspects_export.numeric_check import sha256_file

    onnx_path, engine = built
    copy = tmp_path / "unet.plan"
    copy.write_bytes(engine.read_bytes())
    assert tensorrt_build.engine_is_stale(copy, onnx_path)  # no key beside it
    key = json.loads(tensorrt_build.key_path(engine).read_text())

    def write_key(**changes: object) -> None:
        tensorrt_build.key_path(copy).write_text(json.dumps({**key, **changes}))

    write_key()
    assert not tensorrt_build.engine_is_stale(copy, onnx_path), "control: the same key"
    for field, value in (
        ("tensorrt_version", "0.0.0"),
        ("precision", "fp32"),
        ("gpu_name", f"{key['gpu_name']} (another card)"),
        ("onnx_sha256", "0" * 64),
        ("profile_batch", [1, 4, 8]),
    ):
        assert key[field] != value
        write_key(**{field: value})
        assert tensorrt_build.engine_is_stale(copy, onnx_path), f"{field} changed: not stale"
    write_key()
    assert not tensorrt_build.engine_is_stale(copy, onnx_path)

    # the ONNX file changes (the same graph re-exported with one more metadata entry)
    model = onnx.load(str(onnx_path))
    model.metadata_props.add(key="re-exported", value="yes")
    other_onnx = tmp_path / "unet.onnx"
    onnx.save(model, str(other_onnx))
    assert sha256_file(other_onnx) != key["onnx_sha256"]
    assert tensorrt_build.engine_is_stale(copy, other_onnx), "other ONNX bytes: not stale"
    assert not tensorrt_build.engine_is_stale(copy, onnx_path)

    # the engine is taken to another GPU model (the key on disk is unchanged)
    other_gpu = f"{key['gpu_name']} (another card)"
    monkeypatch.setattr(tensorrt_build, "gpu_name", lambda: other_gpu)
    assert tensorrt_build.engine_is_stale(copy, onnx_path), "another GPU: not stale"


def test_engine_batches_and_agrees_with_onnxruntime(built: tuple[Path, Path]) -> None:
    import onnxruntime as ort

    from aspects_client import server_reference as pp
    from aspects_export import numeric_check, tensorrt_build

    onnx_path, engine = built
    slices, source = numeric_check.phantom_slices(N_SLICES, allow_download=True)
    assert source.startswith("phantom"), f"the agreement check needs the phantom: {source}"
    image = pp.network_input(pp.context_stacks(slices))
    assert image.shape == (N_SLICES, contract.NETWORK_CHANNELS, *contract.NETWORK_SIZE)
    logits = tensorrt_build.run_engine(engine, image)
    assert logits.shape == (N_SLICES, contract.NUM_CLASSES, *contract.NETWORK_SIZE)
    assert logits.dtype == np.float32 and np.isfinite(logits).all()

    # the reference: the same ONNX graph in ONNX Runtime on the CPU (FP32), run here
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    reference = np.concatenate(
        [
            session.run(None, {contract.TENSOR_IMAGE: image[i : i + 4]})[0]
            for i in range(0, N_SLICES, 4)
        ]
    )
    ref_labels, _ = pp.postprocess_network(reference)
    regions = sorted(set(np.unique(ref_labels).tolist()) - {contract.BACKGROUND_INDEX})
    assert len(regions) >= MIN_REFERENCE_REGIONS, (
        f"the reference labels only {regions} on {source}: not the demo weights?"
    )

    diff = np.abs(logits - reference)
    assert float(diff.max()) <= MAX_ABS_LOGIT_DIFF, float(diff.max())
    assert float(diff.mean()) <= MAX_MEAN_ABS_LOGIT_DIFF, float(diff.mean())
    trt_argmax, ref_argmax = logits.argmax(1), reference.argmax(1)
    argmax_agreement = float(np.mean(trt_argmax == ref_argmax))
    assert argmax_agreement >= MIN_ARGMAX_AGREEMENT, argmax_agreement
    either = (trt_argmax > 0) | (ref_argmax > 0)
    region_agreement = float(np.mean(trt_argmax[either] == ref_argmax[either]))
    assert region_agreement >= MIN_REGION_ARGMAX_AGREEMENT, region_agreement
    trt_labels, _ = pp.postprocess_network(logits)
    label_agreement = float(np.mean(trt_labels == ref_labels))
    assert label_agreement >= tensorrt_build.MIN_LABEL_AGREEMENT, label_agreement

    # the project's own report says the same
    report = tensorrt_build.compare_with_onnxruntime(engine, onnx_path, slices)
    assert report["passed"], report
    assert report["argmax_agreement"] == pytest.approx(argmax_agreement, abs=1e-3), report
    assert report["max_abs_logit_diff"] <= MAX_ABS_LOGIT_DIFF, report
