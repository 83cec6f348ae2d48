"""ONNX graphs (preprocess, unet, postprocess, oracle) against the NumPy reference and torch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from aspects_client import contract
from aspects_client import server_reference as pp
from aspects_export import graphs, numeric_check, oracle
from aspects_export.errors import ExportError

H, W = contract.NETWORK_SIZE
C = contract.NUM_CLASSES
CH = contract.NETWORK_CHANNELS
SIZES = [(512, 512), (H, W), (256, 320), (600, 480), (7, 13)]

_ONNX_DTYPES = {"TYPE_UINT8": onnx.TensorProto.UINT8, "TYPE_FP32": onnx.TensorProto.FLOAT}


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """preprocess.onnx, postprocess.onnx and the oracle as unet.onnx (no torch needed)."""
    d = tmp_path_factory.mktemp("small")
    graphs.export_preprocess(d / "preprocess.onnx")
    graphs.export_postprocess(d / "postprocess.onnx")
    oracle.export_oracle_unet(d / "unet.onnx")
    return d


@pytest.fixture(scope="module")
def sessions(small_dir: Path) -> dict[str, ort.InferenceSession]:
    return {name: _session(small_dir / f"{name}.onnx") for name in contract.STEP_MODELS}


@pytest.fixture(scope="module")
def effb3(tmp_path_factory: pytest.TempPathFactory):
    """The real effb3 unet (demo weights) exported once, with pre/post beside it."""
    from aspects_export.checkpoints import load_model

    d = tmp_path_factory.mktemp("effb3")
    model, note = load_model("untrained")
    graphs.export_unet(model, d / "unet.onnx", {"checkpoint": note})
    graphs.export_preprocess(d / "preprocess.onnx")
    graphs.export_postprocess(d / "postprocess.onnx")
    return model, d


def _io(model: onnx.ModelProto) -> tuple[list, list]:
    def spec(vi: onnx.ValueInfoProto) -> tuple[str, int, list]:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
        return vi.name, t.elem_type, dims

    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]


def _assert_matches_contract(model: onnx.ModelProto, name: str) -> None:
    inputs, outputs = _io(model)
    want_in, want_out = contract.MODEL_IO[name]
    for got, want in zip([*inputs, *outputs], [*want_in, *want_out], strict=True):
        gname, gtype, gdims = got
        assert gname == want.name
        assert gtype == _ONNX_DTYPES[want.dtype]
        assert isinstance(gdims[0], str)  # dynamic batch
        assert [d if isinstance(d, int) else -1 for d in gdims[1:]] == list(want.dims)


@pytest.mark.parametrize("name", contract.STEP_MODELS)
def test_small_graphs_pass_checker_and_match_contract(small_dir: Path, name: str) -> None:
    model = onnx.load(str(small_dir / f"{name}.onnx"))
    graphs.check(model)
    assert model.opset_import[0].version == graphs.OPSET
    _assert_matches_contract(model, name)


@pytest.mark.parametrize("hw", SIZES)
def test_preprocess_matches_reference(sessions: dict, hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(hw[0])
    stacks = rng.integers(0, 256, (2, CH, *hw), dtype=np.uint8)  # channels differ
    (image,) = sessions["preprocess"].run(None, {contract.INPUT_SLICES: stacks})
    ref = pp.network_input(stacks)
    assert image.shape == ref.shape == (2, CH, H, W) and image.dtype == np.float32
    assert np.abs(image - ref).max() <= numeric_check.MAX_IMAGE_ABS_DIFF
    if hw == (H, W):
        np.testing.assert_array_equal(image, ref)


def test_preprocess_keeps_channels_apart(sessions: dict) -> None:
    """Channel c of IMAGE comes from channel c of SLICES only, with channel c's mean/std."""
    stacks = np.zeros((1, CH, 40, 60), np.uint8)
    stacks[0, 2] = 255
    (image,) = sessions["preprocess"].run(None, {contract.INPUT_SLICES: stacks})
    for c in range(CH):
        v = 1.0 if c == 2 else 0.0
        expected = (v - contract.IMAGENET_MEAN[c]) / contract.IMAGENET_STD[c]
        np.testing.assert_allclose(image[0, c], expected, rtol=0, atol=1e-5)


def test_preprocess_refuses_slices_without_channels(sessions: dict) -> None:
    with pytest.raises(Exception, match=r"(?i)rank|dimension|shape"):
        sessions["preprocess"].run(None, {contract.INPUT_SLICES: np.zeros((1, H, W), np.uint8)})


@pytest.mark.parametrize("hw", [*SIZES, (320, 512), (1, 1)])
def test_postprocess_matches_reference_exactly(sessions: dict, hw: tuple[int, int]) -> None:
    logits = numeric_check.stress_logits(2, seed=hw[0])
    slices = np.zeros((2, CH, *hw), np.uint8)
    labels, conf = sessions["postprocess"].run(
        None, {contract.TENSOR_LOGITS: logits, contract.INPUT_SLICES: slices}
    )
    ref_labels, ref_conf = pp.postprocess(logits, hw)
    assert labels.dtype == np.uint8 and labels.shape == (2, *hw)
    assert conf.dtype == np.float32 and conf.shape == (2, C)
    np.testing.assert_array_equal(labels, ref_labels)
    assert np.abs(conf - ref_conf).max() <= numeric_check.MAX_CONFIDENCE_ABS_DIFF


@pytest.mark.parametrize("out", [320, 480, 600])
def test_postprocess_label_resize_is_the_exact_formula(sessions: dict, out: int) -> None:
    """Sizes where cv2.INTER_NEAREST_EXACT is off by one at ties: the graph follows the formula."""
    labels = (np.arange(H) % 11).astype(np.uint8)[None, :, None].repeat(W, axis=2)  # row code
    logits = np.where(np.arange(C)[None, :, None, None] == labels[:, None], 30.0, 0.0)
    slices = np.zeros((1, CH, out, out), np.uint8)
    got, _ = sessions["postprocess"].run(
        None,
        {contract.TENSOR_LOGITS: logits.astype(np.float32), contract.INPUT_SLICES: slices},
    )
    rows = pp.nearest_indices(H, out)
    np.testing.assert_array_equal(got[0, :, 0], labels[0, rows, 0])


AREA = contract.MIN_AREA_PIXELS


@pytest.mark.parametrize(("area", "kept"), [(AREA - 1, False), (AREA, True)])
def test_postprocess_min_area_boundary(sessions: dict, area: int, kept: bool) -> None:
    labels = np.zeros((2, H, W), np.uint8)
    labels[0].flat[np.arange(area) * 41] = 9
    labels[1, 100 : 100 + AREA // 4, 100:104] = 9  # exactly AREA in the other slice: kept there
    logits = np.where(np.arange(C)[None, :, None, None] == labels[:, None], 12.0, 0.0)
    stacks = np.repeat(labels[:, None], CH, axis=1)  # native size = network size
    got, conf = sessions["postprocess"].run(
        None,
        {contract.TENSOR_LOGITS: logits.astype(np.float32), contract.INPUT_SLICES: stacks},
    )
    assert (got[0] == 9).sum() == (area if kept else 0)
    assert (got[1] == 9).sum() == AREA
    assert bool(conf[0, 9] > 0) is kept


def test_postprocess_min_area_comes_from_the_contract() -> None:
    meta = {p.key: p.value for p in graphs.postprocess_model().metadata_props}
    assert meta["min_area_pixels"] == str(contract.MIN_AREA_PIXELS)


def test_postprocess_thresholds_are_parameters(tmp_path: Path) -> None:
    path = graphs.export_postprocess(tmp_path / "post.onnx", threshold_prob=0.7, min_area=100)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta == {"threshold_prob": "0.7", "min_area_pixels": "100"}
    logits = np.full((1, C, H, W), -50.0, np.float32)
    logits[:, 0] = 0.0
    logits[:, 5] = np.log(0.65 / 0.35)  # p = 0.65: below 0.7
    logits[0, 5, :10, :10] = np.log(0.9 / 0.1)  # 100 px at p = 0.9: kept
    logits[0, 6, 20:29, 20:30] = 10.0  # 90 px of class 6 (p ~ 1): below min area
    sess = _session(path)
    got, _ = sess.run(
        None,
        {contract.TENSOR_LOGITS: logits, contract.INPUT_SLICES: np.zeros((1, CH, H, W), np.uint8)},
    )
    ref, _ = pp.postprocess(logits, (H, W), threshold_prob=0.7, min_area=100)
    np.testing.assert_array_equal(got, ref)
    assert (got == 5).sum() == 100 and (got == 6).sum() == 0


def test_postprocess_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        graphs.postprocess_model(threshold_prob=1.5)
    with pytest.raises(ValueError):
        graphs.postprocess_model(min_area=-1)


# --- oracle ----------------------------------------------------------------------------------


def test_oracle_bands_and_intensities() -> None:
    edges = oracle.oracle_band_edges()
    assert len(edges) == C + 1 and edges[0] == 0.0 and edges[-1] == 1.0
    values = [oracle.oracle_intensity(k) for k in range(C)]
    assert values == sorted(values) and values[0] > 0 and values[-1] < 255
    np.testing.assert_array_equal(oracle.oracle_classes(np.array(values, np.uint8)), range(C))
    with pytest.raises(ValueError):
        oracle.oracle_intensity(C)


def test_oracle_chain_gives_the_known_answer(sessions: dict) -> None:
    """Painted slices at a non-network size → 2.5D stacks → preprocess → oracle → postprocess =
    each slice's own painted classes (the oracle reads the centre channel; the two slices differ,
    so a neighbour channel would show) everywhere except near a region boundary."""
    hw = (256, 320)
    truth = np.zeros((2, *hw), np.uint8)
    for k in range(1, C):
        r, c = divmod(k - 1, 5)
        truth[0, 20 + r * 110 : 20 + r * 110 + 90, 10 + c * 62 : 10 + c * 62 + 50] = k
    truth[1] = truth[0][::-1]
    lut = np.array([oracle.oracle_intensity(k) for k in range(C)], np.uint8)
    stacks = pp.context_stacks(lut[truth])
    (image,) = sessions["preprocess"].run(None, {contract.INPUT_SLICES: stacks})
    (logits,) = sessions["unet"].run(None, {contract.TENSOR_IMAGE: image})
    np.testing.assert_array_equal(logits, oracle.oracle_logits(image))  # the NumPy twin
    labels, conf = sessions["postprocess"].run(
        None, {contract.TENSOR_LOGITS: logits, contract.INPUT_SLICES: stacks}
    )
    kernel = np.ones((3, 3), np.uint8)  # pixels with a differently painted 8-neighbour
    edge = np.stack([cv2.dilate(t, kernel) != cv2.erode(t, kernel) for t in truth])
    np.testing.assert_array_equal(labels[~edge], truth[~edge])
    assert (labels == truth).mean() > 0.95  # 9 blocks of 90x50: ~2 % of pixels are edges
    assert (conf[:, 1:] > 0.99).all()


def test_oracle_graph_matches_contract(small_dir: Path) -> None:
    model = onnx.load(str(small_dir / "unet.onnx"))
    _assert_matches_contract(model, contract.UNET_MODEL)
    assert len(model.graph.initializer) == 0 and len(model.graph.node) < 25
    context = oracle.context_oracle_model()
    graphs.check(context)
    _assert_matches_contract(context, contract.UNET_MODEL)


def test_oracle_reads_only_the_centre_channel(sessions: dict) -> None:
    image = np.zeros((1, CH, H, W), np.float32)
    for c, k in enumerate((3, 7, 9)):  # a different band in each channel
        u = oracle.oracle_intensity(k) / contract.PIXEL_SCALE
        image[0, c] = (u - contract.IMAGENET_MEAN[c]) / contract.IMAGENET_STD[c]
    (logits,) = sessions["unet"].run(None, {contract.TENSOR_IMAGE: image})
    assert (logits.argmax(1) == 7).all()
    assert oracle.ORACLE_CHANNEL == 1


def test_context_oracle_strips_read_one_channel_each(tmp_path: Path) -> None:
    """The strip variant: network column strip c answers from channel c."""
    sess = _session(oracle.export_oracle_unet(tmp_path / "unet.onnx", context=True))
    strips = oracle.context_oracle_channels()
    assert strips.shape == (W,) and strips[0] == 0 and strips[-1] == CH - 1
    assert np.all(np.diff(strips) >= 0) and set(strips.tolist()) == set(range(CH))
    bands = (2, 5, 10)
    stacks = np.stack(
        [np.full((1, 30, 50), oracle.oracle_intensity(k), np.uint8) for k in bands], axis=1
    )
    image = pp.network_input(stacks)
    (logits,) = sess.run(None, {contract.TENSOR_IMAGE: image})
    np.testing.assert_array_equal(logits, oracle.oracle_logits(image, context=True))
    got = logits.argmax(1)[0]  # [H, W]
    np.testing.assert_array_equal(got, np.broadcast_to(np.array(bands)[strips], (H, W)))


def test_check_all_with_oracle_skips_torch(small_dir: Path) -> None:
    slices = numeric_check.synthetic_slices(2)
    report = numeric_check.check_all(small_dir, None, slices, slices_source="synthetic")
    assert report["passed"], report
    assert "skipped" in report["unet"]
    assert json.loads((small_dir / numeric_check.REPORT_FILE).read_text()) == report


# --- the real effb3 unet ------------------------------------------------------------------------


def test_unet_export_matches_contract_and_torch(effb3) -> None:
    import torch

    model, d = effb3
    onnx_model = onnx.load(str(d / "unet.onnx"))
    graphs.check(onnx_model)
    _assert_matches_contract(onnx_model, contract.UNET_MODEL)
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    assert "UNTRAINED" in meta["checkpoint"]
    image = pp.network_input(pp.context_stacks(numeric_check.synthetic_slices(2)))
    (logits,) = _session(d / "unet.onnx").run(None, {contract.TENSOR_IMAGE: image})  # batch 2
    with torch.no_grad():
        expected = model(torch.from_numpy(image[:1])).numpy()
    assert logits.shape == (2, C, H, W)
    assert np.abs(logits[:1] - expected).max() < 1e-3


def test_check_all_writes_a_passing_report(effb3) -> None:
    model, d = effb3
    slices = numeric_check.synthetic_slices(1)
    report = numeric_check.check_all(
        d, model, slices, checkpoint="untrained", slices_source="synth"
    )
    assert report["passed"], report
    unet = report["unet"]
    assert unet["label_agreement"] >= numeric_check.MIN_LABEL_AGREEMENT
    assert unet["max_abs_logit_diff"] < 1e-3
    assert [row["hw"] for row in report["postprocess"]["sizes"]] == [
        list(hw) for hw in numeric_check.CHECK_SIZES
    ]
    assert all(r["labels_equal_fraction"] == 1.0 for r in report["postprocess"]["sizes"])
    assert report["files"]["unet"]["bytes"] == (d / "unet.onnx").stat().st_size
    assert (d / numeric_check.REPORT_FILE).is_file()


# --- CLI on the oracle (fast) and TensorRT without a GPU -----------------------------------------


def test_cli_onnx_oracle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aspects_export.cli import main

    assert main(["onnx", "--oracle", "--out", str(tmp_path), "--check-slices", "1"]) == 0
    for name in (*contract.STEP_MODELS, "numeric_report"):
        assert any(p.stem == name for p in tmp_path.iterdir()), name
    assert json.loads((tmp_path / "numeric_report.json").read_text())["passed"]
    assert "aspects-export:" in capsys.readouterr().err


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here"
)
def test_tensorrt_without_tensorrt_says_where_to_run(tmp_path: Path) -> None:
    from aspects_export import tensorrt_build

    onnx_path = oracle.export_oracle_unet(tmp_path / "unet.onnx")
    with pytest.raises(ExportError, match=r"GPU host with the NGC 24\.10 TensorRT"):
        tensorrt_build.build_engine(onnx_path, tmp_path / "unet.plan")
    from aspects_export.cli import main

    assert main(["tensorrt", "--onnx", str(onnx_path), "--out", str(tmp_path)]) == 1


def test_postprocess_confidence_matches_reference_when_min_area_removes_pixels(tmp_path):
    """All 11 CONFIDENCE values, including class 0 (which counts demoted pixels)."""
    import onnxruntime as ort

    from aspects_client import contract as c
    from aspects_client.server_reference import postprocess
    from aspects_export.graphs import export_postprocess
    from aspects_export.numeric_check import stress_logits

    path = export_postprocess(tmp_path / "post.onnx")
    logits = stress_logits(2)
    slices = np.zeros((2, c.NETWORK_CHANNELS, 512, 512), np.uint8)  # a 512 x 512 native size
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, conf = sess.run(None, {c.TENSOR_LOGITS: logits, c.INPUT_SLICES: slices})
    ref_labels, ref_conf = postprocess(logits, (512, 512))
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(conf, ref_conf, atol=2e-5)
    # the islands really were removed: fewer than min-area pixels of a class never survive
    for i in range(2):
        counts = np.bincount(labels[i].ravel(), minlength=c.NUM_CLASSES)[1:]
        assert np.all((counts == 0) | (counts >= c.MIN_AREA_PIXELS))
