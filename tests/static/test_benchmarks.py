"""benchmarks/: every script imports and answers ``--help`` (no server, no measurement); the
README's tables are exactly what ``benchmarks/report.py`` makes of the committed result files
(so a hand edit of a figure fails here); the benchmark code stays small."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .helpers import ROOT

BENCH = ROOT / "benchmarks"
LIBRARIES = ("harness.py", "registration.py")  # imported by the scripts, no command line
SCRIPTS = sorted(p for p in BENCH.rglob("*.py") if p.name not in LIBRARIES)
MAX_LINES = 4440  # benchmarks/**/*.py: 4,856 before the harness, 3,724 after, +scoring.py,
#                   + gpu_check.py (231 lines), + cpu_runtime.py (119 lines, issue 15),
#                   + provenance and stale marks (issue 22): 4,448; options and cases as data,
#                   functions <= 60 lines: 4,438 (benchmarks/*.py 3,508, perf_analyzer/ 930)


@pytest.fixture(autouse=True)
def _benchmarks_importable() -> Iterator[None]:
    """As ``python benchmarks/NAME.py`` does: ``benchmarks/`` first on ``sys.path``."""
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_script_is_found() -> None:
    names = {str(p.relative_to(BENCH)) for p in SCRIPTS}
    assert names >= {"accuracy.py", "client_prep.py", "end_to_end.py", "input_size.py",
                     "report.py", "triton_cpu.py", "perf_analyzer/run.py",
                     "perf_analyzer/summarize.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(BENCH)))
def test_script_imports_and_answers_help(script: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        _load(script).main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:")
    if script.name not in ("report.py", "run.py", "summarize.py"):
        assert "--out" in out and "--output" in out  # the result file's option, as documented


def test_registration_imports() -> None:
    import SimpleITK  # noqa: F401  (the [bench] extra: scripts/setup_envs.sh installs it)

    assert callable(_load(BENCH / "registration.py").register_atlas)


def test_readme_tables_are_generated_from_the_result_files() -> None:
    report = _load(BENCH / "report.py")
    text = report.README.read_text(encoding="utf-8")
    blocks = {m.group(2) for m in report.BLOCK.finditer(text)}
    assert blocks == set(report.TABLES), "every generated table has its block in the README"
    assert report.render(text) == text, (
        "benchmarks/README.md disagrees with benchmarks/results/: run "
        "`.venv/bin/python benchmarks/report.py` (never edit the figures by hand)")


def test_every_result_records_what_it_measured() -> None:
    """Every result file names the commit, the contract version and the network (checkpoint,
    weights sha256, the measured unet.onnx's sha256 where an ONNX file was measured)."""
    import json

    results = sorted((BENCH / "results").glob("*.json"))
    assert len(results) >= 10
    for path in results:
        prov = json.loads(path.read_text()).get("provenance")
        assert isinstance(prov, dict), f"{path.name} records no provenance"
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["commit"]), (path.name, prov)
        assert prov["contract_version"], path.name
        net = prov["network"]
        if net is not None:
            assert set(net) >= {"checkpoint", "weights_sha256", "unet_onnx_sha256"}, path.name
            for key in ("weights_sha256", "unet_onnx_sha256"):
                assert net[key] is None or re.fullmatch(r"[0-9a-f]{64}", net[key]), path.name


@pytest.mark.parametrize("readme", ["README.md", "benchmarks/README.md"])
def test_no_stale_figure_is_shown_unmarked(readme: str) -> None:
    """A table of figures measured on another network or contract carries the stale mark,
    and a current one does not."""
    report = _load(BENCH / "report.py")
    text = (ROOT / readme).read_text(encoding="utf-8")
    for m in report.BLOCK.finditer(text):
        stale = report.stale_reasons(m.group(2))
        assert (report.STALE_MARK in m.group(0)) == bool(stale), (readme, m.group(2), stale)


def test_the_report_marks_a_result_of_another_network_or_contract(tmp_path: Path) -> None:
    import json
    import shutil

    report = _load(BENCH / "report.py")
    results = tmp_path / "results"
    shutil.copytree(BENCH / "results", results)
    block = "<!-- table:end_to_end -->\n<!-- /table:end_to_end -->"
    path = results / "end_to_end.json"
    data = json.loads(path.read_text())
    data["provenance"] = {"commit": "0" * 40, "contract_version": report.harness
                          .current_identity()["contract_version"],
                          "network": report.harness.network_of("demo")}
    path.write_text(json.dumps(data))
    assert report.STALE_MARK not in report.render(block, results)
    data["provenance"]["network"] = report.harness.network_of("untrained")
    path.write_text(json.dumps(data))
    assert "another network (untrained" in report.render(block, results).replace("\n", " ")
    data["provenance"] = {**data["provenance"], "contract_version": "0",
                          "network": report.harness.network_of("demo")}
    path.write_text(json.dumps(data))
    assert "under contract 0" in report.render(block, results).replace("\n", " ")
    del data["provenance"]
    path.write_text(json.dumps(data))
    assert report.STALE_MARK in report.render(block, results)


def test_markdown_tables() -> None:
    harness = _load(BENCH / "harness.py")
    assert harness.md_table(["", "a", "b"], [["x", 1, ""]], "lr") == [
        "| | a | b |", "|---|---:|---|", "| x | 1 | |"]


def test_benchmark_code_stays_small() -> None:
    lines = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in BENCH.rglob("*.py"))
    assert lines <= MAX_LINES, f"benchmarks/**/*.py: {lines} lines (bound {MAX_LINES})"
