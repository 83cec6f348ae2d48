"""Connect deadlines, the overall per-volume deadline, cancellation, request ids, progress and
waiting for readiness, against the real CPU ``tritonserver`` (the oracle repository).

Slow or dead networks are made with ``_Proxy``, a TCP proxy on 127.0.0.1 written here:
``delay_s`` forwards every chunk that long after it arrived, each way (a 2 x 300 ms round
trip); ``freeze_s`` forwards nothing of a new connection before that many seconds;
``stall()`` / ``resume()`` hold / release everything; ``target=None`` is a black hole that
accepts TCP connections and never answers; ``close()`` is a pod that went away.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import pytest
from aspects_devkit.local_triton import free_port

from aspects_client.errors import CancelledError, InferenceError, ServerUnavailableError
from aspects_client.inference import InferenceSettings, TritonSegmenter

from .conftest import InProcessEnsemble, ServedRepository

pytestmark = pytest.mark.integration


def _slices(n: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """uint8 display slices [n, size, size] of a synthetic phantom (structure to segment)."""
    from aspects_client.display_stack import prepare
    from aspects_client.volume_io import load_volume
    from aspects_synth import make_phantom

    phantom = make_phantom(seed=seed, in_plane=(size, size), n_slices=max(n, 3))
    return prepare(load_volume(phantom.image)).slices[:n]  # a volume has >= 3 slices


class _Proxy:
    """A TCP proxy 127.0.0.1:port -> target; see the module docstring."""

    def __init__(
        self,
        target: tuple[str, int] | None,
        *,
        delay_s: float = 0.0,
        freeze_s: float = 0.0,
        port: int = 0,
    ) -> None:
        self.target, self.delay_s, self.freeze_s = target, delay_s, freeze_s
        self._listener = socket.create_server(("127.0.0.1", port), backlog=64)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"127.0.0.1:{self.port}"
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._track(conn)
            self.connections += 1
            if self.target is not None:  # a black hole keeps the connection and says nothing
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)  # type: ignore[arg-type]
            upstream.settimeout(None)
        except OSError:
            conn.close()
            return
        self._track(upstream)
        start = time.monotonic() + self.freeze_s
        for src, dst in ((conn, upstream), (upstream, conn)):
            chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._read, args=(src, chunks, start), daemon=True).start()
            threading.Thread(target=self._write, args=(dst, chunks), daemon=True).start()

    def _read(self, src: socket.socket, chunks: queue.Queue, start: float) -> None:
        while True:
            try:
                data = src.recv(1 << 20)
            except OSError:
                data = b""
            chunks.put((max(time.monotonic(), start) + self.delay_s, data))
            if not data:
                return

    def _write(self, dst: socket.socket, chunks: queue.Queue) -> None:
        while True:
            due, data = chunks.get()
            time.sleep(max(0.0, due - time.monotonic()))
            while not self._flowing.wait(0.05):
                if self._closed.is_set():
                    return
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        """Stop listening and drop every connection (a pod that went away)."""
        self._closed.set()
        self._flowing.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [self._listener, *sockets]:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def _proxy(target: tuple[str, int] | None, **kwargs: Any) -> Iterator[_Proxy]:
    proxy = _Proxy(target, **kwargs)
    try:
        yield proxy
    finally:
        proxy.close()


def _grpc_target(served: ServedRepository) -> tuple[str, int]:
    return ("127.0.0.1", served.server.grpc_port)


@contextmanager
def _segmenter(url: str, settings: InferenceSettings, **kwargs: Any) -> Iterator[TritonSegmenter]:
    segmenter = TritonSegmenter(url, settings, **kwargs)
    try:
        yield segmenter
    finally:
        segmenter.close()


def _record_sends(segmenter: TritonSegmenter) -> list[tuple[float, dict[str, Any]]]:
    """(monotonic time, keyword arguments) of every async_infer the segmenter makes."""
    sent: list[tuple[float, dict[str, Any]]] = []
    client = segmenter._client
    send = client.async_infer

    def async_infer(*args: Any, **kwargs: Any) -> Any:
        sent.append((time.monotonic(), kwargs))
        return send(*args, **kwargs)

    client.async_infer = async_infer
    return sent


# --- 1. connect deadline ------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", [{"delay_s": 0.3}, {"freeze_s": 1.5}], ids=["300ms-each-way", "frozen-1.5s"]
)
def test_slow_network_connects_and_infers_within_the_connect_timeout(
    mode: dict[str, float],
    triton_oracle: ServedRepository,
    oracle_in_process: InProcessEnsemble,
) -> None:
    """Before: gRPC core took min_reconnect_backoff_ms (100 ms) as the deadline of each
    connect attempt, so a handshake slower than that never finished and the first check
    failed UNAVAILABLE in under a second, whatever the connect timeout."""
    slices = _slices(4, seed=3)
    with _segmenter(triton_oracle.server.grpc_url, InferenceSettings()) as direct:
        direct_labels, direct_confidence = direct.infer(slices)
    settings = InferenceSettings(connect_timeout_s=10.0, timeout_s=30.0)
    with _proxy(_grpc_target(triton_oracle), **mode) as proxy:
        t0 = time.monotonic()
        with _segmenter(proxy.url, settings) as slow:
            connected = time.monotonic() - t0
            labels, confidence = slow.infer(slices)
        total = time.monotonic() - t0
    print(f"{mode}: connected and checked in {connected:.2f} s, + one volume: {total:.2f} s")
    assert proxy.connections >= 1
    np.testing.assert_array_equal(labels, direct_labels)
    np.testing.assert_array_equal(confidence, direct_confidence)
    np.testing.assert_array_equal(labels, oracle_in_process(slices)[0])
    assert len(np.unique(labels)) > 2


def test_black_hole_fails_after_the_connect_timeout() -> None:
    """A listener that accepts TCP and never answers: the constructor fails after about
    connect_timeout_s (before: in ~0.1 s, the 100 ms connect-attempt deadline)."""
    with _proxy(None) as hole:
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailableError) as caught:
            TritonSegmenter(hole.url, InferenceSettings(connect_timeout_s=2.0))
        seconds = time.monotonic() - t0
    print(f"black hole: {seconds:.2f} s: {caught.value}")
    assert hole.url in str(caught.value)
    assert 1.5 <= seconds < 10.0, seconds


# --- 2. the overall deadline --------------------------------------------------------------


def test_overall_deadline_covers_every_wave(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    """The network stops answering mid-session: a 40-slice volume sent one request at a time
    fails at deadline_s (1.5 s) although one request may take 30 s; nothing is sent after
    the deadline; the same segmenter works again once the network does."""
    slices = _slices(40, size=64, seed=4)
    settings = InferenceSettings(timeout_s=30.0, deadline_s=1.5, max_in_flight=1)
    with _proxy(_grpc_target(triton_oracle)) as proxy, _segmenter(proxy.url, settings) as seg:
        sent = _record_sends(seg)
        proxy.stall()
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailableError) as caught:
            seg.infer(slices, request_id="stalled-volume")
        seconds = time.monotonic() - t0
        message = str(caught.value)
        print(f"stalled network: {seconds:.2f} s: {message}")
        assert 1.4 <= seconds < 3.0, seconds
        assert "1.5 s overall deadline" in message and "--deadline" in message, message
        assert "stalled-volume" in message, message
        assert sent and all(at < t0 + 1.5 for at, _ in sent), sent
        assert len(sent) == 1  # max_in_flight=1: the later waves were never sent

        proxy.resume()
        seg.settings = InferenceSettings(timeout_s=30.0, deadline_s=60.0)
        labels, _ = seg.infer(slices)
    np.testing.assert_array_equal(labels, oracle_in_process(slices)[0])


def test_retries_stop_at_the_overall_deadline(triton_oracle: ServedRepository) -> None:
    """The server goes away: retries are bounded by deadline_s, not by backoff_s * 2**retries
    (here up to 0.2 * 1023 s); the next retry that would pass the deadline is not waited for."""
    slices = _slices(4, seed=5)
    settings = InferenceSettings(retries=10, backoff_s=0.2, deadline_s=2.0)
    with _proxy(_grpc_target(triton_oracle)) as proxy, _segmenter(proxy.url, settings) as seg:
        seg.infer(slices)  # connected and working
        sent = _record_sends(seg)
        retried = seg.retried
        proxy.close()  # the pod goes away
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailableError) as caught:
            seg.infer(slices)
        seconds = time.monotonic() - t0
        message = str(caught.value)
        print(f"gone: {seconds:.2f} s, {len(sent)} sends: {message}")
        assert seconds < 2.5, seconds
        assert all(at < t0 + 2.0 for at, _ in sent)
        assert len(sent) >= 2 and seg.retried - retried == len(sent) - 1
        assert "UNAVAILABLE" in message and "2 s overall deadline" in message, message


def test_an_absolute_deadline_replaces_deadline_s(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    """``deadline=`` (a time.monotonic() value, e.g. taken before the download): one already
    past fails at once, naming --deadline and its seconds, sending nothing; a far one works."""
    slices = _slices(20, size=64, seed=13)
    settings = InferenceSettings(deadline_s=5.0)
    with _segmenter(triton_oracle.server.grpc_url, settings) as seg:
        sent = _record_sends(seg)
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailableError) as caught:
            seg.infer(slices, request_id="started-early", deadline=t0 - 4.0)
        seconds = time.monotonic() - t0
        message = str(caught.value)
        print(f"past deadline: {seconds:.3f} s: {message}")
        assert seconds < 0.5 and sent == []
        assert "started-early" in message and "5 s overall deadline (--deadline)" in message
        labels, confidence = seg.infer(slices, deadline=time.monotonic() + 600.0)
    ref_labels, ref_confidence = oracle_in_process(slices)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(confidence, ref_confidence)
    assert len(sent) == 2 and all(kw["client_timeout"] == settings.timeout_s for _, kw in sent)


# --- 3. cancellation ----------------------------------------------------------------------


def test_cancel_stops_a_volume_within_a_second_and_the_segmenter_stays_usable(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    slices = _slices(64, size=128, seed=6)  # 4 requests of 16 sent one at a time: seconds
    settings = InferenceSettings(max_in_flight=1)
    with _segmenter(triton_oracle.server.grpc_url, settings) as seg:
        sent = _record_sends(seg)
        cancel = threading.Event()
        set_at: list[float] = []

        def fire() -> None:
            set_at.append(time.monotonic())
            cancel.set()

        timer = threading.Timer(0.3, fire)
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(CancelledError) as caught:
                seg.infer(slices, cancel=cancel, request_id="cancelled-volume")
        finally:
            timer.cancel()
        raised = time.monotonic()
        print(
            f"cancel: set at {set_at[0] - t0:.2f} s, raised {raised - set_at[0]:.3f} s later, "
            f"{len(sent)} of 4 requests sent: {caught.value}"
        )
        assert raised - set_at[0] < 1.0
        assert "cancelled-volume" in str(caught.value)
        assert len(sent) < 4, "the whole volume was sent: cancel came too late to test"
        assert all(at <= set_at[0] + 0.05 for at, _ in sent), "sent after the cancel"

        other = _slices(6, seed=7)
        labels, confidence = seg.infer(other)
    ref_labels, ref_confidence = oracle_in_process(other)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(confidence, ref_confidence)


def test_a_cancel_set_beforehand_sends_nothing(triton_oracle: ServedRepository) -> None:
    cancel = threading.Event()
    cancel.set()
    with _segmenter(triton_oracle.server.grpc_url, InferenceSettings()) as seg:
        sent = _record_sends(seg)
        with pytest.raises(CancelledError):
            seg.infer(_slices(3, seed=8), cancel=cancel)
    assert sent == []


# --- 4. request ids, 5. progress ---------------------------------------------------------


def test_every_request_carries_the_volume_id_and_reports_progress(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    slices = _slices(40, size=64, seed=9)  # requests of 16 + 16 + 8 slices
    echoed: list[str] = []
    progress: list[tuple[int, str]] = []
    with _segmenter(triton_oracle.server.grpc_url, InferenceSettings()) as seg:
        sent = _record_sends(seg)
        client = seg._client
        send = client.async_infer

        def async_infer(model: str, inputs: Any, callback: Any, **kwargs: Any) -> Any:
            def on_answer(result: Any, error: Any) -> None:
                if result is not None:  # Triton echoes the request id in its response
                    echoed.append(result.get_response().id)
                callback(result, error)

            return send(model, inputs, on_answer, **kwargs)

        client.async_infer = async_infer
        labels, _ = seg.infer(
            slices,
            request_id="vol-42",
            progress=lambda n: progress.append((n, threading.current_thread().name)),
        )
        seg.infer(slices[:3])  # request_id=None
    np.testing.assert_array_equal(labels, oracle_in_process(slices)[0])
    ids = sorted(kwargs["request_id"] for _, kwargs in sent[:3])
    assert ids == ["vol-42/0", "vol-42/16", "vol-42/32"], ids
    assert sorted(echoed[:3]) == ids
    assert len(sent) == 4
    generated = sent[3][1]["request_id"]  # a fresh uuid4 hex
    assert len(generated) == 34 and generated.endswith("/0"), generated
    assert sorted(n for n, _ in progress) == [8, 16, 16]
    assert sum(n for n, _ in progress) == len(slices)
    print(f"progress calls (items, thread): {progress}")


def test_a_failing_request_names_its_id_in_the_error_and_the_log(
    triton_oracle: ServedRepository, caplog: pytest.LogCaptureFixture
) -> None:
    slices = _slices(6, seed=10)  # one request; 0.05 s is far too short for the server
    settings = InferenceSettings(timeout_s=0.05, retries=0)
    caplog.set_level(logging.DEBUG, logger="aspects_client.inference")
    with (
        _segmenter(triton_oracle.server.grpc_url, settings) as seg,
        pytest.raises(ServerUnavailableError) as caught,
    ):
        seg.infer(slices, request_id="scan-7")
    message = str(caught.value)
    print(f"failing request: {message}")
    assert "scan-7/0" in message and "DEADLINE_EXCEEDED" in message, message
    assert "--timeout" in message, message
    lines = [r.getMessage() for r in caplog.records if r.name == "aspects_client.inference"]
    assert any("scan-7/0" in line and "sent" in line for line in lines), lines
    assert any("scan-7/0" in line and "failed" in line for line in lines), lines


def test_a_raising_progress_callback_fails_the_volume(triton_oracle: ServedRepository) -> None:
    def progress(n: int) -> None:
        raise RuntimeError("progress bar broke")

    with _segmenter(triton_oracle.server.grpc_url, InferenceSettings()) as seg:
        with pytest.raises(InferenceError, match="progress bar broke"):
            seg.infer(_slices(3, seed=11), progress=progress)
        seg.infer(_slices(3, seed=11))  # and the segmenter still works


# --- 6. waiting until the server is ready --------------------------------------------------


def test_wait_s_retries_a_closed_port_until_it_has_elapsed() -> None:
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailableError) as caught:
        TritonSegmenter(url, InferenceSettings(connect_timeout_s=2.0), wait_s=2.0)
    seconds = time.monotonic() - t0
    print(f"closed port, wait_s=2: {seconds:.2f} s: {caught.value}")
    assert 1.8 <= seconds < 6.0, seconds
    assert url in str(caught.value)


def test_wait_s_returns_at_once_when_ready_and_waits_for_a_late_server(
    triton_oracle: ServedRepository,
) -> None:
    t0 = time.monotonic()
    with _segmenter(triton_oracle.server.grpc_url, InferenceSettings(), wait_s=5.0) as seg:
        at_once = time.monotonic() - t0
        assert seg.info.max_batch_size >= 1
    assert at_once < 3.0, at_once

    port = free_port()
    late: list[_Proxy] = []
    opener = threading.Timer(
        1.0, lambda: late.append(_Proxy(_grpc_target(triton_oracle), port=port))
    )
    t0 = time.monotonic()
    opener.start()
    try:
        with _segmenter(f"127.0.0.1:{port}", InferenceSettings(), wait_s=15.0) as seg:
            waited = time.monotonic() - t0
            labels, _ = seg.infer(_slices(2, seed=12))
    finally:
        opener.cancel()
        for proxy in late:
            proxy.close()
    print(f"wait_s: ready server {at_once:.2f} s; server listening after 1 s: {waited:.2f} s")
    assert 1.0 <= waited < 8.0, waited
    assert labels.shape == (2, 96, 96)
