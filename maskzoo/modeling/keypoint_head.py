"""Keypoint branch (paper section 5): one-hot keypoint masks as 56x56 heatmaps; loss and inference."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maskzoo.modeling.mask_head import ConvReLUStack


class KeypointHead(ConvReLUStack):
    """Eight 3x3 convolutions of 512 channels + ReLU: Tensor[K, C, 14, 14] -> Tensor[K, 512, 14, 14]."""


class KeypointPredictor(nn.Module):
    """4x4 stride-2 deconvolution to one channel per keypoint, then bilinear 2x upsampling:
    Tensor[K, 512, 14, 14] -> heatmap logits Tensor[K, num_keypoints, 56, 56]."""

    def __init__(self, in_channels: int, num_keypoints: int, upsample_factor: int = 2):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, num_keypoints, 4, stride=2, padding=1)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        self.upsample_factor = upsample_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)
        return F.interpolate(
            x,
            scale_factor=float(self.upsample_factor),
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )


def keypoint_targets(keypoints: torch.Tensor, rois: torch.Tensor, size: int):
    """Heatmap targets of one image: (flat index y * size + x Tensor[K, P] int64, valid Tensor[K, P] bool).

    keypoints: Tensor[K, P, 3] (x, y, visibility) of each RoI's ground truth; rois: Tensor[K, 4].
    A keypoint maps to bin floor((x - x1) * size / w); one exactly on the right/bottom edge goes
    to the last bin. Invisible keypoints and those outside the RoI are not valid.
    """
    x1, y1, x2, y2 = (rois[:, i][:, None] for i in range(4))
    scale_x = size / (x2 - x1)
    scale_y = size / (y2 - y1)
    x, y = keypoints[..., 0], keypoints[..., 1]
    on_right = x == x2
    on_bottom = y == y2
    bx = ((x - x1) * scale_x).floor().long()
    by = ((y - y1) * scale_y).floor().long()
    bx[on_right] = size - 1
    by[on_bottom] = size - 1
    valid = (bx >= 0) & (by >= 0) & (bx < size) & (by < size) & (keypoints[..., 2] > 0)
    return (by * size + bx) * valid.long(), valid


def keypoint_loss(keypoint_logits, proposals, gt_keypoints, matched_idxs):
    """Cross-entropy over the spatial softmax of each visible keypoint's heatmap (paper section 5).

    keypoint_logits: Tensor[K, P, S, S] over the foreground RoIs of all images; proposals,
    matched_idxs: per image; gt_keypoints: per image Tensor[G, P, 3]. Mean over valid keypoints.
    """
    k, p, h, w = keypoint_logits.shape
    if h != w:
        raise ValueError(f"keypoint heatmaps must be square, got {h}x{w}")
    targets, valid = [], []
    for rois, kps, idx in zip(proposals, gt_keypoints, matched_idxs):
        t, v = keypoint_targets(kps[idx], rois, h)
        targets.append(t.reshape(-1))
        valid.append(v.reshape(-1))
    targets = torch.cat(targets)
    valid = torch.where(torch.cat(valid))[0]
    if targets.numel() == 0 or valid.numel() == 0:
        return keypoint_logits.sum() * 0
    return F.cross_entropy(keypoint_logits.reshape(k * p, h * w)[valid], targets[valid])


def heatmaps_to_keypoints(maps: torch.Tensor, rois: torch.Tensor):
    """Keypoints of one image's detections: (Tensor[K, P, 3] (x, y, 1), scores Tensor[K, P]).

    Each heatmap is resized bicubically to its box's size in pixels (ceil, at least 1); the
    keypoint is the centre of the maximal pixel, mapped back into the box; its score the
    resized logit there.
    """
    num_kp = maps.shape[1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    out = torch.zeros((len(rois), 3, num_kp), dtype=torch.float32, device=maps.device)
    scores = torch.zeros((len(rois), num_kp), dtype=torch.float32, device=maps.device)
    arange = torch.arange(num_kp, device=maps.device)
    for i in range(len(rois)):
        w, h = int(widths_ceil[i].item()), int(heights_ceil[i].item())
        roi_map = F.interpolate(maps[i][:, None], size=(h, w), mode="bicubic", align_corners=False)[:, 0]
        pos = roi_map.reshape(num_kp, -1).argmax(dim=1)
        x_int = pos % w
        y_int = torch.div(pos - x_int, w, rounding_mode="floor")
        out[i, 0] = (x_int.float() + 0.5) * (widths[i] / w) + rois[i, 0]
        out[i, 1] = (y_int.float() + 0.5) * (heights[i] / h) + rois[i, 1]
        out[i, 2] = 1
        scores[i] = roi_map[arange, y_int, x_int]
    return out.permute(0, 2, 1), scores


def heatmaps_to_keypoints_softmax_scores(maps: torch.Tensor, rois: torch.Tensor):
    """:func:`heatmaps_to_keypoints` with Detectron2's keypoint score: (Tensor[K, P, 3] (x, y, 1),
    scores Tensor[K, P]).

    The location is the same (centre of the maximal pixel of the bicubically resized heatmap). The
    score is a spatial softmax evaluated there: exp(resized logit - max) divided by the sum of
    exp(logit - max) over the pooled S x S heatmap (so that objects of any size score alike).
    """
    num_kp = maps.shape[1]
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    out = torch.zeros((len(rois), num_kp, 3), dtype=torch.float32, device=maps.device)
    scores = torch.zeros((len(rois), num_kp), dtype=torch.float32, device=maps.device)
    arange = torch.arange(num_kp, device=maps.device)
    for i in range(len(rois)):
        w, h = int(widths_ceil[i].item()), int(heights_ceil[i].item())
        roi_map = F.interpolate(maps[i][None], size=(h, w), mode="bicubic", align_corners=False)[0]
        peak = roi_map.reshape(num_kp, -1).max(dim=1).values.reshape(num_kp, 1, 1)
        pos = roi_map.reshape(num_kp, -1).argmax(dim=1)
        x_int = pos % w
        y_int = torch.div(pos - x_int, w, rounding_mode="floor")
        at_peak = (roi_map[arange, y_int, x_int] - peak[:, 0, 0]).exp()
        norm = (maps[i] - peak).exp().sum(dim=(1, 2))
        out[i, :, 0] = (x_int.float() + 0.5) * (widths[i] / widths_ceil[i]) + rois[i, 0]
        out[i, :, 1] = (y_int.float() + 0.5) * (heights[i] / heights_ceil[i]) + rois[i, 1]
        out[i, :, 2] = 1
        scores[i] = at_peak / norm
    return out, scores


def keypoint_inference(keypoint_logits: torch.Tensor, boxes: list[torch.Tensor], decode: str = "torchvision"):
    """Per image: (keypoints Tensor[D, P, 3] (x, y, 1), keypoint scores Tensor[D, P]); ``decode``
    "torchvision" scores by the heatmap logit, "detectron2" by the spatial softmax."""
    decoder = heatmaps_to_keypoints if decode == "torchvision" else heatmaps_to_keypoints_softmax_scores
    results = []
    for maps, b in zip(keypoint_logits.split([len(b) for b in boxes]), boxes):
        results.append(decoder(maps, b))
    return results
