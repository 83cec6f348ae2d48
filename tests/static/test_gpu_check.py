"""benchmarks/gpu_check.py without a GPU: --help, and the "not measured" result files (rows for
batch 1/8/16, each with a reason; the Markdown never shows a number for them)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_benchmarks import BENCH, _load


@pytest.fixture()
def gpu_check() -> Iterator:
    sys.path.insert(0, str(BENCH))
    yield _load(BENCH / "gpu_check.py")
    sys.path.remove(str(BENCH))


def test_help(gpu_check, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        gpu_check.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--checkpoint" in out and "--out" in out


def test_not_measured_without_a_gpu(gpu_check, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_check.shutil, "which", lambda _name: None)  # no nvidia-smi
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] is None
    for table in ("tensorrt_fp16", "ort_cuda_fp32"):
        assert set(result[table]) == {"1", "8", "16"}
        for row in result[table].values():
            assert row["status"] == "not measured" and row["reason"]
            assert "slices_per_s" not in row
    assert result["label_agreement"]["status"] == "not measured"
    md = out.with_suffix(".md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| batch ")]
    assert [r.split("|")[1].strip() for r in rows] == ["batch 1", "batch 8", "batch 16"]
    for r in rows:
        cells = [c.strip() for c in r.split("|")[2:-1]]
        assert all(c.startswith("not measured") for c in cells), r
        assert not any(re.search(r"\d", c.split("(")[0]) for c in cells), r
    assert "Label agreement" in md and "not measured" in md.split("Label agreement")[1]


def test_committed_result_is_not_measured_or_measured_on_a_gpu() -> None:
    result = json.loads((BENCH / "results" / "gpu_check.json").read_text())
    if result["backend"] is None:
        assert "not measured" in (BENCH / "results" / "gpu_check.md").read_text()
    else:
        assert all("slices_per_s" in r for r in result["tensorrt_fp16"].values())
