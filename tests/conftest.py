"""Shared fixtures: phantoms (session-scoped, cached) and a temp-dir leak guard."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def phantom_512():
    """The default phantom: 512x512x20 RAS, 5 mm slices, seed 3 (exact labels)."""
    from aspects_synth import make_phantom

    return make_phantom(seed=3)


@pytest.fixture(scope="session")
def phantom_small():
    """A small non-square phantom (160x192x9) for quick tests."""
    from aspects_synth import make_phantom

    return make_phantom(seed=11, in_plane=(160, 192), n_slices=9)


@pytest.fixture
def no_temp_files(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Iterator[Path]:
    """Point the process temp dir (tempfile + $TMPDIR) at a fresh empty directory and fail
    the test if anything is left in it afterwards."""
    fresh = tmp_path_factory.mktemp("tmpguard")
    monkeypatch.setenv("TMPDIR", str(fresh))
    monkeypatch.setattr(tempfile, "tempdir", str(fresh))
    yield fresh
    left = sorted(os.listdir(fresh))
    assert not left, f"temporary files left behind: {left}"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real SeaweedFS S3 gateway on free 127.0.0.1 ports, with SigV4 credentials."""
    from aspects_client.local_s3 import LocalS3

    server = LocalS3().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server):
    from aspects_client.storage import S3Settings, make_s3_client

    return make_s3_client(
        S3Settings(
            endpoint_url=s3_server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
        )
    )
