"""Hypothesis strategies and builders shared by the RoIAlign / RoIPool / pooler tests."""

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
