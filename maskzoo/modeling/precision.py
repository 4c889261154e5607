"""Box precision: the dtype that box geometry (anchors, proposals, decoded boxes, scores, and the
losses over them) is kept in, whatever dtype the network's layers run in.

Under torch.autocast the convolutions and linear layers return float16 / bfloat16. Those types
cannot hold pixel coordinates (bfloat16 keeps 8 significant bits: at x = 1216 it moves in steps of
8 pixels; float16 in steps of 1 pixel from 1024 on), and softmax / sigmoid scores near the
thresholds lose their order. So the head outputs that become boxes or scores are moved to box
precision before they are decoded, post-processed or enter a loss.

The RoI poolers read the maps in box precision too and hand the heads their pooled features in
the layers' dtype (``pool_in_box_precision``): float32 boxes meet float32 maps whether the half
types come from autocast or from a model converted with ``.half()`` / ``.bfloat16()``, and no box
is rounded to half precision to match a map.

Box precision is promote_types(dtype, float32): float32 for the half types, unchanged for float32
and float64, where ``to_box_precision`` returns its argument itself (float32 and float64 runs
compute bit for bit what they computed before).
"""

from __future__ import annotations

import torch
from torch import nn


def box_dtype(dtype: torch.dtype) -> torch.dtype:
    """The box precision of a layer dtype: float32 for float16 / bfloat16, else dtype itself."""
    return torch.promote_types(dtype, torch.float32)


def to_box_precision(t: torch.Tensor) -> torch.Tensor:
    """t in box precision (differentiable: the gradient flows back in t's dtype); t itself when
    it is float32 or float64 already."""
    return t.to(box_dtype(t.dtype))


def pool_in_box_precision(pooler, features: dict[str, torch.Tensor], boxes, image_sizes) -> torch.Tensor:
    """``pooler(features, boxes, image_sizes)`` with half-precision maps cast up to box precision
    and the pooled features cast back to the maps' dtype: what roiops' autocast kernels do, also
    outside autocast. The cost is a float32 copy of the maps per call. float32 / float64 maps are
    passed through untouched."""
    dtype = next(iter(features.values())).dtype
    if box_dtype(dtype) == dtype:
        return pooler(features, boxes, image_sizes)
    return pooler({k: to_box_precision(v) for k, v in features.items()}, boxes, image_sizes).to(dtype)


# ---- bfloat16 / float16 inference: the precision policies ------------------------------------------
# Which layers run in the low dtype and which stay float32 (fuse_for_inference(model, dtype=...,
# policy=...)). oneDNN / cuDNN accumulate the low-dtype layers in float32; what bfloat16 costs is
# the rounding of their weights and inputs to 8 significant bits.
#
# "network" (the default): the backbone and FPN, the RPN's shared 3x3 convolution, the box head's
# hidden layers, the mask and keypoint heads run in the low dtype; float32 are the layers whose
# outputs become boxes, scores or mask thresholds (FLOAT32_LAYERS): the RPN's objectness and
# box-delta convolutions, the box predictor and the mask / keypoint logits. Those are small (a 1x1
# convolution or a linear layer each), and bfloat16 there moves boxes and reorders scores; the RoI
# poolers read the maps in float32 already (pool_in_box_precision).
#
# "heads": only the layers that no detection's box, label or score depends on, plus the box head's
# first FC layer (the largest matrix product of the box branch), run in the low dtype
# (LOW_PRECISION_HEAD_LAYERS); the backbone, FPN, RPN and the rest of the box branch stay float32.
# Measured on r50_fpn with random weights, realistic frozen batch norms and peaked class scores
# (800 x 1216, benchmarks/bench_bf16_stages.py): the float32 top 100 ranks near-tied candidates
# whose order, NMS winners and labels any bfloat16 rounding before the box predictor can swap.
# Rounding one stage alone (res2, res3, res4, res5, FPN, the RPN's 3x3 convolution, the box head's
# second FC layer) costs 2-11 of the 100 matches on average; rounding only the backbone's weights
# costs 6, only its inputs 7; keeping its residual additions in float32 recovers 2 of 14. The mask
# head (no box depends on it) with fc1 keeps 94-99 of 100 over five images ("network": 82-89), at
# a fraction of the speed-up (README, Deploy); with res2 instead of fc1, 95-98.
FLOAT32_LAYERS = (
    "rpn.head.objectness",
    "rpn.head.box_deltas",
    "roi_heads.box_predictor",
    "roi_heads.mask_predictor.logits",
    "roi_heads.keypoint_predictor",
)
LOW_PRECISION_HEAD_LAYERS = (
    "roi_heads.box_head.fc1",
    "roi_heads.mask_head",
    "roi_heads.mask_predictor.deconv",
    "roi_heads.keypoint_head",
)
POLICIES = ("network", "heads")


class Float32Layer(nn.Module):
    """Runs ``layer`` (float32 weights) on its input cast to float32; returns float32."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: torch.Tensor):
        return self.layer(x.float())


class LowPrecisionLayer(nn.Module):
    """Runs ``layer`` (weights converted to ``dtype``) on its input cast to ``dtype``; returns the
    output in the input's dtype, so that float32 layers around it are unchanged."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.layer = layer.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor):
        return self.layer(x.to(self.dtype)).to(x.dtype)


class CastInput(nn.Module):
    """Casts the input to ``dtype`` before ``module`` (the backbone of a low-precision model
    receives the float32 image batch of the transform)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: torch.Tensor):
        return self.module(x.to(self.dtype))


def _wrap(model: nn.Module, paths: tuple[str, ...], wrapper) -> None:
    """Replaces each submodule at ``paths`` that the model has by ``wrapper(submodule)``."""
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        try:
            parent = model.get_submodule(parent_path)
        except AttributeError:  # a model without this head (no keypoints, C4 without mask head)
            continue
        layer = getattr(parent, name, None)
        if isinstance(layer, nn.Module):
            setattr(parent, name, wrapper(layer))


def apply_inference_precision(model: nn.Module, dtype: torch.dtype, policy: str = "network") -> nn.Module:
    """Converts an eval model, in place, to ``dtype`` (bfloat16 or float16) under ``policy``
    ("network": everything but FLOAT32_LAYERS in ``dtype``; "heads": only
    LOW_PRECISION_HEAD_LAYERS in ``dtype``, see above); detections come out in float32 as before.
    Returns the model. Raises ValueError naming ``dtype`` or ``policy`` when it is not one of those."""
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if policy == "heads":
        _wrap(model, LOW_PRECISION_HEAD_LAYERS, lambda layer: LowPrecisionLayer(layer, dtype))
        return model
    model.to(dtype)
    _wrap(model, FLOAT32_LAYERS, Float32Layer)
    model.backbone = CastInput(model.backbone, dtype)
    return model
