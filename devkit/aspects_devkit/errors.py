"""The dev kit's errors (``AspectsError`` subclasses: the CLIs print them on one line)."""

from __future__ import annotations

from aspects_client.errors import AspectsError


class LocalServerError(AspectsError):
    """A local helper server (tritonserver, SeaweedFS) failed to start or stop."""
