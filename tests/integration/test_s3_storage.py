"""S3 downloads against a real SeaweedFS server with SigV4 auth on 127.0.0.1."""

from __future__ import annotations

import gzip
import threading
from typing import Any

import numpy as np
import pytest
from aspects_devkit.local_triton import free_port

from aspects_client import errors, storage
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
        fetch_object("s3://bucket/k.nii.gz", client)


def test_object_over_the_cap(s3_client, bucket, no_temp_files):
    s3_client.put_object(Bucket=bucket, Key="big.nii.gz", Body=bytes(200_000))
    with pytest.raises(errors.ObjectTooLargeError, match="cap"):
        fetch_object(f"s3://{bucket}/big.nii.gz", s3_client, max_bytes=100_000)


@pytest.mark.parametrize("url", ["s3://", "s3://bucket", "http://x/y", "s3:///key"])
def test_bad_urls(url):
    with pytest.raises(errors.UsageError, match="s3://bucket/key"):
        fetch_object(url, None)


# --- keys are literal --------------------------------------------------------------------

ODD_KEYS = [
    "odd/a#b.nii.gz",  # urlparse: fragment
    "odd/a?b=1.nii.gz",  # urlparse: query
    "odd/scan%20one.nii",  # must not be decoded to a space ...
    "odd/scan one.nii",  # ... which is another object
    "odd/100%.nii",
    "odd/ünï/cødé #2?.nii",
]


@pytest.fixture(scope="module")
def odd_objects(s3_client, bucket) -> dict[str, bytes]:
    bodies = {key: f"body of {key}".encode() for key in ODD_KEYS}
    for key, body in bodies.items():
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    return bodies


@pytest.mark.parametrize("key", ODD_KEYS)
def test_keys_are_fetched_literally(s3_client, bucket, odd_objects, key, no_temp_files):
    assert bytes(fetch_object(f"s3://{bucket}/{key}", s3_client)) == odd_objects[key]


def test_server_aliases_empty_segments_so_they_are_refused(s3_client, bucket, no_temp_files):
    """SeaweedFS stores '/k' as 'k' (and 'a//b' as 'a/b'): such keys cannot be fetched
    literally, so s3://b//k is refused instead of silently fetching the object 'k'."""
    s3_client.put_object(Bucket=bucket, Key="alias-k", Body=b"plain")
    s3_client.put_object(Bucket=bucket, Key="/alias-k", Body=b"slash")
    assert s3_client.get_object(Bucket=bucket, Key="alias-k")["Body"].read() == b"slash"
    s3_client.put_object(Bucket=bucket, Key="alias/a//b", Body=b"double")
    assert s3_client.get_object(Bucket=bucket, Key="alias/a/b")["Body"].read() == b"double"
    for url in (f"s3://{bucket}//alias-k", f"s3://{bucket}/alias/a//b"):
        with pytest.raises(errors.UsageError, match="empty path segment"):
            fetch_object(url, s3_client)


# --- large objects and cancellation ------------------------------------------------------

BIG = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def big_object(s3_client, bucket) -> bytes:
    data = np.random.default_rng(5).integers(0, 256, BIG, dtype=np.uint8).tobytes()
    s3_client.put_object(Bucket=bucket, Key="big/40mb.bin", Body=data)
    return data


def test_large_object_grows_past_the_preallocation(
    s3_client, bucket, big_object, monkeypatch, no_temp_files
):
    monkeypatch.setattr(storage, "_MAX_AHEAD", 8 * 1024 * 1024)
    got = fetch_object(f"s3://{bucket}/big/40mb.bin", s3_client)
    assert len(got) == BIG and bytes(got) == big_object


class _Spy:
    """Forwards get_object to the real client; wraps the body to count reads and closes,
    and calls on_read(n) before the n-th read."""

    def __init__(self, client: Any, on_read=lambda n: None) -> None:
        self.client, self.on_read = client, on_read
        self.calls = self.reads = self.closes = 0

    def get_object(self, **kwargs: Any) -> dict:
        self.calls += 1
        response = self.client.get_object(**kwargs)
        response["Body"] = _SpyBody(response["Body"], self)
        return response


class _SpyBody:
    def __init__(self, body: Any, spy: _Spy) -> None:
        self.body, self.spy = body, spy

    def read(self, n: int) -> bytes:
        self.spy.reads += 1
        self.spy.on_read(self.spy.reads)
        return self.body.read(n)

    def close(self) -> None:
        self.spy.closes += 1
        self.body.close()


def test_cancel_already_set_sends_no_request(s3_client, bucket, big_object, no_temp_files):
    spy, cancel = _Spy(s3_client), threading.Event()
    cancel.set()
    with pytest.raises(errors.CancelledError, match="download cancelled"):
        fetch_object(f"s3://{bucket}/big/40mb.bin", spy, cancel=cancel)
    assert spy.calls == 0


def test_cancel_from_another_thread_mid_download(
    s3_client, bucket, big_object, monkeypatch, no_temp_files
):
    monkeypatch.setattr(storage, "_CHUNK", 1024 * 1024)  # 40 reads for the whole object
    cancel, reading = threading.Event(), threading.Event()

    def on_read(n: int) -> None:
        if n == 3:  # hold the third read until the other thread has cancelled
            reading.set()
            assert cancel.wait(10), "the cancelling thread never ran"

    def canceller() -> None:
        assert reading.wait(10)
        cancel.set()

    spy = _Spy(s3_client, on_read)
    thread = threading.Thread(target=canceller)
    thread.start()
    try:
        with pytest.raises(errors.CancelledError, match="download cancelled"):
            fetch_object(f"s3://{bucket}/big/40mb.bin", spy, cancel=cancel)
    finally:
        thread.join(10)
    assert spy.calls == 1 and spy.reads == 3 and spy.closes == 1
    # the connection is usable afterwards
    assert len(fetch_object(f"s3://{bucket}/big/40mb.bin", s3_client)) == BIG
