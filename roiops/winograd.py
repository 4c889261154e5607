"""3x3 convolutions by Winograd's F(4x4, 3x3) on the CPU, for inference.

A detector's widest 3x3 convolutions (the RPN head's, 256 -> 256 channels over every FPN level)
take most of their stage's time at the CPU's float32 peak; Winograd's minimal filtering computes
the same convolution with 4x fewer multiply-adds (Lavin and Gray, 2016). The kernels are
transformed once (:func:`winograd_weight`), then every call transforms 6x6 input tiles, multiplies
them by the transformed kernels as 36 matrix products and transforms 4x4 output tiles back, with the
bias and an optional ReLU (``csrc/cpu/winograd_conv3x3.cpp``).

Accuracy: the transforms round more than the direct sum. Against float64, 256 -> 256 channels with
weights of std 0.02 and unit-variance inputs (outputs of magnitude ~1): maximum error 2-4e-5 in
float32, where PyTorch's direct convolution (oneDNN) errs by 0.6-1.1e-5. float64 errs by ~1e-13.

On CUDA the op calls cuDNN's convolution with the untransformed weight (cuDNN picks its own
algorithm). No gradient: :class:`WinogradConv3x3` runs ``torch.nn.functional.conv2d`` whenever
autograd needs one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from roiops._validation import TypeRuntimeError, ValueRuntimeError, check_tensor

# F(4x4, 3x3)'s kernel transform G (6 x 3), at the points 0, 1, -1, 2, -2 and infinity.
_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)

_DTYPES = (torch.float32, torch.float64)


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """The F(4x4, 3x3) transform G g G^T of every 3x3 kernel, the form the CPU kernel multiplies by.

    Args:
        weight: Tensor[K, C, 3, 3] (a Conv2d's weight), float32 or float64.

    Returns:
        Tensor[36, C, K] of weight's dtype and device (point-major: row i * 6 + j holds point (i,
        j) of every kernel), computed in float64 and rounded once.
    """
    check_tensor("weight", weight, ndim=4)
    if weight.shape[2:] != (3, 3):
        raise ValueRuntimeError(f"weight must be [K, C, 3, 3], got shape {tuple(weight.shape)}")
    if weight.dtype not in _DTYPES:
        raise TypeRuntimeError(f"weight must be float32 or float64, got {weight.dtype}")
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.detach().to(torch.float64), g)
    return u.reshape(36, weight.size(1), weight.size(0)).to(weight.dtype).contiguous()


def winograd_conv3x3(
    input: torch.Tensor,
    weight: torch.Tensor,
    weight_winograd: torch.Tensor,
    bias: torch.Tensor | None = None,
    relu: bool = False,
) -> torch.Tensor:
    """``conv2d(input, weight, bias, stride=1, padding=1)``, then ReLU when ``relu``; no gradient.

    Args:
        input: Tensor[N, C, H, W], float32 or float64, any memory format (a NCHW input is copied
            to channels_last first).
        weight: Tensor[K, C, 3, 3], the input's dtype and device.
        weight_winograd: ``winograd_weight(weight)``, Tensor[36, C, K]: what the CPU kernel uses
            (the caller keeps it, so it is transformed once, not per call). The kernel copies it
            once per call into aligned memory when its rows do not start on 64-byte lines (an
            AOTInductor package's constants).
        bias: Tensor[K] or None.
        relu: apply ReLU to the output (in the same pass).

    Returns:
        Tensor[N, K, H, W], channels_last in memory.
    """
    check_tensor("input", input, ndim=4)
    check_tensor("weight", weight, ndim=4)
    check_tensor("weight_winograd", weight_winograd, ndim=3)
    if input.dtype not in _DTYPES:
        raise TypeRuntimeError(f"input must be float32 or float64, got {input.dtype}")
    named = [("weight", weight), ("weight_winograd", weight_winograd)]
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        named.append(("bias", bias))
    for name, t in named:
        if t.dtype != input.dtype:
            raise TypeRuntimeError(f"{name} dtype {t.dtype} differs from the input's {input.dtype}")
        if t.device != input.device:
            raise ValueRuntimeError(f"{name} is on {t.device}, the input on {input.device}")
    channels, channels_out = input.size(1), weight.size(0)
    if tuple(weight.shape[1:]) != (channels, 3, 3):
        raise ValueRuntimeError(
            f"weight must be [K, {channels}, 3, 3] for input {tuple(input.shape)}, got {tuple(weight.shape)}"
        )
    if tuple(weight_winograd.shape) != (36, channels, channels_out):
        raise ValueRuntimeError(
            f"weight_winograd must be [36, {channels}, {channels_out}] "
            f"(winograd_weight(weight)), got {tuple(weight_winograd.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (channels_out,):
        raise ValueRuntimeError(f"bias must be [{channels_out}], got {tuple(bias.shape)}")
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {type(relu).__name__}")
    return torch.ops.roiops.winograd_conv3x3(input, weight, weight_winograd, bias, relu)


class WinogradConv3x3(nn.Module):
    """An inference stand-in for a 3x3, stride 1, padding 1 ``nn.Conv2d`` (optionally followed by
    ReLU), computed by :func:`winograd_conv3x3` on float32 and float64 CPU inputs.

    It keeps the convolution's ``weight`` and ``bias`` (same names, same state dict) and the
    transformed kernels as a buffer that is not saved; :meth:`refresh` recomputes them after the
    weight changes. Where autograd needs a gradient, or the dtype is not float32/float64, it runs
    ``torch.nn.functional.conv2d`` instead, so the module is never wrong, only not faster.

    forward(Tensor[N, C, H, W]) -> Tensor[N, K, H, W] (channels_last in memory on the Winograd path)
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        )
        self.relu = relu
        self.register_buffer("weight_winograd", self._transformed(), persistent=False)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, relu: bool = False) -> WinogradConv3x3:
        """The stand-in for ``conv`` (then ReLU when ``relu``); raises ValueError for a convolution
        that is not 3x3 with stride 1, padding 1, dilation 1, one group and zero padding."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if not is_winograd_conv3x3(conv):
            raise ValueError(
                f"conv must be 3x3 with stride 1, padding 1, dilation 1, groups 1 and zero "
                f"padding, got {conv}"
            )
        return cls(conv.weight, conv.bias, relu)

    def _transformed(self) -> torch.Tensor:
        w = self.weight.detach()
        return winograd_weight(w) if w.dtype in _DTYPES else w.new_empty((36, w.size(1), w.size(0)))

    @torch.no_grad()
    def refresh(self) -> None:
        """Recomputes the transformed kernels from ``weight`` (after loading or editing it)."""
        self.weight_winograd = self._transformed()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh()

    def _apply(self, fn, recurse=True):
        # .to(dtype) and friends: the buffer follows the weight's new dtype and device, exactly.
        module = super()._apply(fn, recurse)
        self.refresh()
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad
            or self.weight.requires_grad
            or (self.bias is not None and self.bias.requires_grad)
        )
        if needs_grad or x.dtype not in _DTYPES or x.dtype != self.weight.dtype:
            y = F.conv2d(x, self.weight, self.bias, padding=1)
            return torch.relu(y) if self.relu else y
        return torch.ops.roiops.winograd_conv3x3(x, self.weight, self.weight_winograd, self.bias, self.relu)

    def extra_repr(self) -> str:
        k, c = self.weight.shape[:2]
        return f"{c}, {k}, kernel_size=(3, 3), padding=(1, 1), bias={self.bias is not None}, relu={self.relu}"


def is_winograd_conv3x3(conv: nn.Module) -> bool:
    """Whether ``conv`` is an nn.Conv2d that :class:`WinogradConv3x3` computes: 3x3 kernels, stride
    1, padding 1 (zeros), dilation 1, one group."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )
