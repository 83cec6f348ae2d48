"""Fixtures for the Triton integration tests: CPU model repositories and real servers.

Three repositories are generated into session temp dirs from the committed configs:
``oracle`` (the tiny known-answer unet, reading the centre channel: fast), ``context_oracle``
(the oracle whose column strip c reads channel c of the 2.5D stack, to check the stacks) and
``effb3`` (the real smp Unet with the seeded, UNTRAINED weights of
``load_model("untrained")``).  Each is served by a real ``tritonserver`` (nvidia-pytriton,
architecture §6) on free ports; the fixtures stop the servers by PID.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from aspects_devkit.errors import LocalServerError
from aspects_devkit.local_triton import LocalTriton, find_server_venv

from aspects_client import contract


@dataclass(frozen=True)
class ServedRepository:
    """A running server, the repository it serves and the ONNX graphs in it."""

    server: LocalTriton
    repository: Path
    onnx_dir: Path


def _require_server_venv() -> Path:
    try:
        return find_server_venv()
    except LocalServerError as exc:
        if os.environ.get("ASPECTS_REQUIRE_TRITON") == "1":  # CI: a missing server is a failure
            raise
        pytest.skip(f"no Triton server environment: {exc}")


@pytest.fixture(scope="session")
def triton_server_venv() -> Path:
    """The server venv (nvidia-pytriton's tritonserver); skips the test when it is absent."""
    return _require_server_venv()


@pytest.fixture(scope="session")
def pre_post_onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """preprocess.onnx and postprocess.onnx, exported once per session."""
    from aspects_export.graphs import export_postprocess, export_preprocess

    out = tmp_path_factory.mktemp("pre_post")
    export_preprocess(out / f"{contract.PREPROCESS_MODEL}.onnx")
    export_postprocess(out / f"{contract.POSTPROCESS_MODEL}.onnx")
    return out


def _onnx_dir_with_unet(pre_post: Path, out: Path, write_unet: object) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in (contract.PREPROCESS_MODEL, contract.POSTPROCESS_MODEL):
        shutil.copyfile(pre_post / f"{name}.onnx", out / f"{name}.onnx")
    write_unet(out / f"{contract.UNET_MODEL}.onnx")  # type: ignore[operator]
    return out


@pytest.fixture(scope="session")
def oracle_onnx_dir(tmp_path_factory: pytest.TempPathFactory, pre_post_onnx_dir: Path) -> Path:
    """The three graphs with the oracle unet."""
    from aspects_export.oracle import export_oracle_unet

    return _onnx_dir_with_unet(
        pre_post_onnx_dir, tmp_path_factory.mktemp("onnx_oracle"), export_oracle_unet
    )


@pytest.fixture(scope="session")
def context_oracle_onnx_dir(
    tmp_path_factory: pytest.TempPathFactory, pre_post_onnx_dir: Path
) -> Path:
    """The three graphs with the strip oracle (``export_oracle_unet(..., context=True)``)."""
    from aspects_export.oracle import export_oracle_unet

    return _onnx_dir_with_unet(
        pre_post_onnx_dir,
        tmp_path_factory.mktemp("onnx_context_oracle"),
        lambda path: export_oracle_unet(path, context=True),
    )


@pytest.fixture(scope="session")
def effb3_onnx_dir(tmp_path_factory: pytest.TempPathFactory, pre_post_onnx_dir: Path) -> Path:
    """The three graphs with the real efficientnet-b3 Unet (seeded UNTRAINED weights).

    Set ASPECTS_TEST_EFFB3_ONNX to an exported unet.onnx to skip the ~10 s export.
    """
    cached = os.environ.get("ASPECTS_TEST_EFFB3_ONNX")

    def write_unet(path: Path) -> None:
        if cached:
            shutil.copyfile(cached, path)
            return
        from aspects_export.checkpoints import load_model
        from aspects_export.graphs import export_unet

        model, note = load_model("untrained")
        export_unet(model, path, metadata={"checkpoint": note})

    return _onnx_dir_with_unet(pre_post_onnx_dir, tmp_path_factory.mktemp("onnx_effb3"), write_unet)


def _cpu_repository(onnx_dir: Path, out: Path) -> Path:
    from aspects_devkit.stack import cpu_repository

    return cpu_repository(onnx_dir, out)


@pytest.fixture(scope="session")
def oracle_repository(tmp_path_factory: pytest.TempPathFactory, oracle_onnx_dir: Path) -> Path:
    """A generated CPU repository whose unet is the oracle."""
    return _cpu_repository(oracle_onnx_dir, tmp_path_factory.mktemp("repo_oracle"))


@pytest.fixture(scope="session")
def context_oracle_repository(
    tmp_path_factory: pytest.TempPathFactory, context_oracle_onnx_dir: Path
) -> Path:
    """A generated CPU repository whose unet is the strip oracle."""
    return _cpu_repository(context_oracle_onnx_dir, tmp_path_factory.mktemp("repo_context"))


@pytest.fixture(scope="session")
def effb3_repository(tmp_path_factory: pytest.TempPathFactory, effb3_onnx_dir: Path) -> Path:
    """A generated CPU repository with the real effb3 unet."""
    return _cpu_repository(effb3_onnx_dir, tmp_path_factory.mktemp("repo_effb3"))


def _serve(
    repository: Path, onnx_dir: Path, log_dir: Path, **kwargs: object
) -> Iterator[ServedRepository]:
    _require_server_venv()
    server = LocalTriton(repository, log_path=log_dir / "tritonserver.log", **kwargs)  # type: ignore[arg-type]
    server.start()
    pid = server.pid
    assert pid is not None
    try:
        yield ServedRepository(server, repository, onnx_dir)
    finally:
        server.stop()
        assert not _alive(pid), f"tritonserver pid {pid} still running after stop()"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's pid now
        return False
    return True


@pytest.fixture(scope="session")
def triton_oracle(
    tmp_path_factory: pytest.TempPathFactory, oracle_repository: Path, oracle_onnx_dir: Path
) -> Iterator[ServedRepository]:
    """tritonserver serving the oracle repository (model control mode none)."""
    yield from _serve(oracle_repository, oracle_onnx_dir, tmp_path_factory.mktemp("log_oracle"))


@pytest.fixture(scope="module")
def triton_context_oracle(
    tmp_path_factory: pytest.TempPathFactory,
    context_oracle_repository: Path,
    context_oracle_onnx_dir: Path,
) -> Iterator[ServedRepository]:
    """tritonserver serving the strip-oracle repository (stopped after the module)."""
    yield from _serve(
        context_oracle_repository, context_oracle_onnx_dir, tmp_path_factory.mktemp("log_context")
    )


@pytest.fixture(scope="session")
def triton_effb3(
    tmp_path_factory: pytest.TempPathFactory, effb3_repository: Path, effb3_onnx_dir: Path
) -> Iterator[ServedRepository]:
    """tritonserver serving the effb3 repository (model control mode none)."""
    yield from _serve(effb3_repository, effb3_onnx_dir, tmp_path_factory.mktemp("log_effb3"))


class InProcessEnsemble:
    """The same three ONNX graphs chained with onnxruntime in this process.

    Called with uint8 2.5D stacks ``[N, 3, H, W]`` (what goes over the wire) or, like
    ``TritonSegmenter.infer``, with one volume's display slices ``[N, H, W]``, whose
    ``context_stacks`` are then used."""

    def __init__(self, onnx_dir: Path) -> None:
        import onnxruntime as ort

        def session(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(
                str(onnx_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"]
            )

        self.preprocess = session(contract.PREPROCESS_MODEL)
        self.unet = session(contract.UNET_MODEL)
        self.postprocess = session(contract.POSTPROCESS_MODEL)

    def __call__(self, slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from aspects_client.server_reference import context_stacks

        if slices.ndim == 3:
            slices = context_stacks(slices)
        (image,) = self.preprocess.run(None, {contract.INPUT_SLICES: slices})
        (logits,) = self.unet.run(None, {contract.TENSOR_IMAGE: image})
        labels, confidence = self.postprocess.run(
            [contract.OUTPUT_LABELS, contract.OUTPUT_CONFIDENCE],
            {contract.TENSOR_LOGITS: logits, contract.INPUT_SLICES: slices},
        )
        return labels, confidence


@pytest.fixture(scope="session")
def oracle_in_process(oracle_onnx_dir: Path) -> InProcessEnsemble:
    """In-process onnxruntime chain with the oracle unet."""
    return InProcessEnsemble(oracle_onnx_dir)


@pytest.fixture(scope="session")
def effb3_in_process(effb3_onnx_dir: Path) -> InProcessEnsemble:
    """In-process onnxruntime chain with the real effb3 unet."""
    return InProcessEnsemble(effb3_onnx_dir)


# --- DICOM Store SCP (issue 16; tests/integration/dicom_fixtures.py) ------------------------
from .dicom_fixtures import case, store_scp  # noqa: E402, F401
# --- end DICOM Store SCP -------------------------------------------------------------------
