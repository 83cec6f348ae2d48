"""Thin client for ASPECTS atlas segmentation of DWI served by NVIDIA Triton.

    from aspects_client import AspectsClient, S3Settings, AspectsError
    with AspectsClient("triton:8001", s3=S3Settings(endpoint_url=...)) as client:
        result = client.segment("s3://bucket/case/dwi.nii.gz")

The asyncio API is ``aspects_client.AsyncAspectsClient``; every error type is exported here
(and listed with its CLI exit code in docs/errors.md).  Names are imported on first use, so
``import aspects_client`` stays cheap.
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "AspectsClient": "client",
    "SegmentationResult": "client",
    "RegionStats": "client",
    "AsyncAspectsClient": "aio",
    "SegmentRequest": "request",
    "Source": "sources",
    "S3Settings": "storage",
    "InferenceSettings": "inference",
    "Limits": "volume_io",
}
_ERRORS = (
    "AspectsError",
    "UsageError",
    "MissingExtraError",
    "OutputConflictError",
    "OutputError",
    "CancelledError",
    "InvalidVolumeError",
    "InputNotFoundError",
    "NotNiftiError",
    "CorruptVolumeError",
    "DimensionalityError",
    "DtypeError",
    "NonFiniteDataError",
    "VoxelSizeError",
    "OrientationUnknownError",
    "NotAHeadImageError",
    "AdcMapError",
    "AdcCoverageError",
    "AdcUnitsError",
    "AdcContentError",
    "ScoreRefusedError",
    "VolumeTooLargeError",
    "DecompressionBombError",
    "StorageError",
    "ObjectNotFoundError",
    "AccessDeniedError",
    "StorageUnreachableError",
    "ObjectTooLargeError",
    "InferenceError",
    "ServerUnavailableError",
    "ModelNotReadyError",
    "ModelContractError",
    # DICOM input (aspects_client.dicom)
    "DicomInputError",
    "NotDicomError",
    "UnreadableDicomError",
    "UnsafeArchiveError",
    "DicomReadTimeoutError",
    "MixedSeriesError",
    "NotDiffusionError",
    "UnsupportedDicomError",
    "MissingSlicesError",
    "DuplicateSlicesError",
    "InconsistentGeometryError",
    "GantryTiltError",
    # DICOM outputs and C-STORE (aspects_client.dicom.output, .dicom_send)
    "DicomOutputError",
    "DicomSendError",
    "DicomNodeUnreachableError",
    "AssociationRejectedError",
    "StoreFailedError",
)
_EXPORTS.update({name: "errors" for name in _ERRORS})
__all__ = ["__version__", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
