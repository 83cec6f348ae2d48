"""TensorRT FP16 engine for the unet, built on the target GPU (architecture §4).

An engine is tied to the TensorRT version and the GPU model: build it on the deployment GPU
with the TensorRT of the NGC release of the Triton image (24.10).  Each engine gets a
``<engine>.json`` cache key beside it — sha256 of the ONNX file + GPU name + TensorRT version
(+ profile and precision); ``engine_is_stale`` says when it has to be rebuilt.

``tensorrt``, NVML and cuda-python are imported lazily: importing this module works on any
machine; calling into it without a GPU raises ``ExportError`` saying where to run it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aspects_client import contract
from aspects_export.errors import ExportError
from aspects_export.numeric_check import sha256_file

PROFILE_BATCH: tuple[int, int, int] = (1, 8, contract.MAX_BATCH_SIZE)  # min / opt / max
WORKSPACE_BYTES = 4 << 30
MIN_LABEL_AGREEMENT = 0.999
GPU_HINT = (
    "run this on a GPU host with the NGC 24.10 TensorRT "
    "(e.g. inside nvcr.io/nvidia/tensorrt:24.10-py3 or the tritonserver:24.10-py3 image)"
)


@dataclass(frozen=True)
class EngineKey:
    """What an engine was built from and for; equal keys mean the engine can be reused."""

    onnx_sha256: str
    gpu_name: str
    tensorrt_version: str
    precision: str = "fp16"
    profile_batch: tuple[int, int, int] = PROFILE_BATCH

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``profile_batch`` as a list)."""
        d = asdict(self)
        d["profile_batch"] = list(self.profile_batch)
        return d


def key_path(engine: str | Path) -> Path:
    """Where the cache key of ``engine`` lives: ``<engine>.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ExportError(f"the tensorrt Python package is not installed; {GPU_HINT}") from exc
    return trt


def nvml_gpu_name(index: int = 0) -> str | None:
    """GPU ``index``'s name through NVML (``nvidia-ml-py``; the driver's library, no CUDA
    toolkit or torch needed), None where there is no NVML or no GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


def gpu_name() -> str:
    """Name of GPU 0 through NVML; ``ExportError`` when there is none.  NVML works with any
    driver the Triton release supports (torch's own CUDA may need a newer one)."""
    name = nvml_gpu_name()
    if name is None:
        raise ExportError(f"no NVIDIA GPU is visible through NVML (nvidia-ml-py); {GPU_HINT}")
    return name


def current_key(onnx_path: str | Path) -> EngineKey:
    """The cache key an engine built now, here, from ``onnx_path`` would have."""
    trt = _import_tensorrt()
    return EngineKey(sha256_file(onnx_path), gpu_name(), str(trt.__version__))


def engine_is_stale(engine: str | Path, onnx_path: str | Path) -> bool:
    """True when ``engine`` or its key is missing, or the key differs from ``current_key``."""
    engine, kp = Path(engine), key_path(engine)
    if not engine.is_file() or not kp.is_file():
        return True
    try:
        stored = json.loads(kp.read_text())
    except (OSError, ValueError):
        return True
    return stored != current_key(onnx_path).to_json()


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    force: bool = False,
    workspace_bytes: int = WORKSPACE_BYTES,
    log: Any = None,
) -> Path:
    """Build (or reuse, when the cache key matches) an FP16 engine with one optimisation profile
    for IMAGE ``[b,3,h,w]`` (``contract.NETWORK_SIZE``), ``b`` in ``PROFILE_BATCH``; writes the
    engine and its key."""
    say = log or (lambda _msg: None)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path} does not exist; run 'aspects-export onnx' first")
    trt = _import_tensorrt()
    key = current_key(onnx_path)
    if not force and not engine_is_stale(engine_path, onnx_path):
        say(
            f"tensorrt: {engine_path} is up to date "
            f"({key.gpu_name}, TensorRT {key.tensorrt_version})"
        )
        return engine_path
    say(f"tensorrt: building FP16 engine on {key.gpu_name} with TensorRT {key.tensorrt_version}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not builder.platform_has_fast_fp16:
        say("tensorrt: warning: this GPU has no fast FP16; building FP16 anyway")
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    chw = (contract.NETWORK_CHANNELS, *contract.NETWORK_SIZE)
    lo, opt, hi = PROFILE_BATCH
    profile.set_shape(contract.TENSOR_IMAGE, (lo, *chw), (opt, *chw), (hi, *chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine; see the TensorRT log above")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    try:
        tmp.write_bytes(bytes(serialized))
        tmp.replace(engine_path)
    finally:
        tmp.unlink(missing_ok=True)
    key_path(engine_path).write_text(json.dumps(key.to_json(), indent=2) + "\n")
    say(f"tensorrt: wrote {engine_path} ({engine_path.stat().st_size / 1e6:.1f} MB)")
    return engine_path


def _cudart() -> Any:
    """CUDA runtime bindings of ``cuda-python`` (NVIDIA's; no torch): the module moved in
    cuda-python 12.8 (``cuda.bindings.runtime``), the old name still works in 12.x."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise ExportError(f"cuda-python is not installed; {GPU_HINT}") from exc
    return cudart


def _cuda_ok(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, *values)`` tuple; ExportError on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ExportError(f"CUDA {what} failed: {err}")
    return values[0] if len(values) == 1 else values


def run_engine(engine_path: str | Path, image: np.ndarray) -> np.ndarray:
    """Run the engine on float32 ``image [N,3,h,w]`` (network input; chunked by the max profile
    batch) → float32 logits ``[N,11,h,w]``.  Device memory through cuda-python's runtime
    bindings (the exporter image's torch is the CPU build)."""
    trt = _import_tensorrt()
    gpu_name()
    cudart = _cudart()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise ExportError(f"{engine_path} is not an engine for this TensorRT/GPU; rebuild it")
    context = engine.create_execution_context()
    batch = PROFILE_BATCH[2]
    chw = (contract.NETWORK_CHANNELS, *contract.NETWORK_SIZE)
    out_shape = (contract.NUM_CLASSES, *contract.NETWORK_SIZE)
    in_bytes = batch * int(np.prod(chw)) * 4
    out_bytes = batch * int(np.prod(out_shape)) * 4
    h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    stream = _cuda_ok(cudart.cudaStreamCreate(), "stream create")
    d_in = _cuda_ok(cudart.cudaMalloc(in_bytes), "malloc")
    d_out = _cuda_ok(cudart.cudaMalloc(out_bytes), "malloc")
    outs = []
    try:
        for i in range(0, image.shape[0], batch):
            x = np.ascontiguousarray(image[i : i + batch], dtype=np.float32)
            y = np.empty((x.shape[0], *out_shape), dtype=np.float32)
            _cuda_ok(cudart.cudaMemcpy(d_in, x.ctypes.data, x.nbytes, h2d), "copy in")
            context.set_input_shape(contract.TENSOR_IMAGE, tuple(x.shape))
            context.set_tensor_address(contract.TENSOR_IMAGE, int(d_in))
            context.set_tensor_address(contract.TENSOR_LOGITS, int(d_out))
            if not context.execute_async_v3(int(stream)):
                raise ExportError("TensorRT execution failed")
            _cuda_ok(cudart.cudaStreamSynchronize(stream), "synchronize")
            _cuda_ok(cudart.cudaMemcpy(y.ctypes.data, d_out, y.nbytes, d2h), "copy out")
            outs.append(y)
    finally:
        cudart.cudaFree(d_in)
        cudart.cudaFree(d_out)
        cudart.cudaStreamDestroy(stream)
    return np.concatenate(outs)


def compare_with_onnxruntime(
    engine_path: str | Path, onnx_path: str | Path, slices: np.ndarray
) -> dict[str, Any]:
    """Label agreement (same postprocess) of the TensorRT engine vs ONNX Runtime (CPU) on
    uint8 ``slices [N,H,W]`` (consecutive slices of one volume, sent as their 2.5D stacks);
    ``passed`` when ≥ ``MIN_LABEL_AGREEMENT``."""
    from aspects_client import server_reference as ref
    from aspects_export.numeric_check import _run_batched, _session

    image = ref.network_input(ref.context_stacks(slices))
    trt_logits = run_engine(engine_path, image)
    (ort_logits,) = _run_batched(_session(Path(onnx_path)), {contract.TENSOR_IMAGE: image})
    lab_t, _ = ref.postprocess_network(trt_logits)
    lab_o, _ = ref.postprocess_network(ort_logits)
    agreement = float((lab_t == lab_o).mean())
    diff = np.abs(trt_logits - ort_logits)
    return {
        "engine": str(engine_path),
        "key": json.loads(key_path(engine_path).read_text())
        if key_path(engine_path).is_file()
        else None,
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "label_agreement": agreement,
        "argmax_agreement": float((trt_logits.argmax(1) == ort_logits.argmax(1)).mean()),
        "min_label_agreement": MIN_LABEL_AGREEMENT,
        "passed": agreement >= MIN_LABEL_AGREEMENT,
    }
