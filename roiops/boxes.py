"""Box operations. Boxes are Tensor[N, 4] in (x1, y1, x2, y2) order, in pixels of whatever image or
feature map they refer to; a box with x2 <= x1 or y2 <= y1 is empty (area 0).

The pairwise measures (box_iou, generalized_box_iou, distance_box_iou, complete_box_iou) have
native CPU and CUDA kernels (their [N, M] outputs would otherwise need [N, M, 2] intermediates; the
shared per-pair formula is common/box_geometry.h); the other ops stay plain PyTorch on every
device: element-wise passes over [N, 4] are bandwidth-bound, so a custom kernel would save
launches, not arithmetic.

Drop-in details shared by the functions here:

- Integer boxes are accepted where torchvision accepts them, with torchvision's result dtypes:
  box_area returns int32 for int8 / int16 / uint8 boxes and the boxes' dtype for int32 / int64;
  the pairwise measures return float32 (computed from the integers in float64).
- Every function is an FX leaf (torch.fx.wrap) and compiles under torch.jit.script (there, the
  Python argument checks are skipped).
- Gradients. The native pairwise kernels have no backward: when an input requires grad, the
  pairwise measures are computed by the same formula in plain PyTorch (an [N, M] autograd graph),
  whose gradients are torchvision's for proper boxes (complete_box_iou's alpha is a constant, as
  torchvision computes it under no_grad). box_iou as before is not differentiable.
"""

import math

import torch

from roiops._validation import ValueRuntimeError, check_real, check_same, check_tensor

# The kind argument of torch.ops.roiops.box_iou_family (BoxIouKind in common/box_geometry.h), written
# as literals below since TorchScript cannot read module-level ints: 1 generalized, 2 distance,
# 3 complete.


def _upcast_int(t: torch.Tensor) -> torch.Tensor:
    """Integer boxes widened as torchvision widens them: int8 / int16 / uint8 to int32."""
    if t.is_floating_point() or t.dtype == torch.int32 or t.dtype == torch.int64:
        return t
    return t.int()


@torch.fx.wrap
def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of each box.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2), any floating or integer dtype, any device.

    Returns:
        Tensor[N]: (x2 - x1) * (y2 - y1), or 0 for an empty box (as box_iou counts it), never
        negative. Float boxes keep their dtype; integer boxes give int32 (int8, int16, uint8) or
        their own dtype (int32, int64), as torchvision.ops.box_area.

    Raises:
        TypeError / ValueError naming ``boxes`` (see roiops/_validation.py for the torchvision
        exception types they also are).
    """
    if not torch.jit.is_scripting():
        check_tensor("boxes", boxes, ndim=2, last_dim=4)
        check_real("boxes", boxes)
    boxes = _upcast_int(boxes)
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return wh[:, 0] * wh[:, 1]


@torch.fx.wrap
def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union, computed by one native kernel (no [N, M, 2] intermediates).

    Args:
        boxes1: Tensor[N, 4] (x1, y1, x2, y2).
        boxes2: Tensor[M, 4], same dtype and device as boxes1. float32, float64, float16, bfloat16
            (the half types are computed in float32), or an integer dtype.

    Returns:
        Tensor[N, M] of boxes1's dtype (float32 for integer boxes), each value in [0, 1]. Where the
        union is 0 (both boxes empty) the IoU is 0, not NaN as in torchvision; a box with a NaN
        coordinate has IoU 0 with everything. Not differentiable.

    Under torch.autocast (CPU, CUDA) the boxes may differ in dtype: both are cast up to float32
    (float64 if either is float64) and the IoU comes back in that dtype, not in half precision,
    since it is compared with matching thresholds (roiops/_autocast.py).

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape, a bool or
        complex dtype, or a dtype / device mismatch.
    """
    if not torch.jit.is_scripting():
        _check_box_pair(boxes1, boxes2)
    if not boxes1.is_floating_point():  # integer boxes (see _check_box_pair)
        return torch.ops.roiops.box_iou(boxes1.double(), boxes2.double()).float()
    return torch.ops.roiops.box_iou(boxes1, boxes2)


def _box_iou_family(boxes1: torch.Tensor, boxes2: torch.Tensor, kind: int, eps: float) -> torch.Tensor:
    """The native kernel, or its plain-PyTorch twin when a gradient is needed; integer boxes in
    float64, returned as float32."""
    out_float32 = not boxes1.is_floating_point()
    if out_float32:
        boxes1, boxes2 = boxes1.double(), boxes2.double()
    if torch.is_grad_enabled() and (boxes1.requires_grad or boxes2.requires_grad):
        out = _box_iou_family_differentiable(boxes1, boxes2, kind, eps)
    else:
        out = torch.ops.roiops.box_iou_family(boxes1, boxes2, kind, eps)
    return out.float() if out_float32 else out


def _box_iou_family_differentiable(
    boxes1: torch.Tensor, boxes2: torch.Tensor, kind: int, eps: float
) -> torch.Tensor:
    """box_iou_family_pair (common/box_geometry.h) in PyTorch ops over [N, M]: the same values,
    with autograd. The masked divisions divide by 1 where they select 0, so that no 0 / 0 puts a
    NaN into the gradient."""
    out_dtype = boxes1.dtype
    if boxes1.dtype != boxes2.dtype:  # only under autocast: as the op's autocast kernel
        common = torch.promote_types(torch.promote_types(boxes1.dtype, boxes2.dtype), torch.float32)
        boxes1, boxes2, out_dtype = boxes1.to(common), boxes2.to(common), common
    if boxes1.dtype == torch.float16 or boxes1.dtype == torch.bfloat16:
        boxes1, boxes2 = boxes1.float(), boxes2.float()
    a = boxes1[:, None, :]
    b = boxes2[None, :, :]
    area1 = box_area(boxes1)[:, None]
    area2 = box_area(boxes2)[None, :]
    inter_wh = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area1 + area2 - inter
    both = (area1 > 0) & (area2 > 0)
    iou = torch.where(both, inter / torch.where(both, union, torch.ones_like(union)), torch.zeros_like(union))
    hull_wh = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0)
    if kind == 1:  # generalized
        hull = hull_wh[..., 0] * hull_wh[..., 1]
        some = hull > 0
        safe_hull = torch.where(some, hull, torch.ones_like(hull))
        out = iou - torch.where(some, (hull - union) / safe_hull, torch.zeros_like(hull))
        return out.to(out_dtype)
    diag2 = hull_wh[..., 0] ** 2 + hull_wh[..., 1] ** 2 + eps
    c1 = (boxes1[:, :2] + boxes1[:, 2:]) / 2
    c2 = (boxes2[:, :2] + boxes2[:, 2:]) / 2
    d = c1[:, None, :] - c2[None, :, :]
    diou = iou - (d[..., 0] ** 2 + d[..., 1] ** 2) / diag2
    if kind == 2:  # distance
        return diou.to(out_dtype)
    v = (4 / math.pi**2) * (_aspect_angle(boxes1)[:, None] - _aspect_angle(boxes2)[None, :]) ** 2
    alpha = (v / (1 - iou + v + eps)).detach()  # a constant, as in torchvision and the CIoU paper
    return (diou - alpha * v).to(out_dtype)


def _aspect_angle(boxes: torch.Tensor) -> torch.Tensor:
    """atan(w / h) per box, 0 for w = h = 0 (box_aspect_angle in common/box_geometry.h)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    point = (w == 0) & (h == 0)
    return torch.where(point, torch.zeros_like(w), torch.atan(w / torch.where(point, torch.ones_like(h), h)))


@torch.fx.wrap
def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019): IoU - (C - U) / C, C the area of the
    smallest box enclosing both, U their union. One native kernel, no [N, M, 2] intermediates.

    Args:
        boxes1: Tensor[N, 4] (x1, y1, x2, y2), a float or integer dtype.
        boxes2: Tensor[M, 4], same dtype and device.

    Returns:
        Tensor[N, M] in [-1, 1], boxes1's dtype (float16 / bfloat16 are computed in float32 and
        rounded back; integer boxes give float32). Matches torchvision.ops.generalized_box_iou
        where that is finite; where it divides 0 by 0 (empty boxes) the IoU term is 0 and, when C
        is 0 too, so is the penalty. Differentiable (see the module docstring). Under
        torch.autocast (CPU, CUDA) as box_iou: mixed dtypes accepted, computed and returned in
        float32 (float64 if either input is float64).

    Raises:
        TypeError / ValueError naming the argument for a non-tensor, a wrong shape, a bool or
        complex dtype, or a dtype / device mismatch.
    """
    if not torch.jit.is_scripting():
        _check_box_pair(boxes1, boxes2)
    return _box_iou_family(boxes1, boxes2, 1, 0.0)


@torch.fx.wrap
def distance_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise distance IoU (Zheng et al. 2020): IoU - d^2 / (c^2 + eps), d the distance between
    the box centres, c the diagonal of the smallest box enclosing both. One native kernel.

    Args:
        boxes1: Tensor[N, 4] (x1, y1, x2, y2), a float or integer dtype.
        boxes2: Tensor[M, 4], same dtype and device.
        eps: added to c^2 (squared input pixels), so that two identical points do not divide 0 by 0.

    Returns:
        Tensor[N, M] in [-1, 1], dtypes as generalized_box_iou. Matches
        torchvision.ops.distance_box_iou where that is finite (IoU 0 where both boxes are empty);
        a box with a NaN coordinate gives NaN. Differentiable.

    Raises:
        as generalized_box_iou, and TypeError for an eps that is not a number.
    """
    if not torch.jit.is_scripting():
        _check_box_pair(boxes1, boxes2)
        eps = _check_eps(eps)
    return _box_iou_family(boxes1, boxes2, 2, eps)


@torch.fx.wrap
def complete_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise complete IoU (Zheng et al. 2020): distance IoU - alpha * v, with
    v = 4 / pi^2 (atan(w1 / h1) - atan(w2 / h2))^2 the aspect-ratio term and
    alpha = v / (1 - IoU + v + eps). One native kernel; the aspect angles are computed once per box.

    Args:
        boxes1: Tensor[N, 4] (x1, y1, x2, y2), a float or integer dtype.
        boxes2: Tensor[M, 4], same dtype and device.
        eps: as distance_box_iou, and in alpha's denominator.

    Returns:
        Tensor[N, M], at most distance_box_iou (and IoU), dtypes as generalized_box_iou. Matches
        torchvision.ops.complete_box_iou where that is finite; a box with w = h = 0 has aspect
        angle 0 (torchvision: NaN). Differentiable, alpha treated as a constant as in torchvision.

    Raises:
        as distance_box_iou.
    """
    if not torch.jit.is_scripting():
        _check_box_pair(boxes1, boxes2)
        eps = _check_eps(eps)
    return _box_iou_family(boxes1, boxes2, 3, eps)


@torch.fx.wrap
def clip_boxes_to_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clamps x coordinates to [0, width] and y coordinates to [0, height].

    Args:
        boxes: Tensor[..., 4] (x1, y1, x2, y2), any real dtype.
        size: (height, width) of the image, non-negative numbers (ints or SymInts).

    Returns:
        A new Tensor[..., 4], same dtype (NaN coordinates stay NaN, as in torch.clamp).

    Raises:
        TypeError / ValueError naming ``boxes`` or ``size``.
    """
    if not torch.jit.is_scripting():
        _check_clip_args(boxes, size)
    height, width = size[0], size[1]
    out = boxes.clone()
    out[..., 0::2].clamp_(min=0, max=width)
    out[..., 1::2].clamp_(min=0, max=height)
    return out


def _check_clip_args(boxes, size) -> None:
    _check_boxes_nd(boxes)
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")


@torch.fx.wrap
def remove_small_boxes(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Indices of the boxes whose width and height are both >= min_size.

    Args:
        boxes: Tensor[N, 4] (x1, y1, x2, y2).
        min_size: minimum side length, in the boxes' units.

    Returns:
        Tensor[K] int64, increasing. A box with a NaN coordinate is removed.

    Raises:
        TypeError / ValueError naming ``boxes`` or ``min_size``.
    """
    if not torch.jit.is_scripting():
        _check_remove_small_args(boxes, min_size)
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.where((wh >= min_size).all(dim=1))[0]


def _check_remove_small_args(boxes, min_size) -> None:
    check_tensor("boxes", boxes, ndim=2, last_dim=4)
    if not isinstance(min_size, (int, float)) or isinstance(min_size, bool):
        raise TypeError(f"min_size must be a number, got {type(min_size).__name__}")


BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_box_pair(boxes1, boxes2) -> None:
    """boxes1 [N, 4] and boxes2 [M, 4] on one device, of one float dtype (two under autocast) or of
    integer dtypes."""
    check_tensor("boxes1", boxes1, ndim=2, last_dim=4)
    check_tensor("boxes2", boxes2, ndim=2, last_dim=4)
    check_real("boxes1", boxes1)
    check_real("boxes2", boxes2)
    if boxes1.is_floating_point() or boxes2.is_floating_point():
        check_same("boxes1", boxes1, "boxes2", boxes2, autocast=True)
    elif boxes1.device != boxes2.device:  # two integer dtypes may differ: both are computed in float64
        check_same("boxes1", boxes1, "boxes2", boxes2.to(boxes1.dtype))


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}")
    return float(eps)


def _check_boxes_nd(boxes) -> None:
    check_tensor("boxes", boxes)
    if boxes.dim() == 0 or boxes.size(-1) != 4:
        raise ValueRuntimeError(f"boxes must be Tensor[..., 4], got shape {tuple(boxes.shape)}")


def _check_box_convert(boxes, in_fmt, out_fmt) -> None:
    # Its own function: TorchScript parses even the branches it skips, and rejects {fmt!r}.
    _check_boxes_nd(boxes)
    check_real("boxes", boxes)
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{name} must be one of {BOX_FORMATS}, got {fmt!r}")


@torch.fx.wrap
def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Converts boxes between corner and size formats.

    Formats: ``xyxy`` (x1, y1, x2, y2), ``xywh`` (x1, y1, width, height), ``cxcywh`` (centre x,
    centre y, width, height). Centres are (x1 + x2) / 2, i.e. continuous coordinates with no +1.
    Between ``xywh`` and ``cxcywh`` the width and height are carried over unchanged (torchvision
    goes through xyxy and rounds them; the results agree to float rounding).

    Args:
        boxes: Tensor[..., 4], a float or integer dtype.
        in_fmt, out_fmt: one of "xyxy", "xywh", "cxcywh".

    Returns:
        A new Tensor[..., 4] (a copy when in_fmt == out_fmt): the boxes' dtype, except that integer
        boxes become float32 where a centre or a half size is involved (to or from cxcywh), as in
        torchvision.

    Raises:
        ValueError naming ``in_fmt`` / ``out_fmt`` for an unknown format; TypeError / ValueError
        naming ``boxes`` for a non-tensor, a last dimension other than 4, or a bool / complex dtype.
    """
    if not torch.jit.is_scripting():
        _check_box_convert(boxes, in_fmt, out_fmt)
    if in_fmt == out_fmt:
        return boxes.clone()
    first, second = boxes[..., :2], boxes[..., 2:]
    if in_fmt == "xyxy":
        size = second - first
        start = first if out_fmt == "xywh" else (first + second) / 2
        return torch.cat((start, size), dim=-1)
    if out_fmt == "xyxy":
        if in_fmt == "xywh":
            return torch.cat((first, first + second), dim=-1)
        half = 0.5 * second
        return torch.cat((first - half, first + half), dim=-1)
    # Between the two size formats: only the first pair moves, by half the size.
    shifted = first + 0.5 * second if in_fmt == "xywh" else first - 0.5 * second
    if shifted.dtype != second.dtype:  # integer boxes: the half size made the corner float32
        second = second.to(shifted.dtype)
    return torch.cat((shifted, second), dim=-1)


# ---- Losses on aligned pairs --------------------------------------------------------------------
# Box i of boxes1 against box i of boxes2. Plain PyTorch element-wise ops over [N] (no pairwise
# matrix, nothing for a kernel to fuse), differentiable; the formulas follow the papers with the eps
# placement and operation order of torchvision's losses, so the two agree to the last bit.

LOSS_REDUCTIONS = ("none", "mean", "sum")


def _check_loss_args(boxes1, boxes2, reduction, eps) -> float:
    check_tensor("boxes1", boxes1)
    check_tensor("boxes2", boxes2)
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if b.dim() == 0 or b.size(-1) != 4:
            raise ValueError(f"{name} must be Tensor[N, 4] or Tensor[4], got shape {tuple(b.shape)}")
        check_real(name, b)
    try:
        torch.broadcast_shapes(boxes1.shape, boxes2.shape)
    except RuntimeError:
        raise ValueRuntimeError(
            f"boxes1 and boxes2 must hold the same number of boxes, got shapes {tuple(boxes1.shape)} "
            f"and {tuple(boxes2.shape)}"
        ) from None
    if boxes1.device != boxes2.device:
        raise ValueRuntimeError(f"boxes1 and boxes2 must be on the same device, got {boxes1.device} and "
                                f"{boxes2.device}")
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"reduction must be one of {LOSS_REDUCTIONS}, got {reduction!r}")
    return _check_eps(eps)


def _loss_float(t: torch.Tensor) -> torch.Tensor:
    """float32 / float64 kept, every other dtype (half types, integers) computed in float32."""
    return t if t.dtype == torch.float32 or t.dtype == torch.float64 else t.float()


def _aligned_terms(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float):
    """(iou, enclosing box corners, corner coordinates) of aligned pairs. The intersection is 0
    unless both of its sides are positive; the union uses the unclamped areas and eps keeps the
    IoU finite for empty boxes."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    u1, v1, u2, v2 = boxes2.unbind(dim=-1)
    iw = torch.min(x2, u2) - torch.max(x1, u1)
    ih = torch.min(y2, v2) - torch.max(y1, v1)
    overlap = (iw > 0) & (ih > 0)
    inter = torch.where(overlap, iw * ih, torch.zeros_like(iw))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    iou = inter / (union + eps)
    hull = (torch.min(x1, u1), torch.min(y1, v1), torch.max(x2, u2), torch.max(y2, v2))
    return iou, union, hull, (x1, y1, x2, y2), (u1, v1, u2, v2)


def _distance_loss_terms(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float):
    """(1 - IoU + d^2 / (c^2 + eps), IoU) of aligned pairs."""
    iou, _, (cx1, cy1, cx2, cy2), (x1, y1, x2, y2), (u1, v1, u2, v2) = _aligned_terms(boxes1, boxes2, eps)
    diag2 = ((cx2 - cx1) ** 2) + ((cy2 - cy1) ** 2) + eps
    dx = (x2 + x1) / 2 - (u1 + u2) / 2
    dy = (y2 + y1) / 2 - (v1 + v2) / 2
    return 1 - iou + ((dx**2) + (dy**2)) / diag2, iou


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        # The mean of no boxes is 0 (not NaN), still connected to the graph.
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    if reduction == "sum":
        return loss.sum()
    return loss


@torch.fx.wrap
def generalized_box_iou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """GIoU loss of aligned box pairs, 1 - GIoU (Rezatofighi et al. 2019), as
    torchvision.ops.generalized_box_iou_loss.

    Args:
        boxes1, boxes2: Tensor[N, 4] or Tensor[4] (x1, y1, x2, y2), broadcastable shapes, any real
            dtype (computed in float32 unless float64).
        reduction: "none" (Tensor[N]), "mean" (0 for no boxes) or "sum".
        eps: added to the union and to the enclosing area (squared input pixels).

    Returns:
        The loss, in [0, 2] for proper boxes, float32 or float64; differentiable.

    Raises:
        TypeError / ValueError naming the argument.
    """
    if not torch.jit.is_scripting():
        eps = _check_loss_args(boxes1, boxes2, reduction, eps)
    boxes1, boxes2 = _loss_float(boxes1), _loss_float(boxes2)
    iou, union, (cx1, cy1, cx2, cy2), _, _ = _aligned_terms(boxes1, boxes2, eps)
    hull = (cx2 - cx1) * (cy2 - cy1)
    return _reduce(1 - (iou - ((hull - union) / (hull + eps))), reduction)


@torch.fx.wrap
def distance_box_iou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """DIoU loss of aligned box pairs, 1 - IoU + d^2 / (c^2 + eps) (Zheng et al. 2020), as
    torchvision.ops.distance_box_iou_loss.

    Args, Returns, Raises: as generalized_box_iou_loss (the loss is in [0, 2] for proper boxes).
    """
    if not torch.jit.is_scripting():
        eps = _check_loss_args(boxes1, boxes2, reduction, eps)
    boxes1, boxes2 = _loss_float(boxes1), _loss_float(boxes2)
    loss, _ = _distance_loss_terms(boxes1, boxes2, eps)
    return _reduce(loss, reduction)


@torch.fx.wrap
def complete_box_iou_loss(
    boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none", eps: float = 1e-7
) -> torch.Tensor:
    """CIoU loss of aligned box pairs, the DIoU loss + alpha * v (Zheng et al. 2020), as
    torchvision.ops.complete_box_iou_loss: v = 4 / pi^2 (atan(w2 / h2) - atan(w1 / h1))^2 and
    alpha = v / (1 - IoU + v + eps), a constant for the gradient.

    The DIoU part uses eps = 1e-7 whatever ``eps`` is (torchvision's behaviour, kept for parity);
    ``eps`` enters alpha only.

    Args, Returns, Raises: as generalized_box_iou_loss.
    """
    if not torch.jit.is_scripting():
        eps = _check_loss_args(boxes1, boxes2, reduction, eps)
    boxes1, boxes2 = _loss_float(boxes1), _loss_float(boxes2)
    distance_loss, iou = _distance_loss_terms(boxes1, boxes2, 1e-7)
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    u1, v1, u2, v2 = boxes2.unbind(dim=-1)
    angle_difference = torch.atan((u2 - u1) / (v2 - v1)) - torch.atan((x2 - x1) / (y2 - y1))
    v = (4 / (math.pi**2)) * torch.pow(angle_difference, 2)
    alpha = (v / (1 - iou + v + eps)).detach()
    return _reduce(distance_loss + alpha * v, reduction)


@torch.fx.wrap
def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """The tight box around the non-zero pixels of each mask.

    Args:
        masks: Tensor[N, H, W], any dtype (non-zero is foreground), any device.

    Returns:
        Tensor[N, 4] float32 (x1, y1, x2, y2) in pixel indices: the first and last foreground column
        and row, so a single pixel gives x1 = x2 (torchvision.ops.masks_to_boxes' convention). An
        empty mask gives (0, 0, 0, 0). For N = 0 the result is Tensor[0, 4]; for N > 0 masks with
        H = 0 or W = 0 every mask is empty (torchvision returns Tensor[0, 4] there).

    Raises:
        TypeError / ValueError naming ``masks``.
    """
    if not torch.jit.is_scripting():
        check_tensor("masks", masks, ndim=3)
    n, h, w = masks.shape
    if masks.numel() == 0:
        return torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    fg = masks != 0
    rows = fg.any(dim=2)  # [N, H]
    cols = fg.any(dim=1)  # [N, W]
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    # First and last foreground index along each axis: the min / max of the indices where present
    # (h or -1 where absent, so an empty mask has y2 = -1).
    y1 = torch.where(rows, ys, h).amin(dim=1)
    y2 = torch.where(rows, ys, -1).amax(dim=1)
    x1 = torch.where(cols, xs, w).amin(dim=1)
    x2 = torch.where(cols, xs, -1).amax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    empty = (y2 < 0)[:, None]
    return torch.where(empty, torch.zeros_like(boxes), boxes)
