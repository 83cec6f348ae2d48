"""ONNX graphs of the three ensemble steps: ``preprocess``, ``unet`` and ``postprocess``.

``preprocess`` and ``postprocess`` are written directly with ``onnx.helper`` rather than traced
from torch modules: they are a dozen nodes each, and writing them by hand pins every attribute
that decides bit-exactness (Resize mode/coordinate transform, integer index arithmetic for the
label resize, first-index ArgMax) and keeps them free of exporter-version drift.  They follow
``aspects_client.server_reference`` (the NumPy reference) operation for operation.

``unet`` is exported from the torch module with the legacy TorchScript exporter
(``dynamo=False``): it handles smp's efficientnet (static "same" padding, SiLU) in ~2 s, gives a
single-file graph with a dynamic batch dimension, and is what TensorRT's ONNX parser is most
used to.  All graphs use opset ``OPSET`` and pass ``onnx.checker.check_model(full_check=True)``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aspects_client import contract

if TYPE_CHECKING:
    import torch

OPSET = 17
PRODUCER = "aspects_export"
_NH, _NW = contract.NETWORK_SIZE
_C = contract.NUM_CLASSES


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _model(
    graph: onnx.GraphProto, doc: str, metadata: dict[str, str] | None = None
) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.12 and TensorRT 10
    model.doc_string = doc
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def check(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    """``onnx.checker`` (full check) and strict shape inference; returns the inferred model."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _save(model: onnx.ModelProto, path: str | Path) -> Path:
    check(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        onnx.save(model, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- preprocess -----------------------------------------------------------------------------


def preprocess_model() -> onnx.ModelProto:
    """SLICES uint8 ``[N,3,H,W]`` (2.5D stacks) → IMAGE float32 ``[N,3,h,w]``, ``(h, w)`` =
    ``contract.NETWORK_SIZE``: every channel resized, then ImageNet mean/std of its channel."""
    ch = contract.NETWORK_CHANNELS
    mean = np.asarray(contract.IMAGENET_MEAN, np.float32).reshape(1, ch, 1, 1)
    std = np.asarray(contract.IMAGENET_STD, np.float32).reshape(1, ch, 1, 1)
    nodes = [
        _const("axis1", np.array([1], np.int64)),
        _const("zero1", np.array([0], np.int64)),
        _const("tail_size", np.array([ch, _NH, _NW], np.int64)),
        _const("scale", np.array(contract.PIXEL_SCALE, np.float32)),
        _const("mean", mean),
        _const("std", std),
        helper.make_node("Cast", [contract.INPUT_SLICES], ["x_f"], to=TensorProto.FLOAT),
        helper.make_node("Shape", [contract.INPUT_SLICES], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "zero1", "axis1"], ["batch"]),
        helper.make_node("Concat", ["batch", "tail_size"], ["sizes"], axis=0),
        # bilinear, half-pixel centres, no antialias (= cv2.INTER_LINEAR on float32); the
        # channel axis keeps its size, so each channel is resized on its own
        helper.make_node(
            "Resize",
            ["x_f", "", "", "sizes"],
            ["x_net"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Div", ["x_net", "scale"], ["x_01"]),
        helper.make_node("Sub", ["x_01", "mean"], ["x_centred"]),
        helper.make_node("Div", ["x_centred", "std"], [contract.TENSOR_IMAGE]),
    ]
    graph = helper.make_graph(
        nodes,
        contract.PREPROCESS_MODEL,
        [
            helper.make_tensor_value_info(
                contract.INPUT_SLICES, TensorProto.UINT8, ["N", ch, "H", "W"]
            )
        ],
        [
            helper.make_tensor_value_info(
                contract.TENSOR_IMAGE, TensorProto.FLOAT, ["N", ch, _NH, _NW]
            )
        ],
    )
    return _model(
        graph,
        f"ASPECTS preprocess: uint8 2.5D stacks [N,{ch},H,W] -> ImageNet-normalised "
        f"{_NH}x{_NW} image",
    )


def export_preprocess(path: str | Path) -> Path:
    """Write ``preprocess.onnx`` (see ``preprocess_model``); returns the path."""
    return _save(preprocess_model(), path)


# --- postprocess ----------------------------------------------------------------------------


def postprocess_model(
    threshold_prob: float = contract.THRESHOLD_PROB, min_area: int = contract.MIN_AREA_PIXELS
) -> onnx.ModelProto:
    """LOGITS float32 ``[N,11,h,w]`` (``(h, w)`` = ``contract.NETWORK_SIZE``) + SLICES uint8
    ``[N,3,H,W]`` (only its last two dims, the native size, are used) → LABELS uint8 ``[N,H,W]``,
    CONFIDENCE float32 ``[N,11]``.

    Same steps as ``aspects_client.server_reference.postprocess``.  The per-class area is an exact
    one-hot ``Equal`` + ``ReduceSum`` (float32 counts are exact below 2**24), counted at network
    size; the label resize is a ``Gather`` with integer indices ``((2*dst+1)*h) // (2*out)``, so
    it is bit-exact.
    """
    if not 0.0 <= threshold_prob <= 1.0:
        raise ValueError(f"threshold_prob must be in [0, 1], got {threshold_prob}")
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    classes = np.arange(_C, dtype=np.int64).reshape(1, _C, 1, 1)
    is_bg = (classes == contract.BACKGROUND_INDEX).astype(bool)
    L = contract.TENSOR_LOGITS
    nodes = [
        _const("classes", classes),
        _const("classes_f", classes.astype(np.float32)),
        _const("is_background", is_bg),
        _const("threshold", np.array(threshold_prob, np.float32)),
        _const("min_area", np.array(float(min_area), np.float32)),
        _const("zero_i64", np.array(0, np.int64)),
        _const("zero_f", np.array(0.0, np.float32)),
        _const("one_f", np.array(1.0, np.float32)),
        _const("axes_hw", np.array([2, 3], np.int64)),
        _const("axes_c", np.array([1], np.int64)),
        # 1-2: softmax, argmax (first index on ties), probability threshold
        helper.make_node("Softmax", [L], ["probs"], axis=1),
        helper.make_node("ArgMax", [L], ["argmax"], axis=1, keepdims=1, select_last_index=0),
        helper.make_node("ReduceMax", ["probs"], ["max_prob"], axes=[1], keepdims=1),
        helper.make_node("GreaterOrEqual", ["max_prob", "threshold"], ["confident"]),
        helper.make_node("Where", ["confident", "argmax", "zero_i64"], ["label_thr"]),
        # 3: per-slice, per-class area at network size; small foreground classes -> background
        helper.make_node("Equal", ["label_thr", "classes"], ["onehot"]),
        helper.make_node("Cast", ["onehot"], ["onehot_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["onehot_f", "axes_hw"], ["area"], keepdims=1),
        helper.make_node("GreaterOrEqual", ["area", "min_area"], ["big_enough"]),
        helper.make_node("Or", ["big_enough", "is_background"], ["class_kept"]),
        helper.make_node("And", ["onehot", "class_kept"], ["final"]),
        helper.make_node("Cast", ["final"], ["final_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["final_f", "classes_f"], ["final_idx"]),
        helper.make_node("ReduceSum", ["final_idx", "axes_c"], ["label_fk"], keepdims=1),
        helper.make_node("Squeeze", ["label_fk", "axes_c"], ["label_f"]),
        helper.make_node("Cast", ["label_f"], ["label_net"], to=TensorProto.UINT8),
        # 4: CONFIDENCE[c] = mean p_c over the pixels whose FINAL label is c (0 where none);
        #    pixels demoted to background by the threshold or min-area count for class 0
        helper.make_node("Cast", ["label_fk"], ["label_ik"], to=TensorProto.INT64),
        helper.make_node("Equal", ["label_ik", "classes"], ["final_onehot"]),
        helper.make_node("Cast", ["final_onehot"], ["conf_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["conf_f", "axes_hw"], ["final_area"], keepdims=0),
        helper.make_node("Mul", ["conf_f", "probs"], ["final_probs"]),
        helper.make_node("ReduceSum", ["final_probs", "axes_hw"], ["prob_sum"], keepdims=0),
        helper.make_node("Max", ["final_area", "one_f"], ["denominator"]),
        helper.make_node("Div", ["prob_sum", "denominator"], ["mean_prob"]),
        helper.make_node("Greater", ["final_area", "zero_f"], ["present"]),
        helper.make_node("Where", ["present", "mean_prob", "zero_f"], [contract.OUTPUT_CONFIDENCE]),
        # 5: nearest (half-pixel) resize to the native H x W taken from SLICES' shape
        *_nearest_index_nodes("rows", 2, _NH),
        *_nearest_index_nodes("cols", 3, _NW),
        helper.make_node("Gather", ["label_net", "rows_idx"], ["label_rows"], axis=1),
        helper.make_node("Gather", ["label_rows", "cols_idx"], [contract.OUTPUT_LABELS], axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        contract.POSTPROCESS_MODEL,
        [
            helper.make_tensor_value_info(L, TensorProto.FLOAT, ["N", _C, _NH, _NW]),
            helper.make_tensor_value_info(
                contract.INPUT_SLICES, TensorProto.UINT8, ["N", contract.NETWORK_CHANNELS, "H", "W"]
            ),
        ],
        [
            helper.make_tensor_value_info(
                contract.OUTPUT_LABELS, TensorProto.UINT8, ["N", "H", "W"]
            ),
            helper.make_tensor_value_info(contract.OUTPUT_CONFIDENCE, TensorProto.FLOAT, ["N", _C]),
        ],
    )
    return _model(
        graph,
        "ASPECTS postprocess: softmax, threshold, argmax, per-class min-area, nearest resize",
        {"threshold_prob": repr(float(threshold_prob)), "min_area_pixels": str(int(min_area))},
    )


def _nearest_index_nodes(prefix: str, axis: int, in_size: int) -> list[onnx.NodeProto]:
    """Nodes computing int64 ``{prefix}_idx = ((2*arange(out)+1)*in_size) // (2*out)``,
    ``out`` = ``SLICES.shape[axis]``."""
    p = prefix
    return [
        _const(f"{p}_axis", np.array([axis], np.int64)),
        _const(f"{p}_axis_end", np.array([axis + 1], np.int64)),
        _const(f"{p}_two", np.array(2, np.int64)),
        _const(f"{p}_one", np.array(1, np.int64)),
        _const(f"{p}_in", np.array(in_size, np.int64)),
        helper.make_node("Shape", [contract.INPUT_SLICES], [f"{p}_shape"]),
        helper.make_node("Slice", [f"{p}_shape", f"{p}_axis", f"{p}_axis_end"], [f"{p}_out_1d"]),
        helper.make_node("Squeeze", [f"{p}_out_1d"], [f"{p}_out"]),
        helper.make_node("Range", ["zero_i64", f"{p}_out", f"{p}_one"], [f"{p}_dst"]),
        helper.make_node("Mul", [f"{p}_dst", f"{p}_two"], [f"{p}_2dst"]),
        helper.make_node("Add", [f"{p}_2dst", f"{p}_one"], [f"{p}_2dst1"]),
        helper.make_node("Mul", [f"{p}_2dst1", f"{p}_in"], [f"{p}_num"]),
        helper.make_node("Mul", [f"{p}_out", f"{p}_two"], [f"{p}_den"]),
        helper.make_node("Div", [f"{p}_num", f"{p}_den"], [f"{p}_idx"]),  # int: floor (>= 0)
    ]


def export_postprocess(
    path: str | Path,
    threshold_prob: float = contract.THRESHOLD_PROB,
    min_area: int = contract.MIN_AREA_PIXELS,
) -> Path:
    """Write ``postprocess.onnx`` (see ``postprocess_model``); returns the path."""
    return _save(postprocess_model(threshold_prob, min_area), path)


# --- unet -----------------------------------------------------------------------------------


def export_unet(
    model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Export ``model`` (IMAGE float32 ``[N,3,h,w]`` → LOGITS float32 ``[N,11,h,w]``, ``(h, w)``
    = ``contract.NETWORK_SIZE``)
    with a dynamic batch dimension; ``metadata`` goes into the model's metadata_props
    (e.g. the checkpoint's origin, or that it is the UNTRAINED demo)."""
    import torch

    from aspects_export.network import prepare_for_inference

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = prepare_for_inference(model)
    dummy = torch.zeros(1, contract.NETWORK_CHANNELS, _NH, _NW, dtype=torch.float32)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                do_constant_folding=True,
                input_names=[contract.TENSOR_IMAGE],
                output_names=[contract.TENSOR_LOGITS],
                dynamic_axes={contract.TENSOR_IMAGE: {0: "N"}, contract.TENSOR_LOGITS: {0: "N"}},
            )
        onnx_model = onnx.load(str(tmp))
        # the exporter leaves LOGITS' H, W symbolic; the contract fixes them
        out_dims = onnx_model.graph.output[0].type.tensor_type.shape.dim
        for dim, size in zip(out_dims[1:], (contract.NUM_CLASSES, _NH, _NW), strict=True):
            dim.Clear()
            dim.dim_value = size
        onnx_model.producer_name = PRODUCER
        onnx_model.doc_string = (
            f"ASPECTS unet: smp {contract.ARCHITECTURE}({contract.ENCODER_NAME}), "
            f"{contract.NUM_CLASSES} classes"
        )
        for key, value in (metadata or {}).items():
            onnx_model.metadata_props.add(key=key, value=value)
        check(onnx_model)
        onnx.save(onnx_model, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
