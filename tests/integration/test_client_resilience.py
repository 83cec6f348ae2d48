"""Deadlines, bounded retries with backoff on overload, and TLS, against real Triton servers.

- TLS: a throw-away CA and a server certificate for 127.0.0.1/localhost (``openssl``); the
  oracle repository served with Triton's gRPC TLS flags.  The TLS client infers the known
  answers, a plaintext client gets a clear ServerUnavailableError, the CLI works with
  ``--tls --root-certificates``.
- Overload: the oracle repository with the unet's queue limited to one request
  (``dynamic_batching { default_queue_policy { max_queue_size: 1 } }``), so concurrent
  volumes get Triton's real "Exceeds maximum queue size" (UNAVAILABLE) answer.  Without
  retries the overflow fails clearly; with bounded retries and backoff every volume
  succeeds, and the server's failure counter shows the rejected attempts really happened.
- Deadline: a request whose deadline is far shorter than the server needs fails clearly,
  quickly, and the same client serves a normal call afterwards.

The oracle unet is slow enough here: every slice's 2.5D stack is resized to the network size
(256 x 256) and 11 x 256 x 256 FP32 logits go through the python backend.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from aspects_devkit.local_triton import LocalTriton

from aspects_client import contract
from aspects_client.errors import ServerUnavailableError
from aspects_client.inference import InferenceSettings, TritonSegmenter

from .conftest import InProcessEnsemble, ServedRepository

pytestmark = pytest.mark.integration


def _slices(n: int, h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    """uint8 slices with structure (the oracle answers from intensity): a phantom's."""
    from aspects_client.display_stack import prepare
    from aspects_client.volume_io import load_volume
    from aspects_synth import make_phantom

    phantom = make_phantom(seed=seed, in_plane=(h, w), n_slices=n)
    return prepare(load_volume(phantom.image)).slices


# --- TLS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _openssl(cwd: Path, *args: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A self-signed CA and a server certificate it signed for 127.0.0.1 and localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make test certificates")
    d = tmp_path_factory.mktemp("tls")
    _openssl(
        d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2", "-subj", "/CN=aspects test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost",
    )  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return Certificates(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


@pytest.fixture(scope="module")
def triton_tls(
    triton_server_venv: Path, oracle_repository: Path, certificates: Certificates
) -> Iterator[LocalTriton]:
    """The oracle repository behind gRPC over TLS (HTTP stays plain for the health check)."""
    server = LocalTriton(
        oracle_repository,
        extra_args=[
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={certificates.cert}",
            f"--grpc-server-key={certificates.key}",
        ],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_tls_client_infers_the_known_answers(
    triton_tls: LocalTriton, certificates: Certificates, oracle_in_process: InProcessEnsemble
) -> None:
    settings = InferenceSettings(ssl=True, root_certificates=str(certificates.ca), timeout_s=60)
    segmenter = TritonSegmenter(triton_tls.grpc_url, settings)
    try:
        assert segmenter.info.name == contract.ENSEMBLE_MODEL
        slices = _slices(3, seed=1)
        labels, confidence = segmenter.infer(slices)
    finally:
        segmenter.close()
    ref_labels, ref_confidence = oracle_in_process(slices)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(confidence, ref_confidence)
    assert len(np.unique(labels)) > 2


def test_plaintext_client_against_tls_server_fails_clearly(
    triton_tls: LocalTriton, certificates: Certificates
) -> None:
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailableError) as plain:
        TritonSegmenter(triton_tls.grpc_url, InferenceSettings(connect_timeout_s=10))
    message = str(plain.value)
    print(f"plaintext client vs TLS server: {message}")
    assert "did not answer the readiness check" in message and triton_tls.grpc_url in message
    assert "UNAVAILABLE" in message and "--tls" in message, message
    # and a TLS client that does not trust the server's CA (system roots only)
    with pytest.raises(ServerUnavailableError) as untrusted:
        TritonSegmenter(triton_tls.grpc_url, InferenceSettings(ssl=True, connect_timeout_s=10))
    print(f"TLS client without the CA: {untrusted.value}")
    assert "did not answer the readiness check" in str(untrusted.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)
    assert "--root-certificates" in str(untrusted.value)
    assert time.monotonic() - t0 < 25  # the connect-time checks have a deadline


def test_cli_segments_over_tls(
    triton_tls: LocalTriton, certificates: Certificates, tmp_path: Path
) -> None:
    import nibabel as nib

    from aspects_synth import make_phantom

    source = tmp_path / "phantom.nii.gz"
    nib.save(make_phantom(seed=1, in_plane=(128, 128), n_slices=3).image, source)
    out = tmp_path / "out.json"
    base = [sys.executable, "-m", "aspects_client.cli", "segment", str(source), "-o", str(out)]
    base += ["--url", triton_tls.grpc_url, "--timeout", "60", "--quiet"]
    proc = subprocess.run(
        [*base, "--tls", "--root-certificates", str(certificates.ca)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads(out.read_text())
    assert document["provenance"]["model"] == contract.ENSEMBLE_MODEL
    assert document["provenance"]["server"] == triton_tls.grpc_url

    out.unlink()
    plain = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1, plain.stderr
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aspects: error: "), plain.stderr
    assert "did not answer" in lines[0] and "--tls" in lines[0], lines[0]
    assert not out.exists()


# --- overload: a one-request queue in front of the unet ----------------------------------


@pytest.fixture(scope="module")
def triton_small_queue(
    triton_server_venv: Path, oracle_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTriton]:
    from aspects_export.repository import CONFIG_FILE, config_to_text, parse_config

    repo = tmp_path_factory.mktemp("repo_small_queue") / "repo"
    shutil.copytree(oracle_repository, repo, symlinks=True)
    path = repo / contract.UNET_MODEL / CONFIG_FILE
    config = parse_config(path)
    config.dynamic_batching.default_queue_policy.max_queue_size = 1
    path.write_text(config_to_text(config), encoding="utf-8")
    with LocalTriton(repo) as server:
        yield server


def _failures(segmenter: TritonSegmenter) -> int:
    """Failed requests the server has counted for the ensemble so far."""
    stats = segmenter._client.get_inference_statistics(contract.ENSEMBLE_MODEL, as_json=True)
    (entry,) = stats["model_stats"]
    return int(entry["inference_stats"]["fail"].get("count", 0))


def _segment_concurrently(segmenter: TritonSegmenter, volumes: list[np.ndarray]) -> list:
    def one(slices: np.ndarray):
        try:
            return segmenter.infer(slices)
        except ServerUnavailableError as exc:
            return exc

    with ThreadPoolExecutor(len(volumes)) as pool:
        return list(pool.map(one, volumes))


# Six volumes of eight slices at once: each is one request; with one executing and one
# queued, the others are turned away.
N_VOLUMES = 6
N_SLICES = 8  # 256² network: ~4x less work per slice than at 512², so more slices keep it busy


# Bursts are bounded: on a loaded machine the client threads may send one burst too slowly
# to overlap; a later burst overlaps.  Every burst's results are checked.
MAX_BURSTS = 5


def test_overload_without_retries_fails_clearly(
    triton_small_queue: LocalTriton, oracle_in_process: InProcessEnsemble
) -> None:
    volumes = [_slices(N_SLICES, seed=k) for k in range(N_VOLUMES)]
    segmenter = TritonSegmenter(triton_small_queue.grpc_url, InferenceSettings(retries=0))
    errors: list[Exception] = []
    try:
        segmenter.infer(volumes[0])  # warm up: the first call pays for onnxruntime's start
        for _ in range(MAX_BURSTS):
            results = _segment_concurrently(segmenter, volumes)
            for slices, result in zip(volumes, results, strict=True):
                if not isinstance(result, Exception):
                    np.testing.assert_array_equal(result[0], oracle_in_process(slices)[0])
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                break
    finally:
        segmenter.close()
    assert errors, f"a one-request queue took six concurrent volumes {MAX_BURSTS} times"
    print(f"overload, no retries ({len(errors)}/{N_VOLUMES} failed): {errors[0]}")
    for error in errors:
        text = str(error)
        assert "unavailable or overloaded after 1 attempts" in text, text
        assert "Exceeds maximum queue size" in text and "UNAVAILABLE" in text, text


def test_overload_with_bounded_retries_and_backoff_succeeds(
    triton_small_queue: LocalTriton, oracle_in_process: InProcessEnsemble
) -> None:
    volumes = [_slices(N_SLICES, seed=k) for k in range(N_VOLUMES)]
    # backoff 0.2, 0.4, ... 6.4 s: the last attempt comes 12.6 s after the first refusal,
    # long after this server has worked through six 8-slice requests (~0.3 s each).
    settings = InferenceSettings(retries=6, backoff_s=0.2, timeout_s=60)
    segmenter = TritonSegmenter(triton_small_queue.grpc_url, settings)
    refused, bursts = 0, 0
    try:
        segmenter.infer(volumes[0])
        while refused == 0 and bursts < MAX_BURSTS:
            bursts += 1
            before, retried_before = _failures(segmenter), segmenter.retried
            t0 = time.monotonic()
            results = _segment_concurrently(segmenter, volumes)
            seconds = time.monotonic() - t0
            refused = _failures(segmenter) - before
            retried = segmenter.retried - retried_before
            print(f"burst {bursts}: server refusals {refused}, client retries {retried}")
            failed = [r for r in results if isinstance(r, Exception)]
            assert not failed, failed[0]
            for slices, (labels, confidence) in zip(volumes, results, strict=True):
                ref_labels, ref_confidence = oracle_in_process(slices)
                np.testing.assert_array_equal(labels, ref_labels)
                np.testing.assert_array_equal(confidence, ref_confidence)
            assert seconds < 60
    finally:
        segmenter.close()
    print(f"overload with retries: all {N_VOLUMES} ok, {refused} refusals in burst {bursts}")
    assert refused > 0, "the server turned nothing away: the retries were not exercised"
    assert retried > 0  # and the client sent the refused requests again
    assert seconds >= 0.2  # the burst with refusals waited for at least one backoff


# --- deadlines ----------------------------------------------------------------------------


def test_deadline_fails_fast_and_the_client_stays_usable(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    slices = _slices(6, seed=2)  # one 6-slice request: ~0.6-2 s of work for this server
    settings = InferenceSettings(timeout_s=0.05, retries=3, backoff_s=0.1)
    segmenter = TritonSegmenter(triton_oracle.server.grpc_url, settings)
    try:
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailableError) as caught:
            segmenter.infer(slices)
        seconds = time.monotonic() - t0
        message = str(caught.value)
        print(f"deadline: {message}")
        assert "0.05 s deadline" in message and "DEADLINE_EXCEEDED" in message, message
        assert seconds < 3.0, f"a 0.05 s deadline took {seconds:.2f} s to fire"  # not retried
        # the same channel serves a normal call afterwards
        segmenter.settings = dataclasses.replace(settings, timeout_s=60)
        labels, _ = segmenter.infer(slices)
    finally:
        segmenter.close()
    np.testing.assert_array_equal(labels, oracle_in_process(slices)[0])
