"""A real DICOM Store SCP on 127.0.0.1 (pynetdicom's ``storescp`` app in a subprocess),
session-scoped; imported by ``conftest.py``.

Ready when a C-ECHO succeeds; stopped by its PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STORE_SCP_AE = "ASPECTS_SCP"
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StoreScp:
    """A running Store SCP: where to send, and the folder it writes each object to
    (``<modality prefix>.<SOPInstanceUID>``, e.g. ``SEG.1.2.3``)."""

    host: str
    port: int
    ae_title: str
    directory: Path
    pid: int
    log: Path

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def _echo(host: str, port: int, ae_title: str) -> bool:
    from pynetdicom import AE

    ae = AE(ae_title="ASPECTS_PROBE")
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 2.0
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return int(getattr(status, "Status", -1)) == 0
    finally:
        assoc.release()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def store_scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    """pynetdicom's storescp listening on a free 127.0.0.1 port, writing to a fresh folder."""
    from aspects_devkit.local_triton import free_port

    root = tmp_path_factory.mktemp("storescp")
    directory = root / "received"
    directory.mkdir()
    log = root / "storescp.log"
    host, port = "127.0.0.1", free_port()
    cmd = [
        sys.executable, "-m", "pynetdicom", "storescp", str(port),
        "--bind-address", host, "--ae-title", STORE_SCP_AE,
        "--output-directory", str(directory), "--log-level", "info",
    ]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _echo(host, port, STORE_SCP_AE):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                pytest.fail(f"storescp did not start on {host}:{port}: {tail}")
            time.sleep(0.2)
        yield StoreScp(host, port, STORE_SCP_AE, directory, proc.pid, log)
    finally:
        _stop(proc)


# --- one DICOM case for every DICOM test of the session -------------------------------------

DICOM_BUCKET = "dicom-input"


@pytest.fixture(scope="session")
def case(tmp_path_factory: pytest.TempPathFactory, s3_client):
    """The phantom as NIfTI (DWI, ADC) and as DICOM: a folder (classic DWI b0 + b1000 and
    an enhanced multi-frame ADC series), a zip of it and an S3 prefix holding it
    (``s3://DICOM_BUCKET/cases/case12/``).  Returns (phantom, root, folder, zip path)."""
    import shutil

    import nibabel as nib
    import numpy as np

    from aspects_client import contract
    from aspects_synth.dicom_series import StudyIds, series_from_image, to_bytes, write_series

    from .oracle_cases import painted_phantom
    from .test_scoring import adc_map

    phantom = painted_phantom(seed=3, in_plane=(256, 256), n_slices=10)
    right = contract.HEMISPHERE_CODES["r"]
    lentiform = contract.REGION_BY_KEY["l"].index
    ijk = np.argwhere((phantom.classes == lentiform) & (phantom.hemispheres == right))
    centre = nib.affines.apply_affine(phantom.image.affine, ijk).mean(axis=0)
    adc = adc_map(centre, phantom.image.affine, phantom.image.shape)
    root = tmp_path_factory.mktemp("dicom_input")
    nib.save(phantom.image, root / "dwi.nii.gz")
    nib.save(adc, root / "adc.nii.gz")
    study = StudyIds.new(3)
    dwi_series = series_from_image(phantom.image, b_values=(0, 1000), study=study, series_number=4)
    adc_series = series_from_image(adc, role="adc", study=study, series_number=5, multiframe=True)
    folder = root / "case12"
    write_series(dwi_series, folder / "dwi")
    write_series(adc_series, folder / "adc")
    zipped = Path(shutil.make_archive(str(root / "case12"), "zip", folder))
    s3_client.create_bucket(Bucket=DICOM_BUCKET)
    for name, ds in [*(("dwi", d) for d in dwi_series), *(("adc", d) for d in adc_series)]:
        key = f"cases/case12/{name}/{ds.SOPInstanceUID}.dcm"
        s3_client.put_object(Bucket=DICOM_BUCKET, Key=key, Body=to_bytes(ds))
    return phantom, root, folder, zipped

