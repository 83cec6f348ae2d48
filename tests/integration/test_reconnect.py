"""The client behind a load-balanced gRPC endpoint: a pod goes away, another takes its place.

Behind a Kubernetes Service (or any L4 balancer) a client holds one HTTP/2 connection to one
pod.  When that pod is deleted the connection breaks and the next request must be carried by a
new connection to whichever pod answers at the same address.  Emulated here with real servers:
a ``tritonserver`` serving the oracle repository is stopped and a NEW process is started on
the SAME gRPC port; the SAME ``TritonSegmenter`` object must then segment again, with the same
answer, without being rebuilt by its caller.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from aspects_devkit.local_triton import LocalTriton

from aspects_client.errors import ServerUnavailableError
from aspects_client.inference import InferenceSettings, TritonSegmenter
from aspects_export.oracle import oracle_intensity

pytestmark = pytest.mark.integration


def _stripe_classes(size: int = 96) -> np.ndarray:
    """The class painted in each column: 11 vertical stripes, classes 0..10 left to right."""
    return np.arange(size) * 11 // size


def _bands(n: int = 3, size: int = 96) -> np.ndarray:
    """uint8 slices [n, size, size]: vertical stripes of oracle bands 0..10 (known labels)."""
    row = np.array([oracle_intensity(int(k)) for k in _stripe_classes(size)], dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(row, (n, size, size)))


def _assert_the_painted_truth(labels: np.ndarray, confidence: np.ndarray, n: int = 3) -> None:
    """The oracle's answer for the stripes is the painted stripes themselves (each stripe is
    8-9 native px wide; adjacent bands only blend into each other, so the 96 -> 256 -> 96
    round trip keeps every column in its own band), with confidence 1 for every class."""
    truth = np.broadcast_to(_stripe_classes()[None, None, :], (n, 96, 96))
    np.testing.assert_array_equal(labels, truth)
    np.testing.assert_allclose(confidence, np.ones((n, 11), np.float32), rtol=0, atol=1e-4)


def test_same_client_recovers_when_the_server_behind_its_address_is_replaced(
    oracle_repository: Path, triton_server_venv: Path, tmp_path: Path
) -> None:
    slices = _bands()
    settings = InferenceSettings(timeout_s=30.0, retries=3, backoff_s=0.2)
    first = LocalTriton(oracle_repository, log_path=tmp_path / "first.log").start()
    ports = (first.http_port, first.grpc_port, first.metrics_port)
    second: LocalTriton | None = None
    segmenter: TritonSegmenter | None = None
    try:
        segmenter = TritonSegmenter(first.grpc_url, settings)
        labels_before, conf_before = segmenter.infer(slices)
        _assert_the_painted_truth(labels_before, conf_before)  # right before the restart
        first_pid = first.pid

        first.stop()  # the pod goes away
        # While nothing listens, a request fails cleanly (bounded retries), never hangs.
        began = time.monotonic()
        with pytest.raises(ServerUnavailableError):
            segmenter.infer(slices)
        assert time.monotonic() - began < 20.0

        # A new pod answers at the same address (same Service / load-balancer port).
        http_port, grpc_port, metrics_port = ports
        second = LocalTriton(
            oracle_repository,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            log_path=tmp_path / "second.log",
        ).start()
        assert second.pid != first_pid
        assert second.grpc_url == segmenter.url

        labels_after, conf_after = segmenter.infer(slices)  # the SAME client object
        _assert_the_painted_truth(labels_after, conf_after)  # and right after it
        np.testing.assert_array_equal(labels_after, labels_before)
        np.testing.assert_allclose(conf_after, conf_before, rtol=0, atol=1e-6)
    finally:
        if segmenter is not None:
            segmenter.close()
        first.stop()
        if second is not None:
            second.stop()
