"""The CLI and the API against a real tritonserver: Ctrl-C and SIGTERM cancel in-flight work
and write nothing partial, serve-local stops its server on SIGTERM, progress bars on a
terminal, request ids, names, misuse of the API, and the asyncio API."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aspects_client import AspectsClient, AsyncAspectsClient, UsageError
from aspects_client.errors import InvalidVolumeError

pytestmark = [pytest.mark.integration]

CLI = [sys.executable, "-m", "aspects_client.cli"]
DEV = [sys.executable, "-m", "aspects_devkit.cli"]


def write_volumes(folder: Path, n: int, shape=(256, 256, 40), seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"case{i}.nii.gz"
        image = rng.uniform(0, 500, shape).astype(np.float32)
        # a 180 x 180 x 40 mm field of view: a head's in-plane size, and labels (the oracle
        # labels noise everywhere) under contract.MAX_REGIONS_ML, which refuses impossible heads
        pixel, thick = 180.0 / shape[0], min(4.0, 40.0 / shape[2])
        nib.save(nib.Nifti1Image(image, np.diag([-pixel, pixel, thick, 1.0])), path)
        paths.append(path)
    return paths


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_cancels_in_flight_work_and_writes_nothing_partial(
    signum, code, triton_effb3, tmp_path
):
    sources = write_volumes(tmp_path / "in", 6)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [*CLI, "segment", *map(str, sources), "-o", f"{out}/", "--labels", "--overlay"]
    cmd += ["--url", triton_effb3.server.grpc_url, "--concurrency", "2", "--deadline", "300"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    time.sleep(6.0)  # connected and inferring (6 volumes x 40 slices take much longer)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    t0 = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == code, err
    assert took < 3.0, f"took {took:.1f} s to stop"
    assert "nothing partial" in err.strip().splitlines()[-1]
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".")], names  # no staged temporaries
    for source in sources:  # each source: all three outputs, or none
        stem = source.name[: -len(".nii.gz")]
        present = [
            (out / f"{stem}{s}").exists() for s in (".json", "_labels.nii.gz", "_overlay.png")
        ]
        assert all(present) or not any(present), (stem, names)
        if all(present):
            json.loads((out / f"{stem}.json").read_text())
    assert len(names) < 3 * len(sources)  # it really stopped before the end


@pytest.mark.slow
def test_serve_local_stops_tritonserver_on_sigterm(triton_server_venv, oracle_repository):
    cmd = [*DEV, "serve-local", str(oracle_repository)]
    cmd += ["--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    match = re.search(r"pid (\d+)", first)
    assert match, first + (proc.stderr.read() if proc.stderr else "")
    server_pid = int(match.group(1))
    assert _alive(server_pid)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    deadline = time.monotonic() + 5
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(server_pid), "tritonserver left running after SIGTERM"


@pytest.fixture()
def slow_loading_repository(oracle_repository: Path, tmp_path: Path) -> Path:
    """The oracle repository whose preprocess step takes 30 s to initialise."""
    repo = tmp_path / "slow_repo"
    shutil.copytree(oracle_repository, repo, symlinks=True)
    model = repo / "preprocess" / "1" / "model.py"
    text = model.read_text()
    marker = "    def initialize(self, args: dict[str, str]) -> None:\n"
    assert marker in text
    model.write_text(text.replace(marker, marker + "        import time; time.sleep(30)\n", 1))
    return repo


@pytest.mark.slow
def test_serve_local_stops_on_sigterm_during_startup(triton_server_venv, slow_loading_repository):
    """A SIGTERM while the models load must stop the launcher and the server at once, not
    after the load (the old launcher only noted the signal and waited up to its ready
    timeout)."""
    repo = slow_loading_repository
    cmd = [*DEV, "serve-local", str(repo), "--grpc-port", "0", "--http-port", "0"]
    cmd += ["--metrics-port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)  # the server runs and is loading the models (30 s)
    assert proc.poll() is None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert "ready" not in out, out
    assert took < 15, f"took {took:.1f} s to stop during startup"
    assert proc.returncode == 0, err
    left = subprocess.run(["pgrep", "-f", f"model-repository={repo}"],
                          capture_output=True, text=True)  # fmt: skip
    assert left.stdout.strip() == "", f"tritonserver left running: {left.stdout}"


def test_progress_bars_on_a_terminal_for_a_single_source(triton_oracle, tmp_path):
    (source,) = write_volumes(tmp_path / "in", 1, shape=(128, 128, 20))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real size
    cmd = [*CLI, "segment", str(source), "-o", str(tmp_path / "r.json")]
    cmd += ["--url", triton_oracle.server.grpc_url]
    proc = subprocess.Popen(cmd, stderr=slave, stdout=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    assert "volumes" in text and "slices" in text, text
    assert "20/20" in text  # the slice bar counted every slice of the one volume


def test_request_id_and_recorded_name(triton_oracle, tmp_path):
    (source,) = write_volumes(tmp_path / "PATIENT_007", 1, shape=(64, 64, 8))
    with AspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
        result = client.segment(source, request_id="case-42")
        assert result.provenance["request_id"] == "case-42"
        assert result.document["source"]["name"] == "case0.nii.gz"
        assert "PATIENT_007" not in result.contours_json()
        other = client.segment(source, name="")
        assert re.fullmatch(r"[0-9a-f]{32}", other.provenance["request_id"])
        assert other.document["source"]["name"] == ""


@pytest.mark.parametrize("bad", [None, 3, True, [], [3], 1.5])  # a list of paths is DICOM
def test_api_misuse_is_a_usage_error(triton_oracle, bad):
    with AspectsClient(triton_oracle.server.grpc_url) as client, pytest.raises(UsageError):
        client.segment(bad)


def test_api_refuses_a_nan_affine_image(triton_oracle):
    img = nib.Nifti1Image(np.ones((64, 64, 8), np.float32), np.diag([3.0, 3.0, 4.0, 1.0]))
    img.affine[:3] = np.nan  # nibabel lets an image's affine be changed in place
    with AspectsClient(triton_oracle.server.grpc_url) as client, pytest.raises(InvalidVolumeError):
        client.segment(img)


def test_asyncio_api_segments_concurrently_and_cancels(triton_oracle, triton_effb3, tmp_path):
    small = write_volumes(tmp_path / "small", 3, shape=(64, 64, 8))
    (big,) = write_volumes(tmp_path / "big", 1, shape=(256, 256, 120), seed=1)

    async def scenario() -> None:
        async with AsyncAspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
            results = await asyncio.gather(*(client.segment(p) for p in small))
            assert [r.document["source"]["name"] for r in results] == [p.name for p in small]
        async with AsyncAspectsClient(triton_effb3.server.grpc_url, overlay=False) as client:
            task = asyncio.create_task(client.segment(big))
            await asyncio.sleep(2.0)
            assert not task.done()
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - t0 < 1.0
            again = await client.segment(small[0])  # the client still works
            assert again.document["source"]["shape"] == [64, 64, 8]

    asyncio.run(scenario())
