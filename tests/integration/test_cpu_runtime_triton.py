"""The unet's CPU runtime profile served by a real tritonserver (issue 15, docs/cpu-serving.md).

The demo weights are written into a CPU repository with this CPU's default profile
(OpenVINO bf16 where the CPU has bf16, else OpenVINO f32; the bf16 one passes the precision
gate first) and served by the local Triton.  Its labels must equal an in-process chain that
builds the same sessions (``triton_python_model.build_session``) and stay within the gate's
limit of ONNX Runtime FP32; the served config names its runtime, precision, gate figures and
checkpoint; a bad request fails alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from aspects_devkit.local_triton import LocalTriton
from tritonclient.utils import InferenceServerException

from aspects_client import contract
from aspects_client.server_reference import context_stacks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("triton_server_venv")]
pytest.importorskip("openvino", reason="openvino is part of the [export] extra")


@pytest.fixture(scope="module")
def demo_onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aspects_export.pipeline import export_onnx

    out = tmp_path_factory.mktemp("demo_onnx_cpu_runtime")
    export_onnx("demo", out, check_slices=0)
    return out


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, demo_onnx_dir: Path
) -> Iterator[tuple[LocalTriton, str]]:
    """The default profile's repository, served; yields (server, profile name)."""
    from aspects_export.repository import default_cpu_runtime, write_repository

    runtime = default_cpu_runtime()
    work = tmp_path_factory.mktemp("cpu_runtime_repo")
    repo = write_repository(demo_onnx_dir, work / "repo", "cpu", cpu_runtime=runtime)
    with LocalTriton(repo, log_path=work / "tritonserver.log") as server:
        yield server, runtime.name


@pytest.fixture(scope="module")
def stacks() -> np.ndarray:
    """8 consecutive 2.5D stacks ``[8, 3, H, W]`` of a held-out phantom (the client's way)."""
    from aspects_export.numeric_check import gate_cases

    slices = gate_cases(1)[0][0]
    mid = len(slices) // 2
    return np.ascontiguousarray(context_stacks(slices)[mid - 4 : mid + 4])


def in_process(onnx_dir: Path, stacks: np.ndarray, runtime: str, precision: str) -> np.ndarray:
    """preprocess → unet (``runtime``/``precision``) → postprocess in this process: labels."""
    from aspects_export.triton_python_model import build_session

    def step(name: str, params: dict[str, str]) -> Any:
        return build_session(str(onnx_dir / f"{name}.onnx"), params)

    pre = step(contract.PREPROCESS_MODEL, {"intra_op_thread_count": "1"})
    unet = step(contract.UNET_MODEL, {"runtime": runtime, "precision": precision})
    post = step(contract.POSTPROCESS_MODEL, {"intra_op_thread_count": "1"})
    (image,) = pre.run([contract.TENSOR_IMAGE], {contract.INPUT_SLICES: stacks})
    (logits,) = unet.run([contract.TENSOR_LOGITS], {contract.TENSOR_IMAGE: image})
    (labels,) = post.run(
        [contract.OUTPUT_LABELS], {contract.TENSOR_LOGITS: logits, contract.INPUT_SLICES: stacks}
    )
    return labels


def infer(url: str, stacks: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput(contract.INPUT_SLICES, list(stacks.shape), "UINT8")
    tensor.set_data_from_numpy(stacks)
    result = client.infer(contract.ENSEMBLE_MODEL, [tensor], client_timeout=300)
    return result.as_numpy(contract.OUTPUT_LABELS)


def test_served_profile_equals_its_in_process_chain_and_stays_near_fp32(
    served: tuple[LocalTriton, str], demo_onnx_dir: Path, stacks: np.ndarray
) -> None:
    from aspects_export.repository import CPU_RUNTIMES

    server, name = served
    runtime = CPU_RUNTIMES[name]
    labels = infer(server.grpc_url, stacks)
    same = in_process(demo_onnx_dir, stacks, runtime.runtime, runtime.precision)
    fp32 = in_process(demo_onnx_dir, stacks, "onnxruntime", "f32")
    assert labels.shape == stacks.shape[:1] + stacks.shape[2:]
    assert np.count_nonzero(labels) > 0.05 * labels.size  # the demo weights label the brain
    # the same sessions in and out of Triton: observed bit-exact (a tie at the threshold
    # could still flip a pixel with another batch composition)
    assert float(np.mean(labels == same)) >= 0.9999
    assert float(np.mean(labels != fp32)) <= 0.001  # the precision gate's limit


def test_served_config_names_the_profile_the_gate_and_the_checkpoint(
    served: tuple[LocalTriton, str],
) -> None:
    server, name = served
    client = grpcclient.InferenceServerClient(server.grpc_url)
    config = client.get_model_config(contract.UNET_MODEL, as_json=True)["config"]
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    runtime, precision = ("onnxruntime", "f32") if name == "onnxruntime" else name.split("-")
    assert (params["runtime"], params["precision"]) == (runtime, precision)
    assert params["numeric_gate"].endswith("passed" if precision == "bf16" else "not gated")
    assert "demo weights" in params["checkpoint"] and "unet.onnx sha256:" in params["checkpoint"]
    pre = client.get_model_config(contract.PREPROCESS_MODEL, as_json=True)["config"]
    assert pre["parameters"]["runtime"]["string_value"] == "onnxruntime"


def test_a_bad_unet_request_fails_alone(
    served: tuple[LocalTriton, str], stacks: np.ndarray
) -> None:
    server, _ = served
    client = grpcclient.InferenceServerClient(server.grpc_url)

    def unet(shape: tuple[int, ...]) -> np.ndarray:
        tensor = grpcclient.InferInput(contract.TENSOR_IMAGE, list(shape), "FP32")
        tensor.set_data_from_numpy(np.zeros(shape, np.float32))
        return client.infer(contract.UNET_MODEL, [tensor], client_timeout=120).as_numpy(
            contract.TENSOR_LOGITS
        )

    good_shape = (2, contract.NETWORK_CHANNELS, *contract.NETWORK_SIZE)
    with ThreadPoolExecutor(2) as pool:
        good = pool.submit(unet, good_shape)
        bad = pool.submit(unet, (1, contract.NETWORK_CHANNELS, 255, 256))
        assert good.result().shape == (2, contract.NUM_CLASSES, *contract.NETWORK_SIZE)
        with pytest.raises(InferenceServerException, match="255"):
            bad.result()
    assert infer(server.grpc_url, stacks[:2]).shape[0] == 2  # the server still answers
