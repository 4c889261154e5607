"""ps_roi_align and ps_roi_pool (position-sensitive RoI pooling, R-FCN): values and input gradients
against torchvision, against roi_align (ps_roi_align pools one channel of roi_align's aligned grid
per bin) and a plain PyTorch definition of PSRoIPool; gradcheck, memory formats, dtypes, thread
count, degenerate boxes, bad input, autocast, torch.compile / torch.export; the CUDA kernels
against the CPU kernels."""

import math

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from roiops_cases import HALF_TOL, error_of, roi_align_bins_on_a_rounding_edge, to_cuda

import roiops

OPS = ["ps_roi_align", "ps_roi_pool"]


@st.composite
def ps_cases(draw, max_rois: int = 5, max_size: int = 10, max_out: int = 4):
    """A random position-sensitive pooling problem: C = C_out * PH * PW channels, boxes inside,
    across and outside the map."""
    n = draw(st.integers(1, 2))
    ph, pw = draw(st.integers(1, max_out)), draw(st.integers(1, max_out))
    c = draw(st.integers(1, 3)) * ph * pw
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25]))
    coord = st.floats(-0.5, 1.5, allow_nan=False, width=32)
    rows = []
    for _ in range(draw(st.integers(0, max_rois))):
        b = draw(st.integers(0, n - 1))
        x1, x2 = sorted((draw(coord) * w / scale, draw(coord) * w / scale))
        y1, y2 = sorted((draw(coord) * h / scale, draw(coord) * h / scale))
        rows.append([b, x1, y1, x2, y2])
    return {
        "shape": (n, c, h, w),
        "rois": rows,
        "spatial_scale": scale,
        "output_size": (ph, pw),
        "sampling_ratio": draw(st.integers(-1, 3)),
        "aligned": True,  # what ps_roi_align always does (for roi_align_bins_on_a_rounding_edge)
        "channels_last": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def build(case, dtype=torch.float32):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["shape"], generator=g, dtype=torch.float64).to(dtype)
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor(case["rois"], dtype=torch.float64).reshape(-1, 5).to(dtype)
    return x, rois


def call(op, x, rois, case):
    if op == "ps_roi_align":
        return roiops.ps_roi_align(
            x, rois, case["output_size"], case["spatial_scale"], case["sampling_ratio"]
        )
    return roiops.ps_roi_pool(x, rois, case["output_size"], case["spatial_scale"])


def call_torchvision(op, x, rois, case):
    if op == "ps_roi_align":
        return torchvision.ops.ps_roi_align(
            x, rois, case["output_size"], case["spatial_scale"], case["sampling_ratio"]
        )
    return torchvision.ops.ps_roi_pool(x, rois, case["output_size"], case["spatial_scale"])


def forward_backward(fn, x, grad_out_seed=1, grad_out=None):
    x = x.detach().requires_grad_(True)
    out = fn(x)
    g = grad_out
    if g is None:
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed), dtype=out.dtype)
    out.backward(g)
    return out, x.grad, g


def align_bins_not_comparable(case, rois, dtype):
    """Bool[K, PH, PW]: bins where two correct float implementations may differ (a sample on a
    rounding edge), or where torchvision divides 0 by 0: adaptive sampling of a box of zero width
    or height, which roiops pools to 0."""
    mask = roi_align_bins_on_a_rounding_edge(case, rois, dtype)
    if case["sampling_ratio"] <= 0 and rois.shape[0]:
        flat = (rois[:, 3] == rois[:, 1]) | (rois[:, 4] == rois[:, 2])
        mask |= flat[:, None, None]
    return mask


@pytest.fixture(params=["gathers", "no gathers"])
def map_reads(request, monkeypatch):
    """Each way the CPU forward reads a float map: with AVX-512 gathers, or without them (a NCHW map
    through the pixel-major scratch, a channels_last one with scalar loads in place); see
    csrc/cpu/ps_roi_pooling.h: ps_fast_gathers picks one by CPU, ROIOPS_PS_GATHERS overrides it.
    Without AVX-512 there are no gathers and both run the same code."""
    monkeypatch.setenv("ROIOPS_PS_GATHERS", "1" if request.param == "gathers" else "0")
    return request.param


# ---- against torchvision ---------------------------------------------------------------------


@given(ps_cases())
def test_ps_roi_align_matches_torchvision_values_and_input_gradients(case):
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        x, rois = build(case, dtype)
        skip = align_bins_not_comparable(case, rois, dtype)[:, None]  # [K, 1, PH, PW]
        theirs_x = x.contiguous().detach().requires_grad_(True)
        theirs = call_torchvision("ps_roi_align", theirs_x, rois, case)
        g = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        # The gradient of the bins that cannot be compared is left out of both backward passes.
        g = torch.where(skip, torch.zeros_like(g), g)
        theirs.backward(g)
        ours_x = x.detach().requires_grad_(True)
        ours = call("ps_roi_align", ours_x, rois, case)
        ours.backward(g)
        torch.testing.assert_close(torch.where(skip, 0, ours), torch.where(skip, 0, theirs), atol=tol, rtol=0)
        torch.testing.assert_close(ours_x.grad, theirs_x.grad, atol=tol, rtol=0)
        if case["sampling_ratio"] <= 0 and rois.shape[0]:
            flat = (rois[:, 3] == rois[:, 1]) | (rois[:, 4] == rois[:, 2])
            assert (ours[flat] == 0).all()


def pool_rois_clear_of_last_row_and_column(case, rois):
    """Bool[K]: the boxes whose bins all end before the map's last row and column (the rounded
    start plus the region size of at least 1); only there does torchvision's PSRoIPool backward
    agree with the derivative of its forward."""
    _, _, h, w = case["shape"]
    corners = torch.round(rois[:, 1:].double() * case["spatial_scale"])
    x_end = torch.maximum(corners[:, 2], corners[:, 0] + 1)
    y_end = torch.maximum(corners[:, 3], corners[:, 1] + 1)
    return (x_end <= w - 1) & (y_end <= h - 1)


@given(ps_cases())
def test_ps_roi_pool_equals_torchvision_values_exactly_and_its_gradients_off_the_far_border(case):
    for dtype in (torch.float32, torch.float64):
        x, rois = build(case, dtype)
        theirs_x = x.contiguous().detach().requires_grad_(True)
        theirs = call_torchvision("ps_roi_pool", theirs_x, rois, case)
        g = torch.randn(theirs.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        g = g * pool_rois_clear_of_last_row_and_column(case, rois).to(dtype)[:, None, None, None]
        theirs.backward(g)
        ours_x = x.detach().requires_grad_(True)
        ours = call("ps_roi_pool", ours_x, rois, case)
        ours.backward(g)
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
        torch.testing.assert_close(
            ours_x.grad, theirs_x.grad, atol=1e-6 if dtype == torch.float32 else 0, rtol=0
        )


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_r_fcn_sized_problems_match_torchvision(op, dtype, channels_last, map_reads):
    # The shapes the hypothesis cases stay below: 7 x 7 bins (the output is laid out 16 bins at a
    # time), 21 output channels (two groups of 16 lanes), two images, RoIs of 1 to 30 pixels, and
    # map rows of 133 KB (the channels_last backward's bands of 1 MB: three of them, RoIs across).
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 21 * 49, 19, 33, generator=g, dtype=torch.float64).to(dtype)
    size = torch.exp(torch.empty(60, 2, dtype=torch.float64).uniform_(0, 3.4, generator=g))
    corner = torch.rand(60, 2, generator=g, dtype=torch.float64) * torch.tensor([33.0, 19.0]) - 2
    index = torch.randint(0, 2, (60, 1), generator=g).double()
    rois = torch.cat([index, corner, corner + size], 1).to(dtype)
    case = {"output_size": (7, 7), "spatial_scale": 1.0, "sampling_ratio": 2}
    grad = torch.randn(60, 21, 7, 7, generator=g, dtype=torch.float64).to(dtype)
    if op == "ps_roi_pool":  # only there is torchvision's backward its forward's (see below)
        clear = pool_rois_clear_of_last_row_and_column({"shape": x.shape, **case}, rois)
        grad = grad * clear.to(dtype)[:, None, None, None]
    theirs, theirs_grad, _ = forward_backward(lambda t: call_torchvision(op, t, rois, case), x, grad_out=grad)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours, ours_grad, _ = forward_backward(lambda t: call(op, t, rois, case), x, grad_out=grad)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, theirs, atol=0 if op == "ps_roi_pool" else tol, rtol=0)
    torch.testing.assert_close(ours_grad, theirs_grad, atol=tol, rtol=0)


def test_ps_roi_pool_backward_is_the_adjoint_of_its_forward_where_torchvision_differs():
    # A box over the whole 4 x 4 map: the forward (roiops and torchvision alike) averages rows and
    # columns 0..2 (the bins are clipped to H - 1 and W - 1), so the true gradient is 1/9 there and
    # 0 on the last row and column. torchvision's backward clips to H and W and spreads 1/16.
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0, 0, 0, 4, 4.0]])
    assert (
        roiops.ps_roi_pool(x, rois, 1, 1.0).item() == torchvision.ops.ps_roi_pool(x, rois, 1, 1.0).item() == 5
    )
    ours_x = x.clone().requires_grad_(True)
    roiops.ps_roi_pool(ours_x, rois, 1, 1.0).backward(torch.ones(1, 1, 1, 1))
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., :3, :3] = 1 / 9
    torch.testing.assert_close(ours_x.grad, expected, atol=0, rtol=0)
    theirs_x = x.clone().requires_grad_(True)
    torchvision.ops.ps_roi_pool(theirs_x, rois, 1, 1.0).backward(torch.ones(1, 1, 1, 1))
    torch.testing.assert_close(theirs_x.grad, torch.full((1, 1, 4, 4), 1 / 16), atol=0, rtol=0)


# ---- independent definitions -------------------------------------------------------------------


def position_sensitive_channels(c_out, ph, pw):
    """LongTensor[C_out, PH, PW]: input channel (c * PH + i) * PW + j of output (c, i, j)."""
    return torch.arange(c_out * ph * pw).reshape(c_out, ph, pw)


@given(ps_cases())
def test_ps_roi_align_is_roi_align_aligned_reading_each_bins_own_channel(case):
    x, rois = build(case, torch.float64)
    ph, pw = case["output_size"]
    c_out = x.shape[1] // (ph * pw)
    full = roiops.roi_align(x, rois, case["output_size"], case["spatial_scale"], case["sampling_ratio"], True)
    channels = position_sensitive_channels(c_out, ph, pw)
    expected = torch.empty(rois.shape[0], c_out, ph, pw, dtype=x.dtype)
    for i in range(ph):
        for j in range(pw):
            expected[:, :, i, j] = full[:, channels[:, i, j], i, j]
    torch.testing.assert_close(call("ps_roi_align", x, rois, case), expected, atol=1e-12, rtol=0)


def ps_roi_pool_definition(x, rois, output_size, spatial_scale):
    """PSRoIPool written out bin by bin (float64): rounded corners, a region of at least 1 x 1,
    bins floor(p * bin) .. ceil((p + 1) * bin), clipped to [0, H - 1] x [0, W - 1], averaged."""
    ph, pw = output_size
    n, c, h, w = x.shape
    c_out = c // (ph * pw)
    out = torch.zeros(rois.shape[0], c_out, ph, pw, dtype=torch.float64)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.double().tolist()):
        sx, sy = math.floor(x1 * spatial_scale + 0.5), math.floor(y1 * spatial_scale + 0.5)
        ex, ey = math.floor(x2 * spatial_scale + 0.5), math.floor(y2 * spatial_scale + 0.5)
        bin_h, bin_w = max(ey - sy, 1) / ph, max(ex - sx, 1) / pw
        for i in range(ph):
            for j in range(pw):
                h0 = min(max(math.floor(i * bin_h) + sy, 0), h - 1)
                h1 = min(max(math.ceil((i + 1) * bin_h) + sy, 0), h - 1)
                w0 = min(max(math.floor(j * bin_w) + sx, 0), w - 1)
                w1 = min(max(math.ceil((j + 1) * bin_w) + sx, 0), w - 1)
                if h1 > h0 and w1 > w0:
                    channels = [(co * ph + i) * pw + j for co in range(c_out)]
                    out[k, :, i, j] = x[int(b), channels, h0:h1, w0:w1].double().mean(dim=(1, 2))
    return out


@given(ps_cases())
def test_ps_roi_pool_matches_its_definition(case):
    # Corners at exact halves round away from zero in the kernel, floor(v + 0.5) here: the drawn
    # corners (float32 draws times powers of two) are never negative halves, where the two differ.
    x, rois = build(case, torch.float64)
    if rois.shape[0] and ((rois[:, 1:] * case["spatial_scale"]) % 1 == 0.5).any():
        rois = torch.cat([rois[:, :1], rois[:, 1:] + 1e-3], dim=1)  # the corners, not the batch index
    expected = ps_roi_pool_definition(x, rois, case["output_size"], case["spatial_scale"])
    torch.testing.assert_close(call("ps_roi_pool", x, rois, case), expected, atol=1e-12, rtol=0)


# ---- gradients, formats, dtypes, threads ---------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_and_gradgradcheck_in_float64(op, channels_last, device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 5, generator=g, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(device).requires_grad_(True)
    rois = torch.tensor(
        [[0, 0.3, 1.1, 4.2, 5.1], [1, 1.6, 0.2, 4.4, 3.9], [1, -3, -3, 30, 30], [0, 2, 2, 2.5, 6]],
        dtype=torch.float64,
    ).to(device)
    case = {"output_size": (2, 2), "spatial_scale": 1.0, "sampling_ratio": 2}

    def fn(t):
        return call(op, t, rois, case)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


@pytest.mark.parametrize("op", OPS)
def test_channels_last_input_gives_channels_last_output_and_gradient_with_the_same_values(op, map_reads):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 18, 11, 13, generator=g)
    rois = torch.cat(
        [
            torch.randint(0, 2, (20, 1), generator=g).float(),
            torch.rand(20, 2, generator=g) * 10,
            torch.rand(20, 2, generator=g) * 10 + 8,
        ],
        1,
    )
    case = {"output_size": (3, 3), "spatial_scale": 0.7, "sampling_ratio": -1}
    nchw, nchw_grad, _ = forward_backward(lambda t: call(op, t, rois, case), x)
    cl, cl_grad, _ = forward_backward(
        lambda t: call(op, t, rois, case), x.contiguous(memory_format=torch.channels_last)
    )
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()
    assert cl_grad.is_contiguous(memory_format=torch.channels_last) and not cl_grad.is_contiguous()
    assert nchw.is_contiguous() and nchw_grad.is_contiguous()
    assert torch.equal(cl, nchw) and torch.equal(cl_grad, nchw_grad)


@pytest.mark.parametrize("op", OPS)
def test_result_does_not_depend_on_thread_count(op, map_reads):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 98, 30, 30, generator=g)
    rois = torch.cat(
        [
            torch.randint(0, 2, (60, 1), generator=g).float(),
            torch.rand(60, 2, generator=g) * 15,
            torch.rand(60, 2, generator=g) * 15 + 15,
        ],
        1,
    )
    case = {"output_size": (7, 7), "spatial_scale": 1.0, "sampling_ratio": 2}
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for xi in (x, x.contiguous(memory_format=torch.channels_last)):
                results.append(forward_backward(lambda t: call(op, t, rois, case), xi)[:2])
    finally:
        torch.set_num_threads(before)
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(grad, results[0][1])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_accumulate_in_float32(op, dtype):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 36, 16, 16, generator=g).to(dtype)
    rois = torch.tensor([[0, 1.0, 1, 14, 15], [0, 3.5, 2.25, 9, 7]]).to(dtype)
    case = {"output_size": (3, 3), "spatial_scale": 1.0, "sampling_ratio": 4}
    out, grad, gout = forward_backward(lambda t: call(op, t, rois, case), x)
    ref, ref_grad, _ = forward_backward(lambda t: call(op, t, rois.float(), case), x.float())
    assert out.dtype == grad.dtype == dtype
    # One rounding of the float32 result (and of each gradient element) to the half type.
    torch.testing.assert_close(out, ref.to(dtype), atol=0, rtol=0)
    ref_x = x.float().requires_grad_(True)
    call(op, ref_x, rois.float(), case).backward(gout.float())
    torch.testing.assert_close(grad, ref_x.grad.to(dtype), atol=0, rtol=0)


# ---- empty and degenerate input --------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_one_pixel_map_gets_a_gradient_in_every_channel(op, channels_last):
    # [N, C, 1, 1] is contiguous in both memory formats; every element of its gradient must be
    # written, the ones no bin reads with 0 (a kernel treating it as [N, H, W, C] rows once left
    # all but the first channel uninitialised). Repeated: uninitialised memory is often zero.
    x = torch.randn(2, 12, 1, 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[0, 0.0, 0.0, 1.0, 1.0], [1, 0.2, 0.1, 0.9, 0.8]])
    case = {"output_size": (2, 2), "spatial_scale": 1.0, "sampling_ratio": 2}
    ref, ref_grad, g = forward_backward(lambda t: call_torchvision(op, t, rois, case), x.contiguous())
    for _ in range(20):
        out, grad, _ = forward_backward(lambda t: call(op, t, rois, case), x, grad_out=g)
        if op == "ps_roi_align":
            torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
            torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)
        else:  # torchvision's backward clips to the last row and column (see the pool tests above)
            assert torch.equal(out, ref)
        zeros = torch.zeros_like(out)
        _, zero_grad, _ = forward_backward(lambda t: call(op, t, rois, case), x, grad_out=zeros)
        assert torch.equal(zero_grad, torch.zeros_like(x))


@pytest.mark.parametrize("op", OPS)
def test_empty_rois_give_an_empty_output_and_a_zero_gradient(op, device):
    x = torch.randn(2, 8, 5, 6, device=device)
    case = {"output_size": (2, 2), "spatial_scale": 1.0, "sampling_ratio": 2}
    for boxes in (torch.zeros(0, 5, device=device), [torch.zeros(0, 4, device=device)] * 2):
        out, grad, _ = forward_backward(lambda t, boxes=boxes: call(op, t, boxes, case), x)
        assert out.shape == (0, 2, 2, 2)
        assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("op", OPS)
def test_list_of_boxes_equals_rois_with_batch_indices(op):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, 9, 9, generator=g)
    boxes = [torch.tensor([[1.0, 1, 6, 7]]), torch.tensor([[0.0, 2, 8, 5], [3, 3, 4, 4]])]
    rois = torch.tensor([[0, 1.0, 1, 6, 7], [1, 0, 2, 8, 5], [1, 3, 3, 4, 4]])
    case = {"output_size": (2, 2), "spatial_scale": 1.0, "sampling_ratio": -1}
    assert torch.equal(call(op, x, boxes, case), call(op, x, rois, case))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_degenerate_boxes_pool_to_zero_without_gradient(op, sampling_ratio):
    x = torch.randn(1, 4, 6, 6)
    inf, nan = math.inf, math.nan
    rois = torch.tensor(
        [
            [0, nan, 1, 3, 3],
            [0, 1, 1, inf, 3],
            [0, -inf, 0, 2, 2],
            [0, 50, 50, 60, 60],
            [0, -30, -30, -20, -20],
        ]
    )
    case = {"output_size": (2, 2), "spatial_scale": 1.0, "sampling_ratio": sampling_ratio}
    out, grad, _ = forward_backward(lambda t: call(op, t, rois, case), x)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(grad, torch.zeros_like(grad))


def test_ps_roi_align_zero_size_box_with_adaptive_sampling_pools_to_zero_where_torchvision_gives_nan():
    x = torch.randn(1, 4, 6, 6)
    rois = torch.tensor([[0, 2.0, 1, 2, 4]])  # zero width
    assert torch.equal(roiops.ps_roi_align(x, rois, 2, 1.0, -1), torch.zeros(1, 1, 2, 2))
    assert torchvision.ops.ps_roi_align(x, rois, 2, 1.0, -1).isnan().all()


def test_ps_roi_pool_bins_in_the_last_row_or_column_are_empty():
    # torchvision's definition: bins clip to [0, H - 1] x [0, W - 1].
    x = torch.randn(1, 1, 5, 5)
    assert roiops.ps_roi_pool(x, torch.tensor([[0, 4.0, 4, 5, 5]]), 1, 1.0).item() == 0
    assert roiops.ps_roi_pool(x, torch.tensor([[0, 3.0, 3, 5, 5]]), 1, 1.0).item() == x[0, 0, 3, 3].item()


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_channels_not_divisible_by_the_bins_raise_naming_input_and_output_size(op):
    x = torch.randn(1, 10, 5, 5)
    case = {"output_size": (2, 3), "spatial_scale": 1.0, "sampling_ratio": 2}
    with pytest.raises(ValueError, match=r"input must have a multiple of output_size height \* width"):
        call(op, x, torch.tensor([[0, 0, 0, 3, 3.0]]), case)
    args = (x, torch.tensor([[0, 0, 0, 3, 3.0]]), 1.0, 2, 3) + ((2,) if op == "ps_roi_align" else ())
    with pytest.raises(ValueError, match="must be a multiple of output_size height"):
        getattr(torch.ops.roiops, op)(*args)


@pytest.mark.parametrize("op", OPS)
def test_the_registered_ops_reject_an_integer_map_or_gradient_naming_the_op(op):
    # What torch.ops callers (and the ONNX and export paths) reach without the Python wrapper.
    rois = torch.tensor([[0, 0, 0, 3, 3]])
    extra = (2,) if op == "ps_roi_align" else ()
    with pytest.raises(TypeError, match=rf"^{op}: input must be a floating dtype, got Long"):
        getattr(torch.ops.roiops, op)(torch.zeros(1, 4, 5, 5, dtype=torch.long), rois, 1.0, 2, 2, *extra)
    backward = getattr(torch.ops.roiops, f"{op}_backward")
    with pytest.raises(TypeError, match=rf"^{op}_backward: grad must be a floating dtype, got Int"):
        backward(torch.ones(1, 1, 2, 2, dtype=torch.int32), rois.int(), 1.0, 2, 2, *extra, 1, 4, 5, 5, False)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("batch_index", [-1.0, 2.0, 0.5, math.nan])
def test_a_bad_batch_index_raises_instead_of_reading_out_of_bounds(op, batch_index):
    x = torch.randn(2, 4, 5, 5)
    rois = torch.tensor([[0, 0, 0, 3, 3.0], [batch_index, 0, 0, 3, 3]])
    case = {"output_size": 2, "spatial_scale": 1.0, "sampling_ratio": 2}
    with pytest.raises(ValueError, match=r"rois\[1, 0\] \(the batch index\) must be an integer in \[0, 2\)"):
        call(op, x, rois, case)
    backward = getattr(torch.ops.roiops, f"{op}_backward")
    extra = (2,) if op == "ps_roi_align" else ()
    with pytest.raises(ValueError, match=r"rois\[1, 0\]"):
        backward(torch.ones(2, 1, 2, 2), rois, 1.0, 2, 2, *extra, 2, 4, 5, 5, False)


@pytest.mark.parametrize("op", OPS)
def test_bad_arguments_raise_naming_them(op):
    x = torch.randn(1, 4, 5, 5)
    rois = torch.tensor([[0, 0, 0, 3, 3.0]])
    fn = getattr(roiops, op)
    # The classes are also torchvision's exception types (tests/roiops/test_dropin.py): subclasses.
    kind, message = error_of(lambda: fn(x[0], rois, 2))
    assert issubclass(kind, ValueError)
    assert message == "input must have 4 dimensions ([*, *, *, *]), got shape (4, 5, 5)"
    assert issubclass(error_of(lambda: fn(x, rois[:, 1:], 2))[0], ValueError)
    assert "boxes" in error_of(lambda: fn(x, rois[:, 1:], 2))[1]
    # Integer boxes raise; a float dtype other than input's is pooled in the wider of the two.
    assert issubclass(error_of(lambda: fn(x, rois.long(), 2))[0], TypeError)
    assert error_of(lambda: fn(x, rois.double(), 2)) is None
    assert issubclass(error_of(lambda: fn(x, rois, 0))[0], ValueError)
    assert error_of(lambda: fn(x, rois, 2, -1.0))[1].startswith("spatial_scale")
    assert error_of(lambda: fn(x.long(), rois, 2))[1].startswith("input must be float32")


def test_modules_match_the_functions():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 18, 9, 9, generator=g)
    rois = torch.tensor([[0, 1.0, 1, 6, 7], [1, 0, 2, 8, 5]])
    align = roiops.PSRoIAlign((3, 3), 0.5, 2)
    pool = roiops.PSRoIPool(3, 0.5)
    assert torch.equal(align(x, rois), roiops.ps_roi_align(x, rois, 3, 0.5, 2))
    assert torch.equal(pool(x, rois), roiops.ps_roi_pool(x, rois, 3, 0.5))
    assert repr(align) == "PSRoIAlign(output_size=(3, 3), spatial_scale=0.5, sampling_ratio=2)"
    assert repr(pool) == "PSRoIPool(output_size=3, spatial_scale=0.5)"
    tv_align = torchvision.ops.PSRoIAlign(3, 0.5, 2)
    torch.testing.assert_close(align(x, rois), tv_align(x, rois), atol=1e-5, rtol=0)
    scripted = torch.jit.script(align)
    assert torch.equal(scripted(x, rois), align(x, rois))


# ---- autocast, compile, export -----------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_autocast_pools_a_half_map_with_float32_boxes_in_float32(op):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 8, 9, 9, generator=g).to(torch.bfloat16)
    rois = torch.tensor([[0, 1.3, 1.1, 7.9, 6.2]])
    case = {"output_size": 2, "spatial_scale": 1.0, "sampling_ratio": 2}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call(op, x, rois, case)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, call(op, x.float(), rois, case).to(torch.bfloat16))
    # Outside autocast the wrapper casts up the same way (roiops/_validation.py, in_common_float_dtype).
    assert torch.equal(call(op, x, rois, case), out)


class RfcnHead(torch.nn.Module):
    """A 1x1 conv to position-sensitive score maps, both poolers, a vote (the mean over the bins)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2 * 2 * 2, 1)
        self.align = roiops.PSRoIAlign(2, 0.5, 2)
        self.pool = roiops.PSRoIPool(2, 0.5)

    def forward(self, x, rois):
        f = self.conv(x)
        return self.align(f, rois).mean(dim=(2, 3)) + self.pool(f, rois).mean(dim=(2, 3))


def rfcn_inputs():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 9)
    rois = torch.tensor([[0, 1.2, 0.7, 12.3, 11.9], [1, 0.0, 2.5, 8.1, 15.8], [1, -2.0, -1.0, 19.5, 6.3]])
    return x, rois


def test_compile_fullgraph_matches_eager_forward_and_backward():
    x, rois = rfcn_inputs()
    model = RfcnHead()
    expected = model(x, rois)
    expected.square().sum().backward()
    expected_grad = model.conv.weight.grad.clone()
    model.zero_grad()
    out = torch.compile(model, fullgraph=True, backend="aot_eager")(x, rois)
    out.square().sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(model.conv.weight.grad, expected_grad)


def test_export_keeps_both_ops_and_runs_like_eager():
    x, rois = rfcn_inputs()
    model = RfcnHead().eval()
    exported = torch.export.export(model, (x, rois))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"roiops.ps_roi_align.default", "roiops.ps_roi_pool.default"} <= targets
    other = rois + torch.tensor([0, 0.5, 0.5, 1.0, 1.0])
    torch.testing.assert_close(exported.module()(x, other), model(x, other))


# ---- CUDA against the CPU --------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_matches_cpu(op, dtype, channels_last):
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 98, 20, 23, generator=g)
    rois = torch.cat(
        [
            torch.randint(0, 2, (40, 1), generator=g).float(),
            torch.rand(40, 2, generator=g) * 25 - 3,
            torch.rand(40, 2, generator=g) * 20 + 20,
        ],
        1,
    )
    x, rois = x.to(dtype), rois.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    case = {"output_size": (7, 7), "spatial_scale": 0.5, "sampling_ratio": -1}
    cpu, cpu_grad, gout = forward_backward(lambda t: call(op, t, rois, case), x)
    xc, rc = to_cuda(x, rois)
    xc = xc.detach().requires_grad_(True)
    out = call(op, xc, rc, case)
    out.backward(gout.cuda())
    tol = HALF_TOL.get(dtype, 1e-5 if dtype == torch.float32 else 1e-12)
    torch.testing.assert_close(out.cpu(), cpu, atol=tol, rtol=0)
    torch.testing.assert_close(xc.grad.cpu(), cpu_grad, atol=tol, rtol=0)
    assert out.is_contiguous(memory_format=torch.channels_last) == cpu.is_contiguous(
        memory_format=torch.channels_last
    )


@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
def test_cuda_backward_alerts_under_deterministic_algorithms(op, deterministic):
    x = torch.randn(1, 4, 5, 5, device="cuda", requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 3, 3.0]], device="cuda")
    out = call(op, x, rois, {"output_size": 2, "spatial_scale": 1.0, "sampling_ratio": 2})
    with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
        out.sum().backward()
