"""Shared fixtures: phantoms (session-scoped, cached) and a temp-dir leak guard."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def phantom_512():
    """The default phantom: 512x512x20 RAS, 5 mm slices, seed 3 (exact labels)."""
    from aspects_synth import make_phantom

    return make_phantom(seed=3)


@pytest.fixture(scope="session")
def phantom_small():
    """A small non-square phantom (160x192x9) for quick tests."""
    from aspects_synth import make_phantom

    return make_phantom(seed=11, in_plane=(160, 192), n_slices=9)


@pytest.fixture
def no_temp_files(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Iterator[Path]:
    """Point the process temp dir (tempfile + $TMPDIR) at a fresh empty directory and fail
    the test if anything is left in it afterwards."""
    fresh = tmp_path_factory.mktemp("tmpguard")
    monkeypatch.setenv("TMPDIR", str(fresh))
    monkeypatch.setattr(tempfile, "tempdir", str(fresh))
    yield fresh
    left = sorted(os.listdir(fresh))
    assert not left, f"temporary files left behind: {left}"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real SeaweedFS S3 gateway on free 127.0.0.1 ports, with SigV4 credentials."""
    from aspects_devkit.local_s3 import LocalS3

    server = LocalS3().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server):
    from aspects_client.storage import S3Settings, make_s3_client

    return make_s3_client(
        S3Settings(
            endpoint_url=s3_server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
        )
    )


# --- CI cannot pass hollow: skips are counted, and in CI only GPU tests may skip --------

ALLOWED_SKIP_MARKERS = ("gpu",)  # nothing else can be missing on a CI machine
SUMMARY_MARKERS = ("gpu", "integration", "slow")


def strict_skips() -> bool:
    """True in CI (``CI=true``) or with ``ASPECTS_STRICT_SKIPS=1``."""
    flag = os.environ.get("ASPECTS_STRICT_SKIPS") or os.environ.get("CI") or ""
    return flag.lower() in ("1", "true", "yes")


_OUTCOMES: dict[str, dict[str, str]] = {}  # nodeid -> {"outcome":..., "markers":...}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    markers = ",".join(sorted(m for m in SUMMARY_MARKERS if m in report.keywords))
    entry = _OUTCOMES.setdefault(report.nodeid, {"outcome": "passed", "markers": markers})
    if report.skipped:
        entry["outcome"] = "skipped"
        entry["reason"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
    elif report.failed:
        entry["outcome"] = "failed"


def unexpected_skips() -> list[str]:
    """Node ids of skipped tests that carry none of ALLOWED_SKIP_MARKERS."""
    return [
        f"{nodeid} ({entry.get('reason', '')})"
        for nodeid, entry in _OUTCOMES.items()
        if entry["outcome"] == "skipped"
        and not any(m in entry["markers"].split(",") for m in ALLOWED_SKIP_MARKERS)
    ]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if strict_skips() and unexpected_skips() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config) -> None:
    rows: dict[str, dict[str, int]] = {}
    for entry in _OUTCOMES.values():
        for marker in entry["markers"].split(",") if entry["markers"] else ["unmarked"]:
            counts = rows.setdefault(marker, {"passed": 0, "failed": 0, "skipped": 0})
            counts[entry["outcome"]] += 1
    if not rows:
        return
    terminalreporter.section("tests per marker")
    for marker in sorted(rows):
        c = rows[marker]
        terminalreporter.line(
            f"{marker:12s} passed {c['passed']:5d}  failed {c['failed']:4d}  "
            f"skipped {c['skipped']:4d}"
        )
    bad = unexpected_skips()
    if bad:
        strict = strict_skips()
        verdict = "FAIL (strict: CI or ASPECTS_STRICT_SKIPS=1)" if strict else "allowed here"
        terminalreporter.section(f"unexpected skips: {len(bad)} — {verdict}", red=strict_skips())
        for line in bad:
            terminalreporter.line(f"  {line}")
