"""The one local stack: checkpoint → ONNX → CPU model repository → a running local Triton
(and, when asked, a local S3-compatible server with generated credentials).

    with LocalStack(workdir, checkpoint="demo", s3=True) as stack:
        AspectsClient(stack.grpc_url, s3=stack.s3_settings()).segment("s3://...")

The demo, the integration tests and every benchmark build their servers through
``cpu_repository`` / ``LocalStack``, so there is one way to stand the system up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aspects_client.storage import S3Settings

from .local_s3 import LocalS3
from .local_triton import LocalTriton

S3_REGION = "us-east-1"


def export_onnx_dir(
    out: Path, *, checkpoint: str | None = "demo", oracle: bool = False, check_slices: int = 0
) -> tuple[Path, dict]:
    """The three ONNX graphs of ``checkpoint`` (or the oracle unet) in ``out``; returns
    (out, numeric report)."""
    from aspects_export.pipeline import export_onnx

    report = export_onnx(
        None if oracle else checkpoint, out, oracle=oracle, check_slices=check_slices
    )
    return out, report


def cpu_repository(onnx_dir: Path, out: Path, cpu_runtime: str | None = None) -> Path:
    """A CPU model repository (Python backend) generated from ``onnx_dir``; ``cpu_runtime``:
    the unet's runtime profile (None: onnxruntime FP32, exact; "auto": the measured winner
    on this CPU, gated against FP32; docs/cpu-serving.md)."""
    from aspects_export.repository import write_repository

    return write_repository(onnx_dir, out, "cpu", cpu_runtime=cpu_runtime)


def s3_settings(s3: LocalS3) -> S3Settings:
    """Client settings for a running LocalS3 (its generated credentials)."""
    return S3Settings(
        endpoint_url=s3.endpoint_url,
        region_name=S3_REGION,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )


class LocalStack:
    """Export → CPU repository → local Triton (+ S3); a context manager that stops every
    process it started.  ``repository`` skips the export (serve an existing repository)."""

    def __init__(
        self,
        workdir: Path,
        *,
        checkpoint: str | None = "demo",
        oracle: bool = False,
        check_slices: int = 0,
        s3: bool = False,
        repository: Path | None = None,
        cpu_runtime: str | None = None,
        **triton_options: Any,
    ) -> None:
        self.workdir = Path(workdir)
        self.checkpoint = checkpoint
        self.oracle = oracle
        self.check_slices = check_slices
        self.with_s3 = s3
        self.repository = repository
        self.cpu_runtime = cpu_runtime
        self.triton_options = triton_options
        self.report: dict = {}
        self.triton: LocalTriton | None = None
        self.s3: LocalS3 | None = None

    def start(self) -> LocalStack:
        if self.repository is None:
            onnx_dir, self.report = export_onnx_dir(
                self.workdir / "onnx",
                checkpoint=self.checkpoint,
                oracle=self.oracle,
                check_slices=self.check_slices,
            )
            self.repository = cpu_repository(
                onnx_dir, self.workdir / "model_repository", self.cpu_runtime
            )
        options = {"log_path": self.workdir / "tritonserver.log", **self.triton_options}
        try:
            self.triton = LocalTriton(self.repository, **options).start()
            if self.with_s3:
                self.s3 = LocalS3().start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in (self.s3, self.triton):
            if server is not None:
                server.stop()
        self.s3 = self.triton = None

    @property
    def grpc_url(self) -> str:
        assert self.triton is not None, "LocalStack not started"
        return self.triton.grpc_url

    def s3_settings(self) -> S3Settings:
        assert self.s3 is not None, "LocalStack started without s3=True"
        return s3_settings(self.s3)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
