"""Argument checks shared by the public wrappers: each raises a ValueError or TypeError that names
the offending argument, before any native code runs."""

import torch

from roiops._autocast import autocast_active

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_tensor(name: str, value, *, ndim: int | None = None, last_dim: int | None = None) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        shape = "[" + ", ".join(["*"] * (ndim - 1) + [str(last_dim) if last_dim else "*"]) + "]"
        raise ValueError(f"{name} must have {ndim} dimensions ({shape}), got shape {tuple(value.shape)}")
    if last_dim is not None and value.size(-1) != last_dim:
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {tuple(value.shape)}")


def check_float(name: str, value: torch.Tensor) -> None:
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got {value.dtype}")


def check_same(
    name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, *, autocast: bool = False
) -> None:
    """Same dtype and device. ``autocast=True`` for the arguments of an op with an autocast kernel
    (roiops/_autocast.py): inside torch.autocast for their device the dtypes may differ, the op
    casts them up."""
    if a.dtype != b.dtype and not (autocast and autocast_active(a)):
        raise TypeError(f"{name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}")
