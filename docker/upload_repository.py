"""Upload a model repository directory to ``s3://bucket/prefix`` (the engine-build Job).

    python3 upload_repository.py /models s3://aspects-models/triton-24.10/NVIDIA-L4

Mirrors the directory: every file is uploaded, objects under the prefix that are no longer in
the directory are deleted, so Triton never sees a stale engine beside a new config.  Endpoint,
region and credentials come from boto3's standard chain (AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, or an IAM role).  No secret is
printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse


def parse_target(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, "prefix/") ; the prefix may be empty."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def upload_repository(local: Path, url: str, client=None) -> list[str]:
    """Mirror ``local`` to ``url``; returns the uploaded keys (sorted)."""
    import boto3

    local = Path(local)
    if not (local / "aspects" / "config.pbtxt").is_file():
        raise ValueError(f"{local} is not an ASPECTS model repository (no aspects/config.pbtxt)")
    bucket, prefix = parse_target(url)
    s3 = client or boto3.client("s3")
    keys = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(local).as_posix()
        s3.upload_file(str(path), bucket, key)
        keys.append(key)
    # Triton needs the (empty) version directory of the ensemble: keep a marker object.
    for version_dir in sorted(p for p in local.glob("*/[0-9]*") if p.is_dir()):
        if not any(version_dir.iterdir()):
            key = prefix + version_dir.relative_to(local).as_posix() + "/"
            s3.put_object(Bucket=bucket, Key=key, Body=b"")
            keys.append(key)
    wanted = set(keys)
    stale = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        stale += [o["Key"] for o in page.get("Contents", []) if o["Key"] not in wanted]
    for i in range(0, len(stale), 1000):
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in stale[i : i + 1000]]}
        )
    return sorted(keys)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: upload_repository.py REPOSITORY_DIR s3://bucket/prefix", file=sys.stderr)
        return 2
    try:
        keys = upload_repository(Path(argv[0]), argv[1])
    except Exception as exc:  # one line, no traceback (it could hold request details)
        print(f"upload_repository: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"upload_repository: {len(keys)} objects under {argv[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
