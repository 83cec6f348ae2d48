"""S3 sources (boto3): ``s3://bucket/key`` downloaded into memory, streamed, size-capped.

An S3 URL is a bucket and a literal key: ``#``, ``?``, ``%``, spaces and unicode are part
of the key (no URL decoding).  Endpoint, region and credentials come from boto3's standard
chain (environment, shared config/credentials files, instance roles), with explicit
overrides.  Invalid settings raise UsageError, every other failure a specific StorageError
subclass; messages are one line and never contain a secret.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import (
    AccessDeniedError,
    CancelledError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
    StorageUnreachableError,
    UsageError,
)
from .validators import check_int, check_seconds

DEFAULT_MAX_OBJECT_BYTES = 1024**3  # 1 GiB of (usually gzip-compressed) NIfTI
MAX_ATTEMPTS_LIMIT = 20
_CHUNK = 4 * 1024 * 1024  # bytes per read; cancellation is checked between reads
_MAX_AHEAD = 64 * 1024 * 1024  # most bytes allocated ahead of received data
_MAX_KEY_BYTES = 1024  # S3's limit on a key (UTF-8)
_URL_HINT = "a valid URL looks like s3://bucket/key, e.g. s3://my-bucket/cases/dwi.nii.gz"
# boto3 accepts uppercase and underscores with path-style addressing (legacy bucket names).
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
_REGION_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")  # botocore's rule
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+)://")  # 2+ letters: not C://
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
_CREDENTIAL_ERRORS = (  # botocore errors raised while obtaining credentials lazily
    "CredentialRetrievalError",
    "TokenRetrievalError",
    "SSOError",
    "SSOTokenLoadError",
    "UnauthorizedSSOTokenError",
    "RefreshWithMFAUnsupportedError",
    "InvalidConfigError",
)


@dataclass(frozen=True)
class S3Settings:
    """Explicit overrides; None means "use boto3's standard chain".  Validated on creation."""

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

    def __post_init__(self) -> None:
        check_int(self.max_object_bytes, "--max-object-bytes (S3Settings.max_object_bytes)", 1)
        check_seconds(self.connect_timeout_s, "S3Settings.connect_timeout_s")
        check_seconds(self.read_timeout_s, "S3Settings.read_timeout_s")
        check_int(self.max_attempts, "S3Settings.max_attempts", 1, MAX_ATTEMPTS_LIMIT)


# --- URLs --------------------------------------------------------------------------------


def is_s3_url(source: object) -> bool:
    """True for a string in the (lowercase) ``s3://`` scheme."""
    return isinstance(source, str) and source.startswith("s3://")


def check_source_string(source: str) -> None:
    """UsageError unless source is a file path or a valid ``s3://bucket/key`` URL."""
    if source == "":
        raise UsageError("an empty source; give a file path or an s3:// URL")
    if is_s3_url(source):
        parse_s3_url(source)
        return
    match = _SCHEME_RE.match(source.strip())
    if match is None:
        return
    scheme = match.group(1).lower()
    shown = _show(source)
    if source != source.strip():
        raise UsageError(f"{source!r}: remove the spaces around the URL; {_URL_HINT}")
    if scheme == "s3":
        fixed = _show("s3://" + source[match.end() :])
        raise UsageError(f"{shown}: use lowercase s3:// (like {fixed}); {_URL_HINT}")
    if scheme in ("http", "https"):
        raise UsageError(
            f"{shown}: {scheme}:// sources are not downloaded; "
            "download the file first or put it in S3 (s3://bucket/key)"
        )
    if scheme == "file":
        raise UsageError(f"{shown}: give the local path without file://")
    raise UsageError(
        f"{shown}: unsupported scheme {scheme}://; give a file path or an s3:// URL ({_URL_HINT})"
    )


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); the key is taken literally (no decoding)."""
    if not is_s3_url(url):
        raise UsageError(f"{_show(url)} is not an s3:// URL; {_URL_HINT}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise UsageError(f"{_show(url)} has no bucket; {_URL_HINT}")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise UsageError(
            f"{_show(url)}: bucket name {bucket!r} is invalid (3-63 letters, digits, dots, "
            f"hyphens or underscores, starting and ending with a letter or digit); {_URL_HINT}"
        )
    _check_key(url, key)
    return bucket, key


def _check_key(url: str, key: str) -> None:
    """UsageError for keys that would not be fetched literally or cannot exist."""
    shown = _show(url)
    if not key:
        raise UsageError(f"{shown} has no key; {_URL_HINT}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(f"{shown}: the key is not valid UTF-8; {_URL_HINT}") from None
    if size > _MAX_KEY_BYTES:
        raise UsageError(f"{shown}: the key is {size} bytes, over S3's {_MAX_KEY_BYTES}")
    if key.endswith("/"):
        raise UsageError(f"{shown}: the key ends with '/', a folder, not an object; {_URL_HINT}")
    if key.startswith("/") or "//" in key:
        raise UsageError(
            f"{shown}: the key has an empty path segment (a leading '/' or '//'); "
            "S3-compatible servers store '/k' as 'k' and 'a//b' as 'a/b', so it would "
            f"not be fetched literally; {_URL_HINT}"
        )
    if any(part in (".", "..") for part in key.split("/")):
        raise UsageError(
            f"{shown}: the key has a '.' or '..' path segment, which HTTP layers and "
            f"S3-compatible servers rewrite; {_URL_HINT}"
        )


def _show(text: str) -> str:
    """text for a one-line message: as is when printable, else its repr."""
    return text if text.isprintable() else repr(text)


# --- client ------------------------------------------------------------------------------


def make_s3_client(settings: S3Settings = S3Settings()) -> Any:
    """A boto3 S3 client (thread-safe) with timeouts and bounded retries.

    UsageError for invalid settings, AccessDeniedError for missing/partial credentials or
    profiles, StorageError for any other failure to configure boto3.
    """
    import boto3
    import botocore.config
    import botocore.exceptions as bce

    _check_client_settings(settings)
    config = botocore.config.Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    try:
        session = boto3.session.Session(profile_name=settings.profile_name)
        return session.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region_name,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            config=config,
        )
    except bce.ProfileNotFound:
        raise AccessDeniedError(
            f"AWS profile {settings.profile_name!r} not found; check --profile and ~/.aws/config"
        ) from None
    except bce.PartialCredentialsError as exc:
        raise AccessDeniedError(_partial_credentials(exc)) from None
    except bce.InvalidRegionError:
        raise UsageError(
            "the S3 region is not a region name (like us-east-1); check --region, "
            "AWS_REGION / AWS_DEFAULT_REGION and the profile's region"
        ) from None
    except ValueError as exc:  # botocore: "Invalid endpoint" (from the environment or config)
        raise UsageError(
            f"the S3 endpoint URL is invalid ({type(exc).__name__}); check --endpoint-url, "
            "AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and the profile's endpoint_url"
        ) from None
    except bce.BotoCoreError as exc:
        raise StorageError(
            f"cannot set up the S3 client ({type(exc).__name__}); check --endpoint-url, "
            "--region, --profile, the AWS_* environment and ~/.aws/config"
        ) from None


def _check_client_settings(settings: S3Settings) -> None:
    """UsageError for an explicit endpoint, region or credential set boto3 would refuse."""
    if settings.endpoint_url is not None:
        _check_endpoint(settings.endpoint_url)
    region = settings.region_name
    if region is not None and not _REGION_RE.fullmatch(region):
        raise UsageError(f"--region {region!r} is not a region name (like us-east-1)")
    key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    if (key_id is None) != (secret is None):
        given, missing = (
            ("aws_access_key_id", "aws_secret_access_key")
            if secret is None
            else ("aws_secret_access_key", "aws_access_key_id")
        )
        raise UsageError(
            f"S3Settings.{given} is set but S3Settings.{missing} is not; give both, "
            "or neither to use the environment, a profile or an instance role"
        )
    if settings.aws_session_token is not None and key_id is None:
        raise UsageError(
            "S3Settings.aws_session_token needs aws_access_key_id and aws_secret_access_key"
        )


def _check_endpoint(url: str) -> None:
    """UsageError unless url is an http(s)://host[:port][/path] URL botocore accepts."""
    from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

    shown = _redact(url)
    hint = "expected http(s)://host[:port], e.g. http://127.0.0.1:8333"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise UsageError(f"--endpoint-url {shown!r} is not a valid URL; {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--endpoint-url {shown!r} is not an http(s) URL; {hint}")
    if not (is_valid_endpoint_url(url) or is_valid_ipv6_endpoint_url(url)):
        raise UsageError(f"--endpoint-url {shown!r} has an invalid host name; {hint}")


def _redact(url: str) -> str:
    """url without any user:password@ part."""
    return re.sub(r"//[^/?#]*@", "//***@", url)


def _partial_credentials(exc: Any) -> str:
    """One-line message for botocore's PartialCredentialsError (names only, no values)."""
    provider = str(exc.kwargs.get("provider", "the credential chain"))
    missing = str(exc.kwargs.get("cred_var", "a key"))
    where = "the environment" if provider == "env" else provider
    return (
        f"partial S3 credentials in {where}: {missing} is missing; set both "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile's keys), or neither"
    )


# --- download ----------------------------------------------------------------------------


def fetch_object(
    url: str,
    client: Any,
    *,
    max_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    cancel: threading.Event | None = None,
) -> bytearray:
    """Download ``s3://bucket/key`` into one bytearray, refusing objects over max_bytes.

    cancel: checked before the request and between chunks (CancelledError; a read that
    is already waiting on the network ends at the read timeout).
    """
    import botocore.exceptions as bce

    check_int(max_bytes, "max_bytes (--max-object-bytes)", 1)
    bucket, key = parse_s3_url(url)
    shown = _show(url)
    _check_cancel(cancel, shown)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            size = int(response.get("ContentLength", -1))
            if size > max_bytes:
                raise ObjectTooLargeError(
                    f"{shown}: {size:,} bytes exceed the download cap of {max_bytes:,}; "
                    "raise --max-object-bytes if this volume is legitimate"
                )
            return _read_capped(body, shown, size, max_bytes, cancel)
        finally:
            body.close()
    except (bce.ClientError, bce.BotoCoreError) as exc:
        raise botocore_error(shown, bucket, exc) from None
    except OSError as exc:
        raise StorageUnreachableError(
            f"{shown}: the download was interrupted ({type(exc).__name__}); try again"
        ) from None


def _check_cancel(cancel: threading.Event | None, shown: str) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError(f"{shown}: download cancelled")


def botocore_error(url: str, bucket: str, exc: Any) -> StorageError:
    """The StorageError for a botocore failure of one download (never its message text)."""
    import botocore.exceptions as bce

    name = type(exc).__name__
    if isinstance(exc, bce.ClientError):
        return _client_error(url, bucket, exc)
    if isinstance(exc, bce.PartialCredentialsError):
        return AccessDeniedError(f"{url}: {_partial_credentials(exc)}")
    if isinstance(exc, bce.NoCredentialsError):
        return AccessDeniedError(
            f"{url}: no S3 credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "a profile, or an instance role"
        )
    if name in _CREDENTIAL_ERRORS:
        return AccessDeniedError(
            f"{url}: cannot obtain S3 credentials ({name}); check the profile, SSO login or role"
        )
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError)):
        return StorageUnreachableError(
            f"{url}: cannot reach the S3 endpoint ({name}); check --endpoint-url and the network"
        )
    if isinstance(exc, (bce.ReadTimeoutError, bce.ResponseStreamingError, bce.IncompleteReadError)):
        return StorageUnreachableError(f"{url}: the download was interrupted ({name}); try again")
    if isinstance(exc, bce.ConnectionClosedError):
        return StorageUnreachableError(
            f"{url}: the S3 endpoint closed the connection ({name}); check --endpoint-url"
        )
    if isinstance(exc, (bce.SSLError, bce.ProxyConnectionError, bce.HTTPClientError)):
        return StorageUnreachableError(
            f"{url}: cannot talk to the S3 endpoint ({name}); "
            "check --endpoint-url, TLS and proxy settings"
        )
    if isinstance(exc, bce.ParamValidationError):
        return StorageError(f"{url}: boto3 refused the bucket/key ({name}); {_URL_HINT}")
    return StorageError(f"{url}: S3 client error ({name})")


def _read_capped(
    body: Any,
    url: str,
    size: int,
    max_bytes: int,
    cancel: threading.Event | None = None,
) -> bytearray:
    """Read body fully; size is the announced ContentLength (-1: unknown).

    At most min(size, 64 MiB) is allocated ahead of received data: an honest size up to
    that is filled in place (one exact allocation); beyond it the buffer grows as bytes
    arrive.  ObjectTooLargeError past max_bytes, StorageUnreachableError when fewer than
    size bytes arrive, CancelledError when cancel is set between chunks.
    """
    out = bytearray(min(size, _MAX_AHEAD)) if size > 0 else bytearray()
    filled = 0
    while True:
        _check_cancel(cancel, url)
        chunk = body.read(_CHUNK)
        if not chunk:
            break
        end = filled + len(chunk)
        if end > max_bytes:
            raise ObjectTooLargeError(f"{url}: larger than the download cap of {max_bytes:,} bytes")
        if end <= len(out):
            out[filled:end] = chunk
        else:
            del out[filled:]
            out += chunk
        filled = end
    if size >= 0 and filled < size:
        raise StorageUnreachableError(
            f"{url}: the download stopped after {filled:,} of {size:,} bytes; try again"
        )
    return out


def _client_error(url: str, bucket: str, exc: Any) -> StorageError:
    error = exc.response.get("Error", {})
    code = _code(error.get("Code", ""))
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


def _code(value: object) -> str:
    """A server-sent error code, reduced to one short line of safe characters."""
    return re.sub(r"[^A-Za-z0-9._-]", "", str(value))[:64]
