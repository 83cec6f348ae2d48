"""Priority, server-side queue timeout and the answering model version, without a server.

Issue 15: every request carries the volume's priority (``"urgent"`` -> Triton 1, ``"batch"``
-> 2, contract.TRITON_PRIORITY) and its timeout as the server's queue timeout; the model
version is read from every response (a volume answered by two versions is refused); Triton's
queue refusals are retried and, when retries run out, explained; a restricted API is not
retried.  A stand-in replaces tritonclient's ``async_infer`` (the real server: the
integration tests in tests/integration/test_triton_policies.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aspects_client import contract
from aspects_client.client import AspectsClient
from aspects_client.errors import InferenceError, ServerUnavailableError, UsageError
from aspects_client.inference import (
    InferenceSettings,
    ModelInfo,
    TritonSegmenter,
    VolumeAnswer,
    check_priority,
)

INFO = ModelInfo("aspects", "1", contract.MAX_BATCH_SIZE, {"unet": {"checkpoint": "ck"}})


class FakeResult:
    """A tritonclient InferResult: the outputs for the request and a response naming the
    model version that answered."""

    def __init__(self, n: int, h: int, w: int, version: str, request_id: str) -> None:
        self.labels = np.full((n, h, w), 3, np.uint8)
        self.confidence = np.full((n, contract.NUM_CLASSES), 0.5, np.float32)
        self.response = types.SimpleNamespace(
            model_name="aspects", model_version=version, id=request_id
        )

    def as_numpy(self, name: str) -> np.ndarray:
        return {contract.OUTPUT_LABELS: self.labels, contract.OUTPUT_CONFIDENCE: self.confidence}[
            name
        ]

    def get_response(self, as_json: bool = False) -> Any:
        return self.response


class FakeError(Exception):
    """A tritonclient InferenceServerException: status() and message()."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self._status, self._message = status, message

    def status(self) -> str:
        return self._status

    def message(self) -> str:
        return self._message


class FakeClient:
    """Records every async_infer call; answers with ``versions`` (one per request, in
    order; the last repeats) or raises what ``errors`` holds first."""

    def __init__(self, versions: list[str], errors: list[Exception] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.versions = versions
        self.errors = list(errors or [])
        self.lock = threading.Lock()

    def async_infer(self, model: str, inputs: list[Any], callback: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls.append({"model": model, **kwargs})
            index = len(self.calls) - 1
            error = self.errors.pop(0) if self.errors else None
        if error is not None:
            callback(None, error)
        else:
            n, _, h, w = inputs[0].shape()
            version = self.versions[min(index, len(self.versions) - 1)]
            callback(FakeResult(n, h, w, version, kwargs["request_id"]), None)
        return types.SimpleNamespace(cancel=lambda: None)

    def close(self) -> None:
        pass


def segmenter(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeClient,
    settings: InferenceSettings = InferenceSettings(),
    infos: list[ModelInfo] | None = None,
) -> TritonSegmenter:
    """A TritonSegmenter whose contract check answers ``infos`` in turn (INFO by default)
    and whose channel is ``fake``."""
    answers = list(infos or [INFO])

    def check(self: TritonSegmenter) -> ModelInfo:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    monkeypatch.setattr(TritonSegmenter, "_check_contract", check)
    seg = TritonSegmenter("127.0.0.1:1", settings)
    seg._client.close()
    seg._client = fake
    return seg


SLICES = np.zeros((40, 8, 8), np.uint8)  # three requests: 16 + 16 + 8 items


# --- priority ---------------------------------------------------------------------------------


def test_contract_maps_urgent_before_batch() -> None:
    assert contract.TRITON_PRIORITY == {"urgent": 1, "batch": 2}
    assert contract.DEFAULT_PRIORITY == "batch" and contract.PRIORITY_LEVELS == 2


@pytest.mark.parametrize("value", ["stat", "URGENT", "", 1, None, True])
def test_an_invalid_priority_is_a_usage_error(value: Any) -> None:
    with pytest.raises(UsageError, match="--priority") as caught:
        InferenceSettings(priority=value)
    assert "'urgent' or 'batch'" in str(caught.value)
    with pytest.raises(UsageError, match="priority"):
        check_priority(value)


@pytest.mark.parametrize(
    ("settings_priority", "call_priority", "sent", "recorded"),
    [
        (None, None, 2, "batch"),  # the default: batch
        ("urgent", None, 1, "urgent"),  # from the settings
        ("batch", "urgent", 1, "urgent"),  # the call wins
        ("urgent", "batch", 2, "batch"),
    ],
)
def test_every_request_carries_the_priority(
    monkeypatch: pytest.MonkeyPatch,
    settings_priority: str | None,
    call_priority: str | None,
    sent: int,
    recorded: str,
) -> None:
    """Before: no priority was sent (Triton's default level for every request)."""
    settings = (
        InferenceSettings()
        if settings_priority is None
        else InferenceSettings(priority=settings_priority)
    )
    fake = FakeClient(["1"])
    seg = segmenter(monkeypatch, fake, settings)
    answer = seg.infer(SLICES, priority=call_priority)
    assert [c["priority"] for c in fake.calls] == [sent] * 3
    assert isinstance(answer, VolumeAnswer) and answer.priority == recorded
    labels, confidence = answer  # still unpacks as before
    assert labels.shape == SLICES.shape and confidence.shape == (40, contract.NUM_CLASSES)


def test_an_invalid_call_priority_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClient(["1"])
    seg = segmenter(monkeypatch, fake)
    with pytest.raises(UsageError, match="priority"):
        seg.infer(SLICES, priority="asap")
    assert fake.calls == []


def test_the_request_timeout_is_the_server_queue_timeout(monkeypatch: pytest.MonkeyPatch):
    """Triton drops a request that waited past its timeout in a step's queue (the config's
    allow_timeout_override); before, the server kept work the client had given up on."""
    fake = FakeClient(["1"])
    seg = segmenter(monkeypatch, fake, InferenceSettings(timeout_s=7.5, deadline_s=60))
    seg.infer(SLICES[:3])
    (call,) = fake.calls
    assert call["timeout"] == 7_500_000 and call["client_timeout"] == 7.5
    # never longer than what is left of the volume's deadline
    fake = FakeClient(["1"])
    seg = segmenter(monkeypatch, fake, InferenceSettings(timeout_s=30, deadline_s=2))
    seg.infer(SLICES[:3])
    assert 1_000_000 < fake.calls[0]["timeout"] <= 2_000_000


# --- the model version that answered ------------------------------------------------------------


def test_the_version_comes_from_the_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the version read at connect time, whatever answered later."""
    updated = ModelInfo("aspects", "2", contract.MAX_BATCH_SIZE, {"unet": {"checkpoint": "v2"}})
    fake = FakeClient(["2"])
    seg = segmenter(monkeypatch, fake, infos=[INFO, updated])
    assert seg.info.version == "1"
    answer = seg.infer(SLICES)
    assert answer.model_version == "2" and answer.model == "aspects"
    # the steps (the unet's checkpoint) were read again for the new version's provenance
    assert seg.info is updated


def test_a_volume_answered_by_two_versions_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClient(["1", "2", "2"])
    seg = segmenter(monkeypatch, fake, InferenceSettings(max_in_flight=1))
    with pytest.raises(InferenceError) as caught:
        seg.infer(SLICES, request_id="vol-7")
    message = str(caught.value)
    print(message)
    assert "volume vol-7" in message and "version 1" in message and "version 2" in message
    assert "changed on the server during this volume" in message
    assert "nothing returned" in message and "segment it again" in message
    assert not isinstance(caught.value, ServerUnavailableError)


def test_same_version_throughout_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClient(["1", "1", "1"])
    seg = segmenter(monkeypatch, fake)
    assert seg.infer(SLICES).model_version == "1"
    assert seg.info is INFO  # nothing re-read


# --- Triton's queue refusals and restricted APIs ------------------------------------------------

# Triton 2.51's words, as the real server sent them (tests/integration/test_triton_policies.py)
QUEUE_FULL = FakeError(
    "StatusCode.UNAVAILABLE", "in ensemble 'aspects', [request id: v/0] Exceeds maximum queue size"
)
QUEUE_TIMEOUT = FakeError(
    "StatusCode.UNAVAILABLE", "in ensemble 'aspects', Request timeout expired"
)
RESTRICTED = FakeError(
    "StatusCode.UNAVAILABLE",
    "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'",
)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (QUEUE_FULL, "the server's queue for this priority is full"),
        (QUEUE_TIMEOUT, "waited in a server queue past its queue timeout"),
    ],
)
def test_queue_refusals_are_retried_then_explained(
    monkeypatch: pytest.MonkeyPatch, error: FakeError, words: str
) -> None:
    settings = InferenceSettings(retries=2, backoff_s=0.01)
    fake = FakeClient(["1"], errors=[error, error])  # refused twice, then answered
    seg = segmenter(monkeypatch, fake, settings)
    assert seg.infer(SLICES[:3]).model_version == "1"
    assert len(fake.calls) == 3 and seg.retried == 2
    fake = FakeClient(["1"], errors=[error] * 3)  # refused past the retries
    seg = segmenter(monkeypatch, fake, settings)
    with pytest.raises(ServerUnavailableError) as caught:
        seg.infer(SLICES[:3])
    message = str(caught.value)
    print(message)
    assert "unavailable or overloaded after 3 attempts" in message and words in message
    assert error.message() in message and "UNAVAILABLE" in message


def test_a_restricted_api_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton answers UNAVAILABLE for a restricted protocol too: retrying cannot help."""
    fake = FakeClient(["1"], errors=[RESTRICTED] * 5)
    seg = segmenter(monkeypatch, fake, InferenceSettings(retries=4, backoff_s=0.01))
    with pytest.raises(InferenceError) as caught:
        seg.infer(SLICES[:3])
    assert len(fake.calls) == 1
    assert not isinstance(caught.value, ServerUnavailableError)
    assert "restricts inference" in str(caught.value) and "operator" in str(caught.value)


# --- the API and the CLI --------------------------------------------------------------------------


def test_segment_refuses_an_invalid_priority_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(TritonSegmenter, "_check_contract", lambda self: INFO)
    with AspectsClient("127.0.0.1:1") as client, pytest.raises(UsageError, match="priority"):
        client.segment(tmp_path / "does-not-exist.nii.gz", priority="now")


def test_cli_priority_is_validated_at_the_edge(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "aspects_client.cli", "segment", "a.nii.gz"]
    cmd += ["-o", str(tmp_path / "r.json"), "--priority", "stat"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--priority" in lines[0] and "urgent" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []
    help_text = subprocess.run(
        [sys.executable, "-m", "aspects_client.cli", "segment", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "--priority {urgent,batch}" in help_text
