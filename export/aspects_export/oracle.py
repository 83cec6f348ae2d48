"""An "oracle" unet: a tiny ONNX graph with unet's exact I/O whose answer is known.

IMAGE float32 ``[N,3,512,512]`` → LOGITS float32 ``[N,11,512,512]``.  It undoes the ImageNet
normalisation of channel 0 to recover the intensity ``v = u / 255`` in [0, 1] and maps it to one
of ``NUM_CLASSES`` equal bands: class ``k = clip(floor(v * 11), 0, 10)``, logit ``ORACLE_LOGIT``
for that class and 0 for the others (softmax ≈ 1.0, so the threshold always passes).  Band 0
(u ≤ 23) is background.  Each band is ~23 intensity levels wide, so a slice painted with
``oracle_intensity(k)`` (the band centre) stays in band ``k`` after any bilinear resize except
within a pixel of a region boundary.  Dropped into the ensemble instead of the real network it
makes the whole chain (client → Triton → labels → contours) checkable voxel by voxel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aspects_client import contract
from aspects_export.graphs import _model, _save

ORACLE_LOGIT = 20.0
_C = contract.NUM_CLASSES
_NH, _NW = contract.NETWORK_SIZE


def oracle_band_edges() -> tuple[float, ...]:
    """``NUM_CLASSES + 1`` band edges in [0, 1]: class ``k`` ↔ ``edges[k] <= v < edges[k+1]``."""
    return tuple(k / _C for k in range(_C + 1))


def oracle_intensity(class_index: int) -> int:
    """The uint8 intensity at the centre of ``class_index``'s band (12 for 0 … 243 for 10)."""
    if not 0 <= int(class_index) < _C:
        raise ValueError(f"class_index must be in 0..{_C - 1}, got {class_index}")
    edges = oracle_band_edges()
    centre = (edges[class_index] + edges[class_index + 1]) / 2
    return round(centre * contract.PIXEL_SCALE)


def oracle_classes(slices: np.ndarray) -> np.ndarray:
    """The oracle's class of each uint8 intensity (no resize): uint8 ``[...]`` → uint8 ``[...]``."""
    v = np.asarray(slices, dtype=np.float64) / contract.PIXEL_SCALE
    return np.clip(np.floor(v * _C), 0, _C - 1).astype(np.uint8)


def oracle_model() -> onnx.ModelProto:
    """The oracle graph (see the module docstring)."""

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    nodes = [
        const("starts", np.array([0], np.int64)),
        const("ends", np.array([1], np.int64)),
        const("axis", np.array([1], np.int64)),
        const("std0", np.array(contract.IMAGENET_STD[0], np.float32)),
        const("mean0", np.array(contract.IMAGENET_MEAN[0], np.float32)),
        const("bands", np.array(float(_C), np.float32)),
        const("lo", np.array(0.0, np.float32)),
        const("hi", np.array(float(_C - 1), np.float32)),
        const("classes", np.arange(_C, dtype=np.float32).reshape(1, _C, 1, 1)),
        const("logit", np.array(ORACLE_LOGIT, np.float32)),
        helper.make_node("Slice", [contract.TENSOR_IMAGE, "starts", "ends", "axis"], ["ch0"]),
        helper.make_node("Mul", ["ch0", "std0"], ["ch0_scaled"]),
        helper.make_node("Add", ["ch0_scaled", "mean0"], ["v"]),
        helper.make_node("Mul", ["v", "bands"], ["v_bands"]),
        helper.make_node("Floor", ["v_bands"], ["band"]),
        helper.make_node("Clip", ["band", "lo", "hi"], ["cls"]),
        helper.make_node("Equal", ["cls", "classes"], ["onehot"]),
        helper.make_node("Cast", ["onehot"], ["onehot_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["onehot_f", "logit"], [contract.TENSOR_LOGITS]),
    ]
    graph = helper.make_graph(
        nodes,
        contract.UNET_MODEL,
        [
            helper.make_tensor_value_info(
                contract.TENSOR_IMAGE, TensorProto.FLOAT, ["N", contract.NETWORK_CHANNELS, _NH, _NW]
            )
        ],
        [
            helper.make_tensor_value_info(
                contract.TENSOR_LOGITS, TensorProto.FLOAT, ["N", _C, _NH, _NW]
            )
        ],
    )
    return _model(
        graph,
        "ORACLE unet (not a network): intensity bands -> classes, for known-answer tests",
        {
            "oracle": "intensity-bands",
            "band_edges": ",".join(f"{e:.6f}" for e in oracle_band_edges()),
        },
    )


def export_oracle_unet(path: str | Path) -> Path:
    """Write the oracle as ``path`` (normally ``unet.onnx`` of a test repository); returns it."""
    return _save(oracle_model(), path)
