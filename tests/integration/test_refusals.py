"""No confident nonsense through the real CLI, Triton (oracle unet) and S3 (issue 24): what
used to exit 0 with a normal-looking answer is refused with one line, and nothing secret is
printed at any verbosity.  The pure cases are in tests/unit/test_confident_nonsense.py."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from .oracle_cases import painted_phantom

pytestmark = [pytest.mark.integration]

CLI = [sys.executable, "-m", "aspects_client.cli"]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("scale", [1e297, 1e-300], ids=["x1e297", "x1e-300"])
def test_a_float64_volume_near_the_range_ends_is_segmented_like_itself(
    triton_oracle, tmp_path, scale
) -> None:
    """A float64 volume scaled by 1e297 overflowed the float32 window: a blank image was
    sent, 0 voxels came back and the score read 10 (issue 24). The window is now computed in
    float64: the labels equal those of the unscaled volume."""
    from aspects_client import AspectsClient

    phantom = painted_phantom(seed=3, n_slices=6)
    data = np.asarray(phantom.image.dataobj, np.float64)
    with AspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
        plain = np.asanyarray(client.segment(nib.Nifti1Image(data, phantom.image.affine))
                             .label_image.dataobj)
        scaled = np.asanyarray(client.segment(nib.Nifti1Image(data * scale, phantom.image.affine))
                              .label_image.dataobj)
    assert int(np.count_nonzero(plain)) > 1000
    np.testing.assert_array_equal(scaled, plain)


def test_verbose_logs_never_carry_credentials(triton_oracle, s3_server, s3_client, tmp_path):
    phantom = painted_phantom(seed=3, n_slices=6)
    nib.save(phantom.image, tmp_path / "dwi.nii.gz")
    s3_client.create_bucket(Bucket="verbose")
    s3_client.upload_file(str(tmp_path / "dwi.nii.gz"), "verbose", "case/dwi.nii.gz")
    env = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
           "HOME": str(tmp_path)}
    proc = _run(["-v", "segment", "s3://verbose/case/dwi.nii.gz", "-o", str(tmp_path / "o.json"),
                 "--url", triton_oracle.server.grpc_url, "--endpoint-url",
                 s3_server.endpoint_url], env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "aspects: " in proc.stderr  # -v did log
    for secret in (s3_server.access_key, s3_server.secret_key, "AWS4-HMAC-SHA256 Credential"):
        assert secret not in proc.stderr and secret not in proc.stdout


def test_root_certificates_without_tls_exit_2(tmp_path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    proc = _run(["segment", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "x.json"),
                 "--root-certificates", str(pem)])
    assert proc.returncode == 2 and "add --tls" in proc.stderr, proc.stderr


def test_grpc_to_the_http_port_says_which_port(triton_oracle, tmp_path) -> None:
    """It said "whether it needs --tls"; it says the port answers HTTP, not gRPC."""
    phantom = painted_phantom(seed=3, n_slices=6)
    nib.save(phantom.image, tmp_path / "dwi.nii.gz")
    http = triton_oracle.server.http_url.split("://")[-1].rstrip("/")
    proc = _run(["segment", str(tmp_path / "dwi.nii.gz"), "-o", str(tmp_path / "o.json"),
                 "--url", http, "--retries", "0"])
    assert proc.returncode == 1, proc.stderr
    assert "HTTP/1.x, not gRPC" in proc.stderr and "--tls" not in proc.stderr, proc.stderr


def test_reading_a_dicom_series_is_bounded_by_the_volume_deadline(triton_oracle, tmp_path):
    """No deadline covered DICOM reading (issue 24): it is the per-volume deadline now."""
    from aspects_client import AspectsClient, DicomReadTimeoutError, InferenceSettings
    from aspects_synth.dicom_series import series_from_image, write_series

    phantom = painted_phantom(seed=3, n_slices=12)
    folder = tmp_path / "series"
    write_series(series_from_image(phantom.image), folder)
    tight = InferenceSettings(deadline_s=0.001)
    with (
        AspectsClient(triton_oracle.server.grpc_url, inference=tight, overlay=False) as client,
        pytest.raises(DicomReadTimeoutError, match=r"per-volume deadline \(--deadline\)"),
    ):
        client.segment(folder)
    with AspectsClient(triton_oracle.server.grpc_url, overlay=False) as client:
        assert client.segment(folder).label_image.shape == phantom.image.shape  # in time
