"""DICOM in, DICOM out through the CLI, the real local Triton and a real Store SCP: a DWI +
ADC folder gives a SEG that equals the viewer label map voxel for voxel (placed in world
space by the SEG's own plane positions), a structured report and a secondary capture that
dciodvfy accepts, the viewer files, and the same three objects received by the SCP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from unit.test_dicom_output import seg_in_world_grid  # tests/ is on sys.path (rootdir)

from aspects_client.outputs import VIEWER_SUFFIXES

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "aspects_client.cli"]


def _dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                         os.environ.get("PATH", "")]))
    assert exe, "dciodvfy (dicom3tools, the dev extra) must be installed"
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_cli_dicom_outputs_viewer_files_and_c_store(case, triton_oracle, store_scp, tmp_path):
    folder = case[2]
    out = tmp_path / "out"
    before = set(store_scp.directory.iterdir())
    proc = subprocess.run(
        [*CLI, "segment", str(folder), "-o", f"{out}/", "--url", triton_oracle.server.grpc_url,
         "-q", "--report", "--capture", "--viewer", "--labels", "--send", store_scp.destination],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.iterdir()}
    viewer = {f"case12{s}" for s in VIEWER_SUFFIXES}
    dicom = {"case12_seg.dcm", "case12_report.dcm", "case12_overlay.dcm"}
    assert names == {"case12.json", "case12_labels.nii.gz"} | viewer | dicom
    # the SEG is the 20-label viewer map, voxel for voxel, in world space
    regions = nib.load(out / "case12_regions.nii.gz")
    want = np.asanyarray(regions.dataobj)
    assert set(np.unique(want)) - {0} and (want > 10).any() and ((want > 0) & (want <= 10)).any()
    seg = pydicom.dcmread(out / "case12_seg.dcm")
    np.testing.assert_array_equal(seg_in_world_grid(seg, regions.affine, regions.shape), want)
    # ... and the classes of the label map, hemispheres folded
    classes = np.asanyarray(nib.load(out / "case12_labels.nii.gz").dataobj)
    np.testing.assert_array_equal(np.where(want > 10, want - 10, want), classes)
    # the report and the capture: valid IODs, one study with the source
    source = pydicom.dcmread(next((folder / "dwi").iterdir()), stop_before_pixels=True)
    for name in sorted(dicom):
        assert _dciodvfy_errors(out / name) == [], name
        ds = pydicom.dcmread(out / name, stop_before_pixels=True)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
    # the Store SCP received exactly these three objects
    received = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                for p in set(store_scp.directory.iterdir()) - before}
    sent = {pydicom.dcmread(out / n, stop_before_pixels=True).SOPInstanceUID for n in dicom}
    assert received == sent


def test_cli_refuses_dicom_outputs_of_a_nifti_source_before_any_work(case, tmp_path):
    _, root, _, _ = case
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [*CLI, "segment", str(root / "dwi.nii.gz"), "-o", str(out), "--seg",
         "--url", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "is not DICOM" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    bad = subprocess.run(
        [*CLI, "segment", str(root / "dwi.nii.gz"), "-o", str(out), "--send", "nohost"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and not out.exists()


def test_a_failed_send_still_says_the_score(case, triton_oracle, tmp_path):
    """The score line and the QC warning used to be lost when the send failed (issue 24)."""
    from aspects_devkit.local_triton import free_port

    proc = subprocess.run(
        [*CLI, "segment", str(case[2]), "-o", f"{tmp_path}/", "--url",
         triton_oracle.server.grpc_url, "-q", "--score", "--send",
         f"PACS@127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "ASPECTS" in proc.stdout, (proc.stdout, proc.stderr)
    assert "cannot reach DICOM node" in proc.stderr
    assert (tmp_path / "case12.json").is_file()  # the files are kept
