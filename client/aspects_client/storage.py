"""S3 sources (boto3): ``s3://bucket/key`` downloaded into memory, streamed, size-capped.

Endpoint, region and credentials come from boto3's standard chain (environment, shared
config/credentials files, instance roles), with explicit overrides.  Every failure maps
to a specific StorageError subclass; no message contains a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from .errors import (
    AccessDeniedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
    StorageUnreachableError,
)

DEFAULT_MAX_OBJECT_BYTES = 1024**3  # 1 GiB of (usually gzip-compressed) NIfTI
_CHUNK = 4 * 1024 * 1024
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "403",
}
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}


@dataclass(frozen=True)
class S3Settings:
    """Explicit overrides; None means "use boto3's standard chain"."""

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)  # never printed
    aws_session_token: str | None = field(default=None, repr=False)
    profile_name: str | None = None
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    max_attempts: int = 3


def is_s3_url(source: object) -> bool:
    return isinstance(source, str) and source.startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key/with/slashes`` -> (bucket, key)."""
    parsed = urlparse(url)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if parsed.scheme != "s3" or not bucket or not key:
        raise StorageError(f"{url!r} is not an s3://bucket/key URL")
    return bucket, key


def make_s3_client(settings: S3Settings = S3Settings()) -> Any:
    """A boto3 S3 client (thread-safe) with timeouts and bounded retries."""
    import boto3
    import botocore.config
    import botocore.exceptions as bce

    try:
        session = boto3.session.Session(profile_name=settings.profile_name)
    except bce.ProfileNotFound:
        raise AccessDeniedError(
            f"AWS profile {settings.profile_name!r} not found; check --profile and ~/.aws/config"
        ) from None
    config = botocore.config.Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    return session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region_name,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        aws_session_token=settings.aws_session_token,
        config=config,
    )


def fetch_object(url: str, client: Any, *, max_bytes: int = DEFAULT_MAX_OBJECT_BYTES) -> bytearray:
    """Download ``s3://bucket/key`` into one bytearray, refusing objects over max_bytes."""
    import botocore.exceptions as bce

    bucket, key = parse_s3_url(url)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        size = int(response.get("ContentLength", -1))
        body = response["Body"]
        try:
            if size > max_bytes:
                raise ObjectTooLargeError(
                    f"{url}: {size:,} bytes exceed the download cap of {max_bytes:,}; "
                    "raise --max-object-bytes if this volume is legitimate"
                )
            return _read_capped(body, url, size, max_bytes)
        finally:
            body.close()
    except bce.ClientError as exc:
        raise _client_error(url, bucket, exc) from None
    except (bce.NoCredentialsError, bce.PartialCredentialsError):
        raise AccessDeniedError(
            f"{url}: no S3 credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "a profile, or an instance role"
        ) from None
    except (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ConnectionClosedError) as exc:
        raise StorageUnreachableError(
            f"{url}: cannot reach the S3 endpoint ({type(exc).__name__}); "
            "check --endpoint-url and the network"
        ) from None
    except (bce.ReadTimeoutError, bce.ResponseStreamingError, bce.IncompleteReadError) as exc:
        raise StorageUnreachableError(
            f"{url}: the download was interrupted ({type(exc).__name__}); try again"
        ) from None
    except bce.ParamValidationError:
        raise StorageError(f"{url}: not a valid bucket/key; check the URL") from None
    except (bce.SSLError, bce.ProxyConnectionError, bce.HTTPClientError) as exc:
        raise StorageUnreachableError(
            f"{url}: cannot talk to the S3 endpoint ({type(exc).__name__}); "
            "check --endpoint-url, TLS and proxy settings"
        ) from None
    except bce.BotoCoreError as exc:
        raise StorageError(f"{url}: S3 client error ({type(exc).__name__})") from None


def _read_capped(body: Any, url: str, size: int, max_bytes: int) -> bytearray:
    out = bytearray(size) if size >= 0 else bytearray()
    filled = 0
    while True:
        chunk = body.read(_CHUNK)
        if not chunk:
            break
        if filled + len(chunk) > max_bytes:
            raise ObjectTooLargeError(f"{url}: larger than the download cap of {max_bytes:,} bytes")
        if size >= 0 and filled + len(chunk) <= size:
            out[filled : filled + len(chunk)] = chunk
        else:
            del out[filled:]
            out += chunk
        filled += len(chunk)
    if size >= 0 and filled < size:
        raise StorageUnreachableError(
            f"{url}: the download stopped after {filled:,} of {size:,} bytes; try again"
        )
    return out


def _client_error(url: str, bucket: str, exc: Any) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        return ObjectNotFoundError(f"{url}: bucket {bucket!r} does not exist; check the URL")
    if code in _NOT_FOUND_CODES or status == 404:
        return ObjectNotFoundError(f"{url}: no such key in bucket {bucket!r}; check the URL")
    if code in _AUTH_CODES or status == 403:
        return AccessDeniedError(
            f"{url}: access denied ({code or status}); check the S3 credentials and permissions"
        )
    if status is not None and int(status) >= 500:
        return StorageUnreachableError(f"{url}: the S3 server failed ({code or status}); retry")
    return StorageError(f"{url}: S3 error {code or status}")
