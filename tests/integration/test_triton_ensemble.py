"""The three-step ensemble served by a real tritonserver on the CPU (architecture §4, §6; issue 4).

Every test talks gRPC (or HTTP for /metrics) to a server started by the fixtures in
conftest.py; the in-process reference is onnxruntime running the same three ONNX files.  The
wire format is the contract's: UINT8 2.5D stacks ``[N, 3, H, W]`` (``context_stacks``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from aspects_devkit.errors import LocalServerError
from aspects_devkit.local_triton import LocalTriton
from tritonclient.utils import InferenceServerException

from aspects_client import contract
from aspects_client.inference import TritonSegmenter
from aspects_client.server_reference import context_stacks, nearest_indices

if TYPE_CHECKING:
    from .conftest import InProcessEnsemble, ServedRepository

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("triton_server_venv")]


# --- helpers ------------------------------------------------------------------------------


def phantom_slices(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """UINT8 ``[n, h, w]``: ellipses painted with the oracle's class intensities, plus noise;
    every slice differs (a volume)."""
    from aspects_export.oracle import oracle_intensity

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, h, w), np.float32)
    for i in range(n):
        img = np.full((h, w), oracle_intensity(0), np.float32)
        for k in rng.permutation(np.arange(1, contract.NUM_CLASSES))[: 4 + i % 6]:
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.05, 0.25) * h, rng.uniform(0.05, 0.25) * w
            img[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = oracle_intensity(int(k))
        out[i] = img + rng.normal(0.0, 2.0, (h, w))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def phantom_stacks(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """UINT8 ``[n, 3, h, w]``: the 2.5D stacks of ``phantom_slices``, as sent on the wire."""
    return context_stacks(phantom_slices(n, h, w, seed))


def client_for(served: ServedRepository) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(served.server.grpc_url)


def infer(
    client: grpcclient.InferenceServerClient,
    slices: np.ndarray,
    model: str = contract.ENSEMBLE_MODEL,
    datatype: str = "UINT8",
) -> tuple[np.ndarray, np.ndarray]:
    """One request of ``slices`` (normally 2.5D stacks ``[N, 3, H, W]``) to ``model``."""
    tensor = grpcclient.InferInput(contract.INPUT_SLICES, list(slices.shape), datatype)
    tensor.set_data_from_numpy(slices)
    outputs = [
        grpcclient.InferRequestedOutput(contract.OUTPUT_LABELS),
        grpcclient.InferRequestedOutput(contract.OUTPUT_CONFIDENCE),
    ]
    result = client.infer(model, [tensor], outputs=outputs, client_timeout=120)
    return result.as_numpy(contract.OUTPUT_LABELS), result.as_numpy(contract.OUTPUT_CONFIDENCE)


def model_stats(client: grpcclient.InferenceServerClient, model: str) -> dict[str, object]:
    stats = client.get_inference_statistics(model, as_json=True)
    (entry,) = stats["model_stats"]
    return entry


# --- the ensemble equals in-process onnxruntime ---------------------------------------------


def test_oracle_ensemble_equals_in_process_onnxruntime(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    slices = phantom_stacks(6, 320, 288, seed=1)
    labels, confidence = infer(client_for(triton_oracle), slices)
    ref_labels, ref_confidence = oracle_in_process(slices)
    assert labels.dtype == np.uint8 and labels.shape == (6, 320, 288)
    assert confidence.dtype == np.float32 and confidence.shape == (6, contract.NUM_CLASSES)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(confidence, ref_confidence)
    # the oracle answers known classes: most foreground classes survive, none is invented
    assert len(np.unique(labels)) > 4
    assert set(np.unique(labels)) <= set(range(contract.NUM_CLASSES))


def test_effb3_ensemble_equals_in_process_onnxruntime(
    triton_effb3: ServedRepository, effb3_in_process: InProcessEnsemble
) -> None:
    """The real smp Unet(efficientnet-b3), UNTRAINED demo weights, through Triton.

    The demo weights label (almost) everything background, so the unet step's LOGITS are
    compared too: Triton serves each step, and its logits must equal in-process ones.
    """
    client = client_for(triton_effb3)
    slices = phantom_stacks(2, 512, 512, seed=2)
    labels, confidence = infer(client, slices)
    ref_labels, ref_confidence = effb3_in_process(slices)
    assert labels.shape == (2, 512, 512) and confidence.shape == (2, contract.NUM_CLASSES)
    # same onnxruntime version, graphs and thread count: observed bit-exact; a last-bit
    # difference could flip a pixel sitting exactly at the threshold, hence the tolerance
    agreement = float(np.mean(labels == ref_labels))
    assert agreement >= 0.9999, f"label agreement {agreement:.6f}"
    np.testing.assert_allclose(confidence, ref_confidence, rtol=0, atol=1e-4)

    (image,) = effb3_in_process.preprocess.run(None, {contract.INPUT_SLICES: slices[:1]})
    tensor = grpcclient.InferInput(contract.TENSOR_IMAGE, list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    result = client.infer(contract.UNET_MODEL, [tensor], client_timeout=120)
    logits = result.as_numpy(contract.TENSOR_LOGITS)
    (ref_logits,) = effb3_in_process.unet.run(None, {contract.TENSOR_IMAGE: image})
    assert logits.shape == (1, contract.NUM_CLASSES, *contract.NETWORK_SIZE)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-4)
    assert float(np.std(logits)) > 0  # a real network, not a constant


# --- refusals -------------------------------------------------------------------------------


def test_batch_above_max_batch_size_is_refused(triton_oracle: ServedRepository) -> None:
    slices = phantom_stacks(contract.MAX_BATCH_SIZE + 1, 64, 64)
    with pytest.raises(InferenceServerException) as info:
        infer(client_for(triton_oracle), slices)
    message = str(info.value)
    assert "batch" in message.lower() and str(contract.MAX_BATCH_SIZE) in message, message


def test_max_batch_size_is_accepted(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    slices = phantom_stacks(contract.MAX_BATCH_SIZE, 96, 80, seed=4)
    labels, _ = infer(client_for(triton_oracle), slices)
    np.testing.assert_array_equal(labels, oracle_in_process(slices)[0])


@pytest.mark.parametrize(("dtype", "datatype"), [(np.float32, "FP32"), (np.uint16, "UINT16")])
def test_wrong_dtype_is_refused(
    triton_oracle: ServedRepository, dtype: type, datatype: str
) -> None:
    slices = phantom_stacks(2, 64, 64).astype(dtype)
    with pytest.raises(InferenceServerException) as info:
        infer(client_for(triton_oracle), slices, datatype=datatype)
    message = str(info.value)
    assert datatype in message and "UINT8" in message and contract.INPUT_SLICES in message, message


def test_empty_slice_gets_a_per_request_error_and_the_server_stays_healthy(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    """A request the python backend itself refuses (0-sized slice) fails alone."""
    client = client_for(triton_oracle)
    good = phantom_stacks(1, 128, 128, seed=5)
    empty = np.zeros((1, contract.NETWORK_CHANNELS, 0, 128), np.uint8)
    with ThreadPoolExecutor(4) as pool:
        bad_future = pool.submit(infer, client, empty)
        good_futures = [pool.submit(infer, client, good) for _ in range(3)]
        with pytest.raises(InferenceServerException) as info:
            bad_future.result()
        for future in good_futures:
            np.testing.assert_array_equal(future.result()[0], oracle_in_process(good)[0])
    assert "SLICES" in str(info.value) and "shape" in str(info.value), str(info.value)
    assert client.is_server_live() and client.is_model_ready(contract.ENSEMBLE_MODEL)


@pytest.mark.parametrize(
    "channels", [None, 1, 4], ids=["no-channel-axis", "1-channel", "4-channel"]
)
def test_items_that_are_not_3_channel_stacks_are_refused(
    triton_oracle: ServedRepository, channels: int | None
) -> None:
    """The old contract's [N, H, W] slices, or stacks of the wrong depth, are refused by the
    ensemble's config (dims [3, -1, -1]) before any step runs."""
    volume = phantom_slices(2, 64, 64)
    slices = volume if channels is None else np.repeat(volume[:, None], channels, axis=1)
    client = client_for(triton_oracle)
    with pytest.raises(InferenceServerException) as info:
        infer(client, slices)
    message = str(info.value)
    assert contract.INPUT_SLICES in message and "shape" in message, message
    assert client.is_model_ready(contract.ENSEMBLE_MODEL)


# --- sizes and batching ---------------------------------------------------------------------


def test_slices_of_different_sizes_come_back_at_their_own_sizes(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    client = client_for(triton_oracle)
    sizes = [(512, 512), (200, 300), (640, 480), (97, 131), (256, 256), (1024, 64)]
    batches = [phantom_stacks(1 + i % 3, h, w, seed=10 + i) for i, (h, w) in enumerate(sizes)]
    with ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(lambda s: infer(client, s), batches))
    for slices, (labels, confidence) in zip(batches, results, strict=True):
        assert labels.shape == (slices.shape[0], *slices.shape[2:])
        assert confidence.shape == (slices.shape[0], contract.NUM_CLASSES)
        ref_labels, ref_confidence = oracle_in_process(slices)
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(confidence, ref_confidence)


def test_concurrent_requests_are_batched(
    triton_oracle: ServedRepository, oracle_in_process: InProcessEnsemble
) -> None:
    """Single-slice requests sent at once run as fewer, larger executions of each step."""
    client = client_for(triton_oracle)
    before = {m: model_stats(client, m) for m in contract.STEP_MODELS}
    n_requests = 24
    slices = [phantom_stacks(1, 256, 256, seed=100 + i) for i in range(n_requests)]
    with ThreadPoolExecutor(n_requests) as pool:
        results = list(pool.map(lambda s: infer(client_for(triton_oracle), s), slices))
    for one, (labels, _) in zip(slices, results, strict=True):
        np.testing.assert_array_equal(labels, oracle_in_process(one)[0])

    batched = {}
    for model in contract.STEP_MODELS:
        after = model_stats(client, model)
        inferences = int(after.get("inference_count", 0)) - int(
            before[model].get("inference_count", 0)
        )
        executions = int(after.get("execution_count", 0)) - int(
            before[model].get("execution_count", 0)
        )
        assert inferences == n_requests, (model, inferences)
        batched[model] = (inferences, executions)
    # at least one step merged several requests into one execution (batch size > 1)
    assert any(e < i for i, e in batched.values()), batched
    # and the per-batch-size statistics show executions with batch size > 1
    multi = {
        model: sorted(
            int(b["batch_size"])
            for b in model_stats(client, model).get("batch_stats", [])
            if int(b["batch_size"]) > 1
        )
        for model in contract.STEP_MODELS
    }
    assert any(multi.values()), multi
    print(f"(inferences, executions) per step: {batched}; batch sizes > 1: {multi}")


# --- the 2.5D stacks, through the ensemble -------------------------------------------------------


def _banded_volume(n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A volume whose slice k is uniformly painted with the band centre of class
    ``1 + k % 10``: (slices uint8 [n, h, w], class of each slice [n])."""
    from aspects_export.oracle import oracle_intensity

    classes = 1 + np.arange(n) % (contract.NUM_CLASSES - 1)
    values = np.array([oracle_intensity(int(c)) for c in classes], np.uint8)
    return np.ascontiguousarray(np.broadcast_to(values[:, None, None], (n, h, w))), classes


@pytest.mark.parametrize(("n", "hw"), [(1, (64, 96)), (2, (96, 64)), (20, (120, 100))])
def test_each_item_sees_its_neighbours_through_the_ensemble(
    triton_context_oracle: ServedRepository, n: int, hw: tuple[int, int]
) -> None:
    """The client's stacks reach the network channel by channel: with the strip oracle, the
    labels of item k in network column strip c are the class of slice clip(k + offset[c]).
    N = 20 crosses a request boundary (max batch 16), so neighbours come from the volume,
    not from the request; N = 1, 2 exercise the edge replication."""
    from aspects_export.oracle import context_oracle_channels

    slices, classes = _banded_volume(n, *hw)
    segmenter = TritonSegmenter(triton_context_oracle.server.grpc_url)
    try:
        labels, confidence = segmenter.infer(slices)
    finally:
        segmenter.close()
    assert labels.shape == (n, *hw) and confidence.shape == (n, contract.NUM_CLASSES)
    # native column j shows network column nearest_indices(...)[j], i.e. channel strip[j]
    strip = context_oracle_channels()[nearest_indices(contract.NETWORK_SIZE[1], hw[1])]
    offsets = np.asarray(contract.CONTEXT_OFFSETS)
    source = np.clip(np.arange(n)[:, None] + offsets[strip][None, :], 0, n - 1)  # [n, W]
    expected = np.broadcast_to(classes[source][:, None, :], (n, *hw))
    np.testing.assert_array_equal(labels, expected)
    for k in range(n):  # every column strip is there, and shows the right slice
        seen = {c: set(np.unique(labels[k][:, strip == c]).tolist()) for c in range(3)}
        want = {c: {int(classes[min(max(k + offsets[c], 0), n - 1)])} for c in range(3)}
        assert seen == want, (k, seen, want)
    assert np.all(confidence[np.arange(n), classes] > 0.99)


def test_a_batch_mixing_volumes_keeps_each_item_to_itself(
    triton_context_oracle: ServedRepository,
) -> None:
    """Items of two volumes, interleaved in one request: each answers from its own stack."""
    from aspects_export.oracle import context_oracle_channels

    a, classes_a = _banded_volume(3, 64, 64)
    b, classes_b = _banded_volume(5, 64, 64)
    b, classes_b = b[::-1].copy(), classes_b[::-1].copy()  # other classes at the same index
    stacks_a, stacks_b = context_stacks(a), context_stacks(b)
    mixed = np.stack([stacks_a[0], stacks_b[0], stacks_a[1], stacks_b[4], stacks_a[2]])
    labels, _ = infer(client_for(triton_context_oracle), mixed)
    strip = context_oracle_channels()[nearest_indices(contract.NETWORK_SIZE[1], 64)]
    for item, (classes, k) in enumerate(
        [(classes_a, 0), (classes_b, 0), (classes_a, 1), (classes_b, 4), (classes_a, 2)]
    ):
        n = len(classes)
        source = np.clip(k + np.asarray(contract.CONTEXT_OFFSETS)[strip], 0, n - 1)
        np.testing.assert_array_equal(labels[item], np.broadcast_to(classes[source], (64, 64)))


# --- model control, metrics, launcher ---------------------------------------------------------


def test_explicit_model_control_load_and_unload(
    oracle_repository: Path, tmp_path: Path, oracle_in_process: InProcessEnsemble
) -> None:
    with LocalTriton(
        oracle_repository, model_control_mode="explicit", log_path=tmp_path / "explicit.log"
    ) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_server_ready()
        assert not client.is_model_ready(contract.ENSEMBLE_MODEL)
        index = {m["name"] for m in client.get_model_repository_index(as_json=True)["models"]}
        assert index == {contract.ENSEMBLE_MODEL, *contract.STEP_MODELS}

        client.load_model(contract.ENSEMBLE_MODEL)  # loads its three steps too
        for model in (contract.ENSEMBLE_MODEL, *contract.STEP_MODELS):
            assert client.is_model_ready(model), model
        slices = phantom_stacks(2, 100, 120, seed=7)
        np.testing.assert_array_equal(infer(client, slices)[0], oracle_in_process(slices)[0])

        client.unload_model(contract.ENSEMBLE_MODEL, unload_dependents=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            client.is_model_ready(m) for m in (contract.ENSEMBLE_MODEL, *contract.STEP_MODELS)
        ):
            time.sleep(0.2)
        assert not client.is_model_ready(contract.ENSEMBLE_MODEL)
        assert not client.is_model_ready(contract.UNET_MODEL)
        with pytest.raises(InferenceServerException):
            infer(client, slices)
        pid = server.pid
    assert server.pid is None and pid is not None


def _metric(text: str, name: str, model: str) -> float:
    pattern = re.compile(rf'^{name}\{{[^}}]*model="{model}"[^}}]*\}} ([0-9.eE+-]+)$', re.M)
    return sum(float(m.group(1)) for m in pattern.finditer(text))


def test_metrics_expose_inference_counts(triton_oracle: ServedRepository) -> None:
    def scrape() -> str:
        with urllib.request.urlopen(triton_oracle.server.metrics_url, timeout=10) as response:
            return response.read().decode()

    client = client_for(triton_oracle)
    before = scrape()
    slices = phantom_stacks(3, 64, 64)
    for _ in range(2):
        infer(client, slices)
    deadline = time.monotonic() + 10
    while True:
        after = scrape()
        success = _metric(after, "nv_inference_request_success", contract.ENSEMBLE_MODEL)
        if success - _metric(before, "nv_inference_request_success", contract.ENSEMBLE_MODEL) >= 2:
            break
        assert time.monotonic() < deadline, after[:2000]
        time.sleep(0.5)
    count = _metric(after, "nv_inference_count", contract.ENSEMBLE_MODEL) - _metric(
        before, "nv_inference_count", contract.ENSEMBLE_MODEL
    )
    assert count >= 6  # 2 requests x 3 slices
    assert _metric(after, "nv_inference_count", contract.UNET_MODEL) >= 6
    assert "nv_inference_exec_count" in after


def test_launcher_reports_a_failing_model_with_the_log_tail(
    oracle_onnx_dir: Path, tmp_path: Path
) -> None:
    """A repository whose unet graph does not fit its config: start() fails clearly."""
    from aspects_export.repository import write_repository

    broken = tmp_path / "onnx"
    broken.mkdir()
    for name in contract.STEP_MODELS:
        source = contract.PREPROCESS_MODEL if name == contract.UNET_MODEL else name
        (broken / f"{name}.onnx").write_bytes((oracle_onnx_dir / f"{source}.onnx").read_bytes())
    repository = write_repository(broken, tmp_path / "repo", "cpu")
    server = LocalTriton(repository, ready_timeout=60)
    with pytest.raises(LocalServerError) as info:
        server.start()
    message = str(info.value)
    assert "does not match config" in message and "IMAGE" in message, message
    assert server.pid is None


def test_serve_local_serves_until_interrupted(oracle_repository: Path) -> None:
    """`python -m aspects_devkit.local_triton REPO` (what `aspects-dev serve-local` runs)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aspects_devkit.local_triton",
            str(oracle_repository),
            "--http-port=0",
            "--grpc-port=0",
            "--metrics-port=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        server_pid = int(re.search(r"\(pid (\d+)\)", text).group(1))  # type: ignore[union-attr]
        grpc_url = re.search(r"gRPC:\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        client = grpcclient.InferenceServerClient(grpc_url)
        assert client.is_model_ready(contract.ENSEMBLE_MODEL)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
