"""One volume's scheduling (``aspects_client.volume_run.VolumeRun``) and the ``deadline``
keyword of ``TritonSegmenter.infer`` / ``infer_stacks``, without a server: a stand-in replaces
tritonclient's ``async_infer`` (the real server: tests/integration/test_inference_safety.py).
"""

from __future__ import annotations

import math
import threading
import time
import types
from typing import Any

import numpy as np
import pytest

from aspects_client import contract
from aspects_client.errors import InferenceError, ServerUnavailableError, UsageError
from aspects_client.inference import InferenceSettings, ModelInfo, TritonSegmenter

INFO = ModelInfo("aspects", "1", contract.MAX_BATCH_SIZE)
SLICES = np.zeros((40, 8, 8), np.uint8)  # three requests: 16 + 16 + 8 items


class _Result:
    """A tritonclient InferResult for ``n`` items of ``h`` x ``w``."""

    def __init__(self, n: int, h: int, w: int) -> None:
        self.outputs = {
            contract.OUTPUT_LABELS: np.full((n, h, w), 3, np.uint8),
            contract.OUTPUT_CONFIDENCE: np.full((n, contract.NUM_CLASSES), 0.5, np.float32),
        }

    def as_numpy(self, name: str) -> np.ndarray:
        return self.outputs[name]

    def get_response(self) -> Any:
        return types.SimpleNamespace(model_version="1")


class _Client:
    """Records every async_infer call; answers after ``delay_s`` on a thread of its own
    (``None``: never answers), like gRPC's callback threads."""

    def __init__(self, delay_s: float | None = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.cancelled = 0
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()

    def async_infer(self, model: str, inputs: list[Any], callback: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls.append(kwargs)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        n, _, h, w = inputs[0].shape()
        if self.delay_s is not None:
            threading.Timer(self.delay_s, self._answer, (callback, _Result(n, h, w))).start()
        return types.SimpleNamespace(cancel=self._cancel)

    def _answer(self, callback: Any, result: _Result) -> None:
        with self.lock:
            self.in_flight -= 1
        callback(result, None)

    def _cancel(self) -> None:
        with self.lock:
            self.cancelled += 1

    def close(self) -> None:
        pass


def _segmenter(
    monkeypatch: pytest.MonkeyPatch, client: _Client, settings: InferenceSettings
) -> TritonSegmenter:
    monkeypatch.setattr(TritonSegmenter, "_check_contract", lambda self: INFO)
    seg = TritonSegmenter("127.0.0.1:1", settings)
    seg._client.close()
    seg._client = client
    return seg


# --- the deadline keyword -----------------------------------------------------------------------


def test_a_past_deadline_fails_fast_naming_the_deadline_setting(monkeypatch) -> None:
    client = _Client()
    seg = _segmenter(monkeypatch, client, InferenceSettings(deadline_s=45))
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailableError) as caught:
        seg.infer(SLICES, request_id="late-volume", deadline=time.monotonic() - 1.0)
    assert time.monotonic() - t0 < 0.5
    message = str(caught.value)
    assert "late-volume" in message and "127.0.0.1:1" in message, message
    assert "45 s overall deadline (--deadline)" in message, message
    assert "0 of 40 items done; nothing returned" in message, message
    assert client.calls == []  # nothing is sent after the deadline


def test_a_far_deadline_works_and_bounds_no_request_below_its_timeout(monkeypatch) -> None:
    client = _Client()
    seg = _segmenter(monkeypatch, client, InferenceSettings(timeout_s=7.5, deadline_s=1))
    labels, confidence = seg.infer(SLICES, deadline=time.monotonic() + 3600)
    assert labels.shape == SLICES.shape and (labels == 3).all()
    assert confidence.shape == (40, contract.NUM_CLASSES)
    assert [c["client_timeout"] for c in client.calls] == [7.5] * 3  # not the 1 s deadline_s


def test_the_deadline_replaces_deadline_s(monkeypatch) -> None:
    """A deadline 2 s away bounds every request's timeout although deadline_s is 60 s."""
    client = _Client()
    seg = _segmenter(monkeypatch, client, InferenceSettings(timeout_s=30, deadline_s=60))
    seg.infer_stacks(np.zeros((3, 3, 8, 8), np.uint8), deadline=time.monotonic() + 2.0)
    (call,) = client.calls
    assert 1.0 < call["client_timeout"] <= 2.0 and call["timeout"] <= 2_000_000


def test_a_deadline_passing_mid_volume_cancels_what_is_in_flight(monkeypatch) -> None:
    client = _Client(delay_s=None)  # never answers
    seg = _segmenter(monkeypatch, client, InferenceSettings(deadline_s=30, max_in_flight=2))
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailableError, match=r"30 s overall deadline \(--deadline\)"):
        seg.infer(SLICES, deadline=t0 + 0.3)
    assert 0.25 <= time.monotonic() - t0 < 1.0
    assert len(client.calls) == 2 and client.cancelled == 2  # the third was never sent


@pytest.mark.parametrize("value", [math.nan, math.inf, "soon", True, None])
def test_an_invalid_deadline_is_a_usage_error(monkeypatch, value: Any) -> None:
    client = _Client()
    seg = _segmenter(monkeypatch, client, InferenceSettings())
    if value is None:  # the default: now + deadline_s
        seg.infer(SLICES[:3], deadline=value)
        return
    with pytest.raises(UsageError, match="deadline"):
        seg.infer(SLICES[:3], deadline=value)
    assert client.calls == []


def test_an_empty_volume_needs_no_time(monkeypatch) -> None:
    seg = _segmenter(monkeypatch, _Client(), InferenceSettings())
    labels, confidence = seg.infer_stacks(
        np.zeros((0, 3, 8, 8), np.uint8), deadline=time.monotonic() - 1.0
    )
    assert labels.shape == (0, 8, 8) and confidence.shape == (0, contract.NUM_CLASSES)


# --- waves and progress -------------------------------------------------------------------------


def test_waves_never_exceed_max_in_flight_and_progress_sums_to_n(monkeypatch) -> None:
    client = _Client(delay_s=0.02)
    seg = _segmenter(monkeypatch, client, InferenceSettings(max_in_flight=2))
    reported: list[int] = []
    labels, _ = seg.infer(np.zeros((100, 8, 8), np.uint8), progress=reported.append)
    assert labels.shape == (100, 8, 8)
    assert len(client.calls) == 7 and client.most_in_flight == 2  # 6 x 16 + 4
    assert sorted(reported) == [4] + [16] * 6
    ids = [c["request_id"] for c in client.calls]
    assert len({i.split("/")[0] for i in ids}) == 1
    assert sorted(int(i.split("/")[1]) for i in ids) == list(range(0, 100, 16))


def test_a_raising_progress_fails_the_volume_and_is_not_called_again(monkeypatch) -> None:
    client = _Client(delay_s=0.01)
    seg = _segmenter(monkeypatch, client, InferenceSettings(max_in_flight=1))
    calls: list[int] = []

    def progress(n: int) -> None:
        calls.append(n)
        raise RuntimeError("progress bar broke")

    with pytest.raises(InferenceError, match="progress bar broke") as caught:
        seg.infer(SLICES, request_id="vol-p", progress=progress)
    assert str(caught.value).startswith("volume vol-p: ")
    time.sleep(0.1)  # any answer still on its way
    assert calls == [16] and len(client.calls) == 1  # nothing sent after the failure
