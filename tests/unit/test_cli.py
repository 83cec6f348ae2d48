"""The ``aspects`` CLI on its own (no server): options validated at the edge (exit 2, one
line), outputs refused before any work, one vocabulary, --version, names, escaping.

Commands that need Triton point at a closed port: a refusal that comes before any
connection shows as exit 2 with the refusal's words, never as a connection error."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from aspects_client import contract

SHAPE = (96, 96, 6)  # 2 mm in-plane voxels: a 192 mm field of view, like a head


def _affine() -> np.ndarray:
    return np.diag([-2.0, 2.0, 5.0, 1.0])  # stored LAS


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture()
def case(tmp_path: Path) -> tuple[Path, Path]:
    """A head-like volume and a bilateral label map in its grid."""
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 400, SHAPE).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[20:35, 40:60, 1:5] = contract.REGIONS[0].index
    labels[61:76, 40:60, 1:5] = contract.REGIONS[0].index
    labels[25:40, 20:35, 2:4] = contract.REGIONS[6].index
    labels[56:71, 20:35, 2:4] = contract.REGIONS[6].index
    vol, lab = tmp_path / "dwi.nii.gz", tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(image, _affine()), vol)
    nib.save(nib.Nifti1Image(labels, _affine()), lab)
    return vol, lab


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "aspects_client.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


def one_error_line(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- outputs never overwrite inputs; refused before any work -----------------------------------


def test_segment_refuses_a_label_map_over_its_own_input(tmp_path):
    src = tmp_path / "X_labels.nii.gz"
    src.write_bytes(b"the patient's file")
    proc = run("segment", str(src), "-o", str(tmp_path / "X.json"), "--labels",
               "--url", closed_port_url())  # fmt: skip
    one_error_line(proc, 2, "is the input")
    assert src.read_bytes() == b"the patient's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X_labels.nii.gz"]


def test_contours_refuses_to_replace_the_volume_or_its_own_json(case, tmp_path):
    vol, lab = case
    before = vol.read_bytes()
    proc = run("contours", str(vol), str(lab), "-o", str(tmp_path / "c.json"),
               f"--labels={vol}")  # fmt: skip
    one_error_line(proc, 2, "is the input")
    proc = run("contours", str(vol), str(lab), "-o", str(tmp_path / "X"),
               f"--overlay={tmp_path / 'X'}")  # fmt: skip
    one_error_line(proc, 2, "same file")
    assert vol.read_bytes() == before
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "X").exists()


def test_existing_outputs_need_overwrite(case, tmp_path):
    vol, lab = case
    out = tmp_path / "c.json"
    out.write_text("previous result")
    one_error_line(run("contours", str(vol), str(lab), "-o", str(out)), 2, "--overwrite")
    assert out.read_text() == "previous result"
    proc = run("contours", str(vol), str(lab), "-o", str(out), "--overwrite", "--labels")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["schema_version"] == contract.SCHEMA_VERSION
    assert (tmp_path / "c_labels.nii.gz").exists()


def test_output_path_is_taken_literally(case, tmp_path):
    vol, lab = case
    out = tmp_path / "out.txt"
    proc = run("contours", str(vol), str(lab), "-o", str(out), "--labels", "--overlay")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["source"]["shape"] == list(SHAPE)  # not out.json
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["dwi.nii.gz", "labels.nii.gz", "out.txt", "out_labels.nii.gz",
                     "out_overlay.png"]  # fmt: skip
    one_error_line(run("contours", str(vol), str(lab), "-o", "/dev/full"), 2, "regular file")
    assert not Path("/dev/full.json").exists()


def test_several_sources_and_a_file_output(tmp_path):
    proc = run("segment", "a.nii.gz", "b.nii.gz", "-o", str(tmp_path / "r.json"),
               "--url", closed_port_url())  # fmt: skip
    one_error_line(proc, 2, "need an output directory")
    assert list(tmp_path.iterdir()) == []


def test_a_source_named_only_by_its_extension(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = run("segment", str(tmp_path / ".nii.gz"), "b.nii.gz", "-o", f"{out}/",
               "--url", closed_port_url())  # fmt: skip
    one_error_line(proc, 2, "cannot name outputs")
    assert list(tmp_path.iterdir()) == [out] and list(out.iterdir()) == []


def test_symlinked_output_is_refused(case, tmp_path):
    vol, lab = case
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "c.json").symlink_to(victim)
    proc = run("contours", str(vol), str(lab), "-o", str(tmp_path / "c.json"), "--overwrite")
    one_error_line(proc, 2, "symbolic link")
    assert victim.read_text() == "keep"


# --- numeric options and usage: exit 2, one line -------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--timeout", "0"),
        ("--timeout", "-1"),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--deadline", "0"),
        ("--retries", "1000000"),
        ("--retries", "-1"),
        ("--max-object-bytes", "-1"),
        ("--volume-index", "-1"),
        ("--concurrency", "0"),
        ("--wait", "nan"),
        ("--url", "127.0.0.1:70000"),
        ("--url", "no-port"),
    ],
)
def test_numeric_options_are_validated(option, value, tmp_path):
    proc = run("segment", "a.nii.gz", "-o", str(tmp_path / "r.json"), option, value)
    one_error_line(proc, 2, option)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--grpc-port", "--http-port", "--metrics-port"])
def test_serve_local_ports_are_validated(option, tmp_path):
    cmd = [sys.executable, "-m", "aspects_devkit.cli", "serve-local", str(tmp_path), option]
    proc = subprocess.run([*cmd, "70000"], capture_output=True, text=True, timeout=120)
    one_error_line(proc, 2, option)


def test_missing_root_certificates_is_one_line(tmp_path):
    proc = run("segment", "a.nii.gz", "-o", str(tmp_path / "r.json"), "--tls",
               "--root-certificates", "/nonexistent.pem", "--url", closed_port_url())  # fmt: skip
    one_error_line(proc, 2, "--root-certificates")


def test_unsupported_schemes_are_not_missing_files(tmp_path):
    for source in ("S3://bucket/key.nii.gz", "http://host/x.nii.gz", ""):
        proc = run("segment", source, "-o", str(tmp_path / "r.json"), "--url", closed_port_url())
        line = one_error_line(proc, 2)
        assert "no such file" not in line


def test_name_is_for_one_source(tmp_path):
    proc = run("segment", "a.nii.gz", "b.nii.gz", "-o", f"{tmp_path}/", "--name", "x")
    one_error_line(proc, 2, "--name")


def test_version():
    from aspects_client import __version__

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"aspects {__version__} (aspects_client)"


# --- names: no patient identifiers unless asked; control characters escaped ------------------


def test_recorded_name_is_the_file_name_or_name(case, tmp_path):
    vol, lab = case
    deep = tmp_path / "PATIENT_12345" / "study"
    deep.mkdir(parents=True)
    (deep / "dwi.nii.gz").write_bytes(vol.read_bytes())
    out = tmp_path / "c.json"
    proc = run("contours", str(deep / "dwi.nii.gz"), str(lab), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert json.loads(text)["source"]["name"] == "dwi.nii.gz"
    assert "PATIENT_12345" not in text
    proc = run("contours", str(vol), str(lab), "-o", str(out), "--overwrite", "--name", "case-7")
    assert json.loads(out.read_text())["source"]["name"] == "case-7"


def test_control_characters_in_file_names_are_escaped(tmp_path):
    evil = tmp_path / "a\nok 0.1 s -> fake.json\x1b[2K.nii.gz"
    evil.write_bytes(b"not a nifti at all" * 30)
    out = tmp_path / "out"
    out.mkdir()
    proc = run("contours", str(evil), str(evil), "-o", str(out / "c.json"))
    line = one_error_line(proc, 1)  # the newline cannot start a fake "ok" line
    assert "\\x1b" in line and "\x1b" not in proc.stderr


def test_api_exports_and_error_types():
    import aspects_client
    from aspects_client import AspectsClient, AspectsError, S3Settings, UsageError

    assert AspectsClient.__name__ == "AspectsClient" and S3Settings().max_object_bytes > 0
    assert issubclass(UsageError, AspectsError) and issubclass(UsageError, ValueError)
    for name in aspects_client.__all__:
        assert getattr(aspects_client, name) is not None


def test_a_label_map_on_another_grid_says_what_differs(case, tmp_path):
    vol, lab = case
    shifted = tmp_path / "shifted.nii.gz"
    img = nib.load(lab)
    affine = img.affine.copy()
    affine[0, 3] += 2.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), affine), shifted)
    line = one_error_line(
        run("contours", str(vol), str(shifted), "-o", str(tmp_path / "c.json")), 1
    )
    assert "same shape" in line and "affine differs" in line and "2 mm" in line
    assert not (tmp_path / "c.json").exists()


def test_an_unreachable_server_is_one_line_and_waits_when_asked(case, tmp_path):
    """No gRPC C-core log lines, no traceback; --wait keeps retrying for that long."""
    import time

    vol, _ = case
    url = closed_port_url()
    t0 = time.monotonic()
    proc = run("segment", str(vol), "-o", str(tmp_path / "r.json"), "--url", url, "-q",
               "--wait", "2")  # fmt: skip
    took = time.monotonic() - t0
    one_error_line(proc, 1, url)
    assert took >= 2.0
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["aspects", "segment"],
        ["aspects-dev", "demo"],
        ["aspects", "contours"],
        ["aspects-export", "onnx"],
        ["aspects-export", "all"],
        ["aspects-train", "fit"],
        ["aspects-train", "import-markup"],
    ],
)
def test_every_program_says_dash_o_output(argv):
    """One vocabulary: the output option is -o/--output everywhere."""
    modules = {
        "aspects": "aspects_client.cli",
        "aspects-export": "aspects_export.cli",
        "aspects-train": "aspects_train.cli",
        "aspects-dev": "aspects_devkit.cli",
    }
    cmd = [sys.executable, "-m", modules[argv[0]], *argv[1:], "--help"]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert "-o" in text and "--output" in text, text


# --- messages that pointed the wrong way (issue 24) -------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--url", "http://127.0.0.1:8001"], 2, ("--url", "without a scheme")),
        (["--adc-scale", "1000"], 2, ("--adc-scale", "no --adc was given")),
        (["--root-certificates", __file__], 2, ("add --tls",)),
    ],
    ids=["url with a scheme (was exit 1)", "adc-scale without adc (was ignored)",
         "root-certificates without tls (was plaintext)"],
)
def test_misused_options_are_usage_errors(case, tmp_path, args, code, words):
    volume, _ = case
    proc = run("segment", str(volume), "-o", str(tmp_path / "r.json"), *args)
    one_error_line(proc, code, *words)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("truncated gzip (10 bytes)", ("truncated", "inside the NIfTI header")),
        ("dim[0] = 9", ("dim[0]", "is 9, not 1..7")),
        ("vox_offset = 0", ("vox_offset is 0",)),
    ],
)
def test_damaged_files_are_named_for_what_is_wrong(case, tmp_path, damage, words):
    import gzip
    import struct

    volume, _ = case
    raw = bytearray(gzip.decompress(volume.read_bytes()))
    if damage.startswith("dim"):
        struct.pack_into("<h", raw, 40, 9)
    elif damage.startswith("vox"):
        struct.pack_into("<f", raw, 108, 0.0)
    data = gzip.compress(bytes(raw))[:10] if damage.startswith("trunc") else gzip.compress(raw)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(data)
    from aspects_client.errors import CorruptVolumeError
    from aspects_client.volume_io import load_volume

    with pytest.raises(CorruptVolumeError) as info:  # the message the CLI prints
        load_volume(bad)
    line = str(info.value)
    assert all(word in line for word in words), line
    assert "not a NIfTI file" not in line and "data code" not in line


@pytest.mark.parametrize(
    "line",
    [
        "headers={'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAABCDEFGHIJKLMNOP/2026/"
        "us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0a1b2c3d4e5f'}",
        "StringToSign:\nAWS4-HMAC-SHA256\nSignature:\n0a1b2c3d4e5f60718293",
        "https://h/b/k?X-Amz-Credential=AKIAABCDEFGHIJKLMNOP%2F2026&X-Amz-Signature=0a1b2c3d",
        "aws_secret_access_key=s3cr3t+/Secret=Value_0123456789 secret_key: s3cr3t",
    ],
)
def test_verbose_logs_mask_credentials(line):
    """A second line of defence behind the quiet transport loggers (issue 24)."""
    from aspects_client.cli import redact

    masked = redact(line)
    for secret in ("AKIAABCDEFGHIJKLMNOP", "0a1b2c3d", "s3cr3t"):
        assert secret not in masked, masked
    assert redact("the m1 region on the right") == "the m1 region on the right"
