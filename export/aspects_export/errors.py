"""The exporter's errors (``AspectsError`` subclasses: the CLIs print them on one line)."""

from __future__ import annotations

from aspects_client.errors import AspectsError


class ExportError(AspectsError):
    """Converting a checkpoint into ONNX / TensorRT / a model repository failed."""


class CheckpointError(ExportError):
    """A checkpoint file is missing, corrupt, or does not fit the network."""
