"""Feature Pyramid Network (Lin et al. 2017) on a ResNet trunk: P2-P5, plus P6 for the RPN."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

import roiops
from maskzoo.modeling.backbone import ResNet, head_conv


class FPN(nn.Module):
    """Top-down pathway with lateral 1x1 connections and a 3x3 output convolution per level.

    forward(list of C2..C5) -> OrderedDict {"p2": Tensor[N, C, H/4, W/4], ..., "p5", "p6"}, where P6
    is P5 subsampled by a stride-2 1x1 max pool (used by the RPN only, FPN paper section 4.1).
    """

    def __init__(self, in_channels: list[int], out_channels: int, norm: str = "none"):
        super().__init__()
        # norm "bn": each conv is a bias-free ConvNorm (torchvision v2), keys lateral.<i>.conv/.norm.
        self.lateral = nn.ModuleList(head_conv(c, out_channels, 1, norm) for c in in_channels)
        self.output = nn.ModuleList(head_conv(out_channels, out_channels, 3, norm) for _ in in_channels)
        self.out_channels = out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        top = self.lateral[-1](features[-1])
        outputs = [self.output[-1](top)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral[i](features[i])
            # Nearest upsampling to the lateral's exact size (odd sizes do not double exactly).
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output[i](top))
        outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2, padding=0))
        first_level = 6 - len(outputs) + 1
        return OrderedDict((f"p{first_level + i}", x) for i, x in enumerate(outputs))


class ResNetFPN(nn.Module):
    """ResNet trunk (``body``) + FPN (``fpn``): image batch -> P2..P6, all ``out_channels`` wide."""

    def __init__(self, body: ResNet, fpn: FPN):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = fpn.out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(list(self.body(images).values()))


class ResNetC4(nn.Module):
    """ResNet trunk to res4 (stride 16) for C4 models: image batch -> {"c4": Tensor[N, 1024, H/16, W/16]}."""

    def __init__(self, body: ResNet):
        super().__init__()
        self.body = body
        self.out_channels = body.out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(c4=self.body(images)["res4"])


def use_winograd_convolutions(fpn: FPN) -> None:
    """Replaces the FPN's 3x3 output convolutions by :class:`roiops.WinogradConv3x3`, in place, for
    inference (with a norm, the convolution inside ConvNorm; fuse_for_inference folds a frozen or
    batch norm into it first)."""
    for i, output in enumerate(fpn.output):
        if roiops.winograd.is_winograd_conv3x3(output):
            fpn.output[i] = roiops.WinogradConv3x3.from_conv(output)
        elif roiops.winograd.is_winograd_conv3x3(getattr(output, "conv", None)):
            output.conv = roiops.WinogradConv3x3.from_conv(output.conv)
