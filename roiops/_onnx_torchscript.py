"""Symbolic functions of roiops' ops for the TorchScript-based ONNX exporter
(``torch.onnx.export(..., dynamo=False)``): the same standard ONNX ops as roiops/onnx.py.
Registered by ``roiops.onnx.register_torchscript_symbolics``."""

from __future__ import annotations

import torch
from torch.onnx import symbolic_helper as sh

_registered: set[int] = set()


def _const(g, values):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _rois_to_onnx(g, rois):
    batch = g.op("Gather", rois, g.op("Constant", value_t=torch.tensor(0, dtype=torch.int64)), axis_i=1)
    batch = g.op("Cast", batch, to_i=7)
    boxes = g.op("Slice", rois, _const(g, [1]), _const(g, [5]), _const(g, [1]))
    return boxes, batch


@sh.parse_args("v", "v", "f", "i", "i", "i", "b")
def _roi_align(g, input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    boxes, batch = _rois_to_onnx(g, rois)
    return g.op(
        "RoiAlign",
        input,
        boxes,
        batch,
        coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
        mode_s="avg",
        output_height_i=pooled_height,
        output_width_i=pooled_width,
        sampling_ratio_i=max(sampling_ratio, 0),
        spatial_scale_f=spatial_scale,
    )


@sh.parse_args("v", "v", "f", "i", "i")
def _roi_pool(g, input, rois, spatial_scale, pooled_height, pooled_width):
    out = g.op(
        "MaxRoiPool", input, rois, pooled_shape_i=[pooled_height, pooled_width], spatial_scale_f=spatial_scale
    )
    # The argmax feeds only the backward; ONNX has none: -1 everywhere.
    argmax = g.op("Expand", g.op("Constant", value_t=torch.tensor(-1, dtype=torch.int64)), g.op("Shape", out))
    return out, argmax


@sh.parse_args("v", "v", "f")
def _nms(g, boxes, scores, iou_threshold):
    boxes = g.op("Cast", boxes, to_i=1)
    scores = g.op("Cast", scores, to_i=1)
    count = g.op("Slice", g.op("Shape", boxes), _const(g, [0]), _const(g, [1]))
    selected = g.op(
        "NonMaxSuppression",
        g.op("Unsqueeze", boxes, _const(g, [0])),
        g.op("Unsqueeze", scores, _const(g, [0, 1])),
        count,
        g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
        center_point_box_i=0,
    )
    column = g.op("Slice", selected, _const(g, [2]), _const(g, [3]), _const(g, [1]))
    return g.op("Reshape", column, _const(g, [-1]))


def register(opset: int) -> None:
    if opset in _registered:
        return
    for name, fn in (("roi_align", _roi_align), ("roi_pool", _roi_pool), ("nms", _nms)):
        torch.onnx.register_custom_op_symbolic(f"roiops::{name}", fn, opset)
    _registered.add(opset)
