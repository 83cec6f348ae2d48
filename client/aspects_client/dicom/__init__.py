"""DICOM in and out (the ``[dicom]`` extra: pydicom, highdicom, pynetdicom).

``read``: a DWI (and ADC) series from files, a folder, a .zip or an S3 prefix (its stages:
``gather``, ``parse``, ``vendor``, ``select``, ``volume``; results: ``series``; what is a
DICOM source is the core's ``aspects_client.sources``);
``output``: DICOM SEG, Comprehensive SR and a Secondary Capture of a result;
``send``: C-STORE to a DICOM node.  The core reaches this room only through
``aspects_client.rooms`` (never by import); this room uses only the core's public names.
"""

from __future__ import annotations

from aspects_client.lazy import lazy_exports

# the entry points, imported on first use (``import aspects_client.dicom`` imports nothing)
_EXPORTS = {
    "read_dicom": "read",
    "read_dicom_files": "read",
    "read_dicom_adc": "read",
    "DicomStudy": "series",
    "DicomSeries": "series",
    "dicom_outputs": "output",
    "dicom_output_files": "output",
    "dataset_bytes": "output",
    "parse_destination": "send",
    "check_ae_title": "send",
    "send_datasets": "send",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
