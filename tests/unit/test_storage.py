"""storage.py without a server: URL parsing, source strings, settings, client set-up, the
capped reader and error mapping (fake bodies and clients)."""

from __future__ import annotations

import threading
import tracemalloc

import botocore.exceptions as bce
import pytest

from aspects_client import errors, storage
from aspects_client.storage import (
    S3Settings,
    check_source_string,
    fetch_object,
    make_s3_client,
    parse_s3_url,
)

MiB = 1024 * 1024
SECRET = "sEcReT-" + "q" * 33
PARTIAL_ENV = r"partial S3 credentials in the environment: AWS_SECRET_ACCESS_KEY is missing"


class FakeBody:
    """A streaming body that sends ``total`` bytes, whatever ContentLength claims."""

    def __init__(self, total: int, fill: int = 7) -> None:
        self.total, self.sent, self.fill = total, 0, fill
        self.reads = 0
        self.closed = False

    def read(self, n: int) -> bytes:
        self.reads += 1
        k = min(n, self.total - self.sent)
        self.sent += k
        return bytes([self.fill]) * k

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """get_object returns a FakeBody, or raises ``exc``; counts the calls."""

    def __init__(self, total: int = 0, length: int | None = None, exc: Exception | None = None):
        self.body = FakeBody(total)
        self.length = total if length is None else length
        self.exc = exc
        self.calls = 0

    def get_object(self, *, Bucket: str, Key: str) -> dict:
        self.calls += 1
        if self.exc is not None:
            raise self.exc
        return {"ContentLength": self.length, "Body": self.body}


@pytest.fixture
def clean_aws_env(monkeypatch, tmp_path):
    """No AWS_* variables, no shared config/credentials files, no instance metadata."""
    import os

    for name in list(os.environ):
        if name.startswith(("AWS_", "BOTO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- 1. URLs: bucket + literal key ------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["a#b.nii.gz", "a?b=1.nii.gz", "scan%20one.nii", "scan one.nii", "ünï/cødé #2?.nii", "a%2Fb"],
)
def test_key_is_literal(key):
    assert parse_s3_url(f"s3://bucket/{key}") == ("bucket", key)


@pytest.mark.parametrize("bucket", ["abc", "my.bucket-1", "a" * 63, "Upper_Bucket", "9lives"])
def test_valid_bucket_names(bucket):
    assert parse_s3_url(f"s3://{bucket}/k.nii") == (bucket, "k.nii")


@pytest.mark.parametrize(
    "bucket", ["ab", "a" * 64, "-abc", "abc-", ".abc", "a..b", "bad!name", "has space", "b:1"]
)
def test_invalid_bucket_names(bucket):
    with pytest.raises(errors.UsageError, match=r"bucket name .* is invalid.*s3://bucket/key"):
        parse_s3_url(f"s3://{bucket}/k.nii")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("s3://bucket", "has no key"),
        ("s3://bucket/", "has no key"),
        ("s3://", "has no bucket"),
        ("s3:///key", "has no bucket"),
        ("s3://bucket//k.nii", "empty path segment"),
        ("s3://bucket/a//b.nii", "empty path segment"),
        ("s3://bucket/cases/", "a folder, not an object"),
        ("s3://bucket/a/../b.nii", r"'\.\.' path segment"),
        ("s3://bucket/./b.nii", r"'\.' or"),
        ("s3://bucket/" + "k" * 1025, "over S3's 1024"),
        ("s3://bucket/bad\udcffname.nii", "not valid UTF-8"),
        ("http://bucket/key", "not an s3:// URL"),
    ],
)
def test_bad_s3_urls_are_usage_errors(url, why):
    with pytest.raises(errors.UsageError, match=why) as info:
        parse_s3_url(url)
    assert "\n" not in str(info.value)
    if why != "over S3's 1024":
        assert "s3://bucket/key" in str(info.value)


def test_bad_url_refused_before_any_request():
    client = FakeClient(total=3)
    with pytest.raises(errors.UsageError, match="empty path segment"):
        fetch_object("s3://bucket//k", client)
    assert client.calls == 0


# --- 2. source strings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("", "an empty source; give a file path or an s3:// URL"),
        ("S3://bucket/k.nii", r"use lowercase s3:// \(like s3://bucket/k\.nii\)"),
        ("S3://BUCKET/k.nii", "use lowercase s3://"),
        ("http://host/dwi.nii.gz", "download the file first or put it in S3"),
        ("HTTPS://host/dwi.nii.gz", "download the file first or put it in S3"),
        ("gs://bucket/dwi.nii.gz", "unsupported scheme gs://"),
        ("ftp://host/dwi.nii", "unsupported scheme ftp://"),
        ("file:///data/dwi.nii", "without file://"),
        (" s3://bucket/k.nii", "remove the spaces"),
        ("s3://bucket", "has no key"),
        ("s3://b/k", "bucket name 'b' is invalid"),
    ],
)
def test_check_source_string_refuses(source, why):
    with pytest.raises(errors.UsageError, match=why) as info:
        check_source_string(source)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "source",
    ["dwi.nii.gz", "/data/case 1/dwi.nii", "relative/a:b.nii", "C:/x.nii", "s3://bucket/a#b?.nii"],
)
def test_check_source_string_accepts(source):
    check_source_string(source)


# --- 3. the capped reader ----------------------------------------------------------------


def test_lying_content_length_does_not_preallocate():
    claimed, sent = 900_000_000, 1 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(errors.StorageUnreachableError) as info:
            storage._read_capped(FakeBody(sent), "s3://b/k", claimed, 2 * claimed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 70 * MiB, f"peak allocation {peak / MiB:.0f} MiB"
    assert f"download stopped after {sent:,} of {claimed:,} bytes" in str(info.value)


def test_honest_length_is_one_exact_buffer():
    size = 10 * MiB + 5
    tracemalloc.start()
    try:
        data = storage._read_capped(FakeBody(size), "s3://b/k", size, 20 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) == size and data.count(7) == size
    assert peak < size + 2 * storage._CHUNK + MiB, f"peak allocation {peak / MiB:.1f} MiB"


def test_honest_length_over_the_preallocation_grows(monkeypatch):
    monkeypatch.setattr(storage, "_MAX_AHEAD", 1 * MiB)
    monkeypatch.setattr(storage, "_CHUNK", 300_000)
    total = 5 * MiB + 3
    data = storage._read_capped(FakeBody(total), "s3://b/k", total, 10 * MiB)
    assert len(data) == total and data.count(7) == total


@pytest.mark.parametrize("length", [-1, 10, 0])
def test_cap_holds_whatever_the_length_says(length):
    with pytest.raises(errors.ObjectTooLargeError, match="larger than the download cap of 100"):
        storage._read_capped(FakeBody(300), "s3://b/k", length, 100)


def test_unknown_length_reads_everything():
    assert len(storage._read_capped(FakeBody(12345), "s3://b/k", -1, 10**6)) == 12345


def test_announced_length_over_the_cap_is_refused_before_reading():
    client = FakeClient(total=10, length=10**9)
    with pytest.raises(errors.ObjectTooLargeError, match="exceed the download cap"):
        fetch_object("s3://bucket/k.nii", client, max_bytes=1000)
    assert client.body.reads == 0 and client.body.closed


# --- 4. make_s3_client never leaks a non-AspectsError ------------------------------------


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        (S3Settings(aws_access_key_id="AKIAEXAMPLE"), "aws_secret_access_key"),
        (S3Settings(aws_secret_access_key=SECRET), "aws_access_key_id"),
        (S3Settings(aws_session_token=SECRET), "aws_session_token"),
        (S3Settings(region_name="not a region!", aws_secret_access_key=SECRET), "--region"),
        (S3Settings(region_name=""), "--region"),
        (S3Settings(endpoint_url="::not a url"), "--endpoint-url"),
        (S3Settings(endpoint_url="ftp:/x"), "--endpoint-url"),
        (S3Settings(endpoint_url="ftp://host:21"), "--endpoint-url"),
        (S3Settings(endpoint_url="http://host:99999"), "--endpoint-url"),
        (S3Settings(endpoint_url="http://ho st:9000"), "--endpoint-url"),
        (S3Settings(endpoint_url="http://[::1"), "--endpoint-url"),
        (S3Settings(endpoint_url=""), "--endpoint-url"),
        (S3Settings(endpoint_url=f"http://user:{SECRET}@ho st"), "--endpoint-url"),
    ],
)
def test_invalid_client_settings(clean_aws_env, settings, names):
    with pytest.raises(errors.UsageError, match=names) as info:
        make_s3_client(settings)
    message = str(info.value)
    assert SECRET not in message and "\n" not in message


def test_partial_credentials_from_the_environment(clean_aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    with pytest.raises(errors.AccessDeniedError, match=PARTIAL_ENV):
        make_s3_client(S3Settings(region_name="us-east-1"))


def test_invalid_region_from_the_environment(clean_aws_env, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "not a region!")
    with pytest.raises(errors.UsageError, match="AWS_REGION / AWS_DEFAULT_REGION"):
        make_s3_client(S3Settings(aws_access_key_id="AKIA", aws_secret_access_key=SECRET))


def test_invalid_endpoint_from_the_environment(clean_aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://u:{SECRET}@not a host")
    with pytest.raises(errors.UsageError, match="AWS_ENDPOINT_URL_S3") as info:
        make_s3_client(S3Settings(region_name="us-east-1"))
    assert SECRET not in str(info.value)


def test_missing_profile(clean_aws_env):
    with pytest.raises(errors.AccessDeniedError, match="profile 'nope' not found"):
        make_s3_client(S3Settings(profile_name="nope"))


def test_valid_settings_make_a_client(clean_aws_env):
    client = make_s3_client(
        S3Settings(
            endpoint_url="http://[::1]:8333",
            region_name="eu-west-3",
            aws_access_key_id="AKIA",
            aws_secret_access_key=SECRET,
        )
    )
    assert client.meta.region_name == "eu-west-3"


def test_partial_credentials_during_fetch():
    exc = bce.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY")
    with pytest.raises(errors.AccessDeniedError, match=PARTIAL_ENV):
        fetch_object("s3://bucket/k.nii", FakeClient(exc=exc))


def test_credential_retrieval_failure_during_fetch():
    exc = bce.CredentialRetrievalError(provider="sso", error_msg=SECRET)
    with pytest.raises(errors.AccessDeniedError, match="cannot obtain S3 credentials") as info:
        fetch_object("s3://bucket/k.nii", FakeClient(exc=exc))
    assert SECRET not in str(info.value)


# --- 5. S3Settings validates itself ------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "name"),
    [
        ("max_object_bytes", 0, "--max-object-bytes"),
        ("max_object_bytes", -5, "--max-object-bytes"),
        ("max_object_bytes", True, "--max-object-bytes"),
        ("max_object_bytes", 1.5, "--max-object-bytes"),
        ("max_object_bytes", "100", "--max-object-bytes"),
        ("connect_timeout_s", 0, "connect_timeout_s"),
        ("connect_timeout_s", -1.0, "connect_timeout_s"),
        ("connect_timeout_s", float("inf"), "connect_timeout_s"),
        ("connect_timeout_s", float("nan"), "connect_timeout_s"),
        ("connect_timeout_s", True, "connect_timeout_s"),
        ("read_timeout_s", 0.0, "read_timeout_s"),
        ("read_timeout_s", "60", "read_timeout_s"),
        ("read_timeout_s", float("-inf"), "read_timeout_s"),
        ("max_attempts", 0, "max_attempts"),
        ("max_attempts", 21, "max_attempts"),
        ("max_attempts", True, "max_attempts"),
        ("max_attempts", 2.0, "max_attempts"),
    ],
)
def test_settings_refuse_invalid_numbers(option, value, name):
    with pytest.raises(errors.UsageError, match=name) as info:
        S3Settings(**{option: value})
    assert "\n" not in str(info.value)


def test_settings_accept_the_edges():
    S3Settings(max_object_bytes=1, connect_timeout_s=1e-3, read_timeout_s=5, max_attempts=1)
    S3Settings(max_attempts=20)


def test_settings_repr_has_no_secret():
    assert SECRET not in repr(S3Settings(aws_access_key_id="A", aws_secret_access_key=SECRET))


@pytest.mark.parametrize("max_bytes", [0, -1, True])
def test_fetch_refuses_invalid_max_bytes(max_bytes):
    with pytest.raises(errors.UsageError, match="max_bytes"):
        fetch_object("s3://bucket/k.nii", FakeClient(total=3), max_bytes=max_bytes)


# --- 6. cancellation ---------------------------------------------------------------------


def test_cancel_before_the_request():
    client, cancel = FakeClient(total=100), threading.Event()
    cancel.set()
    with pytest.raises(errors.CancelledError, match="download cancelled"):
        fetch_object("s3://bucket/k.nii", client, cancel=cancel)
    assert client.calls == 0


def test_cancel_between_chunks_closes_the_body(monkeypatch):
    monkeypatch.setattr(storage, "_CHUNK", 1000)
    client, cancel = FakeClient(total=10_000), threading.Event()
    real_read = client.body.read

    def read(n: int) -> bytes:
        if client.body.reads == 2:
            cancel.set()
        return real_read(n)

    client.body.read = read  # type: ignore[method-assign]
    with pytest.raises(errors.CancelledError, match="download cancelled"):
        fetch_object("s3://bucket/k.nii", client, cancel=cancel)
    assert client.body.reads == 3 and client.body.closed


# --- 7. one-line messages ----------------------------------------------------------------


def test_messages_are_one_line_for_odd_keys_and_codes():
    url = "s3://bucket/line1\nline2.nii"
    error = {"Error": {"Code": "Weird\nCode", "Message": SECRET}, "ResponseMetadata": {}}
    exc = bce.ClientError(error, "GetObject")
    with pytest.raises(errors.StorageError) as info:
        fetch_object(url, FakeClient(exc=exc))
    message = str(info.value)
    assert "\n" not in message and SECRET not in message and "WeirdCode" in message
