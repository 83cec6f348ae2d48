"""The CLI's logging: debug logs on stderr with ``-v``, every record with credentials masked
(authorization headers, SigV4 signatures, AWS keys); nothing from libraries otherwise."""

from __future__ import annotations

import logging
import re
import sys
import warnings

from .terminal import PROG

# Third-party loggers that print request headers (botocore's DEBUG carries the SigV4
# Authorization header: an access key id and a replayable signature): never below WARNING.
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "pynetdicom", "grpc")
SECRET_PATTERNS = (
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*b?['\"]?)[^'\"}\n]+"),
    re.compile(r"(?i)((?:signature|credential)=)[^,&\s'\"]+"),
    re.compile(r"(?i)(signature:\s*)\S+"),  # botocore.auth's "Signature:\n<hex>"
    re.compile(r"(?i)((?:access|secret)_key['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+"),
    re.compile(r"()\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids anywhere
    re.compile(r"(?i)(x-amz-(?:signature|credential|security-token)['\"]?\s*[:=]\s*['\"]?)"
               r"[^'\"&,}\s]+"),
    re.compile(r"(?i)(aws_(?:secret_access_key|access_key_id|session_token)['\"]?\s*[:=]\s*"
               r"['\"]?)[^'\",}\s]+"),
)


class RedactSecrets(logging.Filter):
    """Masks credentials in every log record that reaches the CLI's handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = redact(record.getMessage()), None
            if record.exc_info:  # a traceback's text goes through the same masks
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        except Exception:  # a record that cannot be formatted is dropped, never printed raw
            return False
        return True


def redact(text: str) -> str:
    """``text`` with authorization headers, SigV4 signatures and AWS keys masked."""
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(r"\1<redacted>", text)
    return text


def configure_logging(verbose: bool) -> None:
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(name)s: %(message)s"))
        handler.addFilter(RedactSecrets())
        logging.basicConfig(level=logging.DEBUG, handlers=[handler])
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        return
    warnings.simplefilter("ignore")  # numpy/nibabel warnings would break "one line"
    for name in ("", "nibabel", "aspects_client", "botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
