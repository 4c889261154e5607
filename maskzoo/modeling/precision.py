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
