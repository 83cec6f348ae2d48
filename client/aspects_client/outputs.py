"""Output files that are safe for a hospital's file system.

Rules (documented in docs/errors.md, tested in tests/unit/test_outputs.py):

* **Paths are planned and checked before any work.**  ``plan_outputs`` turns the CLI's
  ``-o`` (and optional ``--labels`` / ``--overlay`` paths) into one set of files per source;
  ``check_plan`` refuses, with OutputConflictError (CLI exit 2), an output that resolves to
  an input or to another output (same real path or same inode), a final path component
  that is a symbolic link, a directory or a device, and an existing file unless
  ``overwrite`` was asked for.
* **Writes are atomic and never follow a link.**  Each file is first written to a temporary
  file created exclusively (``O_CREAT | O_EXCL``, unique name, mode 0o600 until it is
  renamed) in the target's own directory, flushed and fsynced, then renamed over the
  target: a reader sees the old file or the whole new one, never a partial one; a link
  planted at the target is replaced, never written through.
* **All or nothing per source.**  ``commit`` stages every file of a source first and
  renames them only when all are staged; if a rename fails, the files already renamed are
  removed (and any file they replaced is restored from a hard-link backup).  No temporary
  file survives any failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import CancelledError, OutputConflictError, OutputError

JSON_SUFFIX = ".json"
LABELS_SUFFIX = "_labels.nii.gz"
OVERLAY_SUFFIX = "_overlay.png"
LESION_SUFFIX = "_lesion.nii.gz"
# viewer files (aspects_client.viewer_files): the 20-label map and its colour tables
REGIONS_SUFFIX = "_regions"
REGIONS_NIFTI_SUFFIX = REGIONS_SUFFIX + ".nii.gz"
SLICER_SUFFIX = REGIONS_SUFFIX + ".ctbl"
ITKSNAP_SUFFIX = REGIONS_SUFFIX + ".itksnap.txt"
TSV_SUFFIX = REGIONS_SUFFIX + ".tsv"
VIEWER_SUFFIXES = (REGIONS_NIFTI_SUFFIX, SLICER_SUFFIX, ITKSNAP_SUFFIX, TSV_SUFFIX)
# DICOM outputs (aspects_client.dicom.output)
SEG_SUFFIX = "_seg.dcm"
REPORT_SUFFIX = "_report.dcm"
CAPTURE_SUFFIX = "_overlay.dcm"
_NIFTI_SUFFIXES = (".nii.gz", ".nii", ".gz")
_FILE_MODE = 0o644


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not thread-safe


@dataclass(frozen=True)
class SourceOutputs:
    """The files one source produces: contours JSON always, the others if asked."""

    source: str
    json: Path
    labels: Path | None = None
    overlay: Path | None = None
    lesion: Path | None = None
    viewer: tuple[Path, ...] = ()  # VIEWER_SUFFIXES, in that order
    seg: Path | None = None
    report: Path | None = None
    capture: Path | None = None

    def paths(self) -> list[Path]:
        single = (self.json, self.labels, self.overlay, self.lesion)
        dicom = (self.seg, self.report, self.capture)
        return [p for p in (*single, *self.viewer, *dicom) if p is not None]


def plan_outputs(
    sources: Sequence[str],
    output: str,
    *,
    labels: bool | str = False,
    overlay: bool | str = False,
    lesion: bool | str = False,
    viewer: bool = False,
    seg: bool | str = False,
    report: bool | str = False,
    capture: bool | str = False,
) -> list[SourceOutputs]:
    """Where each source's outputs go.

    One source: ``output`` is the contours JSON file exactly as given (any name), unless it
    ends with ``/`` or is an existing directory.  Several sources: ``output`` must be a
    directory (existing, or ending with ``/``); each source writes ``<stem>.json``,
    ``<stem>_labels.nii.gz``, ``<stem>_overlay.png`` (``<stem>_lesion.nii.gz``) there.
    ``labels`` / ``overlay`` / ``lesion`` / ``seg`` / ``report`` / ``capture``: False
    (not written), True (the derived name) or an explicit path (one source only);
    ``viewer``: the four viewer files (``VIEWER_SUFFIXES``) beside the JSON.
    """
    if not output:
        raise OutputConflictError("-o/--output is empty; give a JSON file or a directory/")
    out = Path(output)
    as_dir = output.endswith(("/", os.sep)) or out.is_dir()
    # the optional files by their CLI option's name (--labels, ...), in the options' order
    asked = {
        "labels": labels,
        "overlay": overlay,
        "lesion": lesion,
        "seg": seg,
        "report": report,
        "capture": capture,
    }
    if len(sources) > 1:
        _check_several_sources(len(sources), output, as_dir, asked)
    return [_source_outputs(source, out, as_dir, asked, viewer) for source in sources]


def _check_several_sources(
    n_sources: int, output: str, as_dir: bool, asked: Mapping[str, bool | str]
) -> None:
    """OutputConflictError when several sources get one explicit path or no directory."""
    for field, value in asked.items():
        if isinstance(value, str):
            name = f"--{field}"
            raise OutputConflictError(
                f"{name} PATH names one file, but {n_sources} sources were given; "
                f"use {name} without a path (files go into the -o directory)"
            )
    if not as_dir:
        raise OutputConflictError(
            f"-o {printable(output)}: {n_sources} sources need an output directory; "
            "give an existing directory or a path ending in '/'"
        )


def _source_outputs(
    source: str, out: Path, as_dir: bool, asked: Mapping[str, bool | str], viewer: bool
) -> SourceOutputs:
    """One source's files: ``<stem>*`` in the directory ``out``, else beside the JSON ``out``."""
    if as_dir:
        stem = source_stem(source)
        json_path = out / f"{stem}{JSON_SUFFIX}"
        base = out / stem
    else:
        json_path = out
        base = out.with_suffix("") if out.suffix else out
    return SourceOutputs(
        source=source,
        json=json_path,
        labels=_optional(asked["labels"], base, LABELS_SUFFIX),
        overlay=_optional(asked["overlay"], base, OVERLAY_SUFFIX),
        lesion=_optional(asked["lesion"], base, LESION_SUFFIX),
        viewer=tuple(_optional(True, base, x) for x in VIEWER_SUFFIXES) if viewer else (),
        seg=_optional(asked["seg"], base, SEG_SUFFIX),
        report=_optional(asked["report"], base, REPORT_SUFFIX),
        capture=_optional(asked["capture"], base, CAPTURE_SUFFIX),
    )


def _optional(value: bool | str, base: Path, suffix: str) -> Path | None:
    if isinstance(value, str):
        if not value:
            raise OutputConflictError(f"an empty output path was given for the {suffix} file")
        return Path(value)
    return base.with_name(base.name + suffix) if value else None


def source_stem(source: str) -> str:
    """The output file stem of a source: its last path segment without .nii(.gz) (or .zip);
    a DICOM folder or S3 prefix ending in '/' gives its last non-empty segment.

    Refuses what cannot name a file inside the output directory (empty, ``.``, ``..``)."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    for ext in (*_NIFTI_SUFFIXES, ".zip"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    stem = "".join("_" if _is_unsafe_char(c) else c for c in name)
    if stem in ("", ".", ".."):
        raise OutputConflictError(
            f"cannot name outputs after {printable(source)!r}; segment it alone with -o FILE"
        )
    return stem


def _is_unsafe_char(c: str) -> bool:
    return c in "/\\\x00" or unicodedata.category(c) in ("Cc", "Cf")


def check_plan(
    plans: Sequence[SourceOutputs], inputs: Iterable[str | Path], *, overwrite: bool = False
) -> None:
    """Refuse (OutputConflictError) before any work: an output that is an input or another
    output, a link/directory/device at an output path, an existing output without
    ``overwrite``."""
    input_keys = {_identity(Path(p)): str(p) for p in inputs if _is_local(p)}
    seen: dict[object, Path] = {}
    for plan in plans:
        for path in plan.paths():
            key = _identity(path)
            if key in input_keys:
                raise OutputConflictError(
                    f"output {printable(str(path))} is the input "
                    f"{printable(input_keys[key])}; choose another output path"
                )
            if key in seen:
                raise OutputConflictError(
                    f"two outputs resolve to the same file {printable(str(path))} "
                    f"(also {printable(str(seen[key]))}); choose distinct paths"
                )
            seen[key] = path
            check_target(path, overwrite=overwrite)


def _is_local(source: str | Path) -> bool:
    text = str(source)
    return bool(text) and "://" not in text


def _identity(path: Path) -> object:
    """(device, inode) of an existing file (catches hard links), else its real path."""
    with contextlib.suppress(OSError):
        st = path.stat()
        return (st.st_dev, st.st_ino)
    return os.path.realpath(path)


def check_target(path: Path, *, overwrite: bool) -> None:
    """An output path may be new, or an existing regular file when ``overwrite``."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputConflictError(f"output {printable(str(path))}: {exc.strerror}") from None
    shown = printable(str(path))
    if stat.S_ISLNK(st.st_mode):
        raise OutputConflictError(
            f"output {shown} is a symbolic link; give the real path (links are never followed)"
        )
    if stat.S_ISDIR(st.st_mode):
        raise OutputConflictError(f"output {shown} is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise OutputConflictError(f"output {shown} is not a regular file (a device or a pipe)")
    if not overwrite:
        raise OutputConflictError(f"output {shown} exists; pass --overwrite to replace it")


# --- writing --------------------------------------------------------------------------

_live_temps: set[Path] = set()  # staged files not yet renamed (removed on every exit path)
_live_lock = threading.Lock()


def commit(
    files: Mapping[Path, bytes],
    *,
    overwrite: bool = False,
    cancel: threading.Event | None = None,
) -> list[Path]:
    """Write every file or none: stage all, then rename all; roll back on any failure.

    Raises OutputConflictError (a target appeared or became a link/directory meanwhile),
    OutputError (disk full, permission denied, ...) or CancelledError (``cancel`` set
    before the renames); in every case nothing of this call is left behind.
    """
    staged: list[tuple[Path, Path]] = []
    placed: list[tuple[Path, Path | None]] = []  # (target, backup of what it replaced)
    current: Path | None = None  # the output being written: errors name it, not a temporary
    try:
        for target, data in files.items():
            current = target
            staged.append((target, _stage(target, data)))
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled before the outputs were written; nothing written")
        for target, temp in staged:
            current = target
            check_target(target, overwrite=overwrite)
            backup = _backup(target) if overwrite else None
            try:
                _place(temp, target, overwrite=overwrite)
            except BaseException:
                _discard(backup)
                raise
            placed.append((target, backup))
        for _, backup in placed:
            _discard(backup)
        return [target for target, _ in staged]
    except BaseException as exc:
        for target, backup in reversed(placed):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    target.unlink()
        if isinstance(exc, OSError):
            where = printable(str(current or getattr(exc, "filename", "") or ""))
            raise OutputError(
                f"cannot write {where or 'an output'}: {exc.strerror or exc}; "
                "nothing of this source was written"
            ) from None
        raise
    finally:
        for _, temp in staged:
            _discard(temp)


def write_atomic(path: str | Path, data: bytes, *, overwrite: bool = True) -> Path:
    """One file, atomically (see ``commit``); for programs that own their output folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    commit({path: data}, overwrite=overwrite)
    return path


def _stage(target: Path, data: bytes) -> Path:
    """Write data to a new, exclusively created temporary file beside target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name[:80]}.", suffix=".partial", dir=target.parent
    )
    temp = Path(name)
    with _live_lock:
        _live_temps.add(temp)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, _FILE_MODE & ~_UMASK)
    except BaseException:
        _discard(temp)
        raise
    return temp


def _place(temp: Path, target: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(temp, target)  # replaces a link itself, never what it points to
        return
    try:
        os.link(temp, target)  # fails if the target appeared meanwhile: no clobbering
    except FileExistsError:
        raise OutputConflictError(
            f"output {printable(str(target))} appeared while writing; pass --overwrite"
        ) from None
    except OSError:  # no hard links on this file system: check, then rename
        check_target(target, overwrite=False)
        os.replace(temp, target)


def _backup(target: Path) -> Path | None:
    """A hard link to the file a rename will replace, so a failed commit can restore it."""
    if not target.exists():
        return None
    name = target.parent / f".{target.name[:80]}.{secrets.token_hex(8)}.backup"
    try:
        os.link(target, name)
    except OSError:
        return None
    backup = Path(name)
    with _live_lock:
        _live_temps.add(backup)
    return backup


def _discard(path: Path | None) -> None:
    if path is None:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    with _live_lock:
        _live_temps.discard(path)


def discard_all_temps() -> None:
    """Remove every staged file still on disk (called on interrupt before the process exits)."""
    with _live_lock:
        temps = list(_live_temps)
    for temp in temps:
        _discard(temp)


# --- text for a terminal ----------------------------------------------------------------


def printable(text: str) -> str:
    """Text safe to print on one terminal line: control and format characters (newlines,
    escape sequences, bidi overrides) are shown as Python escapes (``\\x1b``, ``\\u202e``)."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
        else c
        for c in text
    )
