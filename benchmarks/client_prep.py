"""Client-side preparation benchmark (issue 3; method in benchmarks/README.md): ours (decode,
validate, ``prepare``, 2.5D stacks; contours + JSON) against the seed's (``get_fdata``, per-slice
PIL RGB + ImageNet) on a 512x512x20 phantom; peak memory by tracemalloc and subprocess VmHWM.

    .venv/bin/python benchmarks/client_prep.py [--repeats N] [--inflate zlib|isal]
        [--out benchmarks/results/client_prep.json]     # a .md table is written beside it
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import md_table

SHAPE = (512, 512, 20)
SEED = 3
STAGES = [  # (timing key, row label, bold)
    ("ours_read", "ours: read file", False),
    ("ours_decode", "ours: gzip decode (`decode_nifti_bytes`)", False),
    ("ours_prep_rest", "ours: validate + window + reorient + slice", False),
    ("ours_stacks", "ours: 2.5D stacks (`context_stacks`)", False),
    ("ours_prep_total", "ours: preparation total", True),
    ("ours_contours", "ours: contours + JSON (`assemble(overlay=False)` + `dumps`)", False),
    ("baseline_load_fdata", "baseline: `nib.load` + `get_fdata`", False),
    ("baseline_slices", "baseline: rot90 + per-slice PIL RGB + ImageNet", False),
    ("baseline_total", "baseline: total", True),
]
NOTES = [
    "Ours ships uint8 2.5D stacks [N,3,H,W] (slice below, slice, slice above); the float32 "
    "resize and ImageNet normalisation the baseline does on the client runs in Triton's "
    "`preprocess` model (docs/architecture.md §3).",
    "Baseline slices are normalised one at a time and not kept (streamed), which favours the "
    "baseline's memory figure.",
    "tracemalloc sees numpy and Python buffers, not zlib's/PIL's internal allocations.",
]
OPTIONS = [("--repeats", 9), ("--no-rss", False, "skip the peak-RSS subprocesses")]


def ours_prep(path: Path) -> tuple[dict[str, float], Any, Any]:
    """Read + decode + validate + prepare + 2.5D stacks; returns the split times (s)."""
    from aspects_client import volume_io
    from aspects_client.display_stack import prepare
    from aspects_client.server_reference import context_stacks

    t0 = time.perf_counter()
    raw = path.read_bytes()
    t1 = time.perf_counter()
    buffer = volume_io.decode_nifti_bytes(raw, path.name)
    t2 = time.perf_counter()
    volume = volume_io.volume_from_buffer(buffer, path.name)
    prepared = prepare(volume)
    t3 = time.perf_counter()
    context_stacks(prepared.slices)
    t4 = time.perf_counter()
    times = {"read": t1 - t0, "decode": t2 - t1, "prep_rest": t3 - t2, "stacks": t4 - t3,
             "prep_total": t4 - t0}
    return times, volume, prepared


def ours_prepared_and_stacks(source: Path | bytes) -> tuple[Any, np.ndarray]:
    """``load_volume`` + ``prepare`` + ``context_stacks``, both kept (as the client holds
    them while it infers), for the memory figures."""
    from aspects_client.display_stack import prepare
    from aspects_client.server_reference import context_stacks
    from aspects_client.volume_io import load_volume

    prepared = prepare(load_volume(source))
    return prepared, context_stacks(prepared.slices)


def ours_contours(volume: Any, prepared: Any, labels: np.ndarray) -> tuple[float, int]:
    """Seconds and characters of contours + JSON from a label map."""
    from aspects_client import document
    from aspects_client.assemble import assemble

    t0 = time.perf_counter()
    text = document.dumps(assemble(volume, prepared, labels, overlay=False).document)
    return time.perf_counter() - t0, len(text)


def baseline_prep(path: Path, keep: bool = False) -> tuple[dict[str, float], list]:
    """The seed's preparation: float64 get_fdata, rot90, per-slice PIL RGB + ImageNet."""
    t0 = time.perf_counter()
    vol = harness.seed_fdata(path)
    t1 = time.perf_counter()
    vol, kept = np.rot90(vol), []
    for i in range(vol.shape[2]):
        x = harness.seed_input(vol[:, :, i])
        if keep:
            kept.append(x)
    t2 = time.perf_counter()
    return {"load_fdata": t1 - t0, "slices": t2 - t1, "total": t2 - t0}, kept


def traced_peak(fn: Any) -> int:
    """tracemalloc's peak (bytes) over one ``fn()``."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del result
    return peak


def _peak_rss_kib() -> int:
    """VmHWM (KiB), which, unlike ru_maxrss, is not inherited from the parent over exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child_main(side: str, path: str, inflate: str) -> None:
    """Run one side once in a fresh process; print its peak RSS (KiB) before/after as JSON."""
    _select_inflate(inflate)
    import PIL.Image  # noqa: F401  (import cost is not the side's memory)

    before = _peak_rss_kib()
    (ours_prep if side == "ours" else baseline_prep)(Path(path))
    print(json.dumps({"before_kib": before, "after_kib": _peak_rss_kib()}))


def subprocess_rss(side: str, path: Path, inflate: str) -> dict[str, int] | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--path", str(path),
           "--inflate", inflate]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        print(f"peak RSS child for {side} failed: {exc}", file=sys.stderr)
        return None


def _select_inflate(name: str) -> str:
    """The module volume_io inflates with: 'isal' (the project's default, python-isal) or
    'zlib' (the standard library, for comparison)."""
    from aspects_client import volume_io

    if name == "zlib":
        import zlib

        volume_io._inflate_lib = zlib
        return f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    import isal
    from isal import isal_zlib

    volume_io._inflate_lib = isal_zlib
    return f"isal {getattr(isal, '__version__', '?')}"


def render_markdown(r: dict[str, Any]) -> list[str]:
    t, w, mem, ratios = r["timings"], r["workload"], r["memory"], r["ratios"]
    rss = r.get("peak_rss_kib") or {}

    def ms(key: str, stat: str, bold: bool) -> str:
        text = f"{t[key][stat] * 1e3:.0f}"
        return f"**{text}**" if bold else text

    rows = [[f"**{label}**" if b else label, ms(k, "median_s", b), ms(k, "min_s", b)]
            for k, label, b in STAGES if k in t]
    lines = [
        *harness.md_header("Client preparation benchmark (issue 3)", "client_prep.py",
                           r["machine"], "Client preparation (issue 3)"),
        f"Inflate: {r['inflate']}. Workload: {w['shape']} {w['dtype']} phantom (seed "
        f"{w['seed']}), `.nii.gz` of {w['file_bytes'] / 1e6:.1f} MB (decoded volume "
        f"{w['volume_nbytes'] / 1e6:.1f} MB); {r['repeats']} interleaved repeats.", "",
        *md_table(["stage", "median ms", "min ms"], rows, "lrr"), "",
        *md_table(["ratio (goal)", "value"], [
            ["baseline / ours preparation, medians (≥ 3×)", f"**{ratios['prep_median']:.2f}×**"],
            ["baseline / ours preparation, minima", f"{ratios['prep_min']:.2f}×"],
            ["baseline / (ours preparation + contours + JSON), medians",
             f"{ratios['prep_plus_contours_median']:.2f}×"],
            ["gzip decode share of ours preparation (median)", f"{ratios['decode_share']:.0%}"],
        ], "lr"), "",
        *md_table(["peak memory (tracemalloc)", "MB", "× decoded volume (goal ≤ 3×)"], [
            [label, f"{mem[f'{k}_peak'] / 1e6:.1f}", f"{bold}{mem[f'{k}_ratio']:.2f}×{bold}"]
            for label, k, bold in (
                ("ours preparation, from path (file bytes included)", "ours", "**"),
                ("ours preparation, from bytes already in memory", "ours_from_bytes", ""),
                ("baseline (PIL buffers untraced)", "baseline", ""))], "lrr"),
    ]
    if rss.get("ours") and rss.get("baseline"):
        mib = {s: [f"{rss[s][k] / 1024:.0f}" for k in ("before_kib", "after_kib")] for s in rss}
        lines += ["", "Peak RSS (VmHWM) of a fresh subprocess, after imports → after one run: "
                  f"ours {' → '.join(mib['ours'])} MiB, baseline {' → '.join(mib['baseline'])} "
                  "MiB."]
    return [*lines, "", *[f"- {n}" for n in r.get("notes", [])]]


def interleaved(path: Path, labels: np.ndarray, repeats: int) -> dict[str, dict[str, float]]:
    """Median and minimum seconds of every stage over ``repeats`` interleaved repeats."""
    series: dict[str, list[float]] = {}
    for _ in range(repeats):
        gc.collect()
        t, volume, prepared = ours_prep(path)
        gc.collect()
        b, _ = baseline_prep(path)
        gc.collect()
        c = {"contours": ours_contours(volume, prepared, labels)[0]}
        for side, times in (("ours", t), ("baseline", b), ("ours", c)):
            for k, val in times.items():
                series.setdefault(f"{side}_{k}", []).append(val)
    return {k: {"median_s": statistics.median(v), "min_s": min(v)} for k, v in series.items()}


def measure_phantom(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Timings, memory peaks and workload of the phantom written at ``path``."""
    import nibabel as nib

    from aspects_client.geometry import to_display
    from aspects_synth import make_phantom

    phantom = make_phantom(seed=SEED, in_plane=SHAPE[:2], n_slices=SHAPE[2])
    nib.save(phantom.image, str(path))
    # the label map as Triton would return it: true classes on the display grid
    _, volume, prepared = ours_prep(path)
    labels = np.ascontiguousarray(to_display(phantom.classes, prepared.geometry))
    volume_nbytes = int(np.prod(volume.shape)) * np.dtype(np.float32).itemsize
    # sanity: both sides see the same slices in the same orientation
    mid = SHAPE[2] // 2
    kept = baseline_prep(path, keep=True)[1][mid][0]
    corr = np.corrcoef(prepared.slices[mid].ravel().astype(np.float64),
                       kept.ravel().astype(np.float64))[0, 1]
    if corr < 0.9:
        raise SystemExit(f"orientation mismatch between ours and baseline (r={corr:.3f})")
    ours_contours(volume, prepared, labels)  # warm-up (imports, caches)
    baseline_prep(path)
    timings = interleaved(path, labels, args.repeats)
    raw = path.read_bytes()
    peaks = {"ours_peak": traced_peak(lambda: ours_prepared_and_stacks(path)),
             "ours_from_bytes_peak": traced_peak(lambda: ours_prepared_and_stacks(raw)),
             "baseline_peak": traced_peak(lambda: baseline_prep(path)),
             "contours_peak": traced_peak(lambda: ours_contours(volume, prepared, labels))}
    rss = None if args.no_rss else {s: subprocess_rss(s, path, args.inflate)
                                    for s in ("ours", "baseline")}
    workload = {"shape": list(SHAPE), "dtype": "float32", "seed": SEED,
                "file_bytes": path.stat().st_size, "volume_nbytes": volume_nbytes,
                "json_chars": ours_contours(volume, prepared, labels)[1],
                "orientation_check_corr": round(float(corr), 4)}
    return {"timings": timings, "peaks": peaks, "rss": rss, "workload": workload}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import cv2
    import nibabel as nib
    import PIL

    inflate = _select_inflate(args.inflate)
    tmp = Path(tempfile.mkdtemp(prefix="aspects_bench_"))
    try:
        m = measure_phantom(tmp / "phantom.nii.gz", args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    timings, peaks, volume_nbytes = m["timings"], m["peaks"], m["workload"]["volume_nbytes"]
    med = {k: v["median_s"] for k, v in timings.items()}
    memory = {"volume_nbytes": volume_nbytes, **peaks}
    for k in ("ours", "ours_from_bytes", "baseline"):
        memory[f"{k}_ratio"] = peaks[f"{k}_peak"] / volume_nbytes
    ratios = {
        "prep_median": med["baseline_total"] / med["ours_prep_total"],
        "prep_min": timings["baseline_total"]["min_s"] / timings["ours_prep_total"]["min_s"],
        "prep_plus_contours_median": med["baseline_total"]
        / (med["ours_prep_total"] + med["ours_contours"]),
        "decode_share": med["ours_decode"] / med["ours_prep_total"],
    }
    versions = {"numpy": np.__version__, "nibabel": nib.__version__, "opencv": cv2.__version__,
                "pillow": PIL.__version__}
    return {
        "benchmark": "client_prep", "issue": 3, "machine": harness.machine_info(versions),
        "provenance": harness.provenance(None),  # the client's work: no network measured
        "inflate": inflate, "repeats": args.repeats, "workload": m["workload"],
        "timings": timings, "ratios": ratios, "memory": memory, "peak_rss_kib": m["rss"],
        "goals": {"speedup_min": 3.0, "peak_memory_max_ratio": 3.0,
                  "met": bool(ratios["prep_median"] >= 3.0 and memory["ours_ratio"] <= 3.0)},
        "notes": NOTES,
    }


def main(argv: list[str] | None = None) -> int:
    ap = harness.cli(__doc__, harness.RESULTS / "client_prep.json", OPTIONS)
    ap.add_argument("--inflate", choices=("zlib", "isal"), default="isal")
    ap.add_argument("--child", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child, args.path, args.inflate)
        return 0
    return harness.finish(args, lambda: measure(args), render_markdown)


if __name__ == "__main__":
    sys.exit(main())
