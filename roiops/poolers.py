"""MultiScaleRoIAlign: the FPN pooler (Lin et al., Feature Pyramid Networks, 2017, eq. 1).

Each RoI is pooled from one pyramid level, k = floor(k0 + log2(sqrt(w * h) / 224) + 1e-6),
clamped to the levels given, where k0 = canonical_level, 224 = canonical_scale, and w, h are the
box's size in image pixels. The level assignment and the RoIAlign of every level happen in one
native call (torch.ops.roiops.multi_scale_roi_align), without gathering each level's RoIs and
scattering the results back.

Parity with torchvision.ops.MultiScaleRoIAlign: the scales are inferred the same way (2 **
round(log2(map size / largest image size)), from the height), the level rule is evaluated with the
same operations in the box dtype (fpn_level.h, fpn_level_index), and ``aligned`` defaults to
False as torchvision hard-codes it, so the same RoI lands on the same level and gets the same
values. Two deliberate differences: the scales are inferred on every call (torchvision caches the
first call's), and a box with zero, negative or NaN area goes to the finest level (torchvision
drops it from every level and returns zeros).
"""

import torch
from torch import nn

from roiops._validation import check_float, check_same, check_tensor, in_common_float_dtype
from roiops.roi_align import boxes_to_rois, pair_output_size, rois_from_boxes_unchecked

__all__ = ["MultiScaleRoIAlign", "infer_scale"]


def infer_scale(feature_size: tuple[int, int], image_size: tuple[int, int]) -> float:
    """Map pixels per image pixel of a pyramid level: 2 ** round(log2(feature height / image height)).

    Computed exactly in integers: with a the larger and b the smaller of the two heights, the
    rounded log2 of a / b is the number of k >= 0 with a^2 >= 2^(2k+1) b^2 (a ratio of integers is
    never 2 to a half-integer power, so there are no ties). torchvision rounds a float32 log2,
    which agrees except within 1e-7 of a half-integer, i.e. for size ratios no network produces.
    Integer comparisons also keep torch.compile from guarding on the ratio's value, which would
    recompile for every image size.
    """
    larger, smaller = feature_size[0], image_size[0]
    if larger <= 0 or smaller <= 0:
        raise ValueError(
            f"cannot infer a scale from a feature map of height {larger} and an image of height {smaller}"
        )
    upsampled = larger >= smaller
    if not upsampled:
        larger, smaller = smaller, larger
    exponent = 0
    bound = 2 * smaller * smaller
    while larger * larger >= bound:
        exponent += 1
        bound *= 4
    return 2.0**exponent if upsampled else 1.0 / 2.0**exponent


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over a feature pyramid, each RoI on the level FPN eq. 1 assigns it.

    Args:
        featmap_names: keys of the feature dict to pool from, e.g. ["0", "1", "2", "3"]; the maps
            are used in the dict's order, finest first, each half the size of the previous.
        output_size: int or (height, width).
        sampling_ratio: samples per bin side, <= 0 for adaptive.
        canonical_scale: the box size (image pixels) that maps to canonical_level (224).
        canonical_level: k0 of FPN eq. 1 (4).
        aligned: RoIAlign's half-pixel model (see roiops.roi_align); False as in torchvision.

    Call:
        x: dict name -> Tensor[N, C, H_l, W_l] (all levels: same N, C, dtype, device; contiguous
            or channels_last, as the first one).
        boxes: list of N Tensor[L_i, 4] (x1, y1, x2, y2) in image pixels, any float dtype: one
            other than the maps' is pooled in the wider of the two, output in the maps' dtype
            (as roi_align; the level rule then runs in the wider dtype).
        image_shapes: list of N (height, width) of the images before padding; the scale of each
            level is inferred from the largest.

    Returns:
        Tensor[sum L_i, C, output_height, output_width], RoIs in the order of boxes. Differentiable
        twice with respect to the maps and to the boxes (the level choice is piecewise constant).

    Raises:
        ValueError / TypeError naming the argument: a missing feature name, maps that disagree,
        boxes that are not a list of [L_i, 4], empty image_shapes.

    Under torch.autocast (CPU, CUDA) the maps may be float16 / bfloat16 with float32 boxes: every
    level is cast up to float32 (float64 if the boxes are), pooled, and the output cast back to the
    maps' dtype. The level rule sees the unrounded boxes, so a RoI lands on the same level as in a
    float32 run; the price is a float32 copy of the pyramid per call (roiops/_autocast.py).
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size,
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        aligned: bool = False,
    ):
        super().__init__()
        if isinstance(featmap_names, str) or not all(isinstance(n, str) for n in featmap_names):
            raise TypeError(f"featmap_names must be a list of str, got {featmap_names!r}")
        if len(featmap_names) == 0:
            raise ValueError("featmap_names must name at least one feature map")
        if not canonical_scale > 0:
            raise ValueError(f"canonical_scale must be positive, got {canonical_scale}")
        self.featmap_names = list(featmap_names)
        self.output_size = pair_output_size(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_scale = canonical_scale
        self.canonical_level = int(canonical_level)
        self.aligned = bool(aligned)

    def forward(
        self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        if torch.jit.is_scripting():
            # TorchScript runs only the native op's argument checks.
            features: list[torch.Tensor] = []
            for name, f in x.items():
                if name in self.featmap_names:
                    features.append(f)
            return _pool_levels(
                features, rois_from_boxes_unchecked(boxes), image_shapes, self.output_size,
                self.sampling_ratio, self.aligned, float(self.canonical_scale), self.canonical_level,
            )
        return _multi_scale_roi_align_checked(
            x, boxes, image_shapes, self.featmap_names, self.output_size, self.sampling_ratio,
            self.aligned, float(self.canonical_scale), self.canonical_level,
        )

    def extra_repr(self) -> str:
        # torchvision's text when the arguments are torchvision's; roiops' own settings only when set.
        text = (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}"
        )
        if self.aligned:
            text += ", aligned=True"
        if self.canonical_scale != 224 or self.canonical_level != 4:
            text += f", canonical_scale={self.canonical_scale}, canonical_level={self.canonical_level}"
        return text


# An FX leaf (as torchvision's pooler helpers are): symbolic tracing of a model holding the pooler
# records this call instead of tracing into the argument checks. Not compiled by TorchScript, whose
# branch of forward calls _pool_levels directly.
@torch.fx.wrap
@torch.jit.unused
def _multi_scale_roi_align_checked(
    x, boxes, image_shapes, featmap_names, output_size, sampling_ratio, aligned, canonical_scale,
    canonical_level,
) -> torch.Tensor:
    # The dict's order, not featmap_names' order, as torchvision does.
    features = [v for k, v in x.items() if k in featmap_names]
    if len(features) != len(featmap_names):
        missing = [n for n in featmap_names if n not in x]
        raise ValueError(f"x has no feature map named {missing} (has {list(x)})")
    for name, f in zip([k for k in x if k in featmap_names], features):
        check_tensor(f"x[{name!r}]", f, ndim=4)
        check_float(f"x[{name!r}]", f)
        check_same(f"x[{featmap_names[0]!r}]", features[0], f"x[{name!r}]", f)
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a list of Tensor[L_i, 4], one per image, got {type(boxes).__name__}")
    rois = boxes_to_rois(boxes)
    check_float("boxes", rois)
    check_same("x", features[0], "boxes", rois, mixed_float=True)
    if len(image_shapes) == 0:
        raise ValueError("image_shapes must hold the (height, width) of every image, got an empty list")
    shapes = [(_image_size(s[0]), _image_size(s[1])) for s in image_shapes]
    return _pool_levels(
        features, rois, shapes, output_size, sampling_ratio, aligned, canonical_scale, canonical_level
    )


def _pool_levels(
    features: list[torch.Tensor],
    rois: torch.Tensor,
    image_shapes: list[tuple[int, int]],
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    canonical_scale: float,
    canonical_level: int,
) -> torch.Tensor:
    largest = (max([s[0] for s in image_shapes]), max([s[1] for s in image_shapes]))
    scales = [infer_scale((f.shape[-2], f.shape[-1]), largest) for f in features]
    map_dtype = features[0].dtype
    first, rois = in_common_float_dtype(features[0], rois)
    features = [f.to(first.dtype) for f in features]
    return torch.ops.roiops.multi_scale_roi_align(
        features, rois, scales, output_size[0], output_size[1], sampling_ratio, aligned,
        canonical_scale, canonical_level,
    ).to(map_dtype)


def _image_size(value) -> int:
    # A SymInt stays symbolic: int() would specialise a torch.compile graph to one image size.
    return value if isinstance(value, (int, torch.SymInt)) else int(value)
