"""Argument checks shared by the public wrappers: each raises an exception that names the offending
argument, before any native code runs.

Drop-in exception types. roiops raises ValueError (a bad value or shape) or TypeError (a bad type or
dtype), and each of its argument errors is *also* an instance of what torchvision.ops raises in the
same situation, so that code written for torchvision (``except RuntimeError``, ``except
AssertionError``) keeps working: torchvision's C++ argument checks raise RuntimeError, its
``torch._assert`` box-shape checks AssertionError, a 1-d boxes tensor an IndexError, a non-tensor
argument an AttributeError. The classes below combine the two; ``tests/roiops/test_dropin.py``
pins the table of situations against torchvision itself.
"""

import torch

from roiops._autocast import autocast_active

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class ValueRuntimeError(ValueError, RuntimeError):
    """A bad value or shape where torchvision's C++ check (or a broadcast) raises RuntimeError."""


class TypeRuntimeError(TypeError, RuntimeError):
    """A bad dtype or argument type where torchvision's C++ check raises RuntimeError."""


class BoxesShapeError(ValueError, AssertionError, IndexError):
    """RoI boxes of the wrong shape: torchvision asserts (AssertionError) on the last dimension and
    indexes a missing one (IndexError) on a 1-d tensor."""


class TypeAssertionError(TypeError, AssertionError):
    """RoI boxes that are neither a tensor nor a list, which torchvision asserts against."""


class NotATensorError(TypeError, AttributeError):
    """A non-tensor where a tensor belongs; torchvision fails with AttributeError on it."""


def check_tensor(name: str, value, *, ndim: int | None = None, last_dim: int | None = None,
                 shape_error: type = ValueRuntimeError, type_error: type = NotATensorError) -> None:
    """value is a tensor with ndim dimensions and the last of size last_dim (when given); a shape
    error is raised as ``shape_error``, a non-tensor as ``type_error``."""
    if not isinstance(value, torch.Tensor):
        raise type_error(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        shape = "[" + ", ".join(["*"] * (ndim - 1) + [str(last_dim) if last_dim else "*"]) + "]"
        raise shape_error(f"{name} must have {ndim} dimensions ({shape}), got shape {tuple(value.shape)}")
    if last_dim is not None and value.size(-1) != last_dim:
        raise shape_error(f"{name} must have last dimension {last_dim}, got shape {tuple(value.shape)}")


def check_float(name: str, value: torch.Tensor) -> None:
    if value.dtype not in FLOAT_DTYPES:
        raise TypeRuntimeError(f"{name} must be float32, float64, float16 or bfloat16, got {value.dtype}")


def check_real(name: str, value: torch.Tensor) -> None:
    """A floating or integer dtype (boxes in integer pixels are accepted where torchvision accepts
    them); bool and complex are not."""
    if value.dtype == torch.bool or value.is_complex():
        raise TypeRuntimeError(f"{name} must have a floating or integer dtype, got {value.dtype}")


def check_same(
    name_a: str,
    a: torch.Tensor,
    name_b: str,
    b: torch.Tensor,
    *,
    autocast: bool = False,
    mixed_float: bool = False,
) -> None:
    """Same dtype and device. ``autocast=True`` for the arguments of an op with an autocast kernel
    (roiops/_autocast.py): inside torch.autocast for their device the dtypes may differ, the op
    casts them up. ``mixed_float=True`` for a map and its boxes in the pooling wrappers: two
    different floating dtypes are accepted anywhere, the wrapper computes in the wider
    (``in_common_float_dtype``)."""
    mixed_ok = mixed_float and a.is_floating_point() and b.is_floating_point()
    if a.dtype != b.dtype and not mixed_ok and not (autocast and autocast_active(a)):
        raise TypeRuntimeError(f"{name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueRuntimeError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )


def in_common_float_dtype(input: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, rois) cast to the wider of their two floating dtypes when they differ, else as given.

    The pooling wrappers accept a map and boxes of different floating dtypes (a bfloat16 map with
    float32 boxes, a float32 map with float64 boxes) and compute in the wider dtype: the sampling
    coordinates keep the boxes' precision (a bfloat16 coordinate moves in steps of 8 pixels at
    x = 1216), and a float16 / bfloat16 pair computes in float32. The caller casts the output back
    to the map's dtype; ``Tensor.to`` is differentiable, so each gradient arrives in its own
    argument's dtype. The cost is a copy of the narrower argument, usually the map, per call.
    Integer boxes are returned untouched, for the dtype check to reject. Scriptable.
    """
    if input.dtype == rois.dtype or not (input.is_floating_point() and rois.is_floating_point()):
        return input, rois
    dtype = torch.promote_types(input.dtype, rois.dtype)
    return input.to(dtype), rois.to(dtype)
