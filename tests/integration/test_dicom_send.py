"""C-STORE of the DICOM outputs to real Store SCPs on 127.0.0.1: pynetdicom's storescp app
in a subprocess (the round trip) and an in-process pynetdicom AE that checks the called AE
title and refuses every object (rejection and failure statuses); an unreachable node."""

from __future__ import annotations

import io
import logging

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from aspects_devkit.local_triton import free_port

from aspects_client import contract
from aspects_client.dicom.output import (
    capture_dataset,
    dataset_bytes,
    report_dataset,
    segmentation_dataset,
)
from aspects_client.dicom.read import read_dicom_files
from aspects_client.dicom.send import (
    AssociationRejectedError,
    DicomNode,
    DicomNodeUnreachableError,
    StoreFailedError,
    parse_destination,
    send_datasets,
)
from aspects_client.errors import CancelledError, UsageError
from aspects_client.scoring.lesions import aspects_score
from aspects_synth.dicom_series import series_from_image, to_bytes

pytestmark = pytest.mark.integration

PATIENT_NAME, PATIENT_ID = "Sendname^Private", "PID-SEND-42"
PROVENANCE = {"client": "aspects_client test", "model": "aspects", "model_version": "1"}


@pytest.fixture(scope="module")
def outputs() -> list[pydicom.Dataset]:
    """SEG, SR and SC of a small synthetic DWI series (no lesion: ASPECTS 10)."""
    rng = np.random.default_rng(4)
    affine = np.diag([2.0, 2.2, 5.0, 1.0])
    image = nib.Nifti1Image(rng.integers(1, 900, (48, 40, 5)).astype(np.float32), affine)
    datasets = series_from_image(image)
    for ds in datasets:
        ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    files = [(f"IM{n}.dcm", to_bytes(ds)) for n, ds in enumerate(datasets)]
    series = read_dicom_files(files, label="send").dwi
    labels = np.zeros(series.image.shape[:3], np.uint8)
    labels[5:20, 5:15, 1:4] = 3
    labels[25:40, 5:15, 1:4] = 13
    seg = segmentation_dataset(
        nib.Nifti1Image(labels, series.image.affine), series, provenance=PROVENANCE
    )
    cell = {"lesion_ml": 0.0, "region_ml": 1.0, "fraction": 0.0, "affected": False,
            "uncertain": False, "lesion_voxels": 0, "region_voxels": 10}  # fmt: skip
    inv = {r.key: {h: dict(cell) for h in contract.HEMISPHERES} for r in contract.REGIONS}
    section = {**aspects_score(inv), "involvement": inv}
    sr = report_dataset(section, seg, series, provenance=PROVENANCE)
    png = cv2.imencode(".png", rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))[1].tobytes()
    sc = capture_dataset(png, series, provenance=PROVENANCE)
    return [seg, sr, sc]


def test_round_trip_through_a_real_store_scp(store_scp, outputs, caplog):
    with caplog.at_level(logging.DEBUG):
        statuses = send_datasets(
            outputs, host=store_scp.host, port=store_scp.port, called_ae=store_scp.ae_title
        )
    assert statuses == [0x0000] * len(outputs)
    for sent in outputs:
        (path,) = store_scp.directory.glob(f"*.{sent.SOPInstanceUID}")
        received = pydicom.dcmread(path)
        assert received.SOPClassUID == sent.SOPClassUID
        assert received.SOPInstanceUID == sent.SOPInstanceUID
        expected = pydicom.dcmread(io.BytesIO(dataset_bytes(sent)))
        assert received == expected  # every element of the dataset, pixel data included
    assert {str(d.SOPClassUID) for d in outputs} == {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    }
    records = [r.getMessage() for r in caplog.records]
    assert records and not [m for m in records if "Sendname" in m or PATIENT_ID in m]


def test_an_unreachable_node_is_named(outputs):
    port = free_port()  # nothing listens there
    with pytest.raises(DicomNodeUnreachableError, match=rf"PACS@127\.0\.0\.1:{port}.*port"):
        send_datasets(outputs, host="127.0.0.1", port=port, called_ae="PACS", timeout_s=5)


def test_a_node_that_never_answers_is_not_an_ae_title_problem(outputs):
    """A listener that accepts the connection and stays silent: it was reported as "check
    the AE titles" (issue 24)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        silence = "did not answer the association"
        with pytest.raises(DicomNodeUnreachableError, match=silence) as info:
            send_datasets(outputs, host="127.0.0.1", port=port, called_ae="PACS", timeout_s=1)
    assert "AE title" not in str(info.value)


@pytest.fixture(scope="module")
def refusing_scp():
    """An in-process pynetdicom Store SCP that knows only the AE title 'STRICT_SCP' and
    answers every C-STORE with 0xA700 (out of resources)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    ae = AE(ae_title="STRICT_SCP")
    ae.require_called_aet = True
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0xA700)]
    )
    try:
        yield port
    finally:
        server.shutdown()


def test_a_wrong_called_ae_title_is_a_rejection(refusing_scp, outputs):
    with pytest.raises(AssociationRejectedError, match="called AE title 'WRONG'"):
        send_datasets(outputs, host="127.0.0.1", port=refusing_scp, called_ae="WRONG")


def test_a_failure_status_stops_the_send(refusing_scp, outputs):
    with pytest.raises(StoreFailedError, match=r"0xA700.*stored 0 of 3"):
        send_datasets(outputs, host="127.0.0.1", port=refusing_scp, called_ae="STRICT_SCP")


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("PACS@10.0.0.5:104", DicomNode("PACS", "10.0.0.5", 104)),
        ("ORTHANC@pacs.example.org:4242", DicomNode("ORTHANC", "pacs.example.org", 4242)),
        ("AE1@[::1]:11112", DicomNode("AE1", "::1", 11112)),
    ],
)
def test_destination_strings(text, node):
    assert parse_destination(text) == node
    assert str(parse_destination(text)) == text


@pytest.mark.parametrize(
    "text", ["PACS", "PACS@host", "@host:104", "PACS@host:0", "PACS@host:70000",
             "AN_AE_TITLE_TOO_LONG@host:104", "PA\\CS@host:104"],
)  # fmt: skip
def test_bad_destination_strings_are_refused(text):
    with pytest.raises(UsageError, match="AE"):
        parse_destination(text)


def test_a_cancelled_send_aborts_a_stalled_store_at_once(outputs):
    """A Store SCP that accepts the association and then stalls every C-STORE: a cancel
    (the CLI's SIGTERM) used to wait for the DIMSE timeout (~27 s); it aborts at once."""
    import threading
    import time

    from pynetdicom import AE, AllStoragePresentationContexts, evt

    release = threading.Event()
    ae = AE(ae_title="STALL")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, lambda e: release.wait(60) or 0)])
    cancel = threading.Event()
    try:
        threading.Timer(1.0, cancel.set).start()
        t = time.monotonic()
        with pytest.raises(CancelledError, match="cancelled"):
            send_datasets(outputs, host="127.0.0.1", port=port, called_ae="STALL",
                          timeout_s=30, cancel=cancel)
        assert time.monotonic() - t < 5.0
    finally:
        release.set()
        server.shutdown()
