"""The bad-input matrix through the public API and the CLI, against real servers.

Every case: the right exception type from ``AspectsClient.segment``; from ``aspects
segment`` exit code 1 and exactly one readable line on stderr; nothing left in the temp
dir.  S3 is a real SeaweedFS with SigV4; Triton is real (oracle unet; a server is killed
in the middle of a volume, at a point tied to the client's own request completions).
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from aspects_devkit import local_triton
from aspects_devkit.local_triton import LocalTriton, free_port

from aspects_client import errors
from aspects_client.client import AspectsClient
from aspects_client.inference import InferenceSettings
from aspects_client.storage import S3Settings

pytestmark = pytest.mark.integration
BUCKET = "bad-inputs"
AFFINE = np.diag([2.0, 2.0, 5.0, 1.0])  # 64 px = 128 mm: a head-sized field of view


def nii_gz(data: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(data, AFFINE).to_bytes(), compresslevel=1)


def bomb() -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((64, 64, 8))
    hdr.set_data_dtype(np.int16)
    hdr.set_sform(AFFINE, code="scanner")
    hdr.set_data_offset(352)
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(hdr.binaryblock + bytes(4))]
    zeros = bytes(16 << 20)
    parts += [comp.compress(zeros) for _ in range(32)]  # 512 MiB of zeros
    return b"".join([*parts, comp.flush()])


def _volume(shape=(64, 64, 4)) -> np.ndarray:
    return (np.random.default_rng(0).random(shape) * 100).astype(np.float32)


OBJECTS = {
    "corrupt.nii.gz": lambda: (lambda b: b[:40] + bytes(x ^ 0x5A for x in b[40:400]) + b[400:])(
        nii_gz(_volume())
    ),
    "truncated.nii.gz": lambda: nii_gz(_volume())[:-2000],
    "flat.nii.gz": lambda: nii_gz(_volume((64, 64))),
    "series.nii.gz": lambda: nii_gz(_volume((64, 64, 4, 3))),
    "nan.nii.gz": lambda: nii_gz(np.where(_volume() > 50, np.nan, 1).astype(np.float32)),
    "bomb.nii.gz": bomb,
}

# case -> (source, exception type, words the one-line message must contain)
S3_CASES = {
    "corrupt": (f"s3://{BUCKET}/corrupt.nii.gz", errors.CorruptVolumeError, "corrupt"),
    "truncated": (f"s3://{BUCKET}/truncated.nii.gz", errors.CorruptVolumeError, "truncated"),
    "2d": (f"s3://{BUCKET}/flat.nii.gz", errors.DimensionalityError, "3D volume"),
    "4d": (f"s3://{BUCKET}/series.nii.gz", errors.DimensionalityError, "--volume"),
    "nan": (f"s3://{BUCKET}/nan.nii.gz", errors.NonFiniteDataError, "NaN"),
    "bomb": (f"s3://{BUCKET}/bomb.nii.gz", errors.DecompressionBombError, "gzip bomb"),
    "missing-key": (f"s3://{BUCKET}/absent.nii.gz", errors.ObjectNotFoundError, "no such key"),
    "missing-bucket": ("s3://no-such-bucket/x.nii.gz", errors.ObjectNotFoundError, "does not"),
}


@pytest.fixture(scope="module")
def uploaded(s3_client) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    for key, make in OBJECTS.items():
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=make())


def s3_settings(s3_server, secret: str | None = None) -> S3Settings:
    return S3Settings(
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=secret or s3_server.secret_key,
    )


def run_cli(args: list[str], s3_server, tmp: Path, secret: str | None = None):
    """``aspects segment ... --quiet`` in a subprocess with its own empty TMPDIR."""
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": secret or s3_server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    cmd = [sys.executable, "-m", "aspects_client.cli", "segment", *args, "--quiet"]
    cmd += ["--endpoint-url", s3_server.endpoint_url, "--timeout", "20", "--retries", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)


def assert_one_line_error(proc, words: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("aspects: error: ") and words in lines[0], lines[0]


@pytest.mark.parametrize("case", list(S3_CASES))
def test_bad_sources(case, uploaded, s3_server, triton_oracle, tmp_path, no_temp_files) -> None:
    source, exc_type, words = S3_CASES[case]
    with (
        AspectsClient(triton_oracle.server.grpc_url, s3=s3_settings(s3_server)) as client,
        pytest.raises(exc_type, match=words),
    ):
        client.segment(source)
    out = tmp_path / "out"
    proc = run_cli(
        [source, "-o", str(out / "r.json"), "--url", triton_oracle.server.grpc_url],
        s3_server,
        no_temp_files,
    )
    assert_one_line_error(proc, words)
    assert not out.exists() or not any(out.iterdir()), "a failed run must write nothing"


def test_wrong_credentials(uploaded, s3_server, triton_oracle, tmp_path, no_temp_files) -> None:
    bad = "definitely-not-the-secret-0123456789"
    source = f"s3://{BUCKET}/nan.nii.gz"
    settings = s3_settings(s3_server, secret=bad)
    with (
        AspectsClient(triton_oracle.server.grpc_url, s3=settings) as client,
        pytest.raises(errors.AccessDeniedError) as info,
    ):
        client.segment(source)
    assert bad not in str(info.value)
    proc = run_cli(
        [source, "-o", str(tmp_path / "r.json"), "--url", triton_oracle.server.grpc_url],
        s3_server,
        no_temp_files,
        secret=bad,
    )
    assert_one_line_error(proc, "access denied")
    assert bad not in proc.stderr and s3_server.secret_key not in proc.stderr


@pytest.fixture(scope="module")
def good_source(s3_client, uploaded, phantom_small) -> str:
    s3_client.put_object(
        Bucket=BUCKET, Key="good.nii.gz", Body=gzip.compress(phantom_small.image.to_bytes())
    )
    return f"s3://{BUCKET}/good.nii.gz"


def test_unreachable_triton(good_source, s3_server, tmp_path, no_temp_files) -> None:
    url = f"127.0.0.1:{free_port()}"
    with pytest.raises(errors.ServerUnavailableError, match="did not answer"):
        AspectsClient(url, s3=s3_settings(s3_server))
    proc = run_cli(
        [good_source, "-o", str(tmp_path / "r.json"), "--url", url], s3_server, no_temp_files
    )
    assert_one_line_error(proc, "did not answer")


def test_model_not_loaded(oracle_repository, good_source, s3_server, tmp_path, no_temp_files):
    with LocalTriton(oracle_repository, model_control_mode="explicit") as server:
        with pytest.raises(errors.ModelNotReadyError, match="not loaded"):
            AspectsClient(server.grpc_url, s3=s3_settings(s3_server))
        proc = run_cli(
            [good_source, "-o", str(tmp_path / "r.json"), "--url", server.grpc_url],
            s3_server,
            no_temp_files,
        )
    assert_one_line_error(proc, "not loaded")


def test_model_config_mismatch(oracle_repository, good_source, s3_server, tmp_path, no_temp_files):
    """A wrong model deployed under the ensemble's name (here: the preprocess step)."""
    repo = tmp_path / "repo"
    shutil.copytree(oracle_repository, repo, symlinks=True)
    shutil.rmtree(repo / "aspects")
    shutil.copytree(repo / "preprocess", repo / "aspects", symlinks=True)
    config = repo / "aspects" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "preprocess"', 'name: "aspects"'))
    with LocalTriton(repo) as server:
        with pytest.raises(errors.ModelContractError, match="LABELS"):
            AspectsClient(server.grpc_url, s3=s3_settings(s3_server))
        proc = run_cli(
            [good_source, "-o", str(tmp_path / "r.json"), "--url", server.grpc_url],
            s3_server,
            no_temp_files,
        )
    assert_one_line_error(proc, "LABELS")


def _wait_until_refused(port: int, timeout: float = 20.0) -> None:
    """Until nothing accepts TCP connections on 127.0.0.1:port (the killed server is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        assert time.monotonic() < deadline, f"port {port} still accepts connections"
        time.sleep(0.02)


def test_triton_killed_mid_volume(oracle_repository, no_temp_files) -> None:
    """The server is SIGKILLed the moment the FIRST request of a 40-slice volume comes back
    (3 requests: 16 + 16 + 8 slices, at most 2 in flight, so the third is sent only after the
    kill): the call fails as a whole with ServerUnavailableError saying the server became
    unavailable; it never returns a partial result.  No timer: the kill is tied to the
    client's own per-request completion, so the outcome does not depend on machine speed."""
    server = LocalTriton(oracle_repository).start()
    pid, grpc_port = server.pid, server.grpc_port
    assert pid is not None
    before_kill: list[tuple[list[int], object]] = []  # (request shape, error) seen first
    after_kill: list[object] = []  # errors of the requests that completed after the kill
    lock = threading.Lock()
    try:
        settings = InferenceSettings(timeout_s=30, retries=1, backoff_s=0.1, max_in_flight=2)
        client = AspectsClient(server.grpc_url, inference=settings, overlay=False)
        triton = client._segmenter._client  # the tritonclient gRPC client it sends with
        send = triton.async_infer

        def async_infer(model_name, inputs, callback, *args, **kwargs):
            def on_complete(result, error):
                with lock:
                    if not before_kill:  # the first request to complete: kill the server now
                        before_kill.append((inputs[0].shape(), error))
                        os.killpg(pid, signal.SIGKILL)
                        _wait_until_refused(grpc_port)
                    else:
                        after_kill.append(error)
                callback(result, error)

            return send(model_name, inputs, on_complete, *args, **kwargs)

        triton.async_infer = async_infer
        volume = nib.Nifti1Image(_volume((64, 64, 40)), AFFINE)  # 40 axial slices of 64 x 64
        t0 = time.monotonic()
        with pytest.raises(errors.ServerUnavailableError) as info:
            client.segment(volume)
        assert time.monotonic() - t0 < 60
        client.close()
    finally:
        server.stop()
    # the kill came after one whole, successful request, and before the volume was done
    assert len(before_kill) == 1, before_kill
    ((shape, first_error),) = before_kill
    assert first_error is None and shape == [16, 3, 64, 64], before_kill
    assert any(error is not None for error in after_kill), "no request failed after the kill"
    message = str(info.value)
    assert server.grpc_url in message and "unavailable" in message.lower(), message
    assert "UNAVAILABLE" in message, message  # the gRPC status of the lost server
    # a SIGKILLed server cannot unlink its python-backend regions: stop() must
    leftovers = list(Path(local_triton.SHM_DIR).glob(f"{server.shm_prefix}*"))
    assert leftovers == [], f"shared memory left in {local_triton.SHM_DIR}: {leftovers}"
