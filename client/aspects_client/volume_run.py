"""One volume's requests to the Triton ensemble, and what each answer means.

``VolumeRun`` is the scheduling behind ``TritonSegmenter.infer_stacks`` (inference.py's
module docstring has the rules): the items are split into requests of at most the model's
max batch, sent in waves of at most ``max_in_flight``, every request with its own timeout
(never past the volume's overall deadline), UNAVAILABLE / overload answers retried with
exponential backoff while the retry fits in that deadline, a cancel honoured within
``_POLL_S``, every answered model version compared, and progress reported only while the
run is open.  The functions below turn a failed request into the client's error types.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import contract
from .errors import (
    AspectsError,
    CancelledError,
    InferenceError,
    ServerUnavailableError,
)

if TYPE_CHECKING:
    from .inference import InferenceSettings

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
_POLL_S = 0.05  # how often a waiting volume looks at its cancel event


@dataclass(frozen=True)
class _Request:
    """One request of the volume: items ``lo..hi-1``, its ``attempt`` (0 = first), the
    ``token`` that tracks it in flight and the ``timeout`` it was sent with."""

    lo: int
    hi: int
    attempt: int
    token: int
    timeout: float


class VolumeRun:
    """One volume's requests, sent, retried and collected; call ``run()`` once.

    The calling thread sends and waits (``run``); gRPC's callback threads deliver the
    answers (``_on_answer``).  ``_lock`` guards ``_due``, ``_in_flight``, ``_left``,
    ``_done``, ``_error`` and ``answered``; ``_report`` keeps progress calls before the end
    of ``run`` (``_open``); ``_wake`` is set by every answer.  ``submit`` is tritonclient's
    ``async_infer`` (serialised by the caller); ``on_retry`` counts a request sent again.
    """

    def __init__(
        self,
        stacks: np.ndarray,
        *,
        request_id: str,
        settings: InferenceSettings,
        url: str,
        max_batch: int,
        priority: str,
        deadline: float,
        submit: Callable[..., Any],
        on_retry: Callable[[], None],
        cancel: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.stacks, self.rid, self.settings, self.url = stacks, request_id, settings, url
        self.triton_priority = contract.TRITON_PRIORITY[priority]
        self.deadline, self.cancel, self.progress = deadline, cancel, progress
        self._submit, self._on_retry = submit, on_retry
        self.n = n = len(stacks)
        self.labels = np.empty((n, *stacks.shape[2:]), np.uint8)
        self.confidence = np.empty((n, contract.NUM_CLASSES), np.float32)
        self.answered: dict[str, int] = {}  # model version that answered -> its first item
        self._lock = threading.Lock()
        self._report = threading.Lock()  # progress calls vs. the end of run()
        self._wake = threading.Event()
        # (not before, lo, hi, attempt): requests to send, first wave at once, retries later
        self._due: list[tuple[float, int, int, int]] = [
            (0.0, lo, min(lo + max_batch, n), 0) for lo in range(0, n, max_batch)
        ]
        self._left, self._done = len(self._due), 0  # requests unanswered, items answered
        self._error: BaseException | None = None
        self._open = True
        self._in_flight: dict[int, Any] = {}  # token -> CallContext (None while sending)
        self._tokens = itertools.count()

    # --- the calling thread -------------------------------------------------------------

    def run(self) -> str | None:
        """Send every request and wait for every answer into ``labels`` / ``confidence``;
        the model version that answered (None if no response named one).  Raises the
        first request's error, CancelledError, or ServerUnavailableError at the deadline;
        whatever happens, nothing is left in flight and ``progress`` is not called again."""
        try:
            while True:
                self._wake.clear()
                room = self._send_due()
                with self._lock:
                    error, left, done = self._error, self._left, self._done
                    next_due = min((item[0] for item in self._due), default=math.inf)
                if error is not None:
                    if isinstance(error, AspectsError):
                        raise error
                    raise InferenceError(f"volume {self.rid}: {error}") from error
                if left == 0:
                    return next(iter(self.answered), None)
                now = time.monotonic()
                self._check_going_on(now, done)
                if not room:  # what is due waits for an answer, which sets _wake
                    next_due = math.inf
                self._wake.wait(max(0.0, min(_POLL_S, self.deadline - now, next_due - now)))
        finally:
            self._close()

    def _check_going_on(self, now: float, done: int) -> None:
        """Raise CancelledError once cancelled, ServerUnavailableError once past the
        deadline (naming ``--deadline``), with how much of the volume was done."""
        if self._cancelled():
            raise CancelledError(
                f"volume {self.rid}: cancelled with {done} of {self.n} items done; nothing returned"
            )
        if now >= self.deadline:
            raise ServerUnavailableError(
                f"volume {self.rid}: no complete answer from {self.url} within the "
                f"{self.settings.deadline_s:g} s overall deadline (--deadline); {done} of "
                f"{self.n} items done; nothing returned"
            )

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _send_due(self) -> bool:
        """Send what is due now while there is room, never after the deadline, an error
        or a cancel; False when requests wait for room."""
        while not self._cancelled():
            with self._lock:
                now = time.monotonic()
                if self._error is not None or now >= self.deadline:
                    return True
                if len(self._in_flight) >= self.settings.max_in_flight:
                    return False
                ready = [i for i, item in enumerate(self._due) if item[0] <= now]
                if not ready:
                    return True
                _, lo, hi, attempt = self._due.pop(ready[0])
            self._send(lo, hi, attempt)
        return True

    def _send(self, lo: int, hi: int, attempt: int) -> None:
        """One request for items ``lo..hi-1``; a refusal by the channel is its answer."""
        timeout = min(self.settings.timeout_s, self.deadline - time.monotonic())
        request = _Request(lo, hi, attempt, next(self._tokens), timeout)
        inputs, outputs = self._tensors(lo, hi)
        callback = functools.partial(self._on_answer, request)
        with self._lock:
            self._in_flight[request.token] = None
        if attempt:
            self._on_retry()
        log.debug(
            "request %s/%d sent: items %d..%d, attempt %d, timeout %.3g s",
            *(self.rid, lo, lo, hi - 1, attempt + 1, timeout),
        )
        try:
            context = self._submit(
                self.settings.model,
                inputs,
                callback,
                outputs=outputs,
                request_id=f"{self.rid}/{lo}",
                priority=self.triton_priority,
                timeout=max(1, int(timeout * 1e6)),  # server queue timeout, µs
                client_timeout=timeout,
            )
        except Exception as exc:  # the channel refused it: as if it had answered so
            callback(None, exc)
            return
        with self._lock:
            if request.token in self._in_flight:
                self._in_flight[request.token] = context

    def _tensors(self, lo: int, hi: int) -> tuple[list[Any], list[Any]]:
        """tritonclient's input (items ``lo..hi-1``) and requested outputs."""
        from tritonclient.grpc import InferInput, InferRequestedOutput

        batch = np.ascontiguousarray(self.stacks[lo:hi])
        inp = InferInput(contract.INPUT_SLICES, list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        outputs = [
            InferRequestedOutput(contract.OUTPUT_LABELS),
            InferRequestedOutput(contract.OUTPUT_CONFIDENCE),
        ]
        return [inp], outputs

    def _close(self) -> None:
        """No progress call from now on; cancel what is still in flight, send nothing more."""
        with self._report:
            self._open = False
        with self._lock:  # a failed volume: do not leave its other requests running
            contexts = [c for c in self._in_flight.values() if c is not None]
            self._in_flight.clear()
            self._due.clear()
        for context in contexts:
            with contextlib.suppress(Exception):
                context.cancel()

    # --- gRPC's callback threads ------------------------------------------------------

    def _on_answer(self, request: _Request, result: Any, error: Any) -> None:
        """tritonclient's callback for ``request``."""
        with self._lock:
            self._in_flight.pop(request.token, None)
            closed = self._error is not None or not self._open
        if error is not None:
            self._on_failure(request, error, closed)
            return
        try:
            self._check_version(result, request.lo)
            self._store(result, request.lo, request.hi)
            self._report_progress(request.hi - request.lo)
        except BaseException as exc:
            self._fail(exc)
            return
        with self._lock:
            self._left -= 1
            self._done += request.hi - request.lo
        self._wake.set()

    def _on_failure(self, request: _Request, error: Any, closed: bool) -> None:
        """Retry ``request`` after its backoff when allowed and it fits in the deadline,
        else fail the volume with the request's error (nothing once the run is over)."""
        log.debug(
            "request %s/%d failed (attempt %d): %s",
            *(self.rid, request.lo, request.attempt + 1, _short(error)),
        )
        if closed:
            return
        settings = self.settings
        retry_at = time.monotonic() + settings.backoff_s * 2**request.attempt
        retry = request.attempt < settings.retries and _retryable(error)
        if retry and retry_at < self.deadline:
            with self._lock:
                self._due.append((retry_at, request.lo, request.hi, request.attempt + 1))
            self._wake.set()
            return
        lo, hi, attempt, timeout = request.lo, request.hi, request.attempt, request.timeout
        self._fail(
            _error(settings, self.url, error, self.rid, lo, hi, attempt, timeout, late=retry)
        )

    def _check_version(self, result: Any, lo: int) -> None:
        """Record the model version that answered item ``lo``; InferenceError when the
        volume has now been answered by two."""
        version = _answered_version(result)
        if version is None:
            return
        with self._lock:
            self.answered.setdefault(version, lo)
            versions = dict(self.answered)
        if len(versions) > 1:
            raise InferenceError(_mixed_versions(self.settings.model, self.rid, versions))

    def _store(self, result: Any, lo: int, hi: int) -> None:
        """Put the answer for items ``lo..hi-1`` in place; InferenceError if it is not one."""
        lab = result.as_numpy(contract.OUTPUT_LABELS)
        conf = result.as_numpy(contract.OUTPUT_CONFIDENCE)
        want = (hi - lo, *self.stacks.shape[2:])
        if lab is None or lab.shape != want or conf is None:
            raise InferenceError(
                f"request {self.rid}/{lo}, items {lo}..{hi - 1}: the server returned "
                f"{None if lab is None else lab.shape}, expected {want}"
            )
        self.labels[lo:hi] = lab
        self.confidence[lo:hi] = conf

    def _report_progress(self, items: int) -> None:
        if self.progress is not None:
            with self._report:
                if self._open:
                    self.progress(items)

    def _fail(self, error: BaseException) -> None:
        """The volume fails with ``error`` (the first one wins)."""
        with self._lock:
            if self._error is None:
                self._error = error
        self._wake.set()


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
        return ServerUnavailableError(
            f"{where}: unavailable or overloaded after {attempt + 1} attempts ({text}): "
            f"{_unavailable_reason(text)}; {why}"
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


def _unavailable_reason(text: str) -> str:
    """What a retryable refusal ``text`` means, in words."""
    if _QUEUE_FULL in text:
        return "the server's queue for this priority is full"
    if _QUEUE_TIMEOUT in text:
        return "the request waited in a server queue past its queue timeout"
    if _DRAINING in text:
        return (
            "the server is draining (stopping, or reloading the model); send the "
            "volume again once it, or another replica, is ready"
        )
    return "the server is unreachable, not ready or overloaded"


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
