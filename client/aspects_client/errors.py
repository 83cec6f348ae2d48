"""One exception hierarchy for everything the client can refuse or fail at.

Every message says what was wrong and what to do about it; none contains secrets.
"""

from __future__ import annotations


class AspectsError(Exception):
    """Base of every error raised on purpose by aspects_client / aspects_export."""


# --- how the library or the CLI was called ----------------------------------------------


class UsageError(AspectsError, ValueError):
    """An argument or option is invalid (API misuse, out-of-range number); CLI exit 2."""


class OutputConflictError(UsageError):
    """An output path is an input, another output, a link, a directory or a device, or it
    exists and overwriting was not asked for; refused before any work (CLI exit 2)."""


class OutputError(AspectsError):
    """Writing an output failed (disk full, permission denied); nothing of that source
    was left behind."""


class MissingExtraError(UsageError):
    """A feature needs an optional part of the client that is not installed: the message
    names the extra to install (e.g. ``pip install 'aspects-client[dicom]'``); CLI exit 2."""


class CancelledError(AspectsError):
    """The work was cancelled (Ctrl-C, SIGTERM, an asyncio cancellation or a cancel event);
    nothing partial was written."""


# --- bad input volumes -------------------------------------------------------------------


class InvalidVolumeError(AspectsError):
    """The input is not a volume this system can segment."""


class InputNotFoundError(InvalidVolumeError):
    """A local input path does not exist or is not a readable file."""


class NotNiftiError(InvalidVolumeError):
    """The bytes are not a NIfTI-1/2 file (plain or gzip-compressed)."""


class CorruptVolumeError(InvalidVolumeError):
    """A NIfTI file that is truncated or internally inconsistent."""


class DimensionalityError(InvalidVolumeError):
    """Not a 3D volume (2D data, or a 4D series with more than one volume)."""


class DtypeError(InvalidVolumeError):
    """Non-numeric, complex or otherwise unsupported voxel data type."""


class NonFiniteDataError(InvalidVolumeError):
    """NaN or infinite voxel values."""


class VoxelSizeError(InvalidVolumeError):
    """Absurd voxel sizes or a degenerate affine."""


class OrientationUnknownError(InvalidVolumeError):
    """The header holds no orientation (sform_code = qform_code = 0) or zero voxel sizes:
    left/right and volumes would be invented."""


class NotAHeadImageError(InvalidVolumeError):
    """The data cannot be a head image: constant, all zero, or too few pixels in-plane."""


class AdcMapError(InvalidVolumeError):
    """The ADC map cannot go with this DWI: wrong field of view, unit or content."""


class AdcCoverageError(AdcMapError):
    """The ADC map's field of view does not overlap the DWI's, or covers too little of it."""


class AdcUnitsError(AdcMapError):
    """The ADC values are not in a known unit (or not an ADC map at all)."""


class AdcContentError(AdcMapError):
    """The "ADC map" is not one: its contrast is a DWI's (CSF dark), or it holds the DWI's
    own values."""


class ScoreRefusedError(InvalidVolumeError):
    """The ASPECTS score cannot be judged from this input (no regions found, a b0/T2
    contrast for the DWI-only rule, ...); the message says what to send instead."""


class VolumeTooLargeError(InvalidVolumeError):
    """More voxels than the configured bound."""


class DecompressionBombError(InvalidVolumeError):
    """A gzip stream that inflates past the allowed bound."""


# --- storage (S3) ------------------------------------------------------------------------


class StorageError(AspectsError):
    """Fetching the source from object storage failed."""


class ObjectNotFoundError(StorageError):
    """The bucket or key does not exist."""


class AccessDeniedError(StorageError):
    """Credentials are missing, wrong, or lack permission."""


class StorageUnreachableError(StorageError):
    """The storage endpoint could not be reached."""


class ObjectTooLargeError(StorageError):
    """The object is larger than the download cap."""


# --- inference (Triton) ------------------------------------------------------------------


class InferenceError(AspectsError):
    """Talking to Triton or running the model failed."""


class ServerUnavailableError(InferenceError):
    """Triton is unreachable, not ready, or overloaded after the allowed retries."""


class ModelNotReadyError(InferenceError):
    """The server is up but the model is not loaded (or not ready)."""


class ModelContractError(InferenceError):
    """The served model does not match contract.py (names, dtypes, shapes, batch size)."""


# --- model export ------------------------------------------------------------------------


# --- DICOM input (a DWI / ADC series from a folder, files, a zip or an S3 prefix) ---------


class DicomInputError(InvalidVolumeError):
    """The DICOM input cannot give one DWI volume; base of the DICOM errors below."""


class NotDicomError(DicomInputError):
    """A file that should be DICOM is not (no Part 10 'DICM' preamble), a zip that is not a
    zip, or an input without any DICOM image."""


class UnreadableDicomError(DicomInputError):
    """A DICOM file that cannot be parsed, or whose pixel data cannot be decoded."""


class DicomReadTimeoutError(DicomInputError):
    """Reading a DICOM series outlasted the per-volume deadline (``--deadline``)."""


class UnsafeArchiveError(DicomInputError):
    """A zip member with an absolute path or a '..' segment, or an encrypted member."""


class MixedSeriesError(DicomInputError):
    """Several series qualify (several DWI or ADC series), or a chosen series is absent:
    choose one with ``series=`` / ``--series NUMBER_OR_UID``."""


class NotDiffusionError(DicomInputError):
    """No DWI series in the input: no diffusion b-value > 0, only b = 0, only directional
    (non-trace) images, or not MR at all."""


class UnsupportedDicomError(DicomInputError):
    """A DWI series in a form this reader does not handle (Siemens mosaic, colour)."""


class MissingSlicesError(DicomInputError):
    """Slices are missing from the series (a gap of about twice the spacing or more), or
    too few slices for a volume."""


class DuplicateSlicesError(DicomInputError):
    """Two images of the selected series and b-value sit at the same slice position."""


class InconsistentGeometryError(DicomInputError):
    """The images of one series differ in size, orientation or pixel spacing, their
    spacing varies, or their positions are not on one line."""


class GantryTiltError(InconsistentGeometryError):
    """The slices are sheared (gantry tilt) by more than the supported angle."""


# --- DICOM outputs and sending (issue 16) ----------------------------------------------------


class DicomOutputError(AspectsError):
    """A DICOM output cannot be built from this source series (e.g. several enhanced
    multi-frame instances in one series)."""


class DicomSendError(AspectsError):
    """Sending the DICOM outputs to a DICOM node failed (CLI: the files written are kept)."""


class DicomNodeUnreachableError(DicomSendError):
    """No association could be opened: the host/port is not reachable or nothing listens."""


class AssociationRejectedError(DicomSendError):
    """The node refused the association (AE titles) or every presentation context."""


class StoreFailedError(DicomSendError):
    """The node answered a C-STORE with a failure status, or the association broke."""
