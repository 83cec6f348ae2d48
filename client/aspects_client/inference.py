"""Batched, concurrent gRPC inference against the Triton ensemble (tritonclient).

A volume's display slices [N, H, W] become 2.5D stacks [N, 3, H, W] (``context_stacks``:
channel c of item k is slice k + contract.CONTEXT_OFFSETS[c], edge-replicated; built here,
before any split, because only the client has the whole volume).  The stacks are split into
requests of at most the model's max batch size, sent concurrently (``async_infer``, at most
``max_in_flight`` at once) so the server's dynamic batcher can fill batches across volumes,
and put back in order.  Either every slice comes back or the call raises: never a partial
result.

Time is bounded twice: every request has its own deadline (``timeout_s``, ``--timeout``) and
the whole volume one overall deadline (``deadline_s``, ``--deadline``) that every wave, retry
and backoff must fit in; nothing is sent after it.  UNAVAILABLE / overload answers are retried
a bounded number of times with exponential backoff, as long as the retry fits in the overall
deadline.  A volume can be cancelled with a ``threading.Event``; every request carries the
id ``"<volume id>/<first item>"``, which error messages and DEBUG log lines
(logger ``aspects_client.inference``) name.

Every request also carries the volume's priority (``"urgent"`` or ``"batch"``, sent as
Triton priority ``contract.TRITON_PRIORITY``: each step's queue serves level 1 first) and
its timeout as the server-side queue timeout (Triton drops a request that waited longer in
a step's queue; it can only shorten the server's own bound).  A full queue ("Exceeds maximum
queue size") and a queue timeout ("Request timeout expired") come back UNAVAILABLE and are
retried like any overload.  The model version that answered is read from every response:
a volume answered by two versions (a model update in the middle of it) is refused, never
mixed; the answer records the one version (``VolumeAnswer.model_version``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import numbers
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import contract
from .errors import (
    AspectsError,
    CancelledError,
    InferenceError,
    ModelContractError,
    ModelNotReadyError,
    ServerUnavailableError,
    UsageError,
)
from .server_reference import context_stacks

log = logging.getLogger("aspects_client.inference")

_RETRYABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "Exceeds maximum queue size")
# Triton's own words (2.51, measured) for its refusals; a queue refusal is worth a retry, a
# restricted API (--grpc-restricted-protocol) is not, although it also answers UNAVAILABLE.
_QUEUE_FULL = "Exceeds maximum queue size"
_QUEUE_TIMEOUT = "Request timeout expired"
_RESTRICTED = "is restricted, expecting header"
# a server stopping gracefully (or reloading) unloads its models first: requests then get
# NOT_FOUND "... has no available versions"; retried like UNAVAILABLE, and said as draining
_DRAINING = "no available versions"
_TRITON_DTYPES = {"TYPE_UINT8": "UINT8", "TYPE_FP32": "FP32"}
_POLL_S = 0.05  # how often a waiting volume looks at its cancel event
_READY_POLL_S = 0.5  # how often the connect-time checks are repeated while wait_s lasts
MAX_RETRIES = 10
# CLI option of each setting, for error messages
_OPTION = {
    "timeout_s": "--timeout",
    "deadline_s": "--deadline",
    "retries": "--retries",
    "root_certificates": "--root-certificates",
    "priority": "--priority",
    "ssl": "--tls",
}


@dataclass(frozen=True)
class InferenceSettings:
    """How to talk to Triton; every value is checked on construction (UsageError)."""

    model: str = contract.ENSEMBLE_MODEL
    timeout_s: float = 30.0  # deadline of one request
    retries: int = 4  # extra attempts on UNAVAILABLE / overload (0.2+0.4+0.8+1.6 s), 0..10
    backoff_s: float = 0.2  # first retry delay; doubles each time
    ssl: bool = False
    root_certificates: str | None = None  # PEM file for TLS
    max_in_flight: int = 8  # requests of one volume in flight at once
    connect_timeout_s: float = 10.0  # deadline of each connect-time check (ready, metadata)
    deadline_s: float = 60.0  # one volume, overall: every wave, retry and backoff
    priority: str = contract.DEFAULT_PRIORITY  # "urgent" | "batch" (contract.TRITON_PRIORITY)

    def __post_init__(self) -> None:
        for name in ("timeout_s", "connect_timeout_s", "deadline_s"):
            _check_seconds(name, getattr(self, name), positive=True)
        _check_seconds("backoff_s", self.backoff_s, positive=False)
        _check_int("retries", self.retries, 0, MAX_RETRIES)
        _check_int("max_in_flight", self.max_in_flight, 1, None)
        check_priority(self.priority, _name("priority"))
        if not isinstance(self.model, str) or not self.model:
            raise UsageError(f"{_name('model')} must be a model name, got {self.model!r}")
        if self.root_certificates is not None:
            if not self.ssl:  # a CA bundle without TLS would silently connect in plaintext
                raise UsageError(
                    f"{_name('root_certificates')} is for TLS: add --tls (ssl=True), or drop it"
                )
            path = self.root_certificates
            if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
                raise UsageError(f"{_name('root_certificates')}: no such file: {path!r}")
            if not os.access(path, os.R_OK):
                raise UsageError(f"{_name('root_certificates')}: cannot read {path!r}")


def check_priority(value: Any, what: str = "priority") -> str:
    """``value`` if it is a priority of the contract (``"urgent"``, ``"batch"``), else
    UsageError naming ``what``."""
    if not isinstance(value, str) or value not in contract.TRITON_PRIORITY:
        choices = " or ".join(repr(k) for k in contract.TRITON_PRIORITY)
        raise UsageError(f"{what} must be {choices}, got {value!r}")
    return value


def _name(setting: str) -> str:
    option = _OPTION.get(setting)
    return f"{option} (InferenceSettings.{setting})" if option else f"InferenceSettings.{setting}"


def _check_seconds(setting: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise UsageError(
            f"{_name(setting)} must be a finite number of seconds {bound}, got {value!r}"
        )


def _check_int(setting: str, value: Any, low: int, high: int | None) -> None:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise UsageError(f"{_name(setting)} must be an integer {bound}, got {value!r}")


@dataclass(frozen=True)
class ModelInfo:
    """The served ensemble; ``steps``: per step model its version, runtime and, where the
    repository records it, the checkpoint the unet was exported from."""

    name: str
    version: str
    max_batch_size: int
    steps: dict[str, dict[str, str]] = field(default_factory=dict)


class VolumeAnswer(tuple):
    """What ``infer`` / ``infer_stacks`` return: unpacks as ``(labels, confidence)``; also
    says who answered (``model``, ``model_version``: read from every response, one version
    for the whole volume) and at which ``priority`` it was asked."""

    labels: np.ndarray
    confidence: np.ndarray
    model: str
    model_version: str
    priority: str

    def __new__(
        cls,
        labels: np.ndarray,
        confidence: np.ndarray,
        *,
        model: str,
        model_version: str,
        priority: str,
    ) -> VolumeAnswer:
        answer = super().__new__(cls, (labels, confidence))
        answer.labels, answer.confidence = labels, confidence
        answer.model, answer.model_version, answer.priority = model, model_version, priority
        return answer


class TritonSegmenter:
    """One gRPC channel to Triton; thread-safe ``infer`` for many volumes at once.

    ``wait_s`` > 0: the connect-time checks (server ready, model ready, metadata) are
    repeated every 0.5 s while the server is unreachable or not ready, until ``wait_s`` has
    passed (each check still has ``connect_timeout_s``); then the last error is raised.  A
    served model that breaks the contract (ModelContractError) is never waited for.
    """

    def __init__(
        self,
        url: str,
        settings: InferenceSettings = InferenceSettings(),
        *,
        wait_s: float = 0.0,
    ) -> None:
        import tritonclient.grpc as grpcclient

        _check_seconds_arg("wait_s", wait_s)
        self.url = url
        self.settings = settings
        try:
            self._client = grpcclient.InferenceServerClient(
                url,
                ssl=settings.ssl,
                root_certificates=settings.root_certificates,
                channel_args=channel_args(settings.connect_timeout_s),
            )
        except Exception as exc:
            raise ServerUnavailableError(f"cannot open a gRPC channel to {url}: {exc}") from None
        # tritonclient's async_infer keeps the in-flight call in one shared attribute
        # before attaching the callback: concurrent calls on one client could swap
        # callbacks between requests.  Sending is serialised; waiting is not.
        self._send_lock = threading.Lock()
        self._retry_lock = threading.Lock()
        self._info_lock = threading.Lock()
        self.retried = 0  # requests sent again after a retryable answer, over this client's life
        try:
            self.info = self._wait_for_contract(wait_s)
        except BaseException:
            self._client.close()
            raise

    def _wait_for_contract(self, wait_s: float) -> ModelInfo:
        give_up = time.monotonic() + wait_s
        while True:
            try:
                return self._check_contract()
            except (ServerUnavailableError, ModelNotReadyError) as exc:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise
                log.debug("%s not ready (%s); checking again for %.1f s", self.url, exc, left)
                time.sleep(min(_READY_POLL_S, left))

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        from tritonclient.utils import InferenceServerException

        kwargs.setdefault("client_timeout", self.settings.connect_timeout_s)
        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            text = _short(exc)
            if "handshake" in text.lower() or "CERTIFICATE_VERIFY_FAILED" in text:
                hint = "check --root-certificates and the server certificate's host names"
            elif _RESTRICTED in text:
                hint = "the server restricts this API to its operators; ask them to open it"
            elif "Socket closed" in text and speaks_http(self.url):
                hint = ("that port answers HTTP/1.x, not gRPC: give Triton's gRPC port (8001 by "
                        "default; 8000 is its HTTP port)")
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

    def _refresh_info(self, answered_version: str) -> None:
        """The ensemble answered with another version than at connect time (an update on
        the server): read the model and its steps again, for provenance.  Best effort."""
        with self._info_lock:
            if self.info.version == answered_version:
                return
            try:
                self.info = self._check_contract()
            except InferenceError as exc:
                log.debug("model info not refreshed after version %s: %s", answered_version, exc)

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

    def infer(
        self,
        slices: np.ndarray,
        *,
        request_id: str | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
        priority: str | None = None,
    ) -> VolumeAnswer:
        """One volume's display slices uint8 [N, H, W], in slice order -> (labels uint8
        [N, H, W], confidence float32 [N, 11]) as a ``VolumeAnswer``.  Sends their 2.5D
        stacks; the keywords are those of ``infer_stacks``."""
        slices = np.asarray(slices)
        if slices.dtype != np.uint8 or slices.ndim != 3:
            raise InferenceError(
                f"slices must be uint8 [N, H, W], got {slices.dtype} {slices.shape}"
            )
        if len(slices) == 0:
            stacks = np.empty((0, contract.NETWORK_CHANNELS, *slices.shape[1:]), np.uint8)
        elif min(slices.shape[1:]) < 1:
            raise InferenceError(f"slices must have H, W >= 1, got {slices.shape}")
        else:
            stacks = context_stacks(slices)
        return self.infer_stacks(
            stacks,
            request_id=request_id,
            cancel=cancel,
            progress=progress,
            priority=priority,
        )

    def infer_stacks(
        self,
        stacks: np.ndarray,
        *,
        request_id: str | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
        priority: str | None = None,
    ) -> VolumeAnswer:
        """Ready-made 2.5D stacks uint8 [N, 3, H, W] (independent items) -> (labels uint8
        [N, H, W] of each item's middle slice, confidence float32 [N, 11]), in item order,
        as a ``VolumeAnswer`` (which also names the model version that answered).

        ``request_id``: the volume's id (default: a fresh uuid4 hex); request k carries
        ``f"{request_id}/{first item}"`` and errors name it.  ``cancel``: when set, every
        request in flight is cancelled, nothing more is sent and CancelledError is raised
        (within ~0.1 s).  ``progress(n)``: called with the number of items just completed
        (the calls sum to N on success); it runs on gRPC's callback thread, so it must be
        quick and thread-safe; it is never called after this method has returned or raised,
        and an exception from it fails the volume.  ``priority``: ``"urgent"`` or ``"batch"``
        (default: ``settings.priority``), sent with every request.  Raises
        ServerUnavailableError when the overall deadline (``deadline_s``) passes, naming it,
        and InferenceError when two model versions answered parts of the volume.
        """
        stacks = np.asarray(stacks)
        channels = contract.NETWORK_CHANNELS
        if stacks.dtype != np.uint8 or stacks.ndim != 4 or stacks.shape[1] != channels:
            raise InferenceError(
                f"stacks must be uint8 [N, {channels}, H, W], got {stacks.dtype} {stacks.shape}"
            )
        if request_id is None:
            request_id = uuid.uuid4().hex
        elif not isinstance(request_id, str) or not request_id:
            raise UsageError(f"request_id must be a non-empty string, got {request_id!r}")
        rid = request_id
        settings = self.settings  # one snapshot for the whole volume
        priority = check_priority(
            settings.priority if priority is None else priority, "priority (--priority)"
        )
        triton_priority = contract.TRITON_PRIORITY[priority]
        n = len(stacks)
        if cancel is not None and cancel.is_set():
            raise CancelledError(f"volume {rid}: cancelled before anything was sent")
        out_shape = (n, *stacks.shape[2:])
        if n == 0:
            return VolumeAnswer(
                np.empty(out_shape, np.uint8),
                np.empty((0, contract.NUM_CLASSES), np.float32),
                model=settings.model,
                model_version=self.info.version,
                priority=priority,
            )
        deadline = time.monotonic() + settings.deadline_s
        step = min(self.info.max_batch_size, contract.MAX_BATCH_SIZE)
        labels = np.empty(out_shape, np.uint8)
        confidence = np.empty((n, contract.NUM_CLASSES), np.float32)

        lock = threading.Lock()  # guards state, due, in_flight
        report = threading.Lock()  # progress calls vs. the end of this call
        wake = threading.Event()  # set by every answer
        state: dict[str, Any] = {"left": 0, "done": 0, "error": None, "open": True}
        # (not before, lo, hi, attempt): requests to send, first wave at once, retries later
        due: list[tuple[float, int, int, int]] = [
            (0.0, lo, min(lo + step, n), 0) for lo in range(0, n, step)
        ]
        state["left"] = len(due)
        in_flight: dict[int, Any] = {}  # token -> tritonclient CallContext (None while sending)
        tokens = itertools.count()
        answered: dict[str, int] = {}  # model version that answered -> first item it answered

        def fail(error: BaseException) -> None:
            with lock:
                if state["error"] is None:
                    state["error"] = error
            wake.set()

        def answer(lo: int, hi: int, attempt: int, token: int, timeout: float) -> Callable:
            def callback(result: Any, error: Any) -> None:
                with lock:
                    in_flight.pop(token, None)
                    closed = state["error"] is not None or not state["open"]
                if error is not None:
                    log.debug(
                        "request %s/%d failed (attempt %d): %s", rid, lo, attempt + 1, _short(error)
                    )
                    if closed:
                        return
                    retry_at = time.monotonic() + settings.backoff_s * 2**attempt
                    retry = attempt < settings.retries and _retryable(error)
                    if retry and retry_at < deadline:
                        with lock:
                            due.append((retry_at, lo, hi, attempt + 1))
                        wake.set()
                        return
                    fail(
                        _error(settings, self.url, error, rid, lo, hi, attempt, timeout, late=retry)
                    )
                    return
                try:
                    version = _answered_version(result)
                    if version is not None:
                        with lock:
                            answered.setdefault(version, lo)
                            versions = dict(answered)
                        if len(versions) > 1:
                            raise InferenceError(_mixed_versions(settings.model, rid, versions))
                    lab = result.as_numpy(contract.OUTPUT_LABELS)
                    conf = result.as_numpy(contract.OUTPUT_CONFIDENCE)
                    want = (hi - lo, *stacks.shape[2:])
                    if lab is None or lab.shape != want or conf is None:
                        raise InferenceError(
                            f"request {rid}/{lo}, items {lo}..{hi - 1}: the server returned "
                            f"{None if lab is None else lab.shape}, expected {want}"
                        )
                    labels[lo:hi] = lab
                    confidence[lo:hi] = conf
                    if progress is not None:
                        with report:
                            if state["open"]:
                                progress(hi - lo)
                except BaseException as exc:
                    fail(exc)
                    return
                with lock:
                    state["left"] -= 1
                    state["done"] += hi - lo
                wake.set()

            return callback

        def send(lo: int, hi: int, attempt: int) -> None:
            from tritonclient.grpc import InferInput, InferRequestedOutput

            timeout = min(settings.timeout_s, deadline - time.monotonic())
            batch = np.ascontiguousarray(stacks[lo:hi])
            inp = InferInput(contract.INPUT_SLICES, list(batch.shape), "UINT8")
            inp.set_data_from_numpy(batch)
            outs = [
                InferRequestedOutput(contract.OUTPUT_LABELS),
                InferRequestedOutput(contract.OUTPUT_CONFIDENCE),
            ]
            token = next(tokens)
            callback = answer(lo, hi, attempt, token, timeout)
            with lock:
                in_flight[token] = None
            if attempt:
                with self._retry_lock:
                    self.retried += 1
            log.debug(
                "request %s/%d sent: items %d..%d, attempt %d, timeout %.3g s",
                rid,
                lo,
                lo,
                hi - 1,
                attempt + 1,
                timeout,
            )
            try:
                with self._send_lock:
                    context = self._client.async_infer(
                        settings.model,
                        [inp],
                        callback,
                        outputs=outs,
                        request_id=f"{rid}/{lo}",
                        priority=triton_priority,
                        timeout=max(1, int(timeout * 1e6)),  # server queue timeout, µs
                        client_timeout=timeout,
                    )
            except Exception as exc:  # the channel refused it: as if it had answered so
                callback(None, exc)
                return
            with lock:
                if token in in_flight:
                    in_flight[token] = context

        def send_due() -> bool:
            """Send what is due now while there is room, never after the deadline or a
            cancel; False when requests wait for room."""
            while cancel is None or not cancel.is_set():
                with lock:
                    now = time.monotonic()
                    if state["error"] is not None or now >= deadline:
                        return True
                    if len(in_flight) >= settings.max_in_flight:
                        return False
                    ready = [i for i, item in enumerate(due) if item[0] <= now]
                    if not ready:
                        return True
                    _, lo, hi, attempt = due.pop(ready[0])
                send(lo, hi, attempt)
            return True

        try:
            while True:
                wake.clear()
                room = send_due()
                with lock:
                    error, left, done = state["error"], state["left"], state["done"]
                    next_due = min((item[0] for item in due), default=math.inf)
                if not room:  # what is due waits for an answer, which sets wake
                    next_due = math.inf
                if error is not None:
                    if isinstance(error, AspectsError):
                        raise error
                    raise InferenceError(f"volume {rid}: {error}") from error
                if left == 0:
                    break
                now = time.monotonic()
                if cancel is not None and cancel.is_set():
                    raise CancelledError(
                        f"volume {rid}: cancelled with {done} of {n} items done; nothing returned"
                    )
                if now >= deadline:
                    raise ServerUnavailableError(
                        f"volume {rid}: no complete answer from {self.url} within the "
                        f"{settings.deadline_s:g} s overall deadline (--deadline); {done} of "
                        f"{n} items done; nothing returned"
                    )
                wake.wait(max(0.0, min(_POLL_S, deadline - now, next_due - now)))
        finally:
            with report:
                state["open"] = False
            with lock:  # a failed volume: do not leave its other requests running
                contexts = [c for c in in_flight.values() if c is not None]
                in_flight.clear()
                due.clear()
            for context in contexts:
                with contextlib.suppress(Exception):
                    context.cancel()
        version = next(iter(answered), self.info.version)
        if version != self.info.version:
            self._refresh_info(version)
        return VolumeAnswer(
            labels, confidence, model=settings.model, model_version=version, priority=priority
        )

    def close(self) -> None:
        self._client.close()


def channel_args(connect_timeout_s: float = 20.0) -> list[tuple[str, int]]:
    """tritonclient's default channel options plus a short reconnect backoff.

    Behind a load balancer a pod may go away; gRPC's default reconnect backoff (1 s growing
    to 120 s) would outlast our retries, so reconnect after 0.1-1 s instead.  gRPC core also
    takes ``grpc.min_reconnect_backoff_ms`` as the deadline of one connect attempt (TCP + TLS
    + the server's HTTP/2 SETTINGS): it is ``connect_timeout_s``, so a slow network (a
    600 ms round trip, a server frozen for a second) still connects.  Passing channel_args
    replaces tritonclient's defaults, hence they are repeated here.
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
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.min_reconnect_backoff_ms", math.ceil(connect_timeout_s * 1000)),
    ]


def _error(
    settings: InferenceSettings,
    url: str,
    error: Any,
    rid: str,
    lo: int,
    hi: int,
    attempt: int,
    timeout: float,
    late: bool,
) -> InferenceError:
    """The error of request ``rid/lo`` (items lo..hi-1) after ``attempt + 1`` attempts, the
    last with deadline ``timeout``; ``late``: a retry was allowed but would pass the overall
    deadline."""
    text = _short(error)
    where = f"{settings.model} at {url}, request {rid}/{lo} (items {lo}..{hi - 1})"
    if _RESTRICTED in text:
        return InferenceError(
            f"{where}: the server restricts inference to callers with a header ({text}); "
            "ask its operator"
        )
    if _retryable(error):
        why = (
            f"the next retry would pass the {settings.deadline_s:g} s overall deadline (--deadline)"
            if late
            else "retry later or add capacity"
        )
        if _QUEUE_FULL in text:
            what = "the server's queue for this priority is full"
        elif _QUEUE_TIMEOUT in text:
            what = "the request waited in a server queue past its queue timeout"
        elif _DRAINING in text:
            what = ("the server is draining (stopping, or reloading the model); send the "
                    "volume again once it, or another replica, is ready")
        else:
            what = "the server is unreachable, not ready or overloaded"
        return ServerUnavailableError(
            f"{where}: unavailable or overloaded after {attempt + 1} attempts ({text}): {what}; "
            f"{why}"
        )
    if "DEADLINE_EXCEEDED" in text or "Deadline" in text:
        if timeout < settings.timeout_s:
            which = f"{settings.deadline_s:g} s overall deadline (--deadline)"
        else:
            which = f"{settings.timeout_s:g} s deadline of one request (--timeout)"
        return ServerUnavailableError(
            f"{where}: no answer within the {which} ({text}); the server is too slow or overloaded"
        )
    return InferenceError(f"{where}: {text}")


def speaks_http(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``host:port`` answers a plain HTTP/1.0 request (then it is not gRPC)."""
    host, _, port = url.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as s:
            s.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
            return s.recv(8).startswith(b"HTTP/1.")
    except (OSError, ValueError):
        return False


def _check_seconds_arg(name: str, value: Any) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value >= 0):
        raise UsageError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def _short(exc: Any) -> str:
    status = getattr(exc, "status", lambda: None)()
    message = getattr(exc, "message", lambda: str(exc))()
    return " ".join(f"{status or ''} {message}".split())[:300]


def _retryable(exc: Any) -> bool:
    text = _short(exc)
    if _RESTRICTED in text:  # UNAVAILABLE too, but no retry will carry the header
        return False
    return any(marker in text for marker in (*_RETRYABLE, _QUEUE_TIMEOUT, _DRAINING))


def _answered_version(result: Any) -> str | None:
    """The model version in a tritonclient InferResult's response (None if it has none)."""
    get_response = getattr(result, "get_response", None)
    if get_response is None:
        return None
    version = getattr(get_response(), "model_version", "")
    return str(version) if version else None


def _mixed_versions(model: str, rid: str, versions: dict[str, int]) -> str:
    parts = ", ".join(f"version {v} (from item {lo})" for v, lo in sorted(versions.items()))
    return (
        f"volume {rid}: {model} answered with {parts}: the model changed on the server during "
        "this volume; nothing returned, segment it again"
    )
