"""An "oracle" unet: a tiny ONNX graph with unet's exact I/O whose answer is known.

IMAGE float32 ``[N,3,h,w]`` → LOGITS float32 ``[N,11,h,w]`` (``(h, w)`` =
``contract.NETWORK_SIZE``).  It undoes the ImageNet normalisation of the CENTRE channel
(``ORACLE_CHANNEL`` = 1: slice k of the 2.5D stack) to recover the intensity ``v = u / 255`` in
[0, 1] and maps it to one of ``NUM_CLASSES`` equal bands: class ``k = clip(floor(v * 11), 0, 10)``,
logit ``ORACLE_LOGIT`` for that class and 0 for the others (softmax ≈ 1.0, so the threshold
always passes).  Band 0 (u ≤ 23) is background.  Each band is ~23 intensity levels wide, so a
slice painted with ``oracle_intensity(k)`` (the band centre) stays in band ``k`` after any
bilinear resize except within a pixel or two of a region boundary.  Dropped into the ensemble
instead of the real network it makes the whole chain (client → Triton → labels → contours)
checkable voxel by voxel.

``context_oracle_model`` is a variant for checking the 2.5D stacks themselves: the columns of the
network image are split into ``NETWORK_CHANNELS`` equal vertical strips and strip ``c`` reads
channel ``c`` (left: the slice below, middle: the slice, right: the slice above), so one item's
labels show what each of its three channels held.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aspects_client import contract
from aspects_export.graphs import _model, _save

ORACLE_LOGIT = 20.0
ORACLE_CHANNEL = contract.CONTEXT_OFFSETS.index(0)  # the centre channel: slice k itself
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


def oracle_logits(image: np.ndarray, *, context: bool = False) -> np.ndarray:
    """NumPy twin of the oracle graph (same float32 operations): IMAGE float32 ``[N,3,h,w]`` →
    LOGITS float32 ``[N,11,h,w]``; ``context=True``: the strip variant."""
    image = np.asarray(image, dtype=np.float32)
    std = np.asarray(contract.IMAGENET_STD, np.float32).reshape(1, -1, 1, 1)
    mean = np.asarray(contract.IMAGENET_MEAN, np.float32).reshape(1, -1, 1, 1)
    v_all = image * std + mean  # [N, 3, h, w]
    if context:
        v = np.take_along_axis(
            v_all, np.broadcast_to(context_oracle_channels(), v_all[:, :1].shape), axis=1
        )
    else:
        v = v_all[:, ORACLE_CHANNEL : ORACLE_CHANNEL + 1]
    cls = np.clip(np.floor(v * np.float32(_C)), 0, _C - 1)
    onehot = cls == np.arange(_C, dtype=np.float32).reshape(1, _C, 1, 1)
    return (onehot.astype(np.float32) * np.float32(ORACLE_LOGIT)).astype(np.float32)


def context_oracle_channels() -> np.ndarray:
    """Which channel each network column reads in ``context_oracle_model``: int64 ``[w]``
    (``NETWORK_CHANNELS`` equal strips, left to right)."""
    return (np.arange(_NW) * contract.NETWORK_CHANNELS) // _NW


def oracle_model(*, context: bool = False) -> onnx.ModelProto:
    """The oracle graph (see the module docstring); ``context=True``: the strip variant."""
    ch = contract.NETWORK_CHANNELS

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    std = np.asarray(contract.IMAGENET_STD, np.float32).reshape(1, ch, 1, 1)
    mean = np.asarray(contract.IMAGENET_MEAN, np.float32).reshape(1, ch, 1, 1)
    if context:
        # each column keeps the channel of its strip: [1, ch, 1, w] one-hot, summed over ch
        select = (np.arange(ch)[:, None] == context_oracle_channels()[None, :]).astype(np.float32)
        pick = [
            const("select", select.reshape(1, ch, 1, _NW)),
            const("axis_c", np.array([1], np.int64)),
            helper.make_node("Mul", [contract.TENSOR_IMAGE, "select"], ["picked"]),
            helper.make_node("Mul", ["picked", "std"], ["picked_scaled"]),
            helper.make_node("Add", ["picked_scaled", "mean_sel"], ["v_ch"]),
            helper.make_node("ReduceSum", ["v_ch", "axis_c"], ["v"], keepdims=1),
        ]
        stats = [
            const("std", std),
            # mean only where the channel is selected, so the sum over channels is one value
            const("mean_sel", (mean * select.reshape(1, ch, 1, _NW)).astype(np.float32)),
        ]
        # unselected channels: 0 * std + 0 = 0 exactly, so v is the selected channel's value
    else:
        pick = [
            const("starts", np.array([ORACLE_CHANNEL], np.int64)),
            const("ends", np.array([ORACLE_CHANNEL + 1], np.int64)),
            const("axis", np.array([1], np.int64)),
            helper.make_node("Slice", [contract.TENSOR_IMAGE, "starts", "ends", "axis"], ["ch"]),
            helper.make_node("Mul", ["ch", "std_c"], ["ch_scaled"]),
            helper.make_node("Add", ["ch_scaled", "mean_c"], ["v"]),
        ]
        stats = [
            const("std_c", np.array(contract.IMAGENET_STD[ORACLE_CHANNEL], np.float32)),
            const("mean_c", np.array(contract.IMAGENET_MEAN[ORACLE_CHANNEL], np.float32)),
        ]
    nodes = [
        *stats,
        const("bands", np.array(float(_C), np.float32)),
        const("lo", np.array(0.0, np.float32)),
        const("hi", np.array(float(_C - 1), np.float32)),
        const("classes", np.arange(_C, dtype=np.float32).reshape(1, _C, 1, 1)),
        const("logit", np.array(ORACLE_LOGIT, np.float32)),
        *pick,
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
                contract.TENSOR_IMAGE, TensorProto.FLOAT, ["N", ch, _NH, _NW]
            )
        ],
        [
            helper.make_tensor_value_info(
                contract.TENSOR_LOGITS, TensorProto.FLOAT, ["N", _C, _NH, _NW]
            )
        ],
    )
    kind = "context-strips" if context else "intensity-bands"
    what = "column strip c reads channel c" if context else f"channel {ORACLE_CHANNEL} (the slice)"
    return _model(
        graph,
        f"ORACLE unet (not a network): intensity bands of {what} -> classes, for known-answer "
        "tests",
        {
            "oracle": kind,
            "band_edges": ",".join(f"{e:.6f}" for e in oracle_band_edges()),
        },
    )


def context_oracle_model() -> onnx.ModelProto:
    """The strip variant: network column strip ``c`` answers from channel ``c``."""
    return oracle_model(context=True)


def export_oracle_unet(path: str | Path, *, context: bool = False) -> Path:
    """Write the oracle (``context=True``: the strip variant) as ``path`` (normally
    ``unet.onnx`` of a test repository); returns it."""
    return _save(oracle_model(context=context), path)
