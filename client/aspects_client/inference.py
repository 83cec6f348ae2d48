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
deadline.  A caller whose clock started earlier (download and reading included) passes that
deadline as an absolute ``time.monotonic()`` value (``infer_stacks(deadline=)``).  A volume can
be cancelled with a ``threading.Event``; every request carries the id ``"<volume id>/<first
item>"``, which error messages and DEBUG log lines (logger ``aspects_client.inference``) name.
The scheduling itself is ``volume_run.VolumeRun``.

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

import dataclasses
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
    CancelledError,
    InferenceError,
    ModelContractError,
    ModelNotReadyError,
    ServerUnavailableError,
    UsageError,
)
from .server_reference import context_stacks
from .validators import check_int, check_seconds
from .volume_run import _RESTRICTED, VolumeRun, _short

log = logging.getLogger("aspects_client.inference")

_TRITON_DTYPES = {"TYPE_UINT8": "UINT8", "TYPE_FP32": "FP32"}
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
            check_seconds(getattr(self, name), _name(name))
        check_seconds(self.backoff_s, _name("backoff_s"), positive=False)
        check_int(self.retries, _name("retries"), 0, MAX_RETRIES)
        check_int(self.max_in_flight, _name("max_in_flight"), 1)
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

        check_seconds(wait_s, "wait_s", positive=False)
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
        deadline: float | None = None,
        deadline_s: float | None = None,
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
            deadline=deadline,
            deadline_s=deadline_s,
        )

    def infer_stacks(
        self,
        stacks: np.ndarray,
        *,
        request_id: str | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
        priority: str | None = None,
        deadline: float | None = None,
        deadline_s: float | None = None,
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
        ``deadline``: that overall deadline as an absolute ``time.monotonic()`` value
        (default: now + ``settings.deadline_s``), for a caller whose clock started earlier;
        ``deadline_s``: the seconds it stands for, which messages name (default:
        ``settings.deadline_s``).
        """
        stacks = _checked_stacks(stacks)
        rid = _volume_id(request_id)
        settings = self.settings  # one snapshot for the whole volume
        if deadline_s is not None and deadline_s != settings.deadline_s:
            settings = dataclasses.replace(settings, deadline_s=deadline_s)
        priority = check_priority(
            settings.priority if priority is None else priority, "priority (--priority)"
        )
        if deadline is None:
            deadline = time.monotonic() + settings.deadline_s
        else:
            _check_deadline(deadline)
        if cancel is not None and cancel.is_set():
            raise CancelledError(f"volume {rid}: cancelled before anything was sent")
        run = VolumeRun(
            stacks,
            request_id=rid,
            settings=settings,
            url=self.url,
            max_batch=min(self.info.max_batch_size, contract.MAX_BATCH_SIZE),
            priority=priority,
            deadline=deadline,
            submit=self._submit,
            on_retry=self._count_retry,
            cancel=cancel,
            progress=progress,
        )
        return self._answer(run, priority)

    def _answer(self, run: VolumeRun, priority: str) -> VolumeAnswer:
        """What ``run`` gets back (an empty volume: at once), with the model version that
        answered; a new version is read again for provenance."""
        version = run.run() or self.info.version
        if version != self.info.version:
            self._refresh_info(version)
        return VolumeAnswer(
            run.labels,
            run.confidence,
            model=run.settings.model,
            model_version=version,
            priority=priority,
        )

    def _submit(self, *args: Any, **kwargs: Any) -> Any:
        """tritonclient's ``async_infer``, one sender at a time (see ``_send_lock``)."""
        with self._send_lock:
            return self._client.async_infer(*args, **kwargs)

    def _count_retry(self) -> None:
        with self._retry_lock:
            self.retried += 1

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


def speaks_http(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``host:port`` answers a plain HTTP/1.0 request (then it is not gRPC)."""
    host, _, port = url.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as s:
            s.sendall(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
            return s.recv(8).startswith(b"HTTP/1.")
    except (OSError, ValueError):
        return False


def _checked_stacks(stacks: Any) -> np.ndarray:
    """``stacks`` as uint8 [N, 3, H, W], else InferenceError."""
    stacks = np.asarray(stacks)
    channels = contract.NETWORK_CHANNELS
    if stacks.dtype != np.uint8 or stacks.ndim != 4 or stacks.shape[1] != channels:
        raise InferenceError(
            f"stacks must be uint8 [N, {channels}, H, W], got {stacks.dtype} {stacks.shape}"
        )
    return stacks


def _volume_id(request_id: Any) -> str:
    """The volume's request id: ``request_id``, or a fresh uuid4 hex for None."""
    if request_id is None:
        return uuid.uuid4().hex
    if not isinstance(request_id, str) or not request_id:
        raise UsageError(f"request_id must be a non-empty string, got {request_id!r}")
    return request_id


def _check_deadline(deadline: Any) -> None:
    ok = isinstance(deadline, numbers.Real) and not isinstance(deadline, bool)
    if not (ok and math.isfinite(deadline)):
        raise UsageError(
            f"deadline must be a finite time.monotonic() value in seconds, got {deadline!r}"
        )
