"""Releases through the real S3-compatible server and the real tritonserver: two releases
published to SeaweedFS, each fetched (verified) and served; the answering unet is the one of
the release served, and serving the older id again is the rollback.  A release whose upload
died halfway, or whose object was changed in the bucket, is refused before Triton starts."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aspects_devkit.local_triton import LocalTriton

from aspects_client import contract
from aspects_client.inference import TritonSegmenter
from aspects_export import releases

pytestmark = pytest.mark.integration


def _served_checkpoint(repository: Path) -> str:
    """Start Triton on ``repository`` and read the unet's checkpoint as a client sees it."""
    with LocalTriton(repository) as server:
        segmenter = TritonSegmenter(server.grpc_url)
        try:
            return segmenter.info.steps[contract.UNET_MODEL]["checkpoint"]
        finally:
            segmenter.close()


@pytest.fixture()
def s3_store(s3_client) -> releases.S3Store:
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    return releases.S3Store(f"s3://{bucket}/triton-24.10/cpu", s3_client)


def test_publish_fetch_serve_and_roll_back_through_s3(
    s3_store: releases.S3Store,
    oracle_repository: Path,
    context_oracle_repository: Path,
    tmp_path: Path,
    triton_server_venv: Path,
) -> None:
    old = releases.publish(oracle_repository, s3_store, release_id="20260101T000000Z-old")
    new = releases.publish(context_oracle_repository, s3_store, release_id="20260201T000000Z-new")
    assert old["checkpoint"] != new["checkpoint"]
    assert [r.release_id for r in releases.list_releases(s3_store)] == [
        "20260101T000000Z-old",
        "20260201T000000Z-new",
    ]
    # upgrade: the pod fetches the new id, Triton serves exactly that release
    releases.fetch(s3_store, new["release"], tmp_path / "pod-1", gpu_name=None)
    assert _served_checkpoint(tmp_path / "pod-1") == new["checkpoint"]
    # rollback: the older id again (the old release is still there, unchanged)
    releases.fetch(s3_store, old["release"], tmp_path / "pod-2", gpu_name=None)
    assert _served_checkpoint(tmp_path / "pod-2") == old["checkpoint"]


def test_half_uploaded_or_changed_releases_never_reach_triton(
    s3_store: releases.S3Store, oracle_repository: Path, tmp_path: Path
) -> None:
    s3, bucket, prefix = s3_store.s3, s3_store.bucket, s3_store.prefix
    manifest = releases.publish(oracle_repository, s3_store, release_id="r1")
    with pytest.raises(releases.ReleaseError, match="immutable"):
        releases.publish(oracle_repository, s3_store, release_id="r1")
    # an upload that stopped before its manifest
    first_file = sorted(manifest["files"])[0]
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}releases/r1/{first_file}")["Body"].read()
    s3.put_object(Bucket=bucket, Key=f"{prefix}releases/r2/{first_file}", Body=body)
    assert {r.release_id: r.complete for r in releases.list_releases(s3_store)} == {
        "r1": True,
        "r2": False,
    }
    with pytest.raises(releases.ReleaseError, match="incomplete"):
        releases.fetch(s3_store, "r2", tmp_path / "pod", gpu_name=None)
    # an object of a published release changed in the bucket
    s3.put_object(Bucket=bucket, Key=f"{prefix}releases/r1/{first_file}", Body=body + b"x")
    with pytest.raises(releases.ReleaseError, match="does not match the release manifest"):
        releases.fetch(s3_store, "r1", tmp_path / "pod", gpu_name=None)
    assert list(tmp_path.iterdir()) == []  # no repository, no staging directory
