"""Shared Triton python_backend ``model.py``: run one step's ONNX graph on the CPU.

Copied as ``<step>/1/model.py`` into the generated CPU model repository (architecture §4); it
runs inside Triton's Python stub from the server environment, so it imports only numpy,
onnxruntime or openvino, json/os and ``triton_python_backend_utils``.  Everything it needs
comes from the model config: inputs/outputs (names, dtypes, dims), ``max_batch_size`` and the
``parameters``:

- ``runtime``: ``onnxruntime`` (default) or ``openvino`` (docs/cpu-serving.md);
- ``precision``: ``f32`` (default) or ``bf16`` (OpenVINO only).  The precision is always set
  explicitly (OpenVINO's own default on a bf16-capable CPU is bf16) and read back from the
  compiled model: a CPU that cannot run the requested precision refuses to load;
- ``onnx_file``, ``intra_op_thread_count`` (OpenVINO: ``INFERENCE_NUM_THREADS``; 0 = all
  cores), ``inter_op_thread_count``, ``allow_spinning`` and ``cpu_mem_arena`` ("0"/"1",
  default "1"; onnxruntime only), ``openvino_performance_hint`` (default ``LATENCY``).

``initialize`` builds ONE session (an onnxruntime ``InferenceSession`` or an OpenVINO compiled
model with one infer request, dynamic batch); ``execute`` groups the requests of a dynamic
batch whose inputs have identical shapes, runs each group as one batch and splits the results
back.  Errors go back per request (``TritonError``); one bad request never fails the others.
``build_session`` is importable outside Triton: the exporter's numeric gate
(``aspects_export.numeric_check.precision_gate``) runs the very session the server builds.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

try:  # present inside Triton's stub; absent where the exporter imports build_session
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - depends on the environment
    pb_utils = None

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("f32", "bf16")

_NUMPY_DTYPES: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}
_ORT_TYPES: dict[str, str] = {
    "TYPE_BOOL": "tensor(bool)",
    "TYPE_UINT8": "tensor(uint8)",
    "TYPE_UINT16": "tensor(uint16)",
    "TYPE_UINT32": "tensor(uint32)",
    "TYPE_UINT64": "tensor(uint64)",
    "TYPE_INT8": "tensor(int8)",
    "TYPE_INT16": "tensor(int16)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_INT64": "tensor(int64)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP64": "tensor(double)",
}


class RequestError(ValueError):
    """One request is malformed (wrong dtype, rank, dims or batch size)."""


class _TensorConfig:
    """One input or output of the model config."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.name = str(entry["name"])
        self.type_name = str(entry["data_type"])
        if self.type_name not in _NUMPY_DTYPES:
            raise ValueError(f"tensor {self.name}: unsupported data_type {self.type_name}")
        self.dtype = np.dtype(_NUMPY_DTYPES[self.type_name])
        self.dims = tuple(int(d) for d in entry.get("dims", []))

    def describe(self) -> str:
        dims = ", ".join("-1" if d < 0 else str(d) for d in self.dims)
        return f"{self.type_name.removeprefix('TYPE_')} [N, {dims}]"


def _error_response(message: str, code_name: str = "INVALID_ARG") -> Any:
    """A per-request error: INVALID_ARG for a bad request, INTERNAL for a failed run."""
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _log(level: str, message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        getattr(logger, f"log_{level}")(message)


def _params_int(params: dict[str, str], key: str, default: int = 0) -> int:
    value = params.get(key, "") or str(default)
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"parameter {key} must be an integer, got {value!r}") from None
    if number < 0:
        raise ValueError(f"parameter {key} must be >= 0, got {number}")
    return number


class OnnxRuntimeSession:
    """One onnxruntime ``InferenceSession`` (CPU, FP32) behind ``run(names, feed)``."""

    def __init__(self, path: str, params: dict[str, str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _params_int(params, "intra_op_thread_count")
        options.inter_op_num_threads = _params_int(params, "inter_op_thread_count")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Tunables: spinning idle threads can steal cores from the other steps' stubs, and
        # the memory arena keeps a batch's peak resident; both on (onnxruntime's defaults)
        # measured fastest on 2 cores.
        if params.get("allow_spinning", "1") == "0":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_cpu_mem_arena = params.get("cpu_mem_arena", "1") == "1"
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.precision = "f32"
        self.description = (
            f"onnxruntime {ort.__version__} FP32 (intra_op={options.intra_op_num_threads}, "
            f"inter_op={options.inter_op_num_threads})"
        )

    def io(self) -> tuple[dict[str, np.dtype], dict[str, np.dtype]]:
        """(inputs, outputs) of the graph: name → numpy dtype (None if not a plain tensor)."""
        dtypes = {v: np.dtype(_NUMPY_DTYPES[k]) for k, v in _ORT_TYPES.items()}
        return (
            {i.name: dtypes.get(i.type) for i in self.session.get_inputs()},
            {o.name: dtypes.get(o.type) for o in self.session.get_outputs()},
        )

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(names, feed)


def openvino_bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 on this CPU (``OPTIMIZATION_CAPABILITIES``
    lists ``BF16``: AVX-512 BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVINOSession:
    """An OpenVINO CPU compiled model (dynamic batch, one infer request) behind
    ``run(names, feed)``, with the inference precision set explicitly and verified."""

    def __init__(self, path: str, params: dict[str, str]) -> None:
        import openvino as ov

        precision = params.get("precision", "f32") or "f32"
        hint = (params.get("openvino_performance_hint", "") or "LATENCY").upper()
        if precision == "bf16" and not openvino_bf16_supported():
            raise ValueError(
                "precision bf16 asked for, but this CPU has no bf16 support (OpenVINO "
                "OPTIMIZATION_CAPABILITIES lacks BF16); regenerate the repository with "
                "`aspects-export repository --cpu-runtime auto` (onnxruntime on such a CPU)"
            )
        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint}
        threads = _params_int(params, "intra_op_thread_count")
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(path, "CPU", config)
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if actual != precision:  # never a silent change of precision
            raise ValueError(f"OpenVINO compiled the graph for {actual}, not {precision}")
        self.request = self.compiled.create_infer_request()
        self.precision = actual
        self.description = (
            f"openvino {ov.__version__} {actual} ({hint}, "
            f"{self.compiled.get_property('INFERENCE_NUM_THREADS')} threads, "
            f"{self.compiled.get_property('NUM_STREAMS')} stream(s))"
        )

    def io(self) -> tuple[dict[str, np.dtype], dict[str, np.dtype]]:
        """(inputs, outputs) of the compiled model: name → numpy dtype."""

        def table(ports: Any) -> dict[str, np.dtype]:
            return {n: np.dtype(p.get_element_type().to_dtype()) for p in ports for n in p.names}

        return table(self.compiled.inputs), table(self.compiled.outputs)

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # outputs are copies (share_outputs=False): the next run reuses the request's buffers
        results = self.request.infer(feed, share_inputs=True, share_outputs=False)
        return [results[name] for name in names]


def build_session(path: str, params: dict[str, str]) -> OnnxRuntimeSession | OpenVINOSession:
    """The session a step's ``parameters`` ask for (``runtime``, ``precision``, threads)."""
    runtime = params.get("runtime", "onnxruntime") or "onnxruntime"
    precision = params.get("precision", "f32") or "f32"
    if runtime not in RUNTIMES:
        raise ValueError(f"parameter runtime must be one of {RUNTIMES}, got {runtime!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"parameter precision must be one of {PRECISIONS}, got {precision!r}")
    if runtime == "onnxruntime":
        if precision != "f32":
            raise ValueError(f"runtime onnxruntime runs f32 only, not {precision}")
        return OnnxRuntimeSession(path, params)
    return OpenVINOSession(path, params)


class TritonPythonModel:
    """One ensemble step: an ONNX graph on onnxruntime or OpenVINO, configured by config.pbtxt."""

    def initialize(self, args: dict[str, str]) -> None:
        """Parse the model config and build the single session."""
        config = json.loads(args["model_config"])
        self.model_name = str(config.get("name", args.get("model_name", "?")))
        self.max_batch_size = int(config.get("max_batch_size", 0))
        if self.max_batch_size < 1:
            raise ValueError(f"{self.model_name}: this model.py needs max_batch_size >= 1")
        self.inputs = [_TensorConfig(e) for e in config.get("input", [])]
        self.outputs = [_TensorConfig(e) for e in config.get("output", [])]
        params = {
            str(k): str(v.get("string_value", ""))
            for k, v in (config.get("parameters") or {}).items()
        }
        onnx_file = params.get("onnx_file", "model.onnx")
        path = os.path.join(args["model_repository"], str(args["model_version"]), onnx_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.model_name}: ONNX file {path} does not exist")
        try:
            self.session = build_session(path, params)
        except ValueError as exc:
            raise ValueError(f"{self.model_name}: {exc}") from exc
        self._check_session()
        self.output_names = [o.name for o in self.outputs]
        _log("info", f"{self.model_name}: {self.session.description} on {path}")

    def _check_session(self) -> None:
        """Refuse to load when the ONNX graph's I/O does not match the config."""
        graph_in, graph_out = self.session.io()
        problems = []
        for kind, declared, graph in (
            ("input", self.inputs, graph_in),
            ("output", self.outputs, graph_out),
        ):
            for tensor in declared:
                if tensor.name not in graph:
                    problems.append(f"{kind} {tensor.name} is not in the graph ({sorted(graph)})")
                elif graph[tensor.name] != tensor.dtype:
                    problems.append(
                        f"{kind} {tensor.name} is {graph[tensor.name]} in the graph but "
                        f"{tensor.type_name} in the config"
                    )
        missing_inputs = set(graph_in) - {t.name for t in self.inputs}
        if missing_inputs:
            problems.append(f"graph inputs not in the config: {sorted(missing_inputs)}")
        if problems:
            raise ValueError(f"{self.model_name}: ONNX graph does not match config: {problems}")

    def _read(self, request: Any) -> list[np.ndarray]:
        """The request's inputs as arrays, validated against the config."""
        arrays = []
        batch = None
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise RequestError(f"{self.model_name}: missing input {spec.name}")
            array = tensor.as_numpy()
            if array.dtype != spec.dtype:
                raise RequestError(
                    f"{self.model_name}: input {spec.name} has dtype {array.dtype}, expected "
                    f"{spec.describe()}"
                )
            if array.ndim != len(spec.dims) + 1:
                raise RequestError(
                    f"{self.model_name}: input {spec.name} has shape {list(array.shape)}, "
                    f"expected {spec.describe()}"
                )
            for got, want in zip(array.shape[1:], spec.dims, strict=True):
                if (want >= 0 and got != want) or got == 0:
                    raise RequestError(
                        f"{self.model_name}: input {spec.name} has shape {list(array.shape)}, "
                        f"expected {spec.describe()}"
                    )
            if batch is None:
                batch = array.shape[0]
            elif array.shape[0] != batch:
                raise RequestError(
                    f"{self.model_name}: inputs disagree on the batch size "
                    f"({batch} vs {array.shape[0]} for {spec.name})"
                )
            arrays.append(array)
        if batch is None or not 1 <= batch <= self.max_batch_size:
            raise RequestError(
                f"{self.model_name}: batch size {batch} is outside 1..{self.max_batch_size}; "
                "split the slices into smaller requests"
            )
        return arrays

    def _run(self, members: list[tuple[int, list[np.ndarray]]]) -> list[list[np.ndarray]]:
        """Run several requests of identical shapes as one batch; per-request outputs."""
        if len(members) == 1:
            feed = {s.name: a for s, a in zip(self.inputs, members[0][1], strict=True)}
        else:
            feed = {
                s.name: np.concatenate([m[1][k] for m in members], axis=0)
                for k, s in enumerate(self.inputs)
            }
        results = self.session.run(self.output_names, feed)
        sizes = [m[1][0].shape[0] for m in members]
        bounds = np.cumsum([0, *sizes])
        per_request = []
        for j in range(len(members)):
            outs = []
            for spec, result in zip(self.outputs, results, strict=True):
                part = result[bounds[j] : bounds[j + 1]]
                outs.append(np.ascontiguousarray(part, dtype=spec.dtype))
            per_request.append(outs)
        return per_request

    def _respond(self, outputs: list[np.ndarray]) -> Any:
        tensors = [
            pb_utils.Tensor(spec.name, array)
            for spec, array in zip(self.outputs, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request; identical-shape requests run as one batch."""
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[tuple[int, ...], ...], list[tuple[int, list[np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            try:
                arrays = self._read(request)
            except RequestError as exc:
                responses[index] = _error_response(str(exc))
                continue
            except Exception as exc:
                responses[index] = _error_response(f"{self.model_name}: bad request: {exc}")
                continue
            key = tuple(a.shape[1:] for a in arrays)
            groups.setdefault(key, []).append((index, arrays))

        for members in groups.values():
            for chunk in self._chunks(members):
                try:
                    outcomes = [self._respond(outs) for outs in self._run(chunk)]
                except Exception as exc:
                    if len(chunk) == 1:
                        outcomes = [
                            _error_response(
                                f"{self.model_name}: inference failed: {exc}", "INTERNAL"
                            )
                        ]
                    else:  # isolate the failing request(s): rerun them one by one
                        outcomes = [self._run_alone(member) for member in chunk]
                for (index, _arrays), response in zip(chunk, outcomes, strict=True):
                    responses[index] = response
        return responses

    def _run_alone(self, member: tuple[int, list[np.ndarray]]) -> Any:
        """One request on its own: its response, or an error response if it fails."""
        try:
            return self._respond(self._run([member])[0])
        except Exception as exc:
            return _error_response(f"{self.model_name}: inference failed: {exc}", "INTERNAL")

    def _chunks(
        self, members: list[tuple[int, list[np.ndarray]]]
    ) -> list[list[tuple[int, list[np.ndarray]]]]:
        """Split a group so that no run exceeds max_batch_size."""
        chunks: list[list[tuple[int, list[np.ndarray]]]] = [[]]
        total = 0
        for member in members:
            size = member[1][0].shape[0]
            if chunks[-1] and total + size > self.max_batch_size:
                chunks.append([])
                total = 0
            chunks[-1].append(member)
            total += size
        return chunks

    def finalize(self) -> None:
        """Release the session."""
        self.session = None
