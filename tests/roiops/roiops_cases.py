"""Inputs and checks shared by the roiops tests: the random RoI pooling problem (a hypothesis
strategy), seeded feature maps, rois and image boxes, and what the CUDA-against-CPU comparisons
repeat (moving inputs, memory formats, half-type tolerances, errors)."""

import math

import torch
from hypothesis import strategies as st

CUDA = torch.device("cuda")

# CUDA against CPU in the half types: both accumulate in float32 and round once, but add in a different
# order, so a result may round to a neighbouring half-type value (a few ulps for values of a few units).
HALF_TOL = {torch.float16: 1e-2, torch.bfloat16: 6e-2}


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


def three_rois(dtype=torch.float32):
    """Tensor[3, 5] (batch index, x1, y1, x2, y2): one box in image 0 and two in image 1, one of them
    across the border, of a batch of two 8 x 9 maps."""
    return torch.tensor(
        [[0, 1.2, 0.7, 6.3, 5.9], [1, 0.0, 2.5, 4.1, 7.8], [1, -2.0, -1.0, 9.5, 3.3]], dtype=dtype
    )


def random_feature(shape, seed, dtype=torch.float32, channels_last=False):
    """Tensor[N, C, H, W] of standard normal values drawn in float64 from seed, then cast; NCHW or
    channels_last."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def random_rois(k, n, size, seed, dtype=torch.float32, min_side=0.0):
    """Tensor[k, 5] rows (batch index in [0, n), x1, y1, x2, y2) on a size x size map: top-left
    corners up to 5% outside it, sides from min_side to min_side + 0.6 * size."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * size * 1.1 - size * 0.05
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * size * 0.6 + min_side
    batch = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([batch, xy, xy + wh], dim=1).to(dtype)


def random_image_boxes(n, seed, dtype=torch.float32, scale=200.0):
    """Tensor[n, 4] (x1, y1, x2, y2) in image pixels: top-left corners in [0, scale), sides in
    [1, 1 + scale / 4)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale / 4 + 1
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def to_cuda(*tensors):
    # .to() keeps the memory format, so channels_last inputs stay channels_last.
    return [t.to(CUDA) for t in tensors]


def assert_same_memory_format(a, b):
    assert a.is_contiguous() == b.is_contiguous()
    cl = torch.channels_last
    assert a.is_contiguous(memory_format=cl) == b.is_contiguous(memory_format=cl)


def error_of(fn):
    """(type, first line of the message) of what fn() raises, None if it returns."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (the type and message are what is compared)
        return type(e), str(e).splitlines()[0]
    return None
