"""The CPU runtime profile of the unet (issue 15, docs/cpu-serving.md): profile names and the
default on this CPU, the generated configs, the shared model.py on OpenVINO, and the precision
gate on the demo weights (passes for bf16 here; a failing gate refuses the repository and
writes nothing)."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aspects_client import contract
from aspects_export import numeric_check
from aspects_export import repository as repo
from aspects_export.errors import ExportError

ov = pytest.importorskip("openvino", reason="openvino is part of the [export] extra")


@pytest.fixture(scope="module")
def demo_onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """preprocess/unet/postprocess.onnx of the demo weights (the exporter's default)."""
    from aspects_export.pipeline import export_onnx

    out = tmp_path_factory.mktemp("demo_onnx")
    export_onnx("demo", out, check_slices=0)
    return out


@pytest.fixture
def model_py(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """triton_python_model with a stand-in pb_utils (the real one lives in Triton's stub)."""
    fake = types.ModuleType("triton_python_backend_utils")
    fake.TritonError = type("TritonError", (Exception,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    return importlib.reload(importlib.import_module("aspects_export.triton_python_model"))


def test_profiles_and_the_default_on_this_cpu() -> None:
    assert sorted(repo.CPU_RUNTIMES) == ["onnxruntime", "openvino-bf16", "openvino-f32"]
    assert repo.resolve_cpu_runtime(None) == repo.REFERENCE_CPU_RUNTIME
    assert repo.resolve_cpu_runtime("openvino-bf16") == repo.CpuRuntime("openvino", "bf16")
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    expected = "openvino-bf16" if "BF16" in capabilities else "onnxruntime"
    assert repo.cpu_bf16_supported() == ("BF16" in capabilities)
    assert repo.default_cpu_runtime().name == repo.resolve_cpu_runtime("auto").name == expected
    for bad in ("openvino", "onnxruntime-bf16", "tensorrt", repo.CpuRuntime("openvino", "f16")):
        with pytest.raises(ExportError, match="unknown CPU runtime"):
            repo.resolve_cpu_runtime(bad)


def test_cpu_config_sets_the_unet_profile_and_keeps_the_rest() -> None:
    configs = repo.load_committed_configs()
    reference = {n: repo.cpu_config(configs[n]) for n in contract.STEP_MODELS}
    bf16 = {n: repo.cpu_config(configs[n], "openvino-bf16") for n in contract.STEP_MODELS}
    for name in contract.STEP_MODELS:
        params = {k: v.string_value for k, v in bf16[name].parameters.items()}
        is_unet = name == contract.UNET_MODEL
        assert params[repo.PARAM_RUNTIME] == ("openvino" if is_unet else "onnxruntime"), name
        assert params[repo.PARAM_PRECISION] == ("bf16" if is_unet else "f32"), name
        assert (repo.PARAM_OPENVINO_HINT in params) == is_unet, name
        ref_params = reference[name].parameters
        assert ref_params[repo.PARAM_RUNTIME].string_value == "onnxruntime", name
        assert ref_params[repo.PARAM_PRECISION].string_value == "f32", name
        for field in ("input", "output", "dynamic_batching", "model_warmup", "instance_group"):
            assert getattr(bf16[name], field) == getattr(reference[name], field), (name, field)


def _toy_onnx(path: Path) -> Path:
    """Y = 2 · A (FP32 [N, 4])."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["two"], value_float=2.0),
         helper.make_node("Mul", ["A", "two"], ["Y"])],
        "toy",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_model_py_builds_the_session_the_parameters_ask_for(
    model_py: types.ModuleType, tmp_path: Path
) -> None:
    path = str(_toy_onnx(tmp_path / "toy.onnx"))
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    for params, kind in (
        ({}, model_py.OnnxRuntimeSession),
        ({"runtime": "onnxruntime", "precision": "f32"}, model_py.OnnxRuntimeSession),
        ({"runtime": "openvino", "precision": "f32"}, model_py.OpenVINOSession),
    ):
        session = model_py.build_session(path, params)
        assert isinstance(session, kind) and session.precision == "f32"
        assert session.io() == ({"A": np.dtype(np.float32)}, {"Y": np.dtype(np.float32)})
        (y,) = session.run(["Y"], {"A": a})
        np.testing.assert_array_equal(y, 2 * a)
        (y1,) = session.run(["Y"], {"A": a[:1]})  # dynamic batch; earlier outputs not reused
        np.testing.assert_array_equal(y, 2 * a)
        np.testing.assert_array_equal(y1, 2 * a[:1])
    for params, message in (
        ({"runtime": "tensorrt"}, "runtime must be one of"),
        ({"runtime": "openvino", "precision": "f16"}, "precision must be one of"),
        ({"runtime": "onnxruntime", "precision": "bf16"}, "f32 only"),
        ({"runtime": "openvino", "intra_op_thread_count": "-1"}, ">= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            model_py.build_session(path, params)


def test_openvino_precision_is_explicit_and_verified(model_py: types.ModuleType, tmp_path: Path):
    """bf16 is asked for explicitly and read back; a CPU without bf16 refuses to load."""
    path = str(_toy_onnx(tmp_path / "toy.onnx"))
    params = {"runtime": "openvino", "precision": "bf16"}
    if not model_py.openvino_bf16_supported():
        with pytest.raises(ValueError, match="no bf16 support"):
            model_py.build_session(path, params)
        return
    session = model_py.build_session(path, params)
    assert session.precision == "bf16"
    assert session.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    f32 = model_py.build_session(path, {"runtime": "openvino", "precision": "f32"})
    assert f32.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"


def test_bf16_profile_passes_the_gate_on_the_demo_weights(demo_onnx_dir: Path, tmp_path: Path):
    """The default profile here: written with its gate figures in the unet's config."""
    runtime = repo.default_cpu_runtime()
    if runtime.is_fp32:
        pytest.skip(f"this CPU has no bf16; its default {runtime.name} needs no gate")
    out = repo.write_repository(demo_onnx_dir, tmp_path / "cpu", "cpu", cpu_runtime=runtime)
    unet = repo.parse_config(out / contract.UNET_MODEL / repo.CONFIG_FILE).parameters
    assert unet[repo.PARAM_RUNTIME].string_value == "openvino"
    assert unet[repo.PARAM_PRECISION].string_value == "bf16"
    gate = unet[repo.PARAM_NUMERIC_GATE].string_value
    assert gate.endswith(": passed") and "labels differ on" in gate, gate
    assert "unet.onnx sha256:" in unet[repo.PARAM_CHECKPOINT].string_value  # provenance kept
    figures = float(gate.split("labels differ on ")[1].split(" %")[0])
    assert 0 < figures <= 100 * numeric_check.MAX_LABEL_DISAGREEMENT  # bf16 is not bit-exact


def test_a_failing_gate_refuses_the_repository(
    demo_onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a limit no bf16 run can meet (0 differing pixels), nothing is written and the
    message names the FP32 profiles to pick instead.  One phantom keeps it short."""
    if not repo.cpu_bf16_supported():
        pytest.skip("this CPU has no bf16")
    monkeypatch.setattr(numeric_check, "MAX_LABEL_DISAGREEMENT", 0.0)
    real_cases = numeric_check.gate_cases
    monkeypatch.setattr(numeric_check, "gate_cases", lambda volumes=1: real_cases(1))
    out = tmp_path / "refused"
    with pytest.raises(ExportError, match="refused by the precision gate") as refused:
        repo.write_repository(demo_onnx_dir, out, "cpu", cpu_runtime="openvino-bf16")
    assert "--cpu-runtime openvino-f32" in str(refused.value)
    assert "FAILED" in str(refused.value)
    assert not out.exists()


def test_a_profile_that_cannot_run_the_graph_is_refused_before_writing(tmp_path: Path) -> None:
    """A non-FP32 profile is gated on the real graph: an unreadable unet.onnx is refused."""
    if not repo.cpu_bf16_supported():
        pytest.skip("this CPU has no bf16")
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for name in contract.STEP_MODELS:
        (onnx_dir / f"{name}.onnx").write_bytes(b"not a graph")
    with pytest.raises(ExportError, match=r"cannot run unet\.onnx with openvino bf16"):
        repo.write_repository(onnx_dir, tmp_path / "out", "cpu", cpu_runtime="openvino-bf16")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExportError, match="only belongs in the 'cpu' layout"):
        repo.write_repository(onnx_dir, tmp_path / "gpu", "gpu", cpu_runtime="openvino-f32")


def test_fp32_profiles_are_written_ungated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_gate(*_a: Any, **_k: Any) -> None:
        raise AssertionError("an FP32 profile must not run the gate")

    monkeypatch.setattr(numeric_check, "precision_gate", no_gate)
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for name in contract.STEP_MODELS:
        (onnx_dir / f"{name}.onnx").write_bytes(f"stand-in {name}".encode())
    out = repo.write_repository(onnx_dir, tmp_path / "cpu", "cpu", cpu_runtime="openvino-f32")
    unet = repo.parse_config(out / contract.UNET_MODEL / repo.CONFIG_FILE).parameters
    assert unet[repo.PARAM_NUMERIC_GATE].string_value == "openvino-f32: FP32, not gated"
    assert unet[repo.PARAM_RUNTIME].string_value == "openvino"
