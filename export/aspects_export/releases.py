"""Immutable, versioned model-repository releases in a store (S3 or a directory).

A release is one complete Triton model repository under ``<store>/releases/<release id>/``,
plus its manifest ``RELEASE.json`` (every file's size and sha256, the unet's provenance, the
TensorRT engine's cache key), written LAST.  Hence:

- a release is never overwritten: ``publish`` refuses an id that has any object already;
- a half-uploaded release has no manifest, so ``fetch`` refuses it (and ``list_releases``
  shows it as incomplete); a pod never loads half a repository;
- ``fetch`` downloads into a temporary directory beside the target, checks every file
  against the manifest (and the engine's key against the serving Triton release and this
  node's GPU) and only then renames it into place;
- rollback is serving an older id again (docs/deployment.md, "Upgrade and rollback").

Store URLs: ``s3://bucket/prefix`` (endpoint and credentials from boto3's standard chain,
e.g. ``AWS_ENDPOINT_URL_S3``) or a local directory path (compose, tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aspects_client import contract
from aspects_export.errors import ExportError

RELEASES_DIR = "releases"
MANIFEST_FILE = "RELEASE.json"
MANIFEST_VERSION = 1
ENGINE_KEY_FILE = "model.plan.json"  # beside unet/1/model.plan (repository.write_repository)
RELEASE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # fullmatch: no trailing \n
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# TensorRT inside each NGC Triton release the deployment may pin (its release notes /
# frameworks support matrix).  An engine serialised by another TensorRT does not load.
SERVING_TENSORRT: dict[str, str] = {"24.10": "10.5.0"}


class ReleaseError(ExportError):
    """A release is missing, incomplete, corrupt, already exists or does not fit this node."""


# --- stores ---------------------------------------------------------------------------------


class DirStore:
    """Releases under a local directory (``root/releases/<id>/...``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def read(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def put_file(self, key: str, source: Path) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_new(source, target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, target)  # fails if target exists: never replaces
        os.unlink(tmp)

    def download(self, key: str, target: Path) -> None:
        shutil.copyfile(self.root / key, target)


class S3Store:
    """Releases under ``s3://bucket/prefix/releases/<id>/...``."""

    def __init__(self, url: str, s3: Any = None) -> None:
        m = re.match(r"^s3://([^/]+)/?(.*)$", url)
        if not m:
            raise ReleaseError(f"{url!r} is not an s3://bucket/prefix URL")
        self.bucket, prefix = m.group(1), m.group(2).strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = url.rstrip("/")
        if s3 is None:
            import boto3

            s3 = boto3.client("s3")
        self.s3 = s3

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            out += [o["Key"][len(self.prefix) :] for o in page.get("Contents", [])]
        return sorted(out)

    def read(self, key: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        except Exception as exc:  # botocore ClientError 404 on some servers
            if "404" in str(exc) or "NoSuchKey" in str(exc):
                return None
            raise

    def put_file(self, key: str, source: Path) -> None:
        self.s3.upload_file(str(source), self.bucket, self.prefix + key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def download(self, key: str, target: Path) -> None:
        self.s3.download_file(self.bucket, self.prefix + key, str(target))


Store = DirStore | S3Store


def open_store(url: str | Path, s3: Any = None) -> Store:
    """``s3://bucket/prefix`` -> S3Store; anything else is a local directory."""
    text = str(url)
    return S3Store(text, s3) if text.startswith("s3://") else DirStore(Path(text))


# --- manifests ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    from aspects_synth.atlas import sha256_file

    return sha256_file(path)


def repository_files(repo: Path) -> Iterator[Path]:
    """Every file of a model repository, sorted; ``__pycache__`` is skipped."""
    for path in sorted(repo.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path


def _unet_checkpoint(repo: Path) -> str:
    """The ``checkpoint`` parameter of the generated unet config ("" when absent)."""
    from aspects_export.repository import PARAM_CHECKPOINT, parse_config

    config = repo / contract.UNET_MODEL / "config.pbtxt"
    if not config.is_file():
        return ""
    params = parse_config(config).parameters
    return params[PARAM_CHECKPOINT].string_value if PARAM_CHECKPOINT in params else ""


def build_manifest(repo: Path, release_id: str, *, triton_release: str) -> dict[str, Any]:
    """The manifest of the model repository ``repo`` as release ``release_id``."""
    repo = Path(repo)
    if not (repo / contract.ENSEMBLE_MODEL / "config.pbtxt").is_file():
        raise ReleaseError(
            f"{repo} is not an ASPECTS model repository (no {contract.ENSEMBLE_MODEL}/"
            "config.pbtxt); write one with 'aspects-export repository'"
        )
    files = {
        p.relative_to(repo).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
        for p in repository_files(repo)
    }
    dirs = sorted(
        d.relative_to(repo).as_posix()
        for d in repo.glob("*/[0-9]*")
        if d.is_dir() and not any(d.iterdir())
    )
    key_file = repo / contract.UNET_MODEL / "1" / ENGINE_KEY_FILE
    return {
        "manifest_version": MANIFEST_VERSION,
        "release": release_id,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "triton_release": triton_release,
        "checkpoint": _unet_checkpoint(repo),
        "engine_key": json.loads(key_file.read_text()) if key_file.is_file() else None,
        "files": files,
        "empty_dirs": dirs,
    }


def new_release_id(repo: Path, now: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<12 hex of the unet's file hash>``: sorts by time, names the model."""
    unet_dir = Path(repo) / contract.UNET_MODEL / "1"
    found = [unet_dir / n for n in ("model.plan", "model.onnx") if (unet_dir / n).is_file()]
    if not found:
        raise ReleaseError(f"{unet_dir} has neither model.plan nor model.onnx: not a repository")
    model = found[0]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{stamp}-{_sha256(model)[:12]}"


def _check_id(release_id: str) -> str:
    if not isinstance(release_id, str) or not RELEASE_ID_RE.fullmatch(release_id):
        raise ReleaseError(
            f"release id {release_id!r} is not valid: letters, digits, '.', '_', '-' only "
            "(as printed by 'aspects-export release publish' or 'release list')"
        )
    return release_id


# --- publish / list / fetch -----------------------------------------------------------------


def publish(
    repo: Path,
    store: Store,
    *,
    release_id: str | None = None,
    triton_release: str = "24.10",
) -> dict[str, Any]:
    """Upload ``repo`` as a NEW release (manifest last); returns the manifest.  Refuses an id
    under which any object exists already: a published release is never changed."""
    repo = Path(repo)
    release_id = _check_id(release_id or new_release_id(repo))
    manifest = build_manifest(repo, release_id, triton_release=triton_release)
    # an engine the serving Triton's TensorRT cannot load is never published
    check_engine_key(manifest["engine_key"], triton_release=triton_release, gpu_name=None)
    base = f"{RELEASES_DIR}/{release_id}/"
    if store.keys(base):
        raise ReleaseError(
            f"release {release_id} already exists in {store.url}; releases are immutable: "
            "publish under a new id"
        )
    for rel in manifest["files"]:
        store.put_file(base + rel, repo / rel)
    for rel in manifest["empty_dirs"]:  # Triton needs the ensemble's empty version directory
        store.put_bytes(f"{base}{rel}/.keep", b"")
    store.put_bytes(base + MANIFEST_FILE, json.dumps(manifest, indent=2).encode() + b"\n")
    return manifest


@dataclass(frozen=True)
class ReleaseInfo:
    """One release in a store: complete (manifest present) or not."""

    release_id: str
    complete: bool
    created_utc: str = ""
    checkpoint: str = ""
    engine_gpu: str = ""
    corrupt: str = ""  # why its manifest cannot be used (then complete is False)


def list_releases(store: Store) -> list[ReleaseInfo]:
    """Every release id under ``releases/``, oldest first (ids sort by time); a release whose
    manifest is unusable is listed with ``corrupt`` set, and the others still are."""
    if isinstance(store, DirStore) and not store.root.is_dir():
        raise ReleaseError(f"the store {store.url} does not exist; give the directory (or "
                           "s3://bucket/prefix) that 'release publish' wrote to")
    ids: dict[str, bool] = {}
    for key in store.keys(f"{RELEASES_DIR}/"):
        parts = key.split("/")
        if len(parts) >= 3:
            ids.setdefault(parts[1], False)
            if parts[2] == MANIFEST_FILE and len(parts) == 3:
                ids[parts[1]] = True
    out = []
    for rid in sorted(ids):
        if not ids[rid]:
            out.append(ReleaseInfo(rid, False))
            continue
        try:
            m = parse_manifest(store.read(f"{RELEASES_DIR}/{rid}/{MANIFEST_FILE}") or b"", rid)
        except ReleaseError as exc:
            out.append(ReleaseInfo(rid, False, corrupt=str(exc)))
            continue
        key = m.get("engine_key") or {}
        out.append(
            ReleaseInfo(rid, True, m.get("created_utc", ""), m.get("checkpoint", ""),
                        key.get("gpu_name", ""))
        )
    return out


def read_manifest(store: Store, release_id: str) -> dict[str, Any]:
    """The manifest of a complete release; ReleaseError for a missing or incomplete one."""
    base = f"{RELEASES_DIR}/{_check_id(release_id)}/"
    raw = store.read(base + MANIFEST_FILE)
    if raw is None:
        state = "incomplete (upload unfinished or failed)" if store.keys(base) else "missing"
        raise ReleaseError(
            f"release {release_id} in {store.url} is {state}: it has no {MANIFEST_FILE}; "
            "serve a complete release ('aspects-export release list')"
        )
    return parse_manifest(raw, release_id, where=f"{base}{MANIFEST_FILE} in {store.url}")


def safe_relative(rel: object) -> str | None:
    """``rel`` when it is a plain relative POSIX path inside a release, else None."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return None
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    return rel


def parse_manifest(raw: bytes, release_id: str, *, where: str = "") -> dict[str, Any]:
    """The manifest of ``release_id`` from its bytes, every entry checked: valid JSON, this
    release's id, at least one file, each a safe relative path with an integer size and a
    sha256, and safe relative ``empty_dirs``.  ReleaseError (the release is corrupt) else."""
    where = where or f"the manifest of {release_id}"
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{where} is not valid JSON ({exc}): the release is corrupt; "
                           "serve another release or publish a new one") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("release") != release_id:
        raise ReleaseError(f"{where} is not this release's manifest: the release is corrupt")
    if not files:
        raise ReleaseError(f"{where} lists no files: the release is corrupt")
    for rel, meta in files.items():
        ok = isinstance(meta, dict) and type(meta.get("bytes")) is int and meta["bytes"] >= 0
        if safe_relative(rel) is None or not ok or not SHA256_RE.fullmatch(
                str(meta.get("sha256", ""))):
            raise ReleaseError(f"{where}: the entry {rel!r} is not a safe relative path with "
                               "'bytes' and 'sha256': the release is corrupt")
    dirs = manifest.get("empty_dirs", [])
    if not isinstance(dirs, list) or any(safe_relative(d) is None for d in dirs):
        raise ReleaseError(f"{where}: empty_dirs {dirs!r} holds an unsafe path: the release "
                           "is corrupt")
    return manifest


def check_engine_key(
    key: dict[str, Any] | None, *, triton_release: str, gpu_name: str | None
) -> None:
    """Refuse an engine built for another TensorRT than the serving release's or another GPU.

    ``gpu_name`` None skips the GPU check (no NVML here: the caller says why)."""
    if key is None:
        return
    expected = os.environ.get("ASPECTS_SERVING_TENSORRT") or SERVING_TENSORRT.get(triton_release)
    if expected is None:
        raise ReleaseError(
            f"unknown Triton release {triton_release!r}: its TensorRT version is not in "
            "SERVING_TENSORRT; set ASPECTS_SERVING_TENSORRT to it"
        )
    built = str(key.get("tensorrt_version", ""))
    if built.split(".")[:3] != expected.split(".")[:3]:
        raise ReleaseError(
            f"the release's TensorRT engine was built with TensorRT {built or '?'}, but Triton "
            f"{triton_release} runs TensorRT {expected}: it would not load; rebuild the engine "
            f"with the exporter image of release {triton_release} (engine-build Job)"
        )
    if gpu_name is not None and key.get("gpu_name") != gpu_name:
        raise ReleaseError(
            f"the release's TensorRT engine was built on {key.get('gpu_name')!r}, this node has "
            f"{gpu_name!r}: run the engine-build Job of this GPU type and serve its release"
        )


def fetch(
    store: Store,
    release_id: str,
    target: Path,
    *,
    triton_release: str = "24.10",
    gpu_name: str | None = None,
) -> dict[str, Any]:
    """Download release ``release_id`` into ``target`` (absent or empty), verified against its
    manifest; the engine's key is checked before anything is downloaded.  Returns the manifest.
    ``target`` appears complete or not at all."""
    target = Path(target)
    manifest = read_manifest(store, release_id)
    check_engine_key(
        manifest.get("engine_key"), triton_release=triton_release, gpu_name=gpu_name
    )
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        raise ReleaseError(f"{target} exists and is not an empty directory; fetch into a new one")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.fetch-"))
    try:
        base = f"{RELEASES_DIR}/{release_id}/"
        for rel, meta in manifest["files"].items():  # safe paths: parse_manifest
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            store.download(base + rel, path)
            verify_file(path, meta, f"{release_id}/{rel}")
        for rel in manifest.get("empty_dirs", []):
            (staging / rel).mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def verify_file(path: Path, meta: dict[str, Any], label: str) -> None:
    """Size and sha256 of ``path`` must equal the manifest entry ``meta``."""
    size = path.stat().st_size
    if size != meta["bytes"] or _sha256(path) != meta["sha256"]:
        raise ReleaseError(
            f"{label} does not match the release manifest ({size} bytes, expected "
            f"{meta['bytes']}): the store's copy is corrupt or was changed; publish a new release"
        )


def _copy_new(source: Path, target: Path) -> None:
    """Copy to a new file (never replace, never follow a link at ``target``)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
