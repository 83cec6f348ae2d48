"""The committed model repository agrees with contract.py; the CPU generator keeps it so.

Also (issue 15): every step declares the contract's priority levels, a bounded queue and a
warm-up; the generated GPU and CPU repositories carry the unet's ``checkpoint`` parameter
(provenance); the restricted-API server flags are well formed.

Also exercises the shared python_backend ``model.py`` against a stand-in
``triton_python_backend_utils`` (the real one only exists inside Triton's stub).
"""

from __future__ import annotations

import importlib
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from aspects_client import contract
from aspects_export import repository as repo
from aspects_export.errors import ExportError

COMMITTED = repo.find_committed_repository()
ALL_MODELS = (contract.ENSEMBLE_MODEL, *contract.STEP_MODELS)
GPU_PLATFORMS = {
    contract.PREPROCESS_MODEL: "onnxruntime_onnx",
    contract.UNET_MODEL: "tensorrt_plan",
    contract.POSTPROCESS_MODEL: "onnxruntime_onnx",
}


def committed_config_files() -> list[Path]:
    return sorted(COMMITTED.glob("*/config.pbtxt")) + sorted(COMMITTED.glob("*/configs/*.pbtxt"))


def dtype_name(value: int) -> str:
    return mc.DataType.Name(value)


def assert_io_matches_contract(config: mc.ModelConfig) -> None:
    inputs, outputs = contract.MODEL_IO[config.name]
    for declared, expected in ((config.input, inputs), (config.output, outputs)):
        got = [(t.name, dtype_name(t.data_type), tuple(t.dims)) for t in declared]
        assert got == [(s.name, s.dtype, s.dims) for s in expected], config.name
    assert config.max_batch_size == contract.MAX_BATCH_SIZE, config.name


# --- committed configs ------------------------------------------------------------------------


def test_committed_repository_has_exactly_the_contract_models() -> None:
    names = {p.name for p in COMMITTED.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert names == set(ALL_MODELS)
    for name in ALL_MODELS:
        assert not any(p.name.isdigit() for p in (COMMITTED / name).iterdir() if p.is_file())


@pytest.mark.parametrize(
    "path", committed_config_files(), ids=lambda p: str(p.relative_to(COMMITTED))
)
def test_every_committed_config_parses_and_agrees_with_the_contract(path: Path) -> None:
    config = repo.parse_config(path)
    model_dir = path.parent if path.name == repo.CONFIG_FILE else path.parent.parent
    assert config.name == model_dir.name
    assert_io_matches_contract(config)


def test_step_configs_are_the_gpu_deployment() -> None:
    configs = repo.load_committed_configs()
    for name, platform in GPU_PLATFORMS.items():
        config = configs[name]
        assert config.platform == platform and not config.backend, name
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU], name
        batching = config.dynamic_batching
        assert config.HasField("dynamic_batching"), name
        assert list(batching.preferred_batch_size), name
        assert all(1 < b <= contract.MAX_BATCH_SIZE for b in batching.preferred_batch_size)
        assert list(batching.preferred_batch_size) == sorted(batching.preferred_batch_size)
        assert 0 < batching.max_queue_delay_microseconds <= 10_000, name
        assert config.parameters, f"{name}: tunables belong in parameters"


def test_unet_onnxruntime_fallback_differs_only_in_platform_and_parameters() -> None:
    default = repo.parse_config(COMMITTED / contract.UNET_MODEL / repo.CONFIG_FILE)
    fallback = repo.parse_config(
        COMMITTED / contract.UNET_MODEL / repo.CUSTOM_CONFIGS_DIR / "onnxruntime.pbtxt"
    )
    assert fallback.platform == "onnxruntime_onnx"
    for field in (
        "input",
        "output",
        "instance_group",
        "dynamic_batching",
        "max_batch_size",
        "model_warmup",
    ):
        assert getattr(fallback, field) == getattr(default, field), field


def step_config_files() -> list[Path]:
    return [p for p in committed_config_files() if p.parent.name != contract.ENSEMBLE_MODEL]


def warmup_dims(spec: contract.TensorSpec) -> tuple[int, ...]:
    """A tensor's dims with the variable (-1) H, W of the contract's warm-up size."""
    native = iter(contract.WARMUP_NATIVE_SIZE)
    return tuple(next(native) if d < 0 else d for d in spec.dims)


def assert_scheduling_policy(config: mc.ModelConfig) -> None:
    """Priority levels, the bounded queue and the warm-up of one step (issue 15)."""
    batching = config.dynamic_batching
    assert config.HasField("dynamic_batching"), config.name
    assert batching.priority_levels == contract.PRIORITY_LEVELS, config.name
    levels = contract.TRITON_PRIORITY
    assert batching.default_priority_level == levels[contract.DEFAULT_PRIORITY], config.name
    assert levels[contract.PRIORITY_URGENT] < levels[contract.PRIORITY_BATCH]  # 1 goes first
    assert sorted(levels.values()) == list(range(1, contract.PRIORITY_LEVELS + 1))
    policy = batching.default_queue_policy
    assert batching.HasField("default_queue_policy"), config.name
    assert policy.timeout_action == mc.ModelQueuePolicy.REJECT, config.name
    assert policy.allow_timeout_override, config.name  # the client's --timeout shortens it
    assert policy.max_queue_size == contract.QUEUE_MAX_REQUESTS, config.name
    assert not batching.priority_queue_policy, "every level uses the default policy"
    # warm-up: every batch size of the contract, every input, zero or random data
    assert [w.batch_size for w in config.model_warmup] == list(contract.WARMUP_BATCH_SIZES)
    inputs, _ = contract.MODEL_IO[config.name]
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {s.name for s in inputs}, warmup.name
        for spec in inputs:
            data = warmup.inputs[spec.name]
            assert dtype_name(data.data_type) == spec.dtype, (warmup.name, spec.name)
            assert tuple(data.dims) == warmup_dims(spec), (warmup.name, spec.name)
            assert data.zero_data or data.random_data, (warmup.name, spec.name)


@pytest.mark.parametrize("path", step_config_files(), ids=lambda p: str(p.relative_to(COMMITTED)))
def test_step_configs_prioritise_bound_their_queues_and_warm_up(path: Path) -> None:
    """Before issue 15 no step had priority levels, a queue bound or a warm-up."""
    config = repo.parse_config(path)
    assert_scheduling_policy(config)
    timeout_us = config.dynamic_batching.default_queue_policy.default_timeout_microseconds
    assert timeout_us == round(contract.QUEUE_TIMEOUT_S * 1e6), path


def test_ensemble_has_no_queue_of_its_own() -> None:
    """Triton passes an ensemble request's priority and timeout to every step; the ensemble
    itself must not batch, queue or warm up (it would not load)."""
    ensemble = repo.load_committed_configs()[contract.ENSEMBLE_MODEL]
    assert not ensemble.HasField("dynamic_batching")
    assert not ensemble.model_warmup
    assert "checkpoint" not in ensemble.parameters


def test_committed_configs_never_carry_a_checkpoint() -> None:
    """The checkpoint parameter is generated (provenance of one export), never reviewed."""
    for path in committed_config_files():
        assert repo.PARAM_CHECKPOINT not in repo.parse_config(path).parameters, path


def test_ensemble_wiring_is_consistent() -> None:
    configs = repo.load_committed_configs()
    ensemble = configs[contract.ENSEMBLE_MODEL]
    assert ensemble.platform == "ensemble"
    steps = list(ensemble.ensemble_scheduling.step)
    assert [s.model_name for s in steps] == list(contract.STEP_MODELS)
    # tensor name inside the ensemble -> (dtype, dims) of whoever provides it
    available = {t.name: (t.data_type, tuple(t.dims)) for t in ensemble.input}
    for step in steps:
        model = configs[step.model_name]
        assert step.model_version == -1
        assert set(step.input_map) == {t.name for t in model.input}, step.model_name
        assert set(step.output_map) == {t.name for t in model.output}, step.model_name
        for tensor in model.input:
            source = step.input_map[tensor.name]
            assert source in available, f"{step.model_name} reads {source} before it exists"
            assert available[source] == (tensor.data_type, tuple(tensor.dims)), source
        for tensor in model.output:
            target = step.output_map[tensor.name]
            assert target not in available, f"{target} is produced twice"
            available[target] = (tensor.data_type, tuple(tensor.dims))
    for tensor in ensemble.output:
        assert available.get(tensor.name) == (tensor.data_type, tuple(tensor.dims)), tensor.name


# --- generated repositories -------------------------------------------------------------------


@pytest.fixture
def stand_in_onnx_dir(tmp_path: Path) -> Path:
    """Files named like the exported graphs (write_repository only copies them)."""
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for name in contract.STEP_MODELS:
        (onnx_dir / f"{name}.onnx").write_bytes(f"stand-in {name}".encode())
    return onnx_dir


def test_generated_cpu_repository_agrees_with_contract_and_committed(
    stand_in_onnx_dir: Path, tmp_path: Path
) -> None:
    out = repo.write_repository(stand_in_onnx_dir, tmp_path / "cpu", "cpu")
    committed = repo.load_committed_configs()
    model_py = Path(repo.__file__).with_name("triton_python_model.py").read_bytes()
    ensemble = repo.parse_config(out / contract.ENSEMBLE_MODEL / repo.CONFIG_FILE)
    assert ensemble == committed[contract.ENSEMBLE_MODEL]
    assert (out / contract.ENSEMBLE_MODEL / repo.VERSION).is_dir()
    for name in contract.STEP_MODELS:
        config = repo.parse_config(out / name / repo.CONFIG_FILE)
        assert_io_matches_contract(config)
        assert config.backend == "python" and not config.platform
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        # the same batching, priorities, queue bound and warm-up; a longer queue timeout
        assert_scheduling_policy(config)
        expected = mc.ModelDynamicBatching()
        expected.CopyFrom(committed[name].dynamic_batching)
        expected.default_queue_policy.default_timeout_microseconds = round(
            repo.CPU_QUEUE_TIMEOUT_S * 1e6
        )
        assert config.dynamic_batching == expected, name
        assert list(config.model_warmup) == list(committed[name].model_warmup), name
        onnx_file = config.parameters[repo.PARAM_ONNX_FILE].string_value
        version_dir = out / name / repo.VERSION
        assert (version_dir / onnx_file).read_bytes() == f"stand-in {name}".encode()
        assert (version_dir / repo.PYTHON_MODEL_FILE).read_bytes() == model_py
        assert int(config.parameters[repo.PARAM_INTRA_OP_THREADS].string_value) >= 0
    # a second run, from NEW graphs, replaces the repository in place: every model file is
    # the new one, nothing of the first run is left inside the models, configs are unchanged
    # but for the unet's checkpoint, which names the new graph
    first_configs = {name: (out / name / repo.CONFIG_FILE).read_bytes() for name in ALL_MODELS}
    stale = out / contract.UNET_MODEL / repo.VERSION / "stale.onnx"
    stale.write_bytes(b"left over from an older export")
    (out / contract.UNET_MODEL / "2").mkdir()  # an old version directory
    for name in contract.STEP_MODELS:
        (stand_in_onnx_dir / f"{name}.onnx").write_bytes(f"second export {name}".encode())
    assert repo.write_repository(stand_in_onnx_dir, out, "cpu") == out
    for name in contract.STEP_MODELS:
        version_dir = out / name / repo.VERSION
        assert (version_dir / repo.ONNX_MODEL_FILE).read_bytes() == (
            f"second export {name}".encode()
        ), name
        assert (version_dir / repo.PYTHON_MODEL_FILE).read_bytes() == model_py, name
        assert sorted(p.name for p in version_dir.iterdir()) == sorted(
            [repo.ONNX_MODEL_FILE, repo.PYTHON_MODEL_FILE]
        ), name
    assert not stale.exists() and not (out / contract.UNET_MODEL / "2").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(ALL_MODELS)
    now = {n: (out / n / repo.CONFIG_FILE).read_bytes() for n in ALL_MODELS}
    assert {n: b for n, b in now.items() if n != contract.UNET_MODEL} == {
        n: b for n, b in first_configs.items() if n != contract.UNET_MODEL
    }
    unet = repo.parse_config(out / contract.UNET_MODEL / repo.CONFIG_FILE)
    new_sha = _sha256(stand_in_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    assert unet.parameters[repo.PARAM_CHECKPOINT].string_value.endswith(f"sha256:{new_sha}")


def test_generated_gpu_repository_layout(stand_in_onnx_dir: Path, tmp_path: Path) -> None:
    engine = _engine_with_key(tmp_path / "unet.plan", b"engine")
    out = repo.write_repository(stand_in_onnx_dir, tmp_path / "gpu", "gpu", engine=engine)
    for name in ALL_MODELS:  # committed text kept byte for byte (the unet: as a prefix)
        written = (out / name / repo.CONFIG_FILE).read_bytes()
        committed = (COMMITTED / name / repo.CONFIG_FILE).read_bytes()
        if name == contract.UNET_MODEL:
            assert written.startswith(committed) and len(written) > len(committed)
        else:
            assert written == committed, name
    assert (out / contract.UNET_MODEL / "1" / "model.plan").read_bytes() == b"engine"
    # its cache key beside it, checked before Triton loads it (aspects_export.releases)
    assert (out / contract.UNET_MODEL / "1" / "model.plan.json").read_bytes() == (
        engine.with_name("unet.plan.json").read_bytes()
    )
    assert (out / contract.UNET_MODEL / "1" / "model.onnx").is_file()  # the fallback
    assert (out / contract.UNET_MODEL / "configs" / "onnxruntime.pbtxt").is_file()
    for name in (contract.PREPROCESS_MODEL, contract.POSTPROCESS_MODEL):
        assert (out / name / "1" / "model.onnx").is_file()
    assert not any((out / contract.ENSEMBLE_MODEL / "1").iterdir())


def test_write_repository_refuses_bad_input(stand_in_onnx_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="missing ONNX"):
        repo.write_repository(tmp_path / "nowhere", tmp_path / "a", "cpu")
    with pytest.raises(ExportError, match="engine"):
        repo.write_repository(stand_in_onnx_dir, tmp_path / "b", "cpu", engine=tmp_path / "x")
    with pytest.raises(ExportError, match="layout"):
        repo.write_repository(stand_in_onnx_dir, tmp_path / "c", "tpu")  # type: ignore[arg-type]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "precious.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a model repository"):
        repo.write_repository(stand_in_onnx_dir, tmp_path / "d", "cpu")
    assert (tmp_path / "d" / "precious.txt").read_text() == "keep me"


def test_find_committed_repository_override(tmp_path: Path) -> None:
    assert repo.find_committed_repository(COMMITTED) == COMMITTED.resolve()
    with pytest.raises(ExportError, match="not a model repository"):
        repo.find_committed_repository(tmp_path)


# --- the shared python_backend model.py, with a stand-in pb_utils ------------------------------


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _TritonError(Exception):
    INVALID_ARG = 3

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class _Response:
    def __init__(self, output_tensors: list[_Tensor], error: _TritonError | None = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


class _Request:
    def __init__(self, **arrays: np.ndarray) -> None:
        self.arrays = arrays


@pytest.fixture
def python_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A TritonPythonModel on a toy graph: Y = 2A (FP32 [N,-1]), Z = B (UINT8 [N,2])."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _Tensor  # type: ignore[attr-defined]
    fake.TritonError = _TritonError  # type: ignore[attr-defined]
    fake.InferenceResponse = _Response  # type: ignore[attr-defined]
    fake.get_input_tensor_by_name = lambda r, n: (  # type: ignore[attr-defined]
        _Tensor(n, r.arrays[n]) if n in r.arrays else None
    )
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    module = importlib.import_module("aspects_export.triton_python_model")
    module = importlib.reload(module)

    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["two"], value_float=2.0),
            helper.make_node("Mul", ["A", "two"], ["Y"]),
            helper.make_node("Identity", ["B"], ["Z"]),
        ],
        "toy",
        [
            helper.make_tensor_value_info("A", TensorProto.FLOAT, ["N", "L"]),
            helper.make_tensor_value_info("B", TensorProto.UINT8, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", "L"]),
            helper.make_tensor_value_info("Z", TensorProto.UINT8, ["N", 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version_dir = tmp_path / "toy" / "1"
    version_dir.mkdir(parents=True)
    onnx.save(model, str(version_dir / "toy.onnx"))

    config = mc.ModelConfig(name="toy", backend="python", max_batch_size=4)
    config.input.add(name="A", data_type=mc.TYPE_FP32, dims=[-1])
    config.input.add(name="B", data_type=mc.TYPE_UINT8, dims=[2])
    config.output.add(name="Y", data_type=mc.TYPE_FP32, dims=[-1])
    config.output.add(name="Z", data_type=mc.TYPE_UINT8, dims=[2])
    config.parameters[repo.PARAM_ONNX_FILE].string_value = "toy.onnx"
    config.parameters[repo.PARAM_INTRA_OP_THREADS].string_value = "1"
    instance = module.TritonPythonModel()
    instance.initialize(
        {
            "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
            "model_repository": str(tmp_path / "toy"),
            "model_version": "1",
        }
    )
    runs: list[int] = []
    session_run = instance.session.run

    def counting_run(names: Any, feed: dict[str, np.ndarray]) -> Any:
        runs.append(next(iter(feed.values())).shape[0])
        return session_run(names, feed)

    instance.session = types.SimpleNamespace(run=counting_run)
    instance.runs = runs
    return instance


def _req(n: int, length: int, offset: float = 0.0) -> _Request:
    a = np.arange(n * length, dtype=np.float32).reshape(n, length) + offset
    b = np.full((n, 2), n, np.uint8)
    return _Request(A=a, B=b)


def test_python_model_batches_equal_shapes_and_splits_results(python_model: Any) -> None:
    requests = [_req(1, 3), _req(2, 3, 100.0), _req(1, 5), _req(1, 3, 7.0)]
    responses = python_model.execute(requests)
    assert sorted(python_model.runs) == [1, 4]  # [1,3]+[2,3]+[1,3] together; [1,5] alone
    for request, response in zip(requests, responses, strict=True):
        assert response.error is None
        np.testing.assert_array_equal(response.outputs["Y"], 2 * request.arrays["A"])
        np.testing.assert_array_equal(response.outputs["Z"], request.arrays["B"])


def test_python_model_errors_stay_per_request(python_model: Any) -> None:
    good = _req(1, 3)
    wrong_dtype = _Request(A=np.zeros((1, 3), np.float64), B=np.zeros((1, 2), np.uint8))
    wrong_dims = _Request(A=np.zeros((1, 3), np.float32), B=np.zeros((1, 3), np.uint8))
    too_big = _req(5, 3)
    missing = _Request(A=np.zeros((1, 3), np.float32))
    responses = python_model.execute([wrong_dtype, good, wrong_dims, too_big, missing])
    assert responses[1].error is None
    np.testing.assert_array_equal(responses[1].outputs["Y"], 2 * good.arrays["A"])
    messages = [r.error.message for i, r in enumerate(responses) if i != 1]
    assert "dtype float64" in messages[0] and "FP32" in messages[0]
    assert "shape [1, 3]" in messages[1] and "UINT8 [N, 2]" in messages[1]
    assert "batch size 5" in messages[2] and "1..4" in messages[2]
    assert "missing input B" in messages[3]
    assert all(r.error.code == _TritonError.INVALID_ARG for i, r in enumerate(responses) if i != 1)


def test_python_model_chunks_groups_above_max_batch_size(python_model: Any) -> None:
    responses = python_model.execute([_req(3, 2), _req(3, 2), _req(1, 2)])
    assert all(r.error is None for r in responses)
    assert sorted(python_model.runs) == [3, 4]


def test_cpu_repository_records_the_unet_checkpoint(stand_in_onnx_dir: Path, tmp_path: Path):
    """Provenance: the unet's ONNX metadata 'checkpoint' becomes a config parameter."""
    import onnx

    from aspects_export.oracle import export_oracle_unet

    unet = export_oracle_unet(stand_in_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    model = onnx.load(str(unet))
    model.metadata_props.add(key="checkpoint", value="sha256:abc (test)")
    onnx.save(model, str(unet))
    out = repo.write_repository(stand_in_onnx_dir, tmp_path / "cpu", "cpu")
    config = repo.parse_config(out / contract.UNET_MODEL / repo.CONFIG_FILE)
    sha = _sha256(unet)
    assert (
        config.parameters["checkpoint"].string_value == f"sha256:abc (test); unet.onnx sha256:{sha}"
    )
    pre = repo.parse_config(out / contract.PREPROCESS_MODEL / repo.CONFIG_FILE)
    assert "checkpoint" not in pre.parameters


# --- provenance: the unet's checkpoint parameter in every layout (issue 15) --------------------

NOTE = "demo weights trained on synthetic images only (MODEL_CARD.md): not for clinical use"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def noted_onnx_dir(stand_in_onnx_dir: Path) -> Path:
    """The stand-in graphs, but a real unet.onnx whose metadata holds a checkpoint note."""
    import onnx

    from aspects_export.oracle import export_oracle_unet

    unet = export_oracle_unet(stand_in_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    model = onnx.load(str(unet))
    model.metadata_props.add(key="checkpoint", value=NOTE)
    onnx.save(model, str(unet))
    return stand_in_onnx_dir


def test_gpu_repository_records_the_unet_checkpoint(noted_onnx_dir: Path, tmp_path: Path):
    """Before: the GPU layout copied the committed configs verbatim and lost the checkpoint;
    only the CPU layout recorded it.  Parsed offline: there is no GPU here."""
    engine = _engine_with_key(tmp_path / "unet.plan", b"an engine")
    out = repo.write_repository(noted_onnx_dir, tmp_path / "gpu", "gpu", engine=engine)
    onnx_sha = _sha256(noted_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    assert (out / contract.UNET_MODEL / "1" / "model.onnx").read_bytes() == (
        noted_onnx_dir / f"{contract.UNET_MODEL}.onnx"
    ).read_bytes()

    default = repo.parse_config(out / contract.UNET_MODEL / repo.CONFIG_FILE)
    checkpoint = default.parameters[repo.PARAM_CHECKPOINT].string_value
    assert checkpoint == (
        f"{NOTE}; unet.onnx sha256:{onnx_sha}; TensorRT engine sha256:{_sha256(engine)}"
    )
    committed = repo.parse_config(COMMITTED / contract.UNET_MODEL / repo.CONFIG_FILE)
    del default.parameters[repo.PARAM_CHECKPOINT]
    assert default == committed  # nothing else changed
    fallback = repo.parse_config(
        out / contract.UNET_MODEL / repo.CUSTOM_CONFIGS_DIR / "onnxruntime.pbtxt"
    )  # runs unet.onnx, not the engine
    assert fallback.parameters[repo.PARAM_CHECKPOINT].string_value == (
        f"{NOTE}; unet.onnx sha256:{onnx_sha}"
    )
    for name in (contract.ENSEMBLE_MODEL, contract.PREPROCESS_MODEL, contract.POSTPROCESS_MODEL):
        config = repo.parse_config(out / name / repo.CONFIG_FILE)
        assert repo.PARAM_CHECKPOINT not in config.parameters, name

    # without an engine (onnxruntime only), and the CPU layout: the same note and sha256
    out = repo.write_repository(noted_onnx_dir, tmp_path / "gpu_ort", "gpu")
    default = repo.parse_config(out / contract.UNET_MODEL / repo.CONFIG_FILE)
    assert default.parameters[repo.PARAM_CHECKPOINT].string_value == (
        f"{NOTE}; unet.onnx sha256:{onnx_sha}"
    )
    out = repo.write_repository(noted_onnx_dir, tmp_path / "cpu", "cpu")
    cpu = repo.parse_config(out / contract.UNET_MODEL / repo.CONFIG_FILE)
    assert cpu.parameters[repo.PARAM_CHECKPOINT].string_value == (
        f"{NOTE}; unet.onnx sha256:{onnx_sha}"
    )


def test_gpu_repository_from_an_engine_alone_says_what_it_knows(
    stand_in_onnx_dir: Path, tmp_path: Path
) -> None:
    (stand_in_onnx_dir / f"{contract.UNET_MODEL}.onnx").unlink()
    engine = _engine_with_key(tmp_path / "unet.plan", b"an engine")
    out = repo.write_repository(stand_in_onnx_dir, tmp_path / "gpu", "gpu", engine=engine)
    unet = out / contract.UNET_MODEL
    checkpoint = repo.parse_config(unet / repo.CONFIG_FILE).parameters[repo.PARAM_CHECKPOINT]
    assert checkpoint.string_value == (
        f"checkpoint unknown (no unet.onnx beside the engine); "
        f"TensorRT engine sha256:{_sha256(engine)}"
    )
    fallback = repo.parse_config(unet / repo.CUSTOM_CONFIGS_DIR / "onnxruntime.pbtxt")
    assert repo.PARAM_CHECKPOINT not in fallback.parameters  # no unet.onnx to run
    assert not (unet / "1" / "model.onnx").exists()


def test_gpu_repository_refuses_an_engine_built_from_another_graph(
    noted_onnx_dir: Path, tmp_path: Path
) -> None:
    import json

    engine = tmp_path / "unet.plan"
    engine.write_bytes(b"an engine")
    key = tmp_path / "unet.plan.json"  # tensorrt_build's cache key beside the engine
    key.write_text(json.dumps({"onnx_sha256": "0" * 64, "gpu_name": "x"}))
    with pytest.raises(ExportError, match=r"built from another unet\.onnx"):
        repo.write_repository(noted_onnx_dir, tmp_path / "gpu", "gpu", engine=engine)
    assert not (tmp_path / "gpu").exists()  # refused before writing anything
    onnx_sha = _sha256(noted_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    key.write_text(json.dumps({"onnx_sha256": onnx_sha, "gpu_name": "x"}))
    assert repo.write_repository(noted_onnx_dir, tmp_path / "gpu", "gpu", engine=engine)


def test_a_committed_checkpoint_parameter_is_refused(stand_in_onnx_dir: Path, tmp_path: Path):
    committed = tmp_path / "committed"
    shutil.copytree(COMMITTED, committed)
    path = committed / contract.UNET_MODEL / repo.CONFIG_FILE
    config = repo.parse_config(path)
    config.parameters[repo.PARAM_CHECKPOINT].string_value = "hand-written"
    path.write_text(repo.config_to_text(config))
    with pytest.raises(ExportError, match="already sets the 'checkpoint' parameter"):
        repo.write_repository(stand_in_onnx_dir, tmp_path / "gpu", "gpu", committed=committed)


def test_checkpoint_text_survives_quotes_and_unicode(stand_in_onnx_dir: Path, tmp_path: Path):
    import onnx

    from aspects_export.oracle import export_oracle_unet

    note = 'ckpt "v2" \\ from /data/réseau — not for clinical use'
    unet = export_oracle_unet(stand_in_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    model = onnx.load(str(unet))
    model.metadata_props.add(key="checkpoint", value=note)
    onnx.save(model, str(unet))
    out = repo.write_repository(stand_in_onnx_dir, tmp_path / "gpu", "gpu")
    config = repo.parse_config(out / contract.UNET_MODEL / repo.CONFIG_FILE)
    assert config.parameters[repo.PARAM_CHECKPOINT].string_value.startswith(note + "; ")


# --- "only the ensemble is public": the restricted-API flags --------------------------------


def test_restricted_api_args() -> None:
    args = repo.restricted_api_args("aspects-admin-key", "s3cret")
    apis = "model-repository,shared-memory,trace,logging"
    assert args == [
        f"--grpc-restricted-protocol={apis}:aspects-admin-key=s3cret",
        f"--http-restricted-api={apis}:aspects-admin-key=s3cret",
    ]
    # what clients need stays open: inference, metadata, model config, health, statistics
    for api in ("inference", "metadata", "model-config", "health", "statistics"):
        assert api not in repo.RESTRICTED_APIS
    for key, value in (("", "x"), ("a:b", "x"), ("k", "a,b"), ("k", "a=b"), ("k", "a b")):
        with pytest.raises(ExportError, match="restricted API"):
            repo.restricted_api_args(key, value)


def _engine_with_key(path: Path, data: bytes, onnx: Path | None = None) -> Path:
    """A stand-in engine file and the cache key build_engine writes beside it."""
    import json

    path.write_bytes(data)
    key = {"onnx_sha256": _sha256(onnx) if onnx else "", "gpu_name": "NVIDIA L4",
           "tensorrt_version": "10.5.0.18", "precision": "fp16", "profile_batch": [1, 8, 16]}
    path.with_name(path.name + ".json").write_text(json.dumps(key))
    return path


# --- the CPU-host profile (issue 15): `tritonserver --model-config-name=openvino` -----------

# What the Triton 24.10 OpenVINO backend reads (openvino_backend branch r24.10: README
# "Parameters", ModelState::ParseParameters in src/openvino.cc); it refuses other values of
# HINT_BF16 than YES and knows no key for f32.
OPENVINO_BACKEND_PARAMETERS = {
    "PERFORMANCE_HINT", "CPU_EXTENSION_PATH", "INFERENCE_NUM_THREADS", "COMPILATION_NUM_THREADS",
    "HINT_BF16", "NUM_STREAMS", "SKIP_OV_DYNAMIC_BATCHSIZE", "ENABLE_BATCH_PADDING",
    "RESHAPE_IO_LAYERS",
}
CPU_HOST_CONFIG = "openvino.pbtxt"


def test_cpu_host_profile_runs_every_step_on_the_cpu() -> None:
    """One flag selects a KIND_CPU config for every step: pre/postprocess on onnxruntime,
    the unet on Triton's OpenVINO backend with bf16 asked for explicitly."""
    defaults = repo.load_committed_configs()
    assert not (COMMITTED / contract.ENSEMBLE_MODEL / repo.CUSTOM_CONFIGS_DIR).exists()
    for name in contract.STEP_MODELS:
        config = repo.parse_config(COMMITTED / name / repo.CUSTOM_CONFIGS_DIR / CPU_HOST_CONFIG)
        default = defaults[name]
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU], name
        for field in ("input", "output", "max_batch_size", "model_warmup"):
            assert getattr(config, field) == getattr(default, field), (name, field)
        for field in ("priority_levels", "default_priority_level", "default_queue_policy"):
            assert getattr(config.dynamic_batching, field) == getattr(
                default.dynamic_batching, field
            ), (name, field)
        if name != contract.UNET_MODEL:
            assert config.platform == "onnxruntime_onnx" and not config.backend, name
            assert config.parameters == default.parameters, name
            assert config.dynamic_batching == default.dynamic_batching, name
            continue
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert config.backend == "openvino" and not config.platform
        assert config.default_model_filename == repo.ONNX_MODEL_FILE  # the exported graph
        assert set(params) <= OPENVINO_BACKEND_PARAMETERS, set(params) - OPENVINO_BACKEND_PARAMETERS
        assert params["HINT_BF16"] == "YES"  # explicit: never the CPU's silent default
        assert (params["PERFORMANCE_HINT"], params["NUM_STREAMS"]) == ("LATENCY", "1")
        # the backend fixes the batch at max_batch_size: other sizes need padding, and the
        # batcher aims for the size every execution computes anyway
        assert params["ENABLE_BATCH_PADDING"] == "YES"
        assert list(config.dynamic_batching.preferred_batch_size) == [contract.MAX_BATCH_SIZE]


def test_gpu_layout_copies_the_cpu_host_profile_with_the_checkpoint(
    noted_onnx_dir: Path, tmp_path: Path
) -> None:
    out = repo.write_repository(noted_onnx_dir, tmp_path / "gpu", "gpu")
    onnx_sha = _sha256(noted_onnx_dir / f"{contract.UNET_MODEL}.onnx")
    unet = repo.parse_config(out / contract.UNET_MODEL / repo.CUSTOM_CONFIGS_DIR / CPU_HOST_CONFIG)
    assert unet.parameters[repo.PARAM_CHECKPOINT].string_value == (
        f"{NOTE}; unet.onnx sha256:{onnx_sha}"
    )
    assert (out / contract.UNET_MODEL / repo.VERSION / repo.ONNX_MODEL_FILE).is_file()
    for name in (contract.PREPROCESS_MODEL, contract.POSTPROCESS_MODEL):
        path = Path(repo.CUSTOM_CONFIGS_DIR) / CPU_HOST_CONFIG
        assert (out / name / path).read_bytes() == (COMMITTED / name / path).read_bytes(), name
