"""Every ```python block of README.md and docs/*.md runs as pasted.

Each block runs in a fresh interpreter (this venv's) against the session's real Triton
(``triton_oracle``), SeaweedFS S3 (``s3_server``) and DICOM Store SCP (``store_scp``), on the
phantom case that the DICOM tests use (``case``).  The blocks take their server and inputs
from environment variables with placeholder defaults, as README "Python API" says:
``ASPECTS_TRITON_URL``, ``AWS_ENDPOINT_URL_S3`` (+ the AWS credential variables),
``ASPECTS_SOURCE``, ``ASPECTS_SOURCES``, ``ASPECTS_ADC``, ``ASPECTS_DICOM``,
``ASPECTS_PACS``.  The test sets them; it never edits a block's text.

A block that is not meant to run (a fragment) is preceded, on the nearest non-blank line, by
``<!-- not run: REASON -->``.  ``NOT_RUN`` lists every such block by id (``FILE#N``, the N-th
python block of FILE), so an unmarked broken block fails, and marking one is a visible
change here too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON_INFO = frozenset({"python", "py", "python3"})
NOT_RUN_MARK = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.+?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
DOCS_BUCKET = "docs-examples"
BLOCK_TIMEOUT_S = 300

# Blocks marked "<!-- not run: ... -->" (id -> why). Today: none; every block runs.
NOT_RUN: dict[str, str] = {}


@dataclass(frozen=True)
class Block:
    """One fenced python block: where it is, its code (dedented) and why it is not run."""

    path: str
    index: int
    line: int
    code: str
    not_run: str | None

    @property
    def id(self) -> str:
        return f"{self.path}#{self.index}"


def _not_run_reason(lines: list[str], fence_at: int) -> str | None:
    """The reason of a ``<!-- not run: ... -->`` on the nearest non-blank line above."""
    for line in reversed(lines[:fence_at]):
        if line.strip():
            match = NOT_RUN_MARK.match(line)
            return match["reason"] if match else None
    return None


def _closing(lines: list[str], start: int, fence: str) -> int:
    """Index of the line closing the fence opened at ``start`` (same character, as long)."""
    for i in range(start + 1, len(lines)):
        match = FENCE.match(lines[i])
        if match is None or match["info"].strip():
            continue
        if match["fence"][0] == fence[0] and len(match["fence"]) >= len(fence):
            return i
    raise ValueError(f"unterminated code fence opened on line {start + 1}")


def python_blocks(text: str, path: str) -> list[Block]:
    """Every fenced block whose info string starts with python/py, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = _closing(lines, i, match["fence"])
        words = match["info"].split()
        if words and words[0].lower() in PYTHON_INFO:
            code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
            reason = _not_run_reason(lines, i)
            blocks.append(Block(path, len(blocks) + 1, i + 1, code, reason))
        i = end + 1
    return blocks


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md: the pages whose python blocks must run."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def all_blocks(root: Path = ROOT) -> list[Block]:
    """The python blocks of every page, ids relative to the repository root."""
    blocks: list[Block] = []
    for page in markdown_files(root):
        text = page.read_text(encoding="utf-8")
        blocks += python_blocks(text, page.relative_to(root).as_posix())
    return blocks


BLOCKS = all_blocks()
RUNNABLE = [block for block in BLOCKS if block.not_run is None]


# --- the extraction itself (no server) -------------------------------------------------------


def test_extraction_finds_python_blocks_and_not_run_marks() -> None:
    text = textwrap.dedent("""\
        intro
        ```python
        a = 1
        ```
        ```bash
        echo '```python'
        ```
        <!-- not run: a fragment -->

        ```py title="frag"
        b.c()
        ```
        - a list item:
          ```python
          if True:
              d = 2
          ```
        """)
    blocks = python_blocks(text, "x.md")
    assert [(b.id, b.line, b.not_run) for b in blocks] == [
        ("x.md#1", 2, None),
        ("x.md#2", 10, "a fragment"),
        ("x.md#3", 14, None),
    ]
    assert blocks[0].code == "a = 1\n" and blocks[2].code == "if True:\n    d = 2\n"
    with pytest.raises(ValueError, match="unterminated"):
        python_blocks("```python\nx = 1\n", "y.md")


def test_the_blocks_not_run_are_exactly_the_listed_ones() -> None:
    skipped = {block.id: block.not_run for block in BLOCKS if block.not_run is not None}
    assert sorted(skipped) == sorted(NOT_RUN), skipped  # the ids, hence the count (0 today)
    assert len(RUNNABLE) >= 5, [block.id for block in BLOCKS]  # the extractor found them


# --- every runnable block against the real servers -------------------------------------------


def _upload(s3_client, path: Path, key: str) -> str:
    s3_client.put_object(Bucket=DOCS_BUCKET, Key=key, Body=path.read_bytes())
    return f"s3://{DOCS_BUCKET}/{key}"


@pytest.fixture(scope="module")
def examples_env(triton_oracle, s3_server, s3_client, case, store_scp) -> dict[str, str]:
    """The environment the docs' examples read: the servers and the phantom case's inputs
    (DWI and ADC in S3, the DICOM folder on disk)."""
    _, root, folder, _ = case
    s3_client.create_bucket(Bucket=DOCS_BUCKET)
    dwi = [_upload(s3_client, root / "dwi.nii.gz", f"case-{n}/dwi.nii.gz") for n in (17, 18)]
    adc = _upload(s3_client, root / "adc.nii.gz", "case-17/adc.nii.gz")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ASPECTS_"))}
    return {
        **inherited,
        "ASPECTS_TRITON_URL": triton_oracle.server.grpc_url,
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "ASPECTS_SOURCE": dwi[0],
        "ASPECTS_SOURCES": " ".join(dwi),
        "ASPECTS_ADC": adc,
        "ASPECTS_DICOM": str(folder),
        "ASPECTS_PACS": store_scp.destination,
    }


@pytest.mark.integration
@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_block_runs_as_pasted(block: Block, examples_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=examples_env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    where = f"{block.path}:{block.line} (python block {block.index})"
    assert proc.returncode == 0, f"{where} failed:\n{proc.stdout}\n{proc.stderr}"
