"""S3 downloads against a real SeaweedFS server with SigV4 auth on 127.0.0.1."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from aspects_client import errors
from aspects_client.local_triton import free_port
from aspects_client.storage import S3Settings, fetch_object, make_s3_client
from aspects_client.volume_io import load_volume

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bucket(s3_client) -> str:
    s3_client.create_bucket(Bucket="dwi-storage-tests")
    return "dwi-storage-tests"


def test_download_round_trip_into_a_volume(s3_client, bucket, phantom_small, no_temp_files):
    raw = gzip.compress(phantom_small.image.to_bytes(), compresslevel=1)
    s3_client.put_object(Bucket=bucket, Key="cases/a/dwi.nii.gz", Body=raw)
    got = fetch_object(f"s3://{bucket}/cases/a/dwi.nii.gz", s3_client)
    assert bytes(got) == raw
    vol = load_volume(got, name="s3://.../dwi.nii.gz")
    np.testing.assert_allclose(vol.affine, phantom_small.image.affine, atol=1e-5)


def test_missing_key_and_bucket(s3_client, bucket, no_temp_files):
    with pytest.raises(errors.ObjectNotFoundError, match="no such key"):
        fetch_object(f"s3://{bucket}/absent.nii.gz", s3_client)
    with pytest.raises(errors.ObjectNotFoundError, match="bucket 'no-such-bucket'"):
        fetch_object("s3://no-such-bucket/x.nii.gz", s3_client)


def test_wrong_credentials_never_leak(s3_server, bucket, s3_client, no_temp_files):
    s3_client.put_object(Bucket=bucket, Key="k.nii.gz", Body=b"123")
    secret = "wrong-secret-" + "x" * 20
    bad = make_s3_client(
        S3Settings(
            endpoint_url=s3_server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=secret,
        )
    )
    with pytest.raises(errors.AccessDeniedError, match="credentials") as info:
        fetch_object(f"s3://{bucket}/k.nii.gz", bad)
    assert secret not in str(info.value) and s3_server.secret_key not in str(info.value)


def test_unreachable_endpoint(no_temp_files):
    client = make_s3_client(
        S3Settings(
            endpoint_url=f"http://127.0.0.1:{free_port()}",
            region_name="us-east-1",
            aws_access_key_id="AKIAEXAMPLE",
            aws_secret_access_key="example",
            connect_timeout_s=1.0,
            max_attempts=1,
        )
    )
    with pytest.raises(errors.StorageUnreachableError, match="endpoint"):
        fetch_object("s3://b/k.nii.gz", client)


def test_object_over_the_cap(s3_client, bucket, no_temp_files):
    s3_client.put_object(Bucket=bucket, Key="big.nii.gz", Body=bytes(200_000))
    with pytest.raises(errors.ObjectTooLargeError, match="cap"):
        fetch_object(f"s3://{bucket}/big.nii.gz", s3_client, max_bytes=100_000)


@pytest.mark.parametrize("url", ["s3://", "s3://bucket", "http://x/y", "s3:///key"])
def test_bad_urls(url):
    with pytest.raises(errors.StorageError, match="s3://bucket/key"):
        fetch_object(url, None)
