"""Batched, concurrent gRPC inference against the Triton ensemble (tritonclient).

A volume's display slices [N, H, W] become 2.5D stacks [N, 3, H, W] (``context_stacks``:
channel c of item k is slice k + contract.CONTEXT_OFFSETS[c], edge-replicated; built here,
before any split, because only the client has the whole volume).  The stacks are split into
requests of at most the model's max batch size, sent concurrently (``async_infer``) so the
server's dynamic batcher can fill batches across volumes, and put back in order.  Either
every slice comes back or the call raises: never a partial result.  UNAVAILABLE / overload
answers are retried a bounded number of times with exponential backoff; every request has a
deadline.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import contract
from .errors import (
    InferenceError,
    ModelContractError,
    ModelNotReadyError,
    ServerUnavailableError,
)
from .preprocessing import context_stacks

_RETRYABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "Exceeds maximum queue size")
_TRITON_DTYPES = {"TYPE_UINT8": "UINT8", "TYPE_FP32": "FP32"}


@dataclass(frozen=True)
class InferenceSettings:
    model: str = contract.ENSEMBLE_MODEL
    timeout_s: float = 120.0  # deadline of one request
    retries: int = 4  # extra attempts on UNAVAILABLE / overload (0.2+0.4+0.8+1.6 s)
    backoff_s: float = 0.2  # first retry delay; doubles each time
    ssl: bool = False
    root_certificates: str | None = None  # PEM file for TLS
    max_in_flight: int = 8  # requests of one volume in flight at once
    connect_timeout_s: float = 20.0  # deadline of each connect-time check (ready, metadata)


@dataclass(frozen=True)
class ModelInfo:
    """The served ensemble; ``steps``: per step model its version, runtime and, where the
    repository records it, the checkpoint the unet was exported from."""

    name: str
    version: str
    max_batch_size: int
    steps: dict[str, dict[str, str]] = field(default_factory=dict)


class TritonSegmenter:
    """One gRPC channel to Triton; thread-safe ``infer`` for many volumes at once."""

    def __init__(self, url: str, settings: InferenceSettings = InferenceSettings()) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.settings = settings
        try:
            self._client = grpcclient.InferenceServerClient(
                url,
                ssl=settings.ssl,
                root_certificates=settings.root_certificates,
                channel_args=channel_args(),
            )
        except Exception as exc:
            raise ServerUnavailableError(f"cannot open a gRPC channel to {url}: {exc}") from None
        # tritonclient's async_infer keeps the in-flight call in one shared attribute
        # before attaching the callback: concurrent calls on one client could swap
        # callbacks between requests.  Sending is serialised; waiting is not.
        self._send_lock = threading.Lock()
        self._retry_lock = threading.Lock()
        self.retried = 0  # requests sent again after a retryable answer, over this client's life
        if settings.max_in_flight < 1:
            raise ValueError("InferenceSettings.max_in_flight must be >= 1")
        try:
            self.info = self._check_contract()
        except BaseException:
            self._client.close()
            raise

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        from tritonclient.utils import InferenceServerException

        kwargs.setdefault("client_timeout", self.settings.connect_timeout_s)
        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            text = _short(exc)
            if "handshake" in text.lower() or "CERTIFICATE_VERIFY_FAILED" in text:
                hint = "check --root-certificates and the server certificate's host names"
            elif not self.settings.ssl and "Socket closed" in text:
                hint = "check the URL, that the server is running and whether it needs --tls"
            else:
                hint = "check the URL and that the server is running"
            raise ServerUnavailableError(
                f"Triton at {self.url} did not answer {what} ({text}); {hint}"
            ) from None

    def _check_contract(self) -> ModelInfo:
        name = self.settings.model
        if not self._call("the readiness check", self._client.is_server_ready):
            raise ServerUnavailableError(f"Triton at {self.url} is not ready yet; retry shortly")
        if not self._call("the model check", self._client.is_model_ready, name):
            raise ModelNotReadyError(
                f"model {name!r} is not loaded on {self.url}; load it "
                "(model control) or check the server's model repository"
            )
        meta = self._call("metadata", self._client.get_model_metadata, name, as_json=True)
        config = self._call("config", self._client.get_model_config, name, as_json=True)["config"]
        inputs, outputs = contract.MODEL_IO[contract.ENSEMBLE_MODEL]
        served = {t["name"]: t for t in meta.get("inputs", []) + meta.get("outputs", [])}
        for spec in (*inputs, *outputs):
            got = served.get(spec.name)
            if got is None:
                raise ModelContractError(f"{name}: tensor {spec.name} is missing on the server")
            if got["datatype"] != _TRITON_DTYPES[spec.dtype]:
                raise ModelContractError(
                    f"{name}: {spec.name}.datatype is {got['datatype']}, "
                    f"the contract says {_TRITON_DTYPES[spec.dtype]}"
                )
            dims = [int(d) for d in got["shape"]][1:]  # drop the batch dim
            if dims != list(spec.dims):
                raise ModelContractError(
                    f"{name}: {spec.name}.shape is {dims}, the contract says {list(spec.dims)}"
                )
        max_batch = int(config.get("max_batch_size", 0))
        if max_batch < 1:
            raise ModelContractError(f"{name}: max_batch_size is {max_batch}; batching is required")
        return ModelInfo(name, str(meta.get("versions", [""])[-1]), max_batch, self._steps())

    def _steps(self) -> dict[str, dict[str, str]]:
        """Best effort: what runs behind the ensemble (for provenance only)."""
        steps: dict[str, dict[str, str]] = {}
        for step in contract.STEP_MODELS:
            try:
                meta = self._call("metadata", self._client.get_model_metadata, step, as_json=True)
                cfg = self._call("config", self._client.get_model_config, step, as_json=True)
            except InferenceError:
                continue
            cfg = cfg.get("config", {})
            info = {
                "version": str(meta.get("versions", [""])[-1]),
                "runtime": str(cfg.get("platform") or cfg.get("backend") or ""),
            }
            checkpoint = cfg.get("parameters", {}).get("checkpoint", {}).get("string_value")
            if checkpoint:
                info["checkpoint"] = str(checkpoint)
            steps[step] = info
        return steps

    def infer(self, slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One volume's display slices uint8 [N, H, W], in slice order -> (labels uint8
        [N, H, W], confidence float32 [N, 11]).  Sends their 2.5D stacks (``infer_stacks``)."""
        slices = np.asarray(slices)
        if slices.dtype != np.uint8 or slices.ndim != 3:
            raise InferenceError(
                f"slices must be uint8 [N, H, W], got {slices.dtype} {slices.shape}"
            )
        if len(slices) == 0:
            return np.empty(slices.shape, np.uint8), np.empty((0, contract.NUM_CLASSES), np.float32)
        if min(slices.shape[1:]) < 1:
            raise InferenceError(f"slices must have H, W >= 1, got {slices.shape}")
        return self.infer_stacks(context_stacks(slices))

    def infer_stacks(self, stacks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ready-made 2.5D stacks uint8 [N, 3, H, W] (independent items) -> (labels uint8
        [N, H, W] of each item's middle slice, confidence float32 [N, 11]), in item order."""
        stacks = np.asarray(stacks)
        channels = contract.NETWORK_CHANNELS
        if stacks.dtype != np.uint8 or stacks.ndim != 4 or stacks.shape[1] != channels:
            raise InferenceError(
                f"stacks must be uint8 [N, {channels}, H, W], got {stacks.dtype} {stacks.shape}"
            )
        n = len(stacks)
        out_shape = (n, *stacks.shape[2:])
        if n == 0:
            return np.empty(out_shape, np.uint8), np.empty((0, contract.NUM_CLASSES), np.float32)
        step = min(self.info.max_batch_size, contract.MAX_BATCH_SIZE)
        chunks = [(i, min(i + step, n)) for i in range(0, n, step)]
        labels = np.empty(out_shape, np.uint8)
        confidence = np.empty((n, contract.NUM_CLASSES), np.float32)
        gate = threading.Semaphore(self.settings.max_in_flight)
        done = threading.Event()
        lock = threading.Lock()
        state: dict[str, Any] = {"pending": len(chunks), "error": None}
        in_flight: dict[tuple[int, int], Any] = {}  # (lo, hi) -> tritonclient CallContext

        def finish(error: BaseException | None) -> None:
            with lock:
                if error is not None and state["error"] is None:
                    state["error"] = error
                state["pending"] -= 1
                if state["pending"] == 0 or state["error"] is not None:
                    done.set()

        def send(lo: int, hi: int, attempt: int) -> None:
            from tritonclient.grpc import InferInput, InferRequestedOutput

            batch = np.ascontiguousarray(stacks[lo:hi])
            inp = InferInput(contract.INPUT_SLICES, list(batch.shape), "UINT8")
            inp.set_data_from_numpy(batch)
            outs = [
                InferRequestedOutput(contract.OUTPUT_LABELS),
                InferRequestedOutput(contract.OUTPUT_CONFIDENCE),
            ]

            def callback(result: Any, error: Any) -> None:
                gate.release()
                with lock:
                    in_flight.pop((lo, hi), None)
                if error is not None:
                    if attempt < self.settings.retries and _retryable(error) and not done.is_set():
                        with self._retry_lock:
                            self.retried += 1
                        delay = self.settings.backoff_s * (2**attempt)
                        timer = threading.Timer(delay, lambda: submit(lo, hi, attempt + 1))
                        timer.daemon = True
                        timer.start()
                        return
                    finish(self._error(error, lo, hi, attempt))
                    return
                try:
                    lab = result.as_numpy(contract.OUTPUT_LABELS)
                    conf = result.as_numpy(contract.OUTPUT_CONFIDENCE)
                    want = (hi - lo, *batch.shape[2:])
                    if lab is None or lab.shape != want or conf is None:
                        raise InferenceError(
                            f"slices {lo}..{hi - 1}: the server returned "
                            f"{None if lab is None else lab.shape}, expected {want}"
                        )
                    labels[lo:hi] = lab
                    confidence[lo:hi] = conf
                    finish(None)
                except BaseException as exc:
                    finish(exc)

            with self._send_lock:
                context = self._client.async_infer(
                    self.settings.model,
                    [inp],
                    callback,
                    outputs=outs,
                    client_timeout=self.settings.timeout_s,
                )
            with lock:
                if (lo, hi) not in in_flight and not done.is_set():
                    in_flight[(lo, hi)] = context

        def submit(lo: int, hi: int, attempt: int) -> None:
            if done.is_set():
                finish(None)
                return
            gate.acquire()
            try:
                send(lo, hi, attempt)
            except BaseException as exc:
                gate.release()
                finish(exc)

        for lo, hi in chunks:
            submit(lo, hi, 0)
        # every attempt has its own deadline; waves of max_in_flight requests run one after
        # another; add the backoff delays and some slack
        retries = max(0, self.settings.retries)
        waves = -(-len(chunks) // self.settings.max_in_flight)
        limit = (
            self.settings.timeout_s * (retries + 1 + waves)
            + self.settings.backoff_s * (2**retries - 1)
            + 5.0
        )
        finished = done.wait(limit)
        done.set()  # stop pending retries from sending anything more
        error = state["error"]
        if not finished or error is not None:
            with lock:  # a failed volume: do not leave its other requests running
                contexts = list(in_flight.values())
                in_flight.clear()
            for context in contexts:
                with contextlib.suppress(Exception):
                    context.cancel()
        if not finished:
            raise ServerUnavailableError(
                f"no answer from {self.url} within the {limit:g} s overall deadline; "
                "nothing returned"
            )
        if error is not None:
            raise error if isinstance(error, InferenceError) else InferenceError(str(error))
        return labels, confidence

    def _error(self, error: Any, lo: int, hi: int, attempt: int) -> InferenceError:
        text = _short(error)
        where = f"{self.settings.model} at {self.url}, slices {lo}..{hi - 1}"
        if _retryable(error):
            return ServerUnavailableError(
                f"{where}: unavailable or overloaded after {attempt + 1} attempts ({text}); "
                "retry later or add capacity"
            )
        if "DEADLINE_EXCEEDED" in text or "Deadline" in text:
            return ServerUnavailableError(
                f"{where}: no answer within the {self.settings.timeout_s:g} s deadline ({text}); "
                "the server is too slow or overloaded"
            )
        return InferenceError(f"{where}: {text}")

    def close(self) -> None:
        self._client.close()


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's default channel options plus a short reconnect backoff.

    Behind a load balancer a pod may go away; gRPC's default reconnect backoff (1 s growing
    to 120 s) would outlast our retries, so reconnect within 0.1-1 s instead.  Passing
    channel_args replaces tritonclient's defaults, hence they are repeated here.
    """
    from tritonclient.grpc import KeepAliveOptions

    ka = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_receive_message_length", 2**31 - 1),
        ("grpc.keepalive_time_ms", ka.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", ka.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", ka.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", ka.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def _short(exc: Any) -> str:
    status = getattr(exc, "status", lambda: None)()
    message = getattr(exc, "message", lambda: str(exc))()
    return " ".join(f"{status or ''} {message}".split())[:300]


def _retryable(exc: Any) -> bool:
    text = _short(exc)
    return any(marker in text for marker in _RETRYABLE)
