"""Slow, readable plain-PyTorch versions of the roiops operators, written from their definitions:
the test oracle and the benchmark baseline. Not part of the public API."""

import math

import torch

# ---- RoI pooling ------------------------------------------------------------------------------


def _axis_samples(start, bin_size, grid: int, pooled: int, size: int):
    """Positions of the samples of every bin along one axis and their linear-interpolation taps.

    Returns (low, high, w_low, w_high), each [pooled * grid]; samples outside [-1, size] get
    weight 0; positions in [-1, 0] read pixel 0, in [size - 1, size] pixel size - 1.
    """
    p = torch.arange(pooled, dtype=start.dtype, device=start.device).view(-1, 1)
    i = torch.arange(grid, dtype=start.dtype, device=start.device).view(1, -1)
    pos = (start + p * bin_size + (i + 0.5) * bin_size / grid).reshape(-1)
    inside = (pos >= -1) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.detach().floor().to(torch.int64)
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    pos = torch.where(at_end, low.to(pos.dtype), pos)
    frac = pos - low.to(pos.dtype)
    zero = torch.zeros_like(frac)
    return low, high, torch.where(inside, 1 - frac, zero), torch.where(inside, frac, zero)


def roi_align_reference(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign from its definition (roiops.roi_align's docstring), one RoI at a time, differentiable
    with respect to input and the box coordinates. input: Tensor[N, C, H, W]; rois: Tensor[K, 5]."""
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, h, w = input.shape
    outs = []
    offset = 0.5 if aligned else 0.0
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        x1, y1, x2, y2 = (rois[k, j] * spatial_scale - offset for j in range(1, 5))
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        bin_h, bin_w = roi_h / ph, roi_w / pw
        gh = sampling_ratio if sampling_ratio > 0 else max(int(math.ceil(float(roi_h.detach()) / ph)), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(int(math.ceil(float(roi_w.detach()) / pw)), 0)
        if gh == 0 or gw == 0:
            outs.append(input.new_zeros(c, ph, pw))
            continue
        yl, yh, wyl, wyh = _axis_samples(y1, bin_h, gh, ph, h)
        xl, xh, wxl, wxh = _axis_samples(x1, bin_w, gw, pw, w)
        f = input[b]
        val = 0
        for rows, wy in ((yl, wyl), (yh, wyh)):
            for cols, wx in ((xl, wxl), (xh, wxh)):
                val = val + f[:, rows][:, :, cols] * (wy[:, None] * wx[None, :])
        val = val.view(c, ph, gh, pw, gw).sum(dim=(2, 4)) / (gh * gw)
        outs.append(val)
    if not outs:
        return input.new_zeros(0, c, ph, pw)
    return torch.stack(outs)


def roi_pool_reference(input, rois, output_size, spatial_scale=1.0):
    """RoIPool from its definition (roiops.roi_pool's docstring). Returns (output, argmax)."""
    ph_n, pw_n = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, c, h, w = input.shape
    out = input.new_zeros(rois.shape[0], c, ph_n, pw_n)
    argmax = torch.full(out.shape, -1, dtype=torch.int64)

    def rnd(v):  # half away from zero, as C's round
        return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)

    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        x1, y1, x2, y2 = (rnd(float(rois[k, j]) * spatial_scale) for j in range(1, 5))
        roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bin_h = torch.tensor(roi_h, dtype=input.dtype) / ph_n
        bin_w = torch.tensor(roi_w, dtype=input.dtype) / pw_n
        for ph in range(ph_n):
            hs = min(max(int(torch.floor(ph * bin_h)) + y1, 0), h)
            he = min(max(int(torch.ceil((ph + 1) * bin_h)) + y1, 0), h)
            for pw in range(pw_n):
                ws = min(max(int(torch.floor(pw * bin_w)) + x1, 0), w)
                we = min(max(int(torch.ceil((pw + 1) * bin_w)) + x1, 0), w)
                if he <= hs or we <= ws:
                    continue
                region = input[b, :, hs:he, ws:we].reshape(c, -1)
                val, idx = region.max(dim=1)  # first maximum
                out[k, :, ph, pw] = val
                argmax[k, :, ph, pw] = (hs + idx // (we - ws)) * w + ws + idx % (we - ws)
    return out, argmax


def fpn_levels_reference(boxes, k_min, k_max, canonical_scale=224, canonical_level=4, eps=1e-6):
    """FPN eq. 1 level index (0 = finest) of each box Tensor[K, 4] (image pixels), in the box dtype."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    s = torch.sqrt(area)
    k = torch.floor(canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype))
    k = torch.nan_to_num(k, nan=float(k_min)).clamp(min=k_min, max=k_max)
    return k.to(torch.int64) - k_min


def multi_scale_roi_align_reference(
    features, rois, scales, output_size, sampling_ratio, aligned, canonical_scale=224, canonical_level=4
):
    """The FPN pooler as a loop over levels: assign (fpn_levels_reference), pool each level's RoIs."""
    k_min = int(-math.log2(scales[0]))
    k_max = int(-math.log2(scales[-1]))
    levels = fpn_levels_reference(rois[:, 1:], k_min, k_max, canonical_scale, canonical_level)
    levels = levels.clamp(max=len(features) - 1)
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    out = features[0].new_zeros(rois.shape[0], features[0].shape[1], ph, pw)
    for level, (f, scale) in enumerate(zip(features, scales)):
        idx = torch.where(levels == level)[0]
        if idx.numel():
            out = out.index_copy(
                0, idx, roi_align_reference(f, rois[idx], (ph, pw), scale, sampling_ratio, aligned)
            )
    return out


# ---- box coding -------------------------------------------------------------------------------
# BoxCoder's element-wise PyTorch formula from before its native kernels, kept verbatim: the native
# ops must equal it bit for bit (it equals torchvision's BoxCoder bit for bit), and BoxCoder still
# runs it for the one case the kernels do not take (encode of two different dtypes).


def box_encode_reference(reference_boxes, proposals, weights):
    """Tensor[N, 4] targets, Tensor[N, 4] proposals -> Tensor[N, 4] (dx, dy, dw, dh) codes.

    Each side is computed in its own dtype; the codes come out in the promoted dtype, the weights
    held in reference_boxes' dtype."""
    dtype, device = reference_boxes.dtype, reference_boxes.device
    w_xy = torch.tensor(weights[:2], dtype=dtype, device=device)
    w_wh = torch.tensor(weights[2:], dtype=dtype, device=device)
    # Each [N, 2]: x and y handled by one op instead of two.
    ex_size = proposals[:, 2:] - proposals[:, :2]
    ex_ctr = proposals[:, :2] + 0.5 * ex_size
    gt_size = reference_boxes[:, 2:] - reference_boxes[:, :2]
    gt_ctr = reference_boxes[:, :2] + 0.5 * gt_size
    d_xy = (gt_ctr - ex_ctr).mul_(w_xy).div_(ex_size)
    d_wh = (gt_size / ex_size).log_().mul_(w_wh)
    return torch.cat((d_xy, d_wh), dim=1)


def box_decode_reference(rel_codes, boxes, weights, bbox_xform_clip):
    """Tensor[N, 4 * C] codes, Tensor[N, 4] boxes -> Tensor[N, 4 * C] decoded boxes, in the codes'
    dtype (boxes are converted to it first)."""
    n = boxes.size(0)
    dtype, device = rel_codes.dtype, rel_codes.device
    boxes = boxes.to(dtype)
    size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]  # [N, 1, 2]
    ctr = boxes[:, :2][:, None, :] + 0.5 * size
    codes = rel_codes.reshape(n, rel_codes.size(1) // 4, 2, 2)  # [N, C, (xy | wh), 2]
    w_xy = torch.tensor(weights[:2], dtype=dtype, device=device)
    w_wh = torch.tensor(weights[2:], dtype=dtype, device=device)
    # In place after the first op of each chain: same roundings, fewer [N, C, 2] buffers.
    pred_ctr = (codes[:, :, 0] / w_xy).mul_(size).add_(ctr)
    half = (codes[:, :, 1] / w_wh).clamp_(max=bbox_xform_clip).exp_().mul_(size).mul_(0.5)
    return torch.cat((pred_ctr - half, pred_ctr + half), dim=2).reshape(n, rel_codes.size(1))
