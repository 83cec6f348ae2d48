"""InferenceSettings refuses what cannot work (UsageError naming the option), the defaults
bound a volume to tens of seconds, the channel's connect-attempt deadline is the connect
timeout, and ``wait_s`` repeats only the checks worth repeating.  No server needed."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import pytest

from aspects_client.errors import (
    ModelContractError,
    ModelNotReadyError,
    ServerUnavailableError,
    UsageError,
)
from aspects_client.inference import (
    InferenceSettings,
    ModelInfo,
    TritonSegmenter,
    channel_args,
)

BAD = [
    ("timeout_s", math.nan, "--timeout"),
    ("timeout_s", math.inf, "--timeout"),
    ("timeout_s", 0, "--timeout"),
    ("timeout_s", -1.0, "--timeout"),
    ("timeout_s", "30", "--timeout"),
    ("timeout_s", True, "--timeout"),
    ("deadline_s", math.nan, "--deadline"),
    ("deadline_s", math.inf, "--deadline"),
    ("deadline_s", 0.0, "--deadline"),
    ("deadline_s", -1, "--deadline"),
    ("connect_timeout_s", math.nan, "connect_timeout_s"),
    ("connect_timeout_s", 0, "connect_timeout_s"),
    ("connect_timeout_s", -1, "connect_timeout_s"),
    ("retries", -1, "--retries"),
    ("retries", 11, "--retries"),
    ("retries", 1_000_000, "--retries"),  # before: OverflowError in the backoff arithmetic
    ("retries", True, "--retries"),
    ("retries", 2.0, "--retries"),
    ("backoff_s", -0.1, "backoff_s"),
    ("backoff_s", math.nan, "backoff_s"),
    ("backoff_s", math.inf, "backoff_s"),
    ("max_in_flight", 0, "max_in_flight"),
    ("max_in_flight", 1.5, "max_in_flight"),
    ("max_in_flight", False, "max_in_flight"),
    ("model", "", "model"),
]


@pytest.mark.parametrize(("name", "value", "option"), BAD)
def test_bad_values_are_refused_naming_the_option(name: str, value: Any, option: str) -> None:
    with pytest.raises(UsageError) as caught:
        InferenceSettings(**{name: value})
    assert option in str(caught.value), caught.value
    assert isinstance(caught.value, ValueError)  # UsageError is a ValueError too


def test_replace_checks_again() -> None:
    with pytest.raises(UsageError, match="--timeout"):
        dataclasses.replace(InferenceSettings(), timeout_s=-5)


def test_good_values_are_kept() -> None:
    settings = InferenceSettings(
        timeout_s=0.05, deadline_s=1, connect_timeout_s=2, retries=0, backoff_s=0, max_in_flight=1
    )
    assert settings.retries == 0 and settings.deadline_s == 1
    assert InferenceSettings(retries=10).retries == 10


def test_defaults_fail_within_tens_of_seconds() -> None:
    """Before: timeout 120 s and no overall deadline, a volume could wait
    120 * (4 + 1 + waves) + 3 + 5 = 728 s; connect checks 20 s each."""
    settings = InferenceSettings()
    assert settings.timeout_s == 30.0
    assert settings.deadline_s == 60.0
    assert settings.connect_timeout_s == 10.0
    assert settings.timeout_s <= settings.deadline_s


def test_root_certificates_must_be_a_readable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.pem"
    with pytest.raises(UsageError, match="--root-certificates") as caught:
        InferenceSettings(ssl=True, root_certificates=str(missing))
    assert "nonexistent.pem" in str(caught.value)
    with pytest.raises(UsageError, match="--root-certificates"):
        InferenceSettings(ssl=True, root_certificates=str(tmp_path))  # a directory
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    assert InferenceSettings(ssl=True, root_certificates=str(pem)).root_certificates == str(pem)


def test_root_certificates_without_tls_are_refused_not_ignored(tmp_path: Path) -> None:
    """A CA bundle without --tls used to connect in plaintext, silently (issue 24)."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(UsageError, match=r"--root-certificates .*is for TLS: add --tls"):
        InferenceSettings(root_certificates=str(pem))


def test_connect_attempt_deadline_is_the_connect_timeout() -> None:
    """gRPC core uses grpc.min_reconnect_backoff_ms as each connect attempt's deadline; it
    was 100 ms, so a slow handshake never finished.  The reconnect backoff stays short."""
    args = dict(channel_args(10.0))
    assert args["grpc.min_reconnect_backoff_ms"] == 10_000
    assert args["grpc.initial_reconnect_backoff_ms"] <= 100
    assert args["grpc.max_reconnect_backoff_ms"] <= 1000
    assert dict(channel_args(2.5))["grpc.min_reconnect_backoff_ms"] == 2500


# --- wait_s, with a fake contract check (no server) ---------------------------------------

INFO = ModelInfo("aspects", "1", 16)


def _fake_checks(monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> list[float]:
    """TritonSegmenter._check_contract answers (raises) each of ``answers`` in turn."""
    calls: list[float] = []

    def check(self: TritonSegmenter) -> ModelInfo:
        calls.append(time.monotonic())
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(TritonSegmenter, "_check_contract", check)
    return calls


def test_wait_s_repeats_unavailable_and_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_checks(
        monkeypatch, [ServerUnavailableError("down"), ModelNotReadyError("loading"), INFO]
    )
    t0 = time.monotonic()
    segmenter = TritonSegmenter("127.0.0.1:1", wait_s=5.0)
    segmenter.close()
    assert segmenter.info is INFO and len(calls) == 3
    assert 0.9 <= time.monotonic() - t0 < 3.0  # two pauses of ~0.5 s


def test_wait_s_gives_up_with_the_last_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_checks(monkeypatch, [ServerUnavailableError("down")])
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="down"):
        TritonSegmenter("127.0.0.1:1", wait_s=1.2)
    assert 1.2 <= time.monotonic() - t0 < 2.5
    assert 3 <= len(calls) <= 5


def test_no_wait_by_default_and_never_for_a_contract_mismatch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _fake_checks(monkeypatch, [ServerUnavailableError("down")])
    with pytest.raises(ServerUnavailableError):
        TritonSegmenter("127.0.0.1:1")
    assert len(calls) == 1
    calls = _fake_checks(monkeypatch, [ModelContractError("LABELS missing")])
    t0 = time.monotonic()
    with pytest.raises(ModelContractError):
        TritonSegmenter("127.0.0.1:1", wait_s=5.0)
    assert len(calls) == 1 and time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("wait_s", [-1.0, math.nan, math.inf])
def test_bad_wait_s_is_refused(wait_s: float) -> None:
    with pytest.raises(UsageError, match="wait_s"):
        TritonSegmenter("127.0.0.1:1", wait_s=wait_s)


def test_bad_request_id_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    _fake_checks(monkeypatch, [INFO])
    segmenter = TritonSegmenter("127.0.0.1:1")
    try:
        with pytest.raises(UsageError, match="request_id"):
            segmenter.infer(np.zeros((1, 8, 8), np.uint8), request_id="")
    finally:
        segmenter.close()


def test_a_draining_server_is_retried_and_named() -> None:
    """Triton stopping gracefully answers NOT_FOUND "no available versions" (it said only
    that, and was not retried; issue 24)."""
    from tritonclient.utils import InferenceServerException

    from aspects_client import volume_run
    from aspects_client.errors import ServerUnavailableError

    draining = InferenceServerException(
        "Request for unknown model: 'aspects' has no available versions", "StatusCode.NOT_FOUND"
    )
    assert volume_run._retryable(draining)
    error = volume_run._error(InferenceSettings(), "triton:8001", draining, "rid", 0, 4, 4, 30.0,
                              late=False)
    assert isinstance(error, ServerUnavailableError) and "draining" in str(error)
    unknown = InferenceServerException("Request for unknown model: 'other'", "StatusCode.NOT_FOUND")
    assert not volume_run._retryable(unknown)
