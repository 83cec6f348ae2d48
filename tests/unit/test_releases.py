"""Immutable repository releases in a directory store: publish, list, fetch, engine-key check
(aspects_export.releases; the S3 store and serving a fetched release: tests/integration)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from aspects_client import contract
from aspects_export import releases
from aspects_export.cli import main as export_main

ENGINE_KEY = {
    "onnx_sha256": "0" * 64,
    "gpu_name": "NVIDIA L4",
    "tensorrt_version": "10.5.0.18",
    "precision": "fp16",
    "profile_batch": [1, 8, 16],
}


def _repository(root: Path, unet: bytes = b"unet graph", key: dict | None = None) -> Path:
    """A small stand-in model repository with the layout write_repository produces."""
    for name in (*contract.STEP_MODELS, contract.ENSEMBLE_MODEL):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(f"name: \"{name}\"\n")
    (root / contract.UNET_MODEL / "config.pbtxt").write_text(
        'name: "unet"\nparameters {\n  key: "checkpoint"\n  value {\n'
        '    string_value: "demo weights; unet.onnx sha256:abc"\n  }\n}\n'
    )
    (root / contract.UNET_MODEL / "1" / "model.onnx").write_bytes(unet)
    (root / contract.PREPROCESS_MODEL / "1" / "model.onnx").write_bytes(b"pre")
    (root / contract.POSTPROCESS_MODEL / "1" / "model.onnx").write_bytes(b"post")
    if key is not None:
        (root / contract.UNET_MODEL / "1" / "model.plan").write_bytes(b"engine")
        (root / contract.UNET_MODEL / "1" / "model.plan.json").write_text(json.dumps(key))
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_publish_then_fetch_gives_the_same_repository(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "repo")
    store = releases.open_store(tmp_path / "store")
    manifest = releases.publish(repo, store, release_id="r1")
    assert manifest["checkpoint"] == "demo weights; unet.onnx sha256:abc"
    assert set(manifest["files"]) == set(_tree(repo))
    assert manifest["empty_dirs"] == [f"{contract.ENSEMBLE_MODEL}/1"]
    out = tmp_path / "served"
    releases.fetch(store, "r1", out, gpu_name=None)
    assert _tree(out) == _tree(repo)
    assert (out / contract.ENSEMBLE_MODEL / "1").is_dir()  # Triton needs the empty version dir
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_release_is_never_overwritten(tmp_path: Path) -> None:
    store = releases.open_store(tmp_path / "store")
    releases.publish(_repository(tmp_path / "a"), store, release_id="r1")
    before = _tree(tmp_path / "store")
    with pytest.raises(releases.ReleaseError, match="immutable"):
        releases.publish(_repository(tmp_path / "b", unet=b"other"), store, release_id="r1")
    assert _tree(tmp_path / "store") == before


def test_default_release_ids_sort_by_time_and_name_the_model(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "repo")
    first = releases.new_release_id(repo, now=1_700_000_000)
    later = releases.new_release_id(repo, now=1_800_000_000)
    assert first < later
    assert first.startswith("20231114T221320Z-")
    assert first.endswith(releases._sha256(repo / "unet" / "1" / "model.onnx")[:12])


def test_an_incomplete_release_is_listed_as_such_and_never_fetched(tmp_path: Path) -> None:
    store = releases.open_store(tmp_path / "store")
    releases.publish(_repository(tmp_path / "a"), store, release_id="r1")
    # an upload that died before its manifest: files but no RELEASE.json
    half = tmp_path / "store" / "releases" / "r2" / "unet" / "1"
    half.mkdir(parents=True)
    (half / "model.onnx").write_bytes(b"half")
    listed = {r.release_id: r.complete for r in releases.list_releases(store)}
    assert listed == {"r1": True, "r2": False}
    with pytest.raises(releases.ReleaseError, match="incomplete"):
        releases.fetch(store, "r2", tmp_path / "out", gpu_name=None)
    with pytest.raises(releases.ReleaseError, match="missing"):
        releases.fetch(store, "r3", tmp_path / "out", gpu_name=None)
    assert not (tmp_path / "out").exists()


def test_a_changed_file_in_the_store_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    store = releases.open_store(tmp_path / "store")
    releases.publish(_repository(tmp_path / "a"), store, release_id="r1")
    stored = tmp_path / "store" / "releases" / "r1" / "unet" / "1" / "model.onnx"
    stored.write_bytes(b"unet grapH")  # same size, other bytes
    with pytest.raises(releases.ReleaseError, match="does not match the release manifest"):
        releases.fetch(store, "r1", tmp_path / "out", gpu_name=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "store"]


def test_fetch_refuses_a_target_with_content(tmp_path: Path) -> None:
    store = releases.open_store(tmp_path / "store")
    releases.publish(_repository(tmp_path / "a"), store, release_id="r1")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(releases.ReleaseError, match="not an empty directory"):
        releases.fetch(store, "r1", tmp_path / "out", gpu_name=None)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("key_change", "gpu", "message"),
    [
        ({}, "NVIDIA L4", None),
        ({}, "NVIDIA H100 80GB HBM3", "built on 'NVIDIA L4'"),
        ({"tensorrt_version": "10.6.0.26"}, "NVIDIA L4", "Triton 24.10 runs TensorRT 10.5.0"),
        ({"tensorrt_version": "10.5.0.18"}, None, None),  # GPU check skipped on purpose
    ],
)
def test_the_engine_key_is_checked_before_anything_is_downloaded(
    tmp_path: Path, key_change: dict, gpu: str | None, message: str | None, monkeypatch
) -> None:
    store = releases.open_store(tmp_path / "store")
    key = {**ENGINE_KEY, **key_change}
    with monkeypatch.context() as m:  # published for a Triton whose TensorRT built it
        m.setenv("ASPECTS_SERVING_TENSORRT", key["tensorrt_version"])
        releases.publish(_repository(tmp_path / "a", key=key), store, release_id="r1")
    out = tmp_path / "out"
    if message is None:
        manifest = releases.fetch(store, "r1", out, gpu_name=gpu)
        assert manifest["engine_key"] == key
        assert json.loads((out / "unet" / "1" / "model.plan.json").read_text()) == key
    else:
        with pytest.raises(releases.ReleaseError, match=message):
            releases.fetch(store, "r1", out, gpu_name=gpu)
        assert not out.exists()


def test_unsafe_release_ids_are_refused(tmp_path: Path) -> None:
    store = releases.open_store(tmp_path / "store")
    repo = _repository(tmp_path / "repo")
    for bad in ("../x", "a/b", ".hidden", "x" * 200):
        with pytest.raises(releases.ReleaseError, match="not valid"):
            releases.publish(repo, store, release_id=bad)
        with pytest.raises(releases.ReleaseError, match="not valid"):
            releases.fetch(store, bad, tmp_path / "out", gpu_name=None)
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()


def test_cli_publish_list_fetch_and_rollback(tmp_path: Path, capsys) -> None:
    store = str(tmp_path / "store")
    first = _repository(tmp_path / "v1", unet=b"first")
    second = _repository(tmp_path / "v2", unet=b"second")
    assert export_main(["release", "publish", "--repository", str(first), "--store", store,
                        "--id", "20260101T000000Z-v1"]) == 0
    assert export_main(["release", "publish", "--repository", str(second), "--store", store]) == 0
    out = capsys.readouterr().out.split()
    new_id = out[-1]
    assert new_id > "20260101T000000Z-v1"
    assert export_main(["release", "list", "--store", store]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["20260101T000000Z-v1", new_id]
    assert all(r[1] == "complete" for r in rows)
    # rollback = serving the older id again: its files, unchanged
    assert export_main(["release", "fetch", "--store", store, "--id", "20260101T000000Z-v1",
                        "-o", str(tmp_path / "served"), "--gpu", "none"]) == 0
    assert (tmp_path / "served" / "unet" / "1" / "model.onnx").read_bytes() == b"first"
    # an engine release fetched where NVML cannot name the GPU: refused, one line, exit 1
    gpu_repo = _repository(tmp_path / "g", key=ENGINE_KEY)
    assert export_main(["release", "publish", "--repository", str(gpu_repo), "--store", store,
                        "--id", "gpu1"]) == 0
    capsys.readouterr()
    code = export_main(["release", "fetch", "--store", store, "--id", "gpu1",
                        "-o", str(tmp_path / "g_served")])
    err = capsys.readouterr().err
    from aspects_export.tensorrt_build import nvml_gpu_name

    if nvml_gpu_name() is None:  # this machine: no GPU
        assert code == 1 and "NVML" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "g_served").exists()


def test_a_gpu_repository_needs_the_engine_key(tmp_path: Path) -> None:
    from aspects_export import repository

    onnx = tmp_path / "onnx"
    onnx.mkdir()
    for name in contract.STEP_MODELS:
        shutil.copyfile(__file__, onnx / f"{name}.onnx")  # content is not read
    engine = tmp_path / "unet.plan"
    engine.write_bytes(b"engine without key")
    with pytest.raises(releases.ExportError, match="no cache key"):
        repository.write_repository(onnx, tmp_path / "gpu", "gpu", engine=engine)


def test_an_engine_for_another_tensorrt_is_never_published(tmp_path: Path) -> None:
    store = releases.open_store(tmp_path / "store")
    repo = _repository(tmp_path / "a", key={**ENGINE_KEY, "tensorrt_version": "10.7.0.23"})
    with pytest.raises(releases.ReleaseError, match=r"TensorRT 10\.7\.0\.23"):
        releases.publish(repo, store, release_id="r1", triton_release="24.10")
    assert not (tmp_path / "store").exists()
    with pytest.raises(releases.ReleaseError, match="unknown Triton release"):
        releases.publish(repo, store, release_id="r1", triton_release="99.01")


def test_the_gates_refuse_ellipses_where_phantoms_are_required(tmp_path: Path, monkeypatch) -> None:
    from aspects_export.errors import ExportError
    from aspects_export.pipeline import gate_slices

    monkeypatch.setenv("ASPECTS_CACHE_DIR", str(tmp_path / "empty-cache"))  # no atlas here
    # ... and no registry to fetch it from (pip's index on a closed local port)
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    slices, described = gate_slices(2)
    assert described.startswith("synthetic ellipses (atlas unavailable") and slices.shape[0] == 2
    monkeypatch.setenv("ASPECTS_REQUIRE_PHANTOM", "1")
    with pytest.raises(ExportError, match="need atlas phantoms"):
        gate_slices(2)


# --- hostile manifests and stores (issue 24) -------------------------------------------------

TAMPERED = {
    "invalid JSON": lambda m: b"{not json",
    "an entry without bytes": lambda m: _json({**m, "files": {
        k: {"sha256": v["sha256"]} for k, v in m["files"].items()}}),
    "no files at all": lambda m: _json({**m, "files": {}}),
    "empty_dirs escaping the target": lambda m: _json({**m, "empty_dirs": ["../../../../X"]}),
    "an absolute empty_dir": lambda m: _json({**m, "empty_dirs": ["/tmp/aspects-escape-X"]}),
    "a file path escaping the target": lambda m: _json({**m, "files": {
        "../x": next(iter(m["files"].values()))}}),
}


def _json(manifest: dict) -> bytes:
    return json.dumps(manifest).encode()


@pytest.mark.parametrize("how", list(TAMPERED), ids=list(TAMPERED))
def test_a_tampered_manifest_is_corrupt_listed_and_never_fetched(
    tmp_path: Path, how: str, capsys
) -> None:
    store = releases.open_store(tmp_path / "store")
    releases.publish(_repository(tmp_path / "a"), store, release_id="r1")
    releases.publish(_repository(tmp_path / "b", unet=b"other"), store, release_id="r2")
    path = tmp_path / "store" / releases.RELEASES_DIR / "r1" / releases.MANIFEST_FILE
    path.write_bytes(TAMPERED[how](json.loads(path.read_bytes())))
    with pytest.raises(releases.ReleaseError, match="corrupt"):
        releases.fetch(store, "r1", tmp_path / "served" / "repo", gpu_name=None)
    assert not (tmp_path / "served").exists()  # refused before any directory was made
    assert not Path("/tmp/aspects-escape-X").exists() and not (tmp_path.parent / "X").exists()
    listed = {r.release_id: r for r in releases.list_releases(store)}
    assert listed["r1"].corrupt and not listed["r1"].complete
    assert listed["r2"].complete  # one corrupt release does not break the list
    assert export_main(["release", "list", "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr()
    assert "r1\tCORRUPT" in out.out and "r2\tcomplete" in out.out and "Traceback" not in out.err
    code = export_main(["release", "fetch", "--store", str(tmp_path / "store"), "--id", "r1",
                        "-o", str(tmp_path / "served2"), "--gpu", "none"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "corrupt" in err and "Traceback" not in err


def test_an_id_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    store = releases.open_store(tmp_path / "store")
    with pytest.raises(releases.ReleaseError, match="not valid"):
        releases.publish(_repository(tmp_path / "a"), store, release_id="r1\n")
    assert not (tmp_path / "store").exists()


def test_listing_a_store_that_does_not_exist_is_an_error(tmp_path: Path, capsys) -> None:
    assert export_main(["release", "list", "--store", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
