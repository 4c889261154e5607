"""Mask branch (paper section 3): RoI feature -> M x M mask logits per class; its loss and inference."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import roiops
from maskzoo.modeling.backbone import ConvNorm, conv_relu, head_conv


class ConvReLUStack(nn.Module):
    """3x3 convolutions (padding 1) each followed by ReLU, Kaiming-initialised: Tensor[K, C, S, S] ->
    Tensor[K, conv_channels[-1], S, S]. The trunk of the FPN mask head, of the keypoint head and of
    the convolutional box head (ConvFCBoxHead)."""

    def __init__(self, in_channels: int, conv_channels: tuple[int, ...], norm: str = "none"):
        super().__init__()
        layers = []
        for c in conv_channels:
            layers.append(head_conv(in_channels, c, 3, norm))  # norm "bn": ConvNorm (torchvision v2)
            in_channels = c
        self.convs = nn.ModuleList(layers)
        self.out_channels = in_channels
        for m in self.convs.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv_relu(conv, x)
        return x

    def use_winograd_convolutions(self) -> None:
        """Replaces the 3x3 convolutions (with their ReLUs where nothing comes between) by
        :class:`roiops.WinogradConv3x3`, in place, for inference (fuse_for_inference)."""
        for i, conv in enumerate(self.convs):
            if isinstance(conv, ConvNorm) and isinstance(conv.norm, nn.Identity):  # norm folded in
                conv = conv.conv
            if roiops.winograd.is_winograd_conv3x3(conv):
                self.convs[i] = roiops.WinogradConv3x3.from_conv(conv, relu=True)
            elif roiops.winograd.is_winograd_conv3x3(getattr(conv, "conv", None)):  # its norm stays (GN)
                conv.conv = roiops.WinogradConv3x3.from_conv(conv.conv)


class FPNMaskHead(ConvReLUStack):
    """3x3 convolutions + ReLU ("4conv" of 256 channels): Tensor[K, C, 14, 14] -> Tensor[K, C', 14, 14]."""


class MaskPredictor(nn.Module):
    """2x2 stride-2 deconvolution + ReLU, then 1x1 conv: Tensor[K, C, S, S] -> logits Tensor[K, L, 2S, 2S]
    with L = num_classes (class-specific) or 1 (class-agnostic)."""

    def __init__(self, in_channels: int, deconv_channels: int, num_masks: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, deconv_channels, 2, stride=2)
        self.logits = nn.Conv2d(deconv_channels, num_masks, 1)
        for m in (self.deconv, self.logits):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(torch.relu(self.deconv(x)))


def mask_targets(gt_masks: torch.Tensor, boxes: torch.Tensor, matched_idxs: torch.Tensor, size: int):
    """Ground-truth masks cropped to the RoIs and resampled to size x size: Tensor[K, size, size].

    gt_masks: Tensor[G, H, W] (0/1, any dtype) of one image; boxes: Tensor[K, 4] RoIs in the same
    pixels; matched_idxs: Tensor[K] the ground truth of each RoI. Uses roiops.roi_align (adaptive
    sampling, aligned=False: the targets torchvision's and Detectron's models were trained on).
    """
    rois = torch.cat([matched_idxs.to(boxes)[:, None], boxes], dim=1)
    return roiops.roi_align(
        gt_masks[:, None].to(rois), rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=False
    )[:, 0]


def mask_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs):
    """Mean per-pixel sigmoid binary cross-entropy of the ground-truth class's mask only (paper eq. L_mask).

    mask_logits: Tensor[K, L, M, M] over the foreground RoIs of all images; proposals, matched_idxs:
    per image, the foreground RoIs and their ground truth; gt_masks, gt_labels: per image.
    A class-agnostic head (L = 1) uses its only channel.
    """
    size = mask_logits.shape[-1]
    labels = torch.cat([lab[idx] for lab, idx in zip(gt_labels, matched_idxs)])
    targets = torch.cat([mask_targets(m, p, i, size) for m, p, i in zip(gt_masks, proposals, matched_idxs)])
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    channel = labels if mask_logits.shape[1] > 1 else torch.zeros_like(labels)
    logits = mask_logits[torch.arange(labels.shape[0], device=labels.device), channel]
    return F.binary_cross_entropy_with_logits(logits, targets)


def mask_inference(mask_logits: torch.Tensor, labels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sigmoid probabilities of each detection's own class: list of Tensor[D_i, 1, M, M]."""
    probs = mask_logits.sigmoid()
    flat = torch.cat(labels)
    channel = flat if mask_logits.shape[1] > 1 else torch.zeros_like(flat)
    probs = probs[torch.arange(flat.shape[0], device=flat.device), channel][:, None]
    return list(probs.split([lab.shape[0] for lab in labels], dim=0))
