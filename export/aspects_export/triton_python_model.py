"""Shared Triton python_backend ``model.py``: run one step's ONNX graph with onnxruntime.

Copied as ``<step>/1/model.py`` into the generated CPU model repository (architecture §4); it
runs inside Triton's Python stub from the server environment, so it imports only numpy,
onnxruntime, json/os and ``triton_python_backend_utils``.  Everything it needs comes from
the model config: inputs/outputs (names, dtypes, dims), ``max_batch_size`` and the
``parameters`` ``onnx_file``, ``intra_op_thread_count``, ``inter_op_thread_count``,
``allow_spinning`` ("0"/"1", default "1") and ``cpu_mem_arena`` ("0"/"1", default "1").

``initialize`` builds ONE onnxruntime session; ``execute`` groups the requests of a
dynamic batch whose inputs have identical shapes, runs each group as one batch and splits
the results back.  Errors go back per request (``TritonError``); one bad request never
fails the others.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

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


class TritonPythonModel:
    """One ensemble step: an ONNX graph on onnxruntime, configured by config.pbtxt."""

    def initialize(self, args: dict[str, str]) -> None:
        """Parse the model config and build the single onnxruntime session."""
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

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_thread_count", "0") or 0)
        options.inter_op_num_threads = int(params.get("inter_op_thread_count", "0") or 0)
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
        self._check_session()
        self.output_names = [o.name for o in self.outputs]
        _log(
            "info",
            f"{self.model_name}: onnxruntime {ort.__version__} session on {path} "
            f"(intra_op={options.intra_op_num_threads}, inter_op={options.inter_op_num_threads})",
        )

    def _check_session(self) -> None:
        """Refuse to load when the ONNX graph's I/O does not match the config."""
        graph_in = {i.name: i.type for i in self.session.get_inputs()}
        graph_out = {o.name: o.type for o in self.session.get_outputs()}
        problems = []
        for kind, declared, graph in (
            ("input", self.inputs, graph_in),
            ("output", self.outputs, graph_out),
        ):
            for tensor in declared:
                if tensor.name not in graph:
                    problems.append(f"{kind} {tensor.name} is not in the graph ({sorted(graph)})")
                elif graph[tensor.name] != _ORT_TYPES[tensor.type_name]:
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
        """Answer every request; identical-shape requests run as one onnxruntime batch."""
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
        """Split a group so that no onnxruntime run exceeds max_batch_size."""
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
        """Release the onnxruntime session."""
        self.session = None
