"""Hypothesis strategies and builders shared by the RoIAlign / RoIPool / pooler tests."""

import math

import torch
from hypothesis import strategies as st


@st.composite
def roi_cases(draw, max_rois: int = 6, max_size: int = 12, max_out: int = 14):
    """A random pooling problem: a map, boxes inside, across and outside it, and the op's arguments."""
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 4))
    h = draw(st.integers(1, max_size))
    w = draw(st.integers(1, max_size))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25]))
    k = draw(st.integers(0, max_rois))
    coord = st.floats(-0.5, 1.5, allow_nan=False, width=32)
    rows = []
    for _ in range(k):
        b = draw(st.integers(0, n - 1))
        fx1, fx2, fy1, fy2 = draw(coord), draw(coord), draw(coord), draw(coord)
        x1, x2 = sorted((fx1 * w / scale, fx2 * w / scale))
        y1, y2 = sorted((fy1 * h / scale, fy2 * h / scale))
        rows.append([b, x1, y1, x2, y2])
    return {
        "shape": (n, c, h, w),
        "rois": rows,
        "spatial_scale": scale,
        "output_size": (draw(st.integers(1, max_out)), draw(st.integers(1, max_out))),
        "sampling_ratio": draw(st.integers(-1, 4)),
        "aligned": draw(st.booleans()),
        "channels_last": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def build(case, dtype=torch.float32):
    """(input, rois) of a roi_cases draw; input in the drawn memory format."""
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["shape"], generator=g, dtype=torch.float64).to(dtype)
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor(case["rois"], dtype=torch.float64).reshape(-1, 5).to(dtype)
    return x, rois


def roi_align_bins_on_a_rounding_edge(case, rois: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Bool[K, PH, PW]: the RoIAlign bins whose value in `dtype` may legitimately differ between
    two correct implementations, because the exact geometry of the case puts one of the bin's
    samples, or its adaptive sample count, within `dtype` rounding of a jump of the definition.

    RoIAlign is continuous in the sample positions except at three places: a sample at exactly -1
    or at the map size (H or W) is read from the border pixel, one a rounding error beyond is 0; an
    adaptive count ceil(roi_size / output_size) steps where the ratio is an integer; and the count
    is 0 (the bin pools to 0) once an aligned box's size drops to 0. Whether a float32 kernel lands
    on one side or the other depends on its operation order and on fused multiply-adds (roiops' CPU
    build contracts, torchvision's does not, nvcc does), not on correctness. Comparisons between
    implementations mask these bins (in float64 they are rare but exist: a draw of "nice"
    coordinates can land a sample exactly on the border there too).
    """
    n_rois = rois.shape[0]
    ph, pw = case["output_size"]
    _, _, h, w = case["shape"]
    scale, sr, aligned = case["spatial_scale"], case["sampling_ratio"], case["aligned"]
    offset = 0.5 if aligned else 0.0
    out = torch.zeros(n_rois, ph, pw, dtype=torch.bool)
    boxes = rois.double()
    for k in range(n_rois):
        for axis, pooled, size, lo_col, hi_col in ((1, ph, h, 2, 4), (2, pw, w, 1, 3)):
            start = boxes[k, lo_col].item() * scale - offset
            end = boxes[k, hi_col].item() * scale - offset
            # Rounding in float32 is relative to the magnitudes the kernel adds up.
            tol = 64 * torch.finfo(dtype).eps * (1.0 + abs(start) + abs(end) + size)
            clamped = not aligned and end - start < 1.0 - tol  # exactly 1 on both sides then
            extent = 1.0 if clamped else max(end - start, 1.0) if not aligned else end - start
            ratio = extent / pooled
            if sr <= 0 and not clamped and abs(ratio - round(ratio)) * pooled < tol:
                rows = torch.ones(pooled, dtype=torch.bool)
            else:
                grid = sr if sr > 0 else math.ceil(ratio)
                bin_size = extent / pooled
                p = torch.arange(pooled, dtype=torch.float64)[:, None]
                i = torch.arange(max(grid, 1), dtype=torch.float64)[None, :]
                pos = start + p * bin_size + (i + 0.5) * bin_size / max(grid, 1)
                rows = (((pos + 1).abs() < tol) | ((pos - size).abs() < tol)).any(dim=1)
            if axis == 1:
                out[k] |= rows[:, None]
            else:
                out[k] |= rows[None, :]
    return out
