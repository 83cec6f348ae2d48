"""Numeric checks of the exported graphs, written as ``numeric_report.json`` beside them.

- ``unet``: ONNX Runtime vs PyTorch on the same images — max / mean absolute logit difference,
  label agreement after the same postprocess (must be ≥ ``MIN_LABEL_AGREEMENT``) and raw
  argmax agreement (stricter: no threshold hides disagreement in uncertain pixels);
- ``preprocess``: ONNX vs ``aspects_client.server_reference.network_input`` (max abs diff of IMAGE,
  in normalised units) on the 2.5D stacks (``context_stacks``) of the slices at several native
  sizes;
- ``postprocess``: ONNX vs ``aspects_client.server_reference.postprocess`` (fraction of exactly
  equal LABELS, max abs diff of CONFIDENCE) at the same sizes.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from aspects_client import contract
from aspects_client import server_reference as ref
from aspects_export.errors import ExportError
from aspects_synth.atlas import sha256_file

if TYPE_CHECKING:
    import torch

REPORT_FILE = "numeric_report.json"
CHECK_SIZES: tuple[tuple[int, int], ...] = ((512, 512), (256, 320), (600, 480))
MIN_LABEL_AGREEMENT = 0.999
MAX_IMAGE_ABS_DIFF = 1e-3  # normalised units (≈ 0.06 uint8 levels)
MAX_CONFIDENCE_ABS_DIFF = 1e-4
MIN_LABEL_EQUALITY = 1.0  # pre/postprocess labels must equal the reference exactly

Progress = Callable[[str], None]


def synthetic_slices(n: int = 4, hw: tuple[int, int] = contract.NETWORK_SIZE) -> np.ndarray:
    """Deterministic brain-like uint8 slices ``[n, H, W]`` (a small volume, consecutive slices
    differ): a bright ellipse ("GM"), darker inner ellipse ("WM"), dark ventricles, a bright
    blob ("lesion") and mild noise."""
    H, W = hw
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = np.zeros((n, H, W), np.uint8)
    for i in range(n):
        cy, cx = H / 2 + 6 * i, W / 2 - 4 * i
        ry, rx = H * (0.40 - 0.02 * i), W * 0.33
        r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        img = np.where(r < 1, 150.0, 0.0) + np.where(r < 0.7, -40.0, 0.0)
        img -= np.where(((yy - cy) / (0.12 * H)) ** 2 + ((xx - cx) / (0.05 * W)) ** 2 < 1, 80, 0)
        blob = ((yy - cy + 0.15 * H) / (0.05 * H)) ** 2 + ((xx - cx - 0.12 * W) / (0.04 * W)) ** 2
        img += np.where(blob < 1, 90.0, 0.0)
        img += np.where(r < 1, rng.normal(0, 6, (H, W)), 0.0)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def stress_logits(n: int = 2, seed: int = 7) -> np.ndarray:
    """Seeded float32 logits ``[n, 11, h, w]`` (``contract.NETWORK_SIZE``) that exercise every
    postprocess branch: blocky regions of every class, uncertain pixels below the threshold,
    and small classes just under the min-area boundary (the demo checkpoint's logits are nearly
    flat)."""
    h, w = contract.NETWORK_SIZE
    block = max(1, min(h, w) // 16)
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 4.0, (n, contract.NUM_CLASSES, -(-h // block), -(-w // block)))
    blocky = np.kron(coarse, np.ones((1, 1, block, block)))[:, :, :h, :w]
    logits = blocky + rng.normal(0.0, 1.5, (n, contract.NUM_CLASSES, h, w))
    # two classes per slice exist only as one confident island of MIN_AREA_PIXELS - 1 pixels:
    # the min-area rule must remove them (it counts a class per slice, not per island)
    rows = max(1, math.isqrt(max(contract.MIN_AREA_PIXELS - 1, 1)))
    cols = max(1, (contract.MIN_AREA_PIXELS - 1) // rows)
    for i in range(n):
        for j, cls in enumerate((10 - 2 * (i % 5), 9 - 2 * (i % 5))):
            logits[i, cls] -= 30.0
            r, c = (h * (1 + 2 * j)) // 5, (w * 3) // 10
            logits[i, cls, r : r + rows, c : c + cols] += 60.0
    return logits.astype(np.float32)


def phantom_slices(n: int = 4, allow_download: bool = True) -> tuple[np.ndarray, str]:
    """``n`` consecutive central axial uint8 slices ``[n, h, w]`` (``contract.NETWORK_SIZE``) of
    ``aspects_synth``'s seeded phantom, windowed and oriented as the client does.  The atlas
    is fetched once if it is not cached (``allow_download=False``: never); falls back to
    ``synthetic_slices`` when the phantom is unavailable.  Returns (slices, description of
    their source)."""
    try:
        from aspects_client.intensity import window_to_uint8
        from aspects_synth import AtlasUnavailableError, ensure_atlas, make_phantom, verify_cache

        if not allow_download and not verify_cache():
            return synthetic_slices(n), "synthetic ellipses (phantom atlas not cached)"
        try:
            ensure_atlas()
        except AtlasUnavailableError as exc:
            return synthetic_slices(n), f"synthetic ellipses (atlas unavailable: {exc!s:.160})"

        ph = make_phantom(seed=0, in_plane=contract.NETWORK_SIZE, n_slices=max(n, 8))
        data = np.asarray(ph.image.dataobj, dtype=np.float32)  # stored RAS
        u8 = window_to_uint8(data)
        k = u8.shape[contract.SLICE_AXIS]
        start = max(0, (k - n) // 2)
        picked = [
            np.rot90(np.take(u8, i, axis=contract.SLICE_AXIS), k=contract.DISPLAY_ROT90_K)
            for i in range(start, start + n)
        ]
        return np.ascontiguousarray(np.stack(picked), dtype=np.uint8), "phantom seed 0"
    except Exception as exc:  # API drift, a broken phantom, ...
        return synthetic_slices(n), f"synthetic ellipses (phantom unavailable: {exc!s:.120})"


def _session(path: Path) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise ExportError(f"{path} does not exist; run 'aspects-export onnx' first")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run_batched(sess: Any, feeds: dict[str, np.ndarray], batch: int = 4) -> list[np.ndarray]:
    n = next(iter(feeds.values())).shape[0]
    parts = [
        sess.run(None, {k: v[i : i + batch] for k, v in feeds.items()}) for i in range(0, n, batch)
    ]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


def compare_unet(
    unet_onnx: Path, model: torch.nn.Module, image: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """ONNX Runtime vs PyTorch on float32 ``image [N,3,h,w]`` (network input) → (metrics, ORT
    logits)."""
    import torch

    from aspects_export.network import predict_logits

    t0 = time.perf_counter()
    torch_logits = predict_logits(model, torch.from_numpy(image)).numpy()
    t1 = time.perf_counter()
    (ort_logits,) = _run_batched(_session(unet_onnx), {contract.TENSOR_IMAGE: image})
    t2 = time.perf_counter()
    diff = np.abs(torch_logits - ort_logits)
    lab_t, _ = ref.postprocess_network(torch_logits)
    lab_o, _ = ref.postprocess_network(ort_logits)
    agreement = float((lab_t == lab_o).mean())
    metrics = {
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "logit_abs_max": float(np.abs(torch_logits).max()),
        "label_agreement": agreement,
        "argmax_agreement": float((torch_logits.argmax(1) == ort_logits.argmax(1)).mean()),
        "foreground_fraction_torch": float((lab_t > 0).mean()),
        "torch_seconds": round(t1 - t0, 3),
        "onnxruntime_seconds": round(t2 - t1, 3),
        "min_label_agreement": MIN_LABEL_AGREEMENT,
        "passed": agreement >= MIN_LABEL_AGREEMENT,
    }
    return metrics, ort_logits


def compare_steps(
    onnx_dir: Path,
    slices: np.ndarray,
    logits: np.ndarray,
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
) -> dict[str, Any]:
    """preprocess / postprocess ONNX vs the NumPy reference at each native size in ``sizes``.

    ``slices``: uint8 ``[N,h,w]`` (one volume's display slices at network size), resized to
    each size as the native input and sent as their 2.5D stacks (``context_stacks``);
    ``logits``: float32 ``[N,11,h,w]`` fed to postprocess (native size taken from the stacks)."""
    pre = _session(onnx_dir / f"{contract.PREPROCESS_MODEL}.onnx")
    post = _session(onnx_dir / f"{contract.POSTPROCESS_MODEL}.onnx")
    pre_rows, post_rows = [], []
    for H, W in sizes:
        native = ref.context_stacks(
            np.stack([cv2.resize(s, (W, H), interpolation=cv2.INTER_LINEAR) for s in slices])
        )
        (image,) = _run_batched(pre, {contract.INPUT_SLICES: native})
        img_diff = float(np.abs(image - ref.network_input(native)).max())
        pre_rows.append(
            {"hw": [H, W], "image_max_abs_diff": img_diff, "passed": img_diff <= MAX_IMAGE_ABS_DIFF}
        )
        labels, conf = _run_batched(
            post, {contract.TENSOR_LOGITS: logits, contract.INPUT_SLICES: native}
        )
        ref_labels, ref_conf = ref.postprocess(logits, (H, W))
        equal = float((labels == ref_labels).mean()) if labels.shape == ref_labels.shape else 0.0
        conf_diff = float(np.abs(conf - ref_conf).max())
        post_rows.append(
            {
                "hw": [H, W],
                "labels_shape": list(labels.shape),
                "labels_equal_fraction": equal,
                "confidence_max_abs_diff": conf_diff,
                "passed": equal >= MIN_LABEL_EQUALITY and conf_diff <= MAX_CONFIDENCE_ABS_DIFF,
            }
        )
    return {
        "preprocess": {
            "sizes": pre_rows,
            "max_image_abs_diff_allowed": MAX_IMAGE_ABS_DIFF,
            "passed": all(r["passed"] for r in pre_rows),
        },
        "postprocess": {
            "sizes": post_rows,
            "max_confidence_abs_diff_allowed": MAX_CONFIDENCE_ABS_DIFF,
            "passed": all(r["passed"] for r in post_rows),
        },
    }


def check_all(
    onnx_dir: str | Path,
    model: torch.nn.Module | None,
    slices: np.ndarray,
    *,
    checkpoint: str = "",
    slices_source: str = "",
    progress: Progress | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Run every check on uint8 ``slices [N,H,W]`` (consecutive display slices of one volume;
    the network sees their 2.5D stacks) and write ``onnx_dir/numeric_report.json``.

    ``model`` is the PyTorch network the unet was exported from; ``None`` (e.g. the oracle)
    skips the unet-vs-torch comparison, and the steps are then fed the ONNX unet's logits.
    Returns the report; ``report["passed"]`` is the overall verdict.
    """
    import onnxruntime as ort

    say = progress or (lambda _msg: None)
    onnx_dir = Path(onnx_dir)
    slices = np.asarray(slices)
    if slices.dtype != np.uint8 or slices.ndim != 3:
        raise ExportError(f"check slices must be uint8 [N,H,W], got {slices.dtype} {slices.shape}")
    unet_path = onnx_dir / f"{contract.UNET_MODEL}.onnx"
    image = ref.network_input(ref.context_stacks(slices))
    report: dict[str, Any] = {
        "checkpoint": checkpoint,
        "slices": {"shape": list(slices.shape), "source": slices_source},
        "versions": {
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "files": {
            name: {
                "bytes": (onnx_dir / f"{name}.onnx").stat().st_size,
                "sha256": sha256_file(onnx_dir / f"{name}.onnx"),
            }
            for name in contract.STEP_MODELS
            if (onnx_dir / f"{name}.onnx").is_file()
        },
    }
    if model is not None:
        import torch

        report["versions"]["torch"] = torch.__version__
        say(f"numeric check: unet ONNX Runtime vs PyTorch on {len(slices)} slice(s)")
        report["unet"], logits = compare_unet(unet_path, model, image)
    else:
        say("numeric check: unet vs PyTorch skipped (no PyTorch model, e.g. the oracle)")
        report["unet"] = {"skipped": "no PyTorch model to compare against", "passed": True}
        (logits,) = _run_batched(_session(unet_path), {contract.TENSOR_IMAGE: image})
    say("numeric check: preprocess/postprocess ONNX vs the NumPy reference")
    stress = stress_logits(2)
    report.update(
        compare_steps(
            onnx_dir,
            _as_network_size(np.concatenate([slices, slices[: len(stress)]])),
            np.concatenate([logits, stress[: len(slices)]]),
        )
    )
    report["postprocess"]["logits"] = "the unet's ONNX logits of the slices + stress_logits(2)"
    report["passed"] = all(report[k]["passed"] for k in ("unet", "preprocess", "postprocess"))
    if write:
        out = onnx_dir / REPORT_FILE
        out.write_text(json.dumps(report, indent=2) + "\n")
        say(f"numeric check: wrote {out} (passed={report['passed']})")
    return report


def _as_network_size(slices: np.ndarray) -> np.ndarray:
    h, w = contract.NETWORK_SIZE
    if slices.shape[1:] == (h, w):
        return slices
    return np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) for s in slices])


# --- the precision gate of a CPU runtime profile (docs/cpu-serving.md) ---------------------

MAX_LABEL_DISAGREEMENT = 0.001  # ≤ 0.1 % of the pixels may get another label than ORT FP32
MAX_DICE_CHANGE = 0.005  # held-out mean region Dice vs the truth, |candidate − ORT FP32|
GATE_VOLUMES = 2  # held-out b1000 phantoms (recipes.BENCHMARK_SEED_START upwards)
GATE_BATCH = 4


def gate_cases(volumes: int = GATE_VOLUMES) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Held-out b1000 phantoms (``draw_recipe(BENCHMARK_SEED_START + i).render()``), prepared
    the client's way: per volume (uint8 display slices ``[N, H, W]``, true classes uint8
    ``[N, H, W]`` on the same grid, seed).  Fetches the atlas once (ExportError, saying what
    to do, if it cannot)."""
    from aspects_client.display_stack import prepare
    from aspects_client.geometry import to_display
    from aspects_client.volume_io import load_volume
    from aspects_synth import AtlasUnavailableError, ensure_atlas
    from aspects_synth.recipes import BENCHMARK_SEED_START, draw_recipe

    try:
        ensure_atlas()  # fetched once, with one progress line
    except AtlasUnavailableError as exc:
        raise ExportError(
            f"the precision gate needs the atlas phantoms: {exc}; or pick an FP32 CPU runtime "
            "(--cpu-runtime openvino-f32 or onnxruntime), which needs no gate"
        ) from exc
    cases = []
    for seed in range(BENCHMARK_SEED_START, BENCHMARK_SEED_START + volumes):
        phantom = draw_recipe(seed).render()
        prepared = prepare(load_volume(phantom.image, name=f"gate phantom {seed}"))
        truth = np.ascontiguousarray(to_display(phantom.classes, prepared.geometry))
        cases.append((prepared.slices, truth.astype(np.uint8), seed))
    return cases


def _runtime_params(runtime: str, precision: str) -> dict[str, str]:
    return {"runtime": runtime, "precision": precision, "intra_op_thread_count": "0"}


def precision_gate(
    unet_onnx: str | Path,
    runtime: str,
    precision: str,
    *,
    volumes: int = GATE_VOLUMES,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The numeric gate of a CPU runtime profile: ``runtime``/``precision`` vs ONNX Runtime
    FP32 on the same ``unet_onnx``, through the contract's postprocessing, on ``volumes``
    held-out phantoms.  Passes when at most ``MAX_LABEL_DISAGREEMENT`` of the pixels get
    another label and the mean region Dice vs the phantoms' truth moves by at most
    ``MAX_DICE_CHANGE``.  Both sides are the sessions the CPU runtime's ``model.py`` builds
    (``triton_python_model.build_session``).  Returns the report (``passed``, figures)."""
    from aspects_export.dice import class_counts, mean_region_dice
    from aspects_export.triton_python_model import build_session

    say = progress or (lambda _msg: None)
    path = Path(unet_onnx)
    if not path.is_file():
        raise ExportError(f"{path} does not exist; export the ONNX graphs first")
    say(f"precision gate: {runtime} {precision} vs onnxruntime f32 on {volumes} held-out phantoms")
    t0 = time.perf_counter()
    try:
        sessions = {
            "reference": build_session(str(path), _runtime_params("onnxruntime", "f32")),
            "candidate": build_session(str(path), _runtime_params(runtime, precision)),
        }
    except Exception as exc:  # onnxruntime/openvino raise their own types for a bad graph
        raise ExportError(f"cannot run {path.name} with {runtime} {precision}: {exc}") from exc
    cases = gate_cases(volumes)
    names = [contract.TENSOR_LOGITS]
    counts = {k: np.zeros((3, contract.NUM_CLASSES), np.int64) for k in sessions}
    differing = foreground = pixels = 0
    seconds = dict.fromkeys(sessions, 0.0)
    for slices, truth, _seed in cases:
        image = ref.network_input(ref.context_stacks(slices))
        labels = {}
        for key, session in sessions.items():
            t = time.perf_counter()
            logits = np.concatenate(
                [
                    session.run(names, {contract.TENSOR_IMAGE: image[i : i + GATE_BATCH]})[0]
                    for i in range(0, len(image), GATE_BATCH)
                ]
            )
            seconds[key] += time.perf_counter() - t
            labels[key], _ = ref.postprocess(logits, slices.shape[1:])
            counts[key] += class_counts(labels[key], truth)
        a, b = labels["reference"], labels["candidate"]
        differing += int(np.count_nonzero(a != b))
        foreground += int(np.count_nonzero((a > 0) | (b > 0)))
        pixels += a.size
    dice = {k: mean_region_dice(c) for k, c in counts.items()}
    disagreement = differing / max(pixels, 1)
    dice_change = abs(dice["candidate"] - dice["reference"])
    passed = disagreement <= MAX_LABEL_DISAGREEMENT and dice_change <= MAX_DICE_CHANGE
    report = {
        "runtime": runtime,
        "precision": precision,
        "candidate": sessions["candidate"].description,
        "reference": sessions["reference"].description,
        "unet_onnx_sha256": sha256_file(path),
        "phantoms": {
            "seeds": [seed for _s, _t, seed in cases],
            "slices": int(sum(len(s) for s, _t, _seed in cases)),
            "source": "held-out b1000 phantoms: recipes.draw_recipe(seed).render(), "
            "load_volume + prepare as the client does",
        },
        "label_disagreement": disagreement,
        "label_disagreement_of_foreground": differing / max(foreground, 1),
        "mean_region_dice": {"reference": dice["reference"], "candidate": dice["candidate"]},
        "dice_change": dice_change,
        "limits": {"label_disagreement": MAX_LABEL_DISAGREEMENT, "dice_change": MAX_DICE_CHANGE},
        "unet_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "seconds": round(time.perf_counter() - t0, 2),
        "passed": passed,
    }
    say(f"precision gate: {gate_summary(report)}")
    return report


def gate_summary(report: dict[str, Any]) -> str:
    """One line: the gate's figures and verdict (also recorded in the unet's config)."""
    dice = report["mean_region_dice"]
    return (
        f"{report['runtime']} {report['precision']} vs onnxruntime f32: labels differ on "
        f"{100 * report['label_disagreement']:.3f} % of pixels (limit "
        f"{100 * MAX_LABEL_DISAGREEMENT:.1f} %), mean region Dice {dice['candidate']:.4f} vs "
        f"{dice['reference']:.4f} (change limit {MAX_DICE_CHANGE}) on "
        f"{report['phantoms']['slices']} slices of held-out phantoms "
        f"{', '.join(map(str, report['phantoms']['seeds']))}: "
        + ("passed" if report["passed"] else "FAILED")
    )
