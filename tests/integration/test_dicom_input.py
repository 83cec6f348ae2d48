"""DICOM input through the real local Triton (oracle unet) and the real local SeaweedFS: a
painted phantom written as a DICOM DWI series (+ ADC series) gives, as a folder, a zip, an
S3 prefix or a list of files, the same label map in world space and the same score as the
same phantom sent as NIfTI; the CLI reads a folder and refuses a series that is not DWI."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from aspects_client import AspectsClient, S3Settings
from aspects_synth.dicom_series import series_from_image, write_series

from .dicom_fixtures import DICOM_BUCKET

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "aspects_client.cli"]


def in_grid_of(reference: nib.Nifti1Image, image: nib.Nifti1Image) -> np.ndarray:
    """``image``'s voxels rearranged into ``reference``'s grid; both grids hold the same voxel
    centres (to 1e-4 mm), in any order of axes and directions."""
    mapping = np.linalg.inv(image.affine) @ reference.affine  # reference voxel -> image voxel
    integral = np.round(mapping)
    assert np.allclose(mapping, integral, atol=1e-4), mapping
    ijk = np.indices(reference.shape).reshape(3, -1)
    idx = (integral[:3, :3] @ ijk + integral[:3, 3:]).astype(np.int64)
    return np.asanyarray(image.dataobj)[tuple(idx)].reshape(reference.shape)


def test_every_dicom_source_gives_the_niftis_answer(case, triton_oracle, s3_server):
    _, root, folder, zipped = case
    s3 = S3Settings(
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    )
    files = sorted(str(p) for p in (folder / "dwi").iterdir())
    with AspectsClient(triton_oracle.server.grpc_url, s3=s3, overlay=False) as client:
        reference = client.segment(root / "dwi.nii.gz", adc=root / "adc.nii.gz")
        want = np.asanyarray(reference.label_image.dataobj)
        assert np.count_nonzero(want) > 10_000
        for source, name in [
            (folder, "case12"),
            (zipped, "case12.zip"),
            (f"s3://{DICOM_BUCKET}/cases/case12/", "case12"),
            (files, "dwi"),
        ]:
            result = client.segment(source, score=True)
            assert result.source == name and result.document["source"]["name"] == name
            assert result.dicom is not None and result.dicom.dwi.b_value == 1000.0
            got = in_grid_of(reference.label_image, result.label_image)
            np.testing.assert_array_equal(got, want, err_msg=str(source))
            if isinstance(source, list):  # the DWI files alone: no ADC, the DWI method
                assert result.dicom.adc is None
                assert result.score["method"]["name"] != "adc"
            else:  # the input's own ADC series: the NIfTI pair's score
                assert result.dicom.adc is not None
                assert result.score["method"]["name"] == "adc"
                for key in ("score", "scores", "affected_regions", "lesion_ml"):
                    assert result.score[key] == reference.score[key], key
        assert reference.score["affected_regions"]["r"]  # the lesion was found at all


def test_cli_reads_a_folder_and_refuses_a_series_that_is_not_dwi(case, triton_oracle, tmp_path):
    phantom, _, folder, _ = case
    url = ["--url", triton_oracle.server.grpc_url, "-q"]
    out = tmp_path / "results"
    proc = subprocess.run(
        [*CLI, "segment", f"{folder}/", "-o", f"{out}/", "--labels", "--score", *url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads((out / "case12.json").read_text())
    assert document["source"]["name"] == "case12" and document["aspects"]["method"]["name"] == "adc"
    labels = nib.load(out / "case12_labels.nii.gz")
    assert labels.shape == phantom.image.shape
    assert proc.stdout.startswith(f"{folder}/: ASPECTS ")
    t1 = tmp_path / "t1"
    write_series(series_from_image(phantom.image, role="t1", series_number=2), t1)
    proc = subprocess.run(
        [*CLI, "segment", str(t1), "-o", str(tmp_path / "t1.json"), *url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and not (tmp_path / "t1.json").exists()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("aspects: error:")]
    assert len(errors) == 1 and "no DWI series" in errors[0] and "series 2" in errors[0]
    assert "ASPECTS^PHANTOM" not in proc.stderr and "PHANTOM-" not in proc.stderr
