"""GPU check (issue 15): the unet's TensorRT FP16 slices/s at batch 1/8/16 and the engine's label
agreement with ONNX Runtime, in one command on a GPU host; elsewhere every row "not measured".

At the contract's network input (256²); TensorRT Python API, or onnxruntime's TensorRT EP when
``tensorrt`` is not importable; ONNX Runtime CUDA FP32 as the same-run baseline (method in
benchmarks/README.md, "GPU check").

    .venv/bin/python benchmarks/gpu_check.py [--checkpoint demo]   # -> results/gpu_check.{json,md}
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np

from aspects_client import contract
from aspects_client import server_reference as ref

BATCHES = (1, 8, 16)
NOT_MEASURED = "not measured"
OPTIONS = [("--checkpoint", "demo", "checkpoint to export (default demo)"),
           ("--warmup", 10, "warm-up batches per batch size"),
           ("--rounds", 5, "timed rounds (median reported)"),
           ("--iters", 20, "batches per timed round")]


def gpu_backend() -> tuple[str | None, str]:
    """("tensorrt" | "ort-trt" | None, why): what can time the engine here."""
    if shutil.which("nvidia-smi") is None:
        return None, "no GPU here: nvidia-smi not found"
    providers = ort_providers()
    if importlib.util.find_spec("tensorrt") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                return "tensorrt", "TensorRT Python API"
        except ImportError:
            pass
    if "TensorrtExecutionProvider" in providers:
        return "ort-trt", "onnxruntime TensorrtExecutionProvider"
    return None, ("no TensorRT here: the tensorrt package (with a CUDA torch) is not installed and "
                  f"onnxruntime has no TensorrtExecutionProvider ({', '.join(providers)})")


def ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def timed(step: Any, batch: int, sync: Any, warmup: int, rounds: int, iters: int) -> dict:
    """Slices/s of ``step()`` (one batch), synchronised by ``sync()``: median of rounds."""
    for _ in range(warmup):
        step()
    sync()
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        sync()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return {"slices_per_s": statistics.median(rates), "rounds": rates}


def trt_steps(engine_path: Path, image: np.ndarray) -> tuple[dict, Any]:
    """One step function per batch size running the engine on CUDA tensors (TensorRT API)."""
    import tensorrt as trt
    import torch

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        engine_path.read_bytes())
    stream, steps = torch.cuda.Stream(), {}
    for b in BATCHES:
        ctx = engine.create_execution_context()
        x = torch.from_numpy(image[:b].copy()).cuda()
        y = torch.empty((b, contract.NUM_CLASSES, *x.shape[2:]), device="cuda")
        ctx.set_input_shape(contract.TENSOR_IMAGE, tuple(x.shape))
        ctx.set_tensor_address(contract.TENSOR_IMAGE, x.data_ptr())
        ctx.set_tensor_address(contract.TENSOR_LOGITS, y.data_ptr())
        steps[b] = (lambda c=ctx, x=x, y=y: c.execute_async_v3(stream.cuda_stream))
    torch.cuda.synchronize()
    return steps, stream.synchronize


def ort_steps(onnx_path: Path, image: np.ndarray, provider: str) -> tuple[dict, Any]:
    """One step per batch size: ONNX Runtime on ``provider`` with inputs/outputs bound on the
    GPU (io_binding), so no host copies are timed; ``run_with_iobinding`` synchronises."""
    import onnxruntime as ort

    opts = {"trt_fp16_enable": True} if provider == "TensorrtExecutionProvider" else {}
    sess = ort.InferenceSession(str(onnx_path), providers=[(provider, opts)])
    steps = {}
    for b in BATCHES:
        bind = sess.io_binding()
        bind.bind_ortvalue_input(contract.TENSOR_IMAGE,
                                 ort.OrtValue.ortvalue_from_numpy(image[:b].copy(), "cuda", 0))
        bind.bind_output(contract.TENSOR_LOGITS, "cuda")
        steps[b] = (lambda s=sess, bd=bind: s.run_with_iobinding(bd))
    return steps, lambda: None


def ort_trt_agreement(onnx_path: Path, slices: np.ndarray, source: str) -> dict:
    """Label agreement of onnxruntime's TensorRT EP (FP16) with its CPU EP (FP32)."""
    import onnxruntime as ort

    from aspects_export.tensorrt_build import MIN_LABEL_AGREEMENT

    image = ref.network_input(ref.context_stacks(slices))
    logits = [ort.InferenceSession(str(onnx_path), providers=[p]).run(
        None, {contract.TENSOR_IMAGE: image})[0]
        for p in (("TensorrtExecutionProvider", {"trt_fp16_enable": True}), "CPUExecutionProvider")]
    (lab_t, _), (lab_o, _) = (ref.postprocess_network(x) for x in logits)
    agreement = float((lab_t == lab_o).mean())
    return {"label_agreement": agreement, "passed": agreement >= MIN_LABEL_AGREEMENT,
            "max_abs_logit_diff": float(np.abs(logits[0] - logits[1]).max()),
            "slices_source": source}


def measure(args: Any) -> dict[str, Any]:
    backend, how = gpu_backend()
    result: dict[str, Any] = {
        "machine": harness.machine_info(harness.package_versions(
            ("onnxruntime", "onnxruntime-gpu", "torch", "tensorrt"))),
        "checkpoint": args.checkpoint, "backend": backend, "backend_note": how,
        "provenance": harness.provenance(harness.network_of(args.checkpoint)),
        "ort_providers": ort_providers(), "network_input": None,
        "tensorrt_fp16": {str(b): {"status": NOT_MEASURED, "reason": how} for b in BATCHES},
        "ort_cuda_fp32": {str(b): {"status": NOT_MEASURED, "reason": how} for b in BATCHES},
        "label_agreement": {"status": NOT_MEASURED, "reason": how},
    }
    result["network_input"] = [contract.NETWORK_CHANNELS, *contract.NETWORK_SIZE]
    if backend is None:
        harness.log(f"not measured: {how}")
        return result
    from aspects_export import numeric_check, pipeline

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        pipeline.export_onnx(args.checkpoint, work / "onnx", check_slices=0)
        result["provenance"] = harness.provenance(harness.network_of(args.checkpoint,
                                                                     work / "onnx"))
        onnx_path = work / "onnx" / f"{contract.UNET_MODEL}.onnx"
        slices, source = numeric_check.phantom_slices(max(BATCHES), allow_download=True)
        image = np.ascontiguousarray(ref.network_input(ref.context_stacks(slices)))
        if backend == "tensorrt":
            try:
                engine = pipeline.build_tensorrt(onnx_path, work / "engine")
            except Exception as exc:  # a failed agreement still leaves its report
                harness.log(f"build_tensorrt: {exc}")
                engine = work / "engine" / pipeline.ENGINE_FILE
            report = work / "engine" / pipeline.TENSORRT_REPORT_FILE
            result["label_agreement"] = json.loads(report.read_text()) if report.is_file() else {
                "status": NOT_MEASURED, "reason": "build_tensorrt wrote no report"}
            steps, sync = trt_steps(engine, image)
        else:
            result["label_agreement"] = ort_trt_agreement(
                onnx_path, slices[:pipeline.DEFAULT_CHECK_SLICES], source)
            steps, sync = ort_steps(onnx_path, image, "TensorrtExecutionProvider")
        for b in BATCHES:
            result["tensorrt_fp16"][str(b)] = timed(
                steps[b], b, sync, args.warmup, args.rounds, args.iters)
            harness.log(f"TensorRT FP16 batch {b}: "
                        f"{result['tensorrt_fp16'][str(b)]['slices_per_s']:.1f} slices/s")
        if "CUDAExecutionProvider" in result["ort_providers"]:
            steps, sync = ort_steps(onnx_path, image, "CUDAExecutionProvider")
            for b in BATCHES:
                result["ort_cuda_fp32"][str(b)] = timed(
                    steps[b], b, sync, args.warmup, args.rounds, args.iters)
        else:
            for row in result["ort_cuda_fp32"].values():
                row["reason"] = "onnxruntime has no CUDAExecutionProvider here"
    return result


def _cell(x: dict[str, Any]) -> str:
    return f"{x['slices_per_s']:.1f}" if "slices_per_s" in x else f"{NOT_MEASURED} ({x['reason']})"


def render(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    size = "×".join(map(str, r["network_input"][1:])) if r.get("network_input") else "?"
    lines = harness.md_header("GPU check: unet TensorRT FP16", "gpu_check.py", m,
                              "GPU check (issue 15)")
    how = (f"timing via {r['backend_note']}" if r["backend"]
           else f"**{NOT_MEASURED}**: {r['backend_note']}")
    lines += [f"Checkpoint `{r['checkpoint']}`; {how}. The unet runs at "
              f"the network input {size} (clients' 512×512 slices are resized to it by the "
              "ensemble's preprocess).", ""]
    rows = []
    for b in BATCHES:
        t, o = r["tensorrt_fp16"][str(b)], r["ort_cuda_fp32"][str(b)]
        ratio = (f"{t['slices_per_s'] / o['slices_per_s']:.2f}×"
                 if "slices_per_s" in t and "slices_per_s" in o else NOT_MEASURED)
        rows.append([f"batch {b}", _cell(t), _cell(o), ratio])
    lines += harness.md_table(["", "TensorRT FP16 slices/s (median)",
                               "ORT CUDA FP32 slices/s (baseline)", "TensorRT ÷ ORT"], rows, "lrrr")
    a = r["label_agreement"]
    agree = (f"{a['label_agreement']:.5f} (passed: {a['passed']}, {a.get('slices_source')})"
             if "label_agreement" in a else f"{NOT_MEASURED} ({a['reason']})")
    return [*lines, "", f"Label agreement, TensorRT FP16 vs ONNX Runtime (CPU FP32): {agree}."]


def main(argv: list[str] | None = None) -> int:
    args = harness.cli(__doc__ or "", harness.RESULTS / "gpu_check.json", OPTIONS).parse_args(argv)
    return harness.finish(args, lambda: measure(args), render)


if __name__ == "__main__":
    raise SystemExit(main())
