"""ResNet / ResNeXt trunks (He et al. 2016; Xie et al. 2017) with a choice of normalisation.

Stages are named after the paper: ``stem`` (7x7 conv, stride 2, then 3x3 max pool, stride 2),
``res2`` .. ``res5`` (strides 4, 8, 16, 32). The stride of a bottleneck block sits in its 3x3
convolution (the "ResNet v1.5" layout torchvision's weights use).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

import roiops
from maskzoo.config import BackboneConfig

STAGES = ("stem", "res2", "res3", "res4", "res5")
_BLOCKS_PER_STAGE = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters, all buffers (nothing trains).

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias, computed as one per-channel
    scale and shift (the same arithmetic as torchvision's, so converted weights give equal outputs).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, batch_norm_op: bool = False):
        super().__init__()
        self.eps = eps
        # Detectron2's arithmetic without gradients: F.batch_norm (same values, other rounding).
        self.batch_norm_op = batch_norm_op
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_norm_op and not x.requires_grad:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        shift = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, channels: int, frozen_bn_eps: float = 1e-5, frozen_bn_op: bool = False) -> nn.Module:
    """A normalisation layer: "frozen_bn", "bn" (BatchNorm2d) or "gn" (GroupNorm, 32 groups)."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps=frozen_bn_eps, batch_norm_op=frozen_bn_op)
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(min(32, channels), channels)
    raise ValueError(f"norm must be 'frozen_bn', 'bn' or 'gn', got {kind!r}")


class ConvNorm(nn.Module):
    """A bias-free convolution followed by a norm (``make_norm``): the conv + BN layers of
    torchvision's v2 FPN and heads. forward(Tensor[N, C, H, W]) -> Tensor[N, C', H', W'], no activation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = make_norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def conv_relu(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """relu(conv(x)); a :class:`roiops.WinogradConv3x3` made with ``relu=True`` (fuse_for_inference)
    applies the ReLU in its own pass."""
    if isinstance(conv, roiops.WinogradConv3x3) and conv.relu:
        return conv(x)
    return torch.relu(conv(x))


def head_conv(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> nn.Module:
    """A "same"-padded conv of the FPN or a head: biased ``nn.Conv2d`` for norm "none", else ConvNorm."""
    if norm == "none":
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return ConvNorm(in_channels, out_channels, kernel_size, norm)


class Stem(nn.Module):
    def __init__(self, norm: nn.Module, channels: int = 64):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu_(self.norm(self.conv(x)))
        return nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Shortcut(nn.Module):
    """Projection shortcut (1x1 conv + norm) where a block changes width or stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def shortcut_if_needed(in_channels: int, out_channels: int, stride: int, norm_fn) -> Shortcut | None:
    """A projection where the block changes width or stride; None (identity) otherwise."""
    if stride != 1 or in_channels != out_channels:
        return Shortcut(in_channels, out_channels, stride, norm_fn(out_channels))
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        in_channels,
        planes,
        stride,
        groups,
        width_per_group,
        norm_fn,
        stride_in_1x1=False,
        out_channels=None,
    ):
        super().__init__()
        planes = out_channels or planes
        out_channels = planes
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_fn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.norm2 = norm_fn(planes)
        self.shortcut = shortcut_if_needed(in_channels, out_channels, stride, norm_fn)

    def use_winograd_convolutions(self) -> None:
        """For inference, once fuse_for_inference has folded the norms into the convolutions: the
        stride-1 3x3 convolutions become :class:`roiops.WinogradConv3x3` (conv1 with its ReLU)."""
        if isinstance(self.norm1, nn.Identity) and roiops.winograd.is_winograd_conv3x3(self.conv1):
            self.conv1 = roiops.WinogradConv3x3.from_conv(self.conv1, relu=True)
        if isinstance(self.norm2, nn.Identity) and roiops.winograd.is_winograd_conv3x3(self.conv2):
            self.conv2 = roiops.WinogradConv3x3.from_conv(self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        if isinstance(self.conv1, roiops.WinogradConv3x3):
            y = conv_relu(self.conv1, x)
        else:
            y = torch.relu_(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return torch.relu_(y + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4. The stride sits in the 3x3 conv, or
    in the first 1x1 with ``stride_in_1x1`` (MSRA's original ResNets)."""

    expansion = 4

    def __init__(
        self,
        in_channels,
        planes,
        stride,
        groups,
        width_per_group,
        norm_fn,
        stride_in_1x1=False,
        out_channels=None,
    ):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        out_channels = out_channels or planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride_1x1, bias=False)
        self.norm1 = norm_fn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride_3x3, padding=1, groups=groups, bias=False)
        self.norm2 = norm_fn(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.norm3 = norm_fn(out_channels)
        self.shortcut = shortcut_if_needed(in_channels, out_channels, stride, norm_fn)

    def use_winograd_convolutions(self) -> None:
        """For inference, once fuse_for_inference has folded norm2 into conv2: a stride-1 3x3 conv2
        and its ReLU become one :class:`roiops.WinogradConv3x3` (strided and grouped ones stay)."""
        if isinstance(self.norm2, nn.Identity) and roiops.winograd.is_winograd_conv3x3(self.conv2):
            self.conv2 = roiops.WinogradConv3x3.from_conv(self.conv2, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        y = torch.relu_(self.norm1(self.conv1(x)))
        if isinstance(self.conv2, roiops.WinogradConv3x3):
            y = conv_relu(self.conv2, y)
        else:
            y = torch.relu_(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return torch.relu_(y + identity)


def block_type(depth: int):
    return Bottleneck if depth >= 50 else BasicBlock


def make_stage(
    config: BackboneConfig,
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    out_channels: int | None = None,
):
    """One residual stage: ``num_blocks`` blocks, the first one strided, ``out_channels`` wide (None:
    planes x the block expansion). Returns (stage, out_channels)."""
    block = block_type(config.depth)

    def norm_fn(c):
        return make_norm(config.norm, c, config.frozen_bn_eps, config.frozen_bn_arithmetic == "batch_norm")

    blocks = []
    for i in range(num_blocks):
        blocks.append(
            block(
                in_channels,
                planes,
                stride if i == 0 else 1,
                config.groups,
                config.width_per_group,
                norm_fn,
                stride_in_1x1=config.stride_in_1x1,
                out_channels=out_channels,
            )
        )
        in_channels = out_channels or planes * block.expansion
    return nn.Sequential(*blocks), in_channels


def stage_channels(depth: int, res2_channels: int = 0) -> tuple[int, int, int, int]:
    """Output channels of res2..res5 (``res2_channels`` 0: 64 x the block expansion)."""
    c = res2_channels or 64 * block_type(depth).expansion
    return (c, 2 * c, 4 * c, 8 * c)


class ResNet(nn.Module):
    """ResNet trunk up to ``last_stage`` ("res4" for C4 models, "res5" for FPN).

    forward(Tensor[N, 3, H, W]) -> OrderedDict {"res2": Tensor[N, C2, H/4, W/4], ..., last_stage}.
    """

    def __init__(self, config: BackboneConfig, last_stage: str = "res5"):
        super().__init__()
        self.config = config

        def norm_fn(c):
            return make_norm(
                config.norm, c, config.frozen_bn_eps, config.frozen_bn_arithmetic == "batch_norm"
            )

        self.stem = Stem(norm_fn(config.stem_channels), config.stem_channels)
        blocks = _BLOCKS_PER_STAGE[config.depth]
        in_channels = config.stem_channels
        widths = stage_channels(config.depth, config.res2_channels)
        self.stage_names = []
        for i, name in enumerate(("res2", "res3", "res4", "res5")):
            stage, in_channels = make_stage(
                config, in_channels, 64 * 2**i, blocks[i], 1 if i == 0 else 2, out_channels=widths[i]
            )
            self.add_module(name, stage)
            self.stage_names.append(name)
            if name == last_stage:
                break
        self.out_channels = in_channels
        init_backbone(self)
        self.frozen_stages = freeze_stages(self, config.trainable_layers)

    def train(self, mode: bool = True):
        # Frozen stages stay in eval mode, so trainable norms ("bn") there keep their statistics.
        super().train(mode)
        for name in self.frozen_stages:
            getattr(self, name).eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(x)
        out = OrderedDict()
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out


def init_backbone(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit-scale zero-shift norms."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def freeze_stages(trunk: nn.Module, trainable_layers: int) -> list[str]:
    """Stops the gradient of all but the top ``trainable_layers`` stages (res5 first, stem last);
    returns the names of the frozen stages present in ``trunk``.

    Counting follows torchvision's ``trainable_backbone_layers``: 5 trains everything, 0 nothing.
    """
    trainable = set(list(reversed(STAGES))[:trainable_layers])
    frozen = []
    for name, child in trunk.named_children():
        if name in STAGES and name not in trainable:
            frozen.append(name)
            for p in child.parameters():
                p.requires_grad_(False)
    return frozen
