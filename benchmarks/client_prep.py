"""Client-side preparation benchmark (issue 3).

Workload: a 512x512x20 float32 .nii.gz phantom written to a temporary directory (removed
afterwards), prepared from the file's bytes:

* OURS: read the file, ``decode_nifti_bytes`` (bounded gzip inflate), ``volume_from_buffer``
  (validate, zero-copy view), ``prepare`` (window to uint8, reorient, slice) and the 2.5D
  stacks sent to Triton (``context_stacks``: uint8 [N, 3, H, W]), i.e. what
  ``load_volume(path)`` + ``prepare`` + ``TritonSegmenter.infer`` do before sending; then,
  timed separately, contours + JSON from the label map (``assemble(..., overlay=False)`` +
  ``document.dumps``).
* BASELINE, the seed's preparation, in the same run: ``nibabel.load`` + ``get_fdata`` +
  ``np.rot90``, then per slice ``(s / s.max() * 255).astype(uint8)``, PIL ``.convert('RGB')``
  and ImageNet normalisation to float32 [3, H, W] with numpy.

Repeats are interleaved (ours, baseline, contours, ours, ...).  Medians and minima are
reported; peak memory with tracemalloc (numpy buffers are traced) relative to the decoded
float32 volume, and ru_maxrss of a fresh subprocess per side.

    .venv/bin/python benchmarks/client_prep.py [--repeats N] [--inflate zlib|isal]
        [--out benchmarks/results/client_prep.json]     # a .md table is written beside it
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np

from aspects_client import document, volume_io
from aspects_client.assemble import assemble
from aspects_client.geometry import to_display
from aspects_client.preprocessing import context_stacks
from aspects_client.slicing import prepare

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "client_prep.json"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SHAPE = (512, 512, 20)
SEED = 3


# --------------------------------------------------------------------------- the two sides
def ours_prep(path: Path) -> tuple[dict[str, float], volume_io.Volume, object]:
    """Read + decode + validate + prepare + 2.5D stacks; returns the split times (s)."""
    t0 = time.perf_counter()
    raw = path.read_bytes()
    t1 = time.perf_counter()
    buffer = volume_io.decode_nifti_bytes(raw, path.name)
    t2 = time.perf_counter()
    volume = volume_io.volume_from_buffer(buffer, path.name)
    prepared = prepare(volume)
    t3 = time.perf_counter()
    stacks = context_stacks(prepared.slices)
    t4 = time.perf_counter()
    del stacks
    times = {
        "read": t1 - t0,
        "decode": t2 - t1,
        "prep_rest": t3 - t2,
        "stacks": t4 - t3,
        "prep_total": t4 - t0,
    }
    return times, volume, prepared


def ours_prepared_and_stacks(source: Path | bytes) -> tuple[object, np.ndarray]:
    """``load_volume`` + ``prepare`` + ``context_stacks``, both kept (as the client holds
    them while it infers), for the memory figures."""
    prepared = prepare(volume_io.load_volume(source))
    return prepared, context_stacks(prepared.slices)


def ours_contours(volume, prepared, labels: np.ndarray) -> tuple[float, int]:
    t0 = time.perf_counter()
    assembled = assemble(volume, prepared, labels, overlay=False)
    text = document.dumps(assembled.document)
    return time.perf_counter() - t0, len(text)


def baseline_prep(path: Path, keep: bool = False) -> tuple[dict[str, float], list]:
    """The seed's preparation: float64 get_fdata, rot90, per-slice PIL RGB + ImageNet."""
    from PIL import Image

    t0 = time.perf_counter()
    vol = nib.load(str(path)).get_fdata()
    t1 = time.perf_counter()
    vol = np.rot90(vol)
    kept = []
    for i in range(vol.shape[2]):
        s = vol[:, :, i]
        u8 = (s / s.max() * 255).astype(np.uint8)
        rgb = np.asarray(Image.fromarray(u8).convert("RGB"), dtype=np.float32)
        x = (rgb / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # [H, W, 3]
        x = np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)  # [3, H, W]
        if keep:
            kept.append(x)
    t2 = time.perf_counter()
    return {"load_fdata": t1 - t0, "slices": t2 - t1, "total": t2 - t0}, kept


# --------------------------------------------------------------------------- memory
def traced_peak(fn) -> int:
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
    """The process's peak RSS (KiB): VmHWM, which, unlike ru_maxrss, is not inherited from
    the parent across fork+exec; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_main(side: str, path: str, inflate: str) -> None:
    """Run one side once in a fresh process; print its peak RSS (KiB) before/after as JSON."""
    _select_inflate(inflate)
    import PIL.Image  # noqa: F401  (import cost is not the side's memory)

    before = _peak_rss_kib()
    if side == "ours":
        ours_prep(Path(path))
    else:
        baseline_prep(Path(path))
    after = _peak_rss_kib()
    print(json.dumps({"before_kib": before, "after_kib": after}))


def subprocess_rss(side: str, path: Path, inflate: str) -> dict[str, int] | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--path", str(path)]
    cmd += ["--inflate", inflate]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        print(f"ru_maxrss child for {side} failed: {exc}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- inflate choice
def _select_inflate(name: str) -> str:
    """Choose the module volume_io inflates with: 'isal' (the project's default, python-isal)
    or 'zlib' (the standard library, for comparison)."""
    if name == "zlib":
        import zlib

        volume_io._inflate_lib = zlib
        return f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    from isal import isal_zlib

    volume_io._inflate_lib = isal_zlib
    import isal

    return f"isal {getattr(isal, '__version__', '?')}"


# --------------------------------------------------------------------------- report
def stats(values: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(values), "min_s": min(values)}


def machine_info() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    versions["nibabel"] = nib.__version__
    try:
        import cv2

        versions["opencv"] = cv2.__version__
    except ImportError:
        versions["opencv"] = "missing"
    import PIL

    versions["pillow"] = PIL.__version__
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def render_markdown(r: dict) -> str:
    m, t = r["machine"], r["timings"]
    ms = lambda k: f"{t[k]['median_s'] * 1e3:.0f}"  # noqa: E731
    mn = lambda k: f"{t[k]['min_s'] * 1e3:.0f}"  # noqa: E731
    v = m["versions"]
    lines = [
        "# Client preparation benchmark (issue 3)",
        "",
        f"Generated by `benchmarks/client_prep.py` on {m['date']}.  Machine: {m['cpu']}, "
        f"{m['cores']} cores; Python {v['python']}, numpy {v['numpy']}, nibabel {v['nibabel']}, "
        f"OpenCV {v['opencv']}, Pillow {v['pillow']}; inflate: {r['inflate']}.",
        "",
        f"Workload: {r['workload']['shape']} {r['workload']['dtype']} phantom (seed "
        f"{r['workload']['seed']}), `.nii.gz` of {r['workload']['file_bytes'] / 1e6:.1f} MB "
        f"(decoded volume {r['workload']['volume_nbytes'] / 1e6:.1f} MB); "
        f"{r['repeats']} interleaved repeats.",
        "",
        "| stage | median ms | min ms |",
        "|---|---:|---:|",
        f"| ours: read file | {ms('ours_read')} | {mn('ours_read')} |",
        f"| ours: gzip decode (`decode_nifti_bytes`) | {ms('ours_decode')} | {mn('ours_decode')} |",
        f"| ours: validate + window + reorient + slice | {ms('ours_prep_rest')} "
        f"| {mn('ours_prep_rest')} |",
        f"| ours: 2.5D stacks (`context_stacks`) | {ms('ours_stacks')} | {mn('ours_stacks')} |",
        f"| **ours: preparation total** | **{ms('ours_prep_total')}** "
        f"| **{mn('ours_prep_total')}** |",
        f"| ours: contours + JSON (`assemble(overlay=False)` + `dumps`) | {ms('ours_contours')} "
        f"| {mn('ours_contours')} |",
        f"| baseline: `nib.load` + `get_fdata` | {ms('baseline_load_fdata')} "
        f"| {mn('baseline_load_fdata')} |",
        f"| baseline: rot90 + per-slice PIL RGB + ImageNet | {ms('baseline_slices')} "
        f"| {mn('baseline_slices')} |",
        f"| **baseline: total** | **{ms('baseline_total')}** | **{mn('baseline_total')}** |",
        "",
        "| ratio (goal) | value |",
        "|---|---:|",
    ]
    ratios = r["ratios"]
    lines += [
        f"| baseline / ours preparation, medians (≥ 3×) | **{ratios['prep_median']:.2f}×** |",
        f"| baseline / ours preparation, minima | {ratios['prep_min']:.2f}× |",
        f"| baseline / (ours preparation + contours + JSON), medians | "
        f"{ratios['prep_plus_contours_median']:.2f}× |",
        f"| gzip decode share of ours preparation (median) | {ratios['decode_share']:.0%} |",
    ]
    mem = r["memory"]
    lines += [
        "",
        "| peak memory (tracemalloc) | MB | × decoded volume (goal ≤ 3×) |",
        "|---|---:|---:|",
        f"| ours preparation, from path (file bytes included) | {mem['ours_peak'] / 1e6:.1f} "
        f"| **{mem['ours_ratio']:.2f}×** |",
        f"| ours preparation, from bytes already in memory | "
        f"{mem['ours_from_bytes_peak'] / 1e6:.1f} | {mem['ours_from_bytes_ratio']:.2f}× |",
        f"| baseline (PIL buffers untraced) | {mem['baseline_peak'] / 1e6:.1f} "
        f"| {mem['baseline_ratio']:.2f}× |",
    ]
    rss = r.get("peak_rss_kib") or {}
    if rss.get("ours") and rss.get("baseline"):
        lines += [
            "",
            "Peak RSS (VmHWM) of a fresh subprocess, after imports → after one run: "
            f"ours {rss['ours']['before_kib'] / 1024:.0f} → {rss['ours']['after_kib'] / 1024:.0f}"
            f" MiB, baseline {rss['baseline']['before_kib'] / 1024:.0f} → "
            f"{rss['baseline']['after_kib'] / 1024:.0f} MiB.",
        ]
    if r.get("notes"):
        lines += ["", *[f"- {n}" for n in r["notes"]]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--inflate", choices=("zlib", "isal"), default="isal")
    ap.add_argument("--no-rss", action="store_true", help="skip the ru_maxrss subprocesses")
    ap.add_argument("--child", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child, args.path, args.inflate)
        return 0

    inflate = _select_inflate(args.inflate)
    from aspects_synth import make_phantom

    phantom = make_phantom(seed=SEED, in_plane=SHAPE[:2], n_slices=SHAPE[2])
    tmp = Path(tempfile.mkdtemp(prefix="aspects_bench_"))
    try:
        path = tmp / "phantom.nii.gz"
        nib.save(phantom.image, str(path))
        file_bytes = path.stat().st_size

        # the label map as Triton would return it: true classes on the display grid
        _, volume, prepared = ours_prep(path)
        labels = np.ascontiguousarray(to_display(phantom.classes, prepared.geometry))
        volume_nbytes = int(np.prod(volume.shape)) * np.dtype(np.float32).itemsize

        # sanity: both sides see the same slices in the same orientation
        _, kept = baseline_prep(path, keep=True)
        corr = np.corrcoef(
            prepared.slices[SHAPE[2] // 2].ravel().astype(np.float64),
            kept[SHAPE[2] // 2][0].ravel().astype(np.float64),
        )[0, 1]
        del kept
        if corr < 0.9:
            raise SystemExit(f"orientation mismatch between ours and baseline (r={corr:.3f})")

        series: dict[str, list[float]] = {}

        def add(key: str, value: float) -> None:
            series.setdefault(key, []).append(value)

        ours_contours(volume, prepared, labels)  # warm-up (imports, caches)
        baseline_prep(path)
        for _ in range(args.repeats):
            gc.collect()
            t, volume, prepared = ours_prep(path)
            for k, val in t.items():
                add(f"ours_{k}", val)
            gc.collect()
            b, _ = baseline_prep(path)
            for k, val in b.items():
                add(f"baseline_{k}", val)
            gc.collect()
            add("ours_contours", ours_contours(volume, prepared, labels)[0])
        timings = {k: stats(v) for k, v in series.items()}
        json_chars = ours_contours(volume, prepared, labels)[1]

        ours_peak = traced_peak(lambda: ours_prepared_and_stacks(path))
        raw = path.read_bytes()
        ours_from_bytes_peak = traced_peak(lambda: ours_prepared_and_stacks(raw))
        raw = b""
        baseline_peak = traced_peak(lambda: baseline_prep(path))
        contours_peak = traced_peak(lambda: ours_contours(volume, prepared, labels))

        rss = None
        if not args.no_rss:
            rss = {s: subprocess_rss(s, path, args.inflate) for s in ("ours", "baseline")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = lambda k: timings[k]["median_s"]  # noqa: E731
    result = {
        "benchmark": "client_prep",
        "issue": 3,
        "machine": machine_info(),
        "inflate": inflate,
        "repeats": args.repeats,
        "workload": {
            "shape": list(SHAPE),
            "dtype": "float32",
            "seed": SEED,
            "file_bytes": file_bytes,
            "volume_nbytes": volume_nbytes,
            "json_chars": json_chars,
            "orientation_check_corr": round(float(corr), 4),
        },
        "timings": timings,
        "ratios": {
            "prep_median": med("baseline_total") / med("ours_prep_total"),
            "prep_min": timings["baseline_total"]["min_s"] / timings["ours_prep_total"]["min_s"],
            "prep_plus_contours_median": med("baseline_total")
            / (med("ours_prep_total") + med("ours_contours")),
            "decode_share": med("ours_decode") / med("ours_prep_total"),
        },
        "memory": {
            "volume_nbytes": volume_nbytes,
            "ours_peak": ours_peak,
            "ours_ratio": ours_peak / volume_nbytes,
            "ours_from_bytes_peak": ours_from_bytes_peak,
            "ours_from_bytes_ratio": ours_from_bytes_peak / volume_nbytes,
            "baseline_peak": baseline_peak,
            "baseline_ratio": baseline_peak / volume_nbytes,
            "contours_peak": contours_peak,
        },
        "peak_rss_kib": rss,
        "goals": {"speedup_min": 3.0, "peak_memory_max_ratio": 3.0},
        "notes": [
            "Ours ships uint8 2.5D stacks [N,3,H,W] (slice below, slice, slice above); the "
            "float32 resize and ImageNet normalisation the baseline does on the client runs in "
            "Triton's `preprocess` model (DESIGN §3).",
            "Baseline slices are normalised one at a time and not kept (streamed), which "
            "favours the baseline's memory figure.",
            "tracemalloc sees numpy and Python buffers, not zlib's/PIL's internal allocations.",
        ],
    }
    result["goals"]["met"] = bool(
        result["ratios"]["prep_median"] >= 3.0 and result["memory"]["ours_ratio"] <= 3.0
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md = render_markdown(result)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
