"""Inference-mode fusions: frozen batch norm folded into the convolution before it.

A frozen batch norm is a fixed per-channel affine map, y = x * s + t with
s = weight / sqrt(running_var + eps) and t = bias - running_mean * s. After a convolution with
weight W and bias b it can be absorbed: conv(x, W * s[:, None, None, None]) + (b * s + t), which
removes one full read and write of every backbone activation. The result equals the unfused
model up to float rounding (a few ulp per layer).

The fused model keeps no batch norm buffers, so its ``state_dict`` no longer matches the
registered architecture: :func:`maskzoo.save` refuses fused models. Fuse a copy, or fuse last.
"""

from __future__ import annotations

import torch
from torch import nn

from maskzoo.modeling import fpn, rpn
from maskzoo.modeling.backbone import BasicBlock, Bottleneck, FrozenBatchNorm2d
from maskzoo.modeling.mask_head import ConvReLUStack
from maskzoo.modeling.precision import apply_inference_precision

# (convolution, norm) attribute pairs of maskzoo's backbone modules (Stem, Shortcut, blocks).
_PAIRS = (("conv", "norm"), ("conv1", "norm1"), ("conv2", "norm2"), ("conv3", "norm3"))
FUSED_ATTRIBUTE = "maskzoo_fused"


@torch.no_grad()
def fold_frozen_batch_norm(conv: nn.Conv2d, norm: FrozenBatchNorm2d | nn.BatchNorm2d) -> None:
    """Absorbs ``norm`` (applied after ``conv``; a BatchNorm2d with its running statistics, as in
    eval mode) into ``conv``'s weight and bias, in place."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


@torch.no_grad()
def fuse_for_inference(
    model: nn.Module,
    channels_last: bool = True,
    dtype: torch.dtype | None = None,
    policy: str = "network",
    winograd: bool = True,
) -> nn.Module:
    """Prepares a maskzoo model for fast inference, in place; returns it in eval mode.

    - every FrozenBatchNorm2d, and every BatchNorm2d with running statistics, that directly follows
      a convolution (backbone, and the FPN and heads of torchvision's v2 models) is folded into it
      with its inference-mode statistics (and replaced by ``nn.Identity``);
    - with ``channels_last``, 4-D parameters are stored NHWC, the layout oneDNN's CPU convolutions
      and cuDNN's tensor-core kernels run fastest on (outputs keep their values);
    - with ``dtype`` (torch.bfloat16 or torch.float16), the layers run in that dtype under the
      precision ``policy`` of :func:`maskzoo.modeling.precision.apply_inference_precision`:
      "network" (the default: all but the box and score layers in ``dtype``) or "heads" (only
      the mask head and the box head's first FC layer in ``dtype``: detections closer to
      float32's, a smaller speed-up); decoding, NMS and mask thresholds stay float32;
    - with ``winograd``, the stride-1 3x3 convolutions of the backbone's residual blocks, of the
      FPN's outputs, of the RPN head and of the mask, keypoint and convolutional box heads (with
      the ReLUs that follow them) become :class:`roiops.WinogradConv3x3`: on the CPU in float32, Winograd's
      F(4x4, 3x3) with 4x fewer multiply-adds, at a float32 error of 2-4e-5 relative to the
      outputs where the direct convolution's is ~1e-5 (roiops/winograd.py); elsewhere the same
      convolution as before. Strided, grouped (ResNeXt) and dilated convolutions stay as they are.

    GroupNorm depends on each input and is left as it is. A fused model is for inference only:
    its folded BatchNorm2d layers no longer exist to train.
    """
    for module in list(model.modules()):
        for conv_name, norm_name in _PAIRS:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            foldable = isinstance(norm, FrozenBatchNorm2d) or (
                isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats and norm.running_var is not None
            )
            if isinstance(conv, nn.Conv2d) and foldable:
                fold_frozen_batch_norm(conv, norm)
                setattr(module, norm_name, nn.Identity())
    if winograd:
        for module in list(model.modules()):
            if isinstance(module, rpn.RPNHead):
                rpn.use_winograd_convolutions(module)
            elif isinstance(module, fpn.FPN):
                fpn.use_winograd_convolutions(module)
            elif isinstance(module, (ConvReLUStack, BasicBlock, Bottleneck)):
                module.use_winograd_convolutions()
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        apply_inference_precision(model.eval(), dtype, policy)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    object.__setattr__(model, FUSED_ATTRIBUTE, True)
    return model.eval()


def is_fused(model: nn.Module) -> bool:
    return bool(getattr(model, FUSED_ATTRIBUTE, False))
