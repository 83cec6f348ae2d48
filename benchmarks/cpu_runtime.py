"""The unet step on the CPU (issue 15; method in benchmarks/README.md): the same unet.onnx (demo
weights) on ONNX Runtime FP32 (the baseline), OpenVINO bf16 and OpenVINO f32 (the sessions the
CPU runtime's model.py builds: ``triton_python_model.build_session``), batch 1/4/16,
interleaved rounds; labels vs ONNX Runtime FP32 from the exporter's precision gate.

    flock /tmp/aspects-bench.lock .venv/bin/python benchmarks/cpu_runtime.py
        # -> benchmarks/results/cpu_runtime.{json,md}
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import md_table, median_of, share

RUNTIMES = ("onnxruntime", "openvino-bf16", "openvino-f32")  # repository.CPU_RUNTIMES names
GOAL = {True: 1.8, False: 1.0}  # unet vs ORT FP32, on a CPU with / without bf16
OPTIONS = [("--rounds", 5), ("--passes", 3, "passes over the 16 slices per item"),
           ("--batches", "1,4,16")]


def timed(session: Any, images: np.ndarray, batch: int, passes: int) -> dict[str, Any]:
    """slices/s over ``passes`` passes through ``images`` in runs of ``batch`` slices."""
    t = time.perf_counter()
    for _ in range(passes):
        for i in range(0, len(images), batch):
            session.run(["LOGITS"], {"IMAGE": images[i:i + batch]})
    n = passes * len(images)
    return {"slices": n, "slices_per_s": n / (time.perf_counter() - t)}


def measure(args: Any) -> dict[str, Any]:
    from aspects_client import server_reference as ref
    from aspects_export import numeric_check
    from aspects_export.pipeline import export_onnx
    from aspects_export.repository import CPU_RUNTIMES, cpu_bf16_supported, default_cpu_runtime
    from aspects_export.triton_python_model import build_session

    batches = harness.int_list(args.batches)  # each divides the 16 slices
    raw: dict[str, Any] = {
        "machine": harness.machine_info(harness.package_versions(("onnxruntime", "openvino"))),
        "batches": batches, "passes": args.passes, "bf16_cpu": cpu_bf16_supported(),
        "default": default_cpu_runtime().name}
    with tempfile.TemporaryDirectory(prefix="aspects-cpu-runtime-") as tmp:
        export_onnx("demo", Path(tmp), check_slices=0)
        raw["provenance"] = harness.provenance(harness.network_of("demo", Path(tmp)))
        onnx = Path(tmp) / "unet.onnx"
        slices, _truth, seed = numeric_check.gate_cases(1)[0]
        images = ref.network_input(ref.context_stacks(slices))[:max(batches)]
        profiles = {n: (CPU_RUNTIMES[n].runtime, CPU_RUNTIMES[n].precision) for n in RUNTIMES}
        runs = {n: build_session(str(onnx), {"runtime": r, "precision": p})
                for n, (r, p) in profiles.items()}
        for run in runs.values():
            timed(run, images, max(batches), 1)  # warm-up
        jobs = {f"{n} b{b}": (lambda run=run, b=b: timed(run, images, b, args.passes))
                for n, run in runs.items() for b in batches}
        raw["rounds"] = harness.run_rounds(
            jobs, args.rounds, harness.CpuMeter(), quiet=0.15, retries=1, retry_above=0.25,
            say=lambda r: f"{r['slices_per_s']:.1f} slices/s")
        raw["gate"] = {n: numeric_check.precision_gate(onnx, *profiles[n], progress=harness.log)
                       for n in RUNTIMES[1:]}
    raw["images"] = f"{len(images)} slices of held-out phantom {seed} (network input)"
    return raw


def derive(raw: dict[str, Any]) -> None:
    def cell(n: str, b: int) -> dict[str, float]:
        rows, base = raw["rounds"][f"{n} b{b}"], raw["rounds"][f"onnxruntime b{b}"]
        return {"slices_per_s": median_of(rows, "slices_per_s"),
                "ratio_paired": statistics.median(r["slices_per_s"] / o["slices_per_s"]
                                                  for r, o in zip(rows, base, strict=True)),
                "cpu_ms_per_slice": statistics.median(1e3 * r["cpu"]["own_cpu_s"] / r["slices"]
                                                      for r in rows)}

    raw["summary"] = {n: {str(b): cell(n, b) for b in raw["batches"]} for n in RUNTIMES}
    raw["goal"] = GOAL[raw["bf16_cpu"]]


def render(raw: dict[str, Any]) -> list[str]:
    s, bs = raw["summary"], [str(b) for b in raw["batches"]]
    rows = [[f"`{n}`", *(f"{s[n][b]['slices_per_s']:.1f} ({s[n][b]['ratio_paired']:.2f}×), "
                         f"{s[n][b]['cpu_ms_per_slice']:.0f} CPU-ms" for b in bs)] for n in s]
    gate = [[f"`{n}`", f"{100 * g['label_disagreement']:.3f} %",
             f"{g['mean_region_dice']['candidate']:.4f} vs "
             f"{g['mean_region_dice']['reference']:.4f}", "passed" if g["passed"] else "FAILED"]
            for n, g in raw["gate"].items()]
    tenants = max(share(r) for rs in raw["rounds"].values() for r in rs)
    return [*harness.md_header("Unet step on the CPU (issue 15)", "cpu_runtime.py", raw["machine"],
                               "Unet on the CPU: runtimes (issue 15)"),
            f"CPU has bf16 (OpenVINO BF16 capability): **{raw['bf16_cpu']}**; default profile "
            f"here: `{raw['default']}`. Demo weights; {raw['images']}; "
            f"{raw['passes']} passes per measurement; {len(raw['rounds']['onnxruntime b1'])} "
            f"interleaved rounds (other tenants ≤ {100 * tenants:.0f} %); medians, ratio = paired "
            "per round vs ONNX Runtime FP32; CPU-ms = this process's CPU time per slice.", "",
            *md_table(["runtime", *(f"batch {b}: slices/s (× ORT FP32), cost" for b in bs)], rows,
                      "l" + "r" * len(bs)), "",
            f"Goal: OpenVINO bf16 ≥ {raw['goal']}× ONNX Runtime FP32 on this CPU.", "",
            "Labels vs ONNX Runtime FP32 (the exporter's precision gate: held-out phantoms, "
            "contract postprocessing; limits 0.1 % of pixels, Dice change 0.005):", "",
            *md_table(["runtime", "labels differing", "mean region Dice vs truth", "gate"], gate,
                      "lrrl")]


def main(argv: list[str] | None = None) -> int:
    args = harness.cli(__doc__, harness.RESULTS / "cpu_runtime.json", OPTIONS).parse_args(argv)
    return harness.finish(args, lambda: measure(args), render, derive=derive)


if __name__ == "__main__":
    sys.exit(main())
