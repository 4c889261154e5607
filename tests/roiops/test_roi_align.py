"""roi_align forward: the native kernels against the definition (roiops._reference), torchvision,
hand-computed values and RoIAlign's properties; degenerate and bad input; the CUDA kernel against
the CPU kernel and torchvision's CUDA op."""

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from roiops_cases import (
    CUDA,
    HALF_TOL,
    assert_same_memory_format,
    build,
    error_of,
    random_feature,
    random_rois,
    roi_align_bins_on_a_rounding_edge,
    roi_cases,
    to_cuda,
)

import roiops
from roiops._reference import roi_align_reference


def call(case, x, rois):
    return roiops.roi_align(
        x, rois, case["output_size"], case["spatial_scale"], case["sampling_ratio"], case["aligned"]
    )


@given(roi_cases())
def test_matches_definition_in_float64(case):
    x, rois = build(case, torch.float64)
    expected = roi_align_reference(
        x, rois, case["output_size"], case["spatial_scale"], case["sampling_ratio"], case["aligned"]
    )
    keep = ~roi_align_bins_on_a_rounding_edge(case, rois, torch.float64)[:, None].expand_as(expected)
    torch.testing.assert_close(call(case, x, rois)[keep], expected[keep], atol=1e-12, rtol=0)


@given(roi_cases())
def test_matches_torchvision_in_float32_away_from_rounding_edges(case):
    # The contract (README, "float32"): torchvision's values to float32 rounding, except in bins
    # where the exact geometry puts a sample on the map border or an adaptive count on a step;
    # there either side of the jump is a correct rounding (roi_align_bins_on_a_rounding_edge).
    x, rois = build(case)
    expected = torchvision.ops.roi_align(
        x, rois, case["output_size"], case["spatial_scale"], case["sampling_ratio"], case["aligned"]
    )
    keep = ~roi_align_bins_on_a_rounding_edge(case, rois)[:, None].expand_as(expected)
    torch.testing.assert_close(call(case, x, rois)[keep], expected[keep], atol=1e-5, rtol=0)


def test_samples_exactly_on_the_map_border_read_the_border_pixel():
    # Samples in [-1, W] are on the map, both ends included. Box 1: x = 4.5 + (3 + 0.5) * 9 / 7 = 9
    # = W exactly reads pixel 8 (torchvision's unfused float32 arithmetic rounds it to 9.000001 and
    # returns 0 there; roiops keeps the exact position). Box 2: x = -1.5 + 0.5 = -1 reads pixel 0.
    x = torch.arange(1.0, 10.0).view(1, 1, 1, 9)
    rois = torch.tensor([[0, 4.5, 0.0, 13.5, 0.5], [0, -1.5, 0.0, 5.5, 0.5]])
    for dtype in (torch.float32, torch.float64):
        out = roiops.roi_align(x.to(dtype), rois.to(dtype), (1, 7), 1.0, 1, False)
        assert out[0, 0, 0, 3].item() == 9.0 and out[1, 0, 0, 0].item() == 1.0
    expected = roi_align_reference(x.double(), rois.double(), (1, 7), 1.0, 1, False)
    assert expected[0, 0, 0, 3].item() == 9.0 and expected[1, 0, 0, 0].item() == 1.0


def test_rounding_edge_mask_finds_the_border_sample_and_nothing_else():
    case = {"shape": (1, 1, 1, 9), "output_size": (1, 7), "spatial_scale": 1.0, "sampling_ratio": 1,
            "aligned": False}
    mask = roi_align_bins_on_a_rounding_edge(case, torch.tensor([[0, 4.5, 0.0, 13.5, 0.5]]))
    assert mask.tolist() == [[[False, False, False, True, False, False, False]]]
    # Adaptive counts: a 14-pixel box in 7 bins sits on the step from 2 to 3 samples per bin.
    case = dict(case, sampling_ratio=0, shape=(1, 1, 30, 30), output_size=(7, 7))
    rois = torch.tensor([[0, 3.0, 3.2, 17.0, 9.9], [0, 3.0, 3.2, 17.5, 9.9]])
    mask = roi_align_bins_on_a_rounding_edge(case, rois)
    assert mask[0].all() and not mask[1].any()


@given(roi_cases())
def test_channels_last_gives_the_same_values_and_stays_channels_last(case):
    case = dict(case, channels_last=False)
    x, rois = build(case)
    cl = x.contiguous(memory_format=torch.channels_last)
    out_cl = call(case, cl, rois)
    torch.testing.assert_close(out_cl, call(case, x, rois), atol=1e-6, rtol=0)
    if x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1 and rois.shape[0] > 0:
        assert out_cl.is_contiguous(memory_format=torch.channels_last)


def test_aligned_true_matches_half_pixel_model():
    # With aligned=True, pixel (h, w) is the value at (w + 0.5, h + 0.5): a box over exactly pixels
    # [1, 3) x [2, 4) with a 2x2 output and one sample per bin lands on the four pixel centres.
    x = torch.arange(5 * 5, dtype=torch.float64).view(1, 1, 5, 5)
    out = roiops.roi_align(x, torch.tensor([[0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64), 2, 1.0, 1, True)
    torch.testing.assert_close(out[0, 0], x[0, 0, 2:4, 1:3])
    # aligned=False reads the same pixels from the box shifted by -0.5.
    out = roiops.roi_align(x, torch.tensor([[0, 0.5, 1.5, 2.5, 3.5]], dtype=torch.float64), 2, 1.0, 1, False)
    torch.testing.assert_close(out[0, 0], x[0, 0, 2:4, 1:3])


def test_hand_computed_bilinear_values():
    # Map value = 10 * y + x (a plane), which bilinear interpolation reproduces exactly inside the
    # map, so each bin is the plane at its centre. Box (0.5, 1, 2.5, 3), 2x2 bins, 2x2 samples.
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
    x = (10 * ys + xs).double().view(1, 1, 5, 5)
    out = roiops.roi_align(x, torch.tensor([[0, 0.5, 1.0, 2.5, 3.0]], dtype=torch.float64), 2, 1.0, 2, False)
    centres_y, centres_x = torch.tensor([1.5, 2.5]), torch.tensor([1.0, 2.0])
    expected = 10 * centres_y[:, None] + centres_x[None, :]
    torch.testing.assert_close(out[0, 0], expected.double())


def test_translation_by_whole_pixels_leaves_output_unchanged():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 20, 20, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 2.3, 3.1, 9.7, 8.2], [0, 1.0, 1.0, 6.5, 9.9]], dtype=torch.float64)
    shifted = torch.zeros(1, 3, 27, 25, dtype=torch.float64)
    shifted[..., 7:, 5:] = x
    moved = rois + torch.tensor([0, 5.0, 7.0, 5.0, 7.0], dtype=torch.float64)
    for aligned in (False, True):
        for sr in (-1, 2):
            torch.testing.assert_close(
                roiops.roi_align(shifted, moved, 5, 1.0, sr, aligned),
                roiops.roi_align(x, rois, 5, 1.0, sr, aligned),
            )


@pytest.mark.parametrize("s", [2.0, 4.0, 16.0])
def test_scaled_boxes_with_inverse_spatial_scale_are_equivalent(s):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 15, 17, generator=g, dtype=torch.float64)
    rois = torch.tensor([[1, 1.2, 0.3, 12.5, 9.9], [0, -2.0, 3.0, 7.0, 14.0]], dtype=torch.float64)
    scaled = rois * torch.tensor([1, s, s, s, s], dtype=torch.float64)
    for aligned in (False, True):
        torch.testing.assert_close(
            roiops.roi_align(x, scaled, (3, 4), 1 / s, -1, aligned),
            roiops.roi_align(x, rois, (3, 4), 1.0, -1, aligned),
        )


def test_constant_map_pools_to_the_constant_for_boxes_inside():
    x = torch.full((2, 3, 10, 12), 2.5, dtype=torch.float64)
    rois = torch.tensor([[0, 0, 0, 11, 9], [1, 3.3, 2.2, 4.4, 3.1], [1, 5, 5, 5, 5]], dtype=torch.float64)
    for aligned in (False, True):
        for sr in (-1, 1, 3):
            out = roiops.roi_align(x, rois, 4, 1.0, sr, aligned)
            if aligned:  # the zero-size box has no adaptive samples there
                out = out[:2] if sr <= 0 else out
            torch.testing.assert_close(out, torch.full_like(out, 2.5))


def test_box_list_equals_tensor_with_batch_index():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 9, 9, generator=g)
    b0 = torch.tensor([[1.0, 1, 5, 6], [0, 0, 3, 3]])
    b1 = torch.tensor([[2.0, 2, 8, 7]])
    rois = torch.tensor([[0, 1.0, 1, 5, 6], [0, 0, 0, 3, 3], [1, 2, 2, 8, 7]])
    torch.testing.assert_close(
        roiops.roi_align(x, [b0, b1], 3, 1.0, 2, True), roiops.roi_align(x, rois, 3, 1.0, 2, True)
    )
    module = roiops.RoIAlign((3, 3), 1.0, 2, aligned=True)
    torch.testing.assert_close(module(x, [b0, b1]), roiops.roi_align(x, rois, 3, 1.0, 2, True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_half_types_accumulate_in_float32(dtype, channels_last):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 24, 24, generator=g).to(dtype)
    rois = torch.tensor([[0, 1.0, 1, 20, 22], [1, 3, 2, 9, 9], [1, 0, 0, 23, 23]]).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = roiops.roi_align(x, rois, 7, 1.0, -1, True)
    assert out.dtype == dtype
    # The exact value of the rounded inputs, rounded once: within one half-type ulp of ~1.
    expected = roi_align_reference(x.double(), rois.double(), 7, 1.0, -1, True)
    tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=0)


@given(roi_cases(max_rois=8))
def test_result_does_not_depend_on_thread_count(case):
    x, rois = build(case)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = call(case, x, rois)
        torch.set_num_threads(2)
        two = call(case, x, rois)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


# ---- degenerate input -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_box_pools_to_zero(bad):
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 1.0, 1, 6, 6], [0, bad, 1, 6, 6], [0, 1, 1, 6, bad]])
    for channels_last in (False, True):
        xi = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        out = roiops.roi_align(xi, rois, 3, 1.0, -1, True)
        assert torch.isfinite(out).all()
        assert (out[1:] == 0).all()
        torch.testing.assert_close(out[0], roiops.roi_align(x, rois[:1], 3, 1.0, -1, True)[0])


def test_inverted_box_pools_to_zero_when_aligned_and_to_a_pixel_box_otherwise():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    inverted = torch.tensor([[0, 6.0, 6, 2, 2]], dtype=torch.float64)
    assert (roiops.roi_align(x, inverted, 2, 1.0, -1, True) == 0).all()
    # aligned=False: the size is raised to 1 pixel, as the paper's definition does.
    torch.testing.assert_close(
        roiops.roi_align(x, inverted, 2, 1.0, -1, False), roi_align_reference(x, inverted, 2, 1.0, -1, False)
    )


@pytest.mark.parametrize("magnitude", [1e7, 1e9, 1e30])
def test_huge_boxes_finish_and_stay_bounded(magnitude):
    # Adaptive sampling would take ceil(2e7 / 7)^2 samples per bin; only those on the map are visited.
    x = torch.rand(1, 3, 16, 16)
    rois = torch.tensor([[0, -magnitude, -magnitude, magnitude, magnitude], [0, 0, 0, magnitude, 8]])
    for channels_last in (False, True):
        xi = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        out = roiops.roi_align(xi, rois, 7, 1.0, -1, False)
        assert torch.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()


def test_huge_box_matches_definition_where_it_can_be_evaluated():
    # 600 samples per bin side, of which only those on the 6x6 map are visited: still the exact
    # definition (the average counts all 600^2).
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64)
    rois = torch.tensor([[0, -600.0, -600.0, 600.0, 600.0]], dtype=torch.float64)
    out = roiops.roi_align(x, rois, 2, 1.0, -1, True)
    expected = roi_align_reference(x, rois, 2, 1.0, 600, True)
    torch.testing.assert_close(out, expected, atol=1e-15, rtol=1e-9)


def test_empty_boxes_give_empty_output_of_the_right_shape(device):
    x = torch.randn(2, 3, 8, 8, device=device)
    no_rois, no_boxes = torch.zeros(0, 5, device=device), torch.zeros(0, 4, device=device)
    assert roiops.roi_align(x, no_rois, (4, 5), 1.0, 2, False).shape == (0, 3, 4, 5)
    assert roiops.roi_align(x, [no_boxes, no_boxes], 2, 1.0, 2, False).shape == (0, 3, 2, 2)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert roiops.roi_align(cl, no_rois, 3, 1.0, 2, True).shape == (0, 3, 3, 3)


def test_boxes_outside_the_map_pool_to_zero():
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 20.0, 20, 30, 30], [0, -30, -30, -10, -10]])
    assert (roiops.roi_align(x, rois, 3, 1.0, -1, False) == 0).all()


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rois", "match"),
    [
        (torch.zeros(3, 4), "boxes must have last dimension 5"),
        (torch.zeros(5), "boxes must have 2 dimensions"),
        (torch.zeros(2, 5, 1), "boxes must have 2 dimensions"),
        ([torch.zeros(2, 5)], r"boxes\[0\] must have last dimension 4"),
        ([], "boxes is an empty list"),
    ],
)
def test_malformed_boxes_raise_naming_boxes(rois, match):
    with pytest.raises(ValueError, match=match):
        roiops.roi_align(torch.zeros(1, 1, 4, 4), rois, 2)


@pytest.mark.parametrize("index", [-1.0, 0.5, 2.0, 7.0, math.nan])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bad_batch_index_raises_naming_it(index, channels_last):
    x = torch.zeros(2, 3, 4, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[0, 0, 0, 2, 2], [index, 0, 0, 2, 2]])
    with pytest.raises(ValueError, match=r"rois\[1, 0\] \(the batch index\) must be an integer in \[0, 2\)"):
        roiops.roi_align(x, rois, 2)


def test_integer_boxes_and_device_mismatch_raise():
    # A float dtype other than input's is accepted (tests/roiops/test_dropin.py); integer boxes are not.
    with pytest.raises(TypeError, match="boxes must be float32"):
        roiops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="input and boxes must be on the same device"):
        roiops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, device="meta"), 2)
    with pytest.raises(TypeError, match="input must be float32"):
        roiops.roi_align(torch.zeros(1, 1, 4, 4, dtype=torch.int32), torch.zeros(1, 5, dtype=torch.int32), 2)
    with pytest.raises(ValueError, match="input must have 4 dimensions"):
        roiops.roi_align(torch.zeros(1, 4, 4), torch.zeros(1, 5), 2)


@pytest.mark.parametrize("output_size", [0, -1, (2, 0), (3,), (2.5, 2), True, "7"])
def test_non_positive_or_malformed_output_size_raises(output_size):
    with pytest.raises(ValueError, match="output_size"):
        roiops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), output_size)


@pytest.mark.parametrize("scale", [0.0, -0.25, math.nan, math.inf])
def test_non_positive_spatial_scale_raises(scale):
    with pytest.raises(ValueError, match="spatial_scale must be positive"):
        roiops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 2, scale)


def test_direct_op_call_checks_too():
    with pytest.raises(ValueError, match="rois must be"):
        torch.ops.roiops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(2, 4), 1.0, 2, 2, -1, False)
    with pytest.raises(ValueError, match="output size must be positive"):
        torch.ops.roiops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(2, 5), 1.0, 0, 2, -1, False)


@pytest.mark.parametrize(("num_rois", "channels"), [(1, 5), (60, 5), (60, 67)])
def test_nchw_channel_blocks_agree_with_definition(num_rois, channels):
    # The NCHW kernels copy blocks of channels (16 float32 / 8 float64, then a short tail), only of
    # the rows some box reads: one box reads a few rows of one image and leaves the other image
    # without boxes (zero gradient); 60 boxes read most rows. Values and gradients must be the
    # definition's either way.
    g = torch.Generator().manual_seed(9)
    # 67 channels on 20 x 24 = 480 pixels: full blocks, a ragged tail block, partial pixel tiles.
    x = torch.randn(2, channels, 20, 24, generator=g, dtype=torch.float64, requires_grad=True)
    xy = torch.rand(num_rois, 2, generator=g, dtype=torch.float64) * 15
    rois = torch.cat(
        [
            torch.randint(0, 2, (num_rois, 1), generator=g).double(),
            xy,
            xy + 1 + 8 * torch.rand(num_rois, 2, generator=g, dtype=torch.float64),
        ],
        dim=1,
    )
    out = roiops.roi_align(x, rois, 3, 1.0, 2, True)
    assert out.is_contiguous()
    torch.testing.assert_close(out, roi_align_reference(x, rois, 3, 1.0, 2, True))
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (ours,) = torch.autograd.grad(out, x, grad_out)
    (expected,) = torch.autograd.grad(roi_align_reference(x, rois, 3, 1.0, 2, True), x, grad_out)
    assert ours.is_contiguous()
    torch.testing.assert_close(ours, expected)
    # float32 too: the transposes have a vectorized float path.
    xf, rf = x.detach().float(), rois.float()
    torch.testing.assert_close(
        roiops.roi_align(xf, rf, 3, 1.0, 2, True),
        roiops.roi_align(xf.contiguous(memory_format=torch.channels_last), rf, 3, 1.0, 2, True),
        atol=1e-6, rtol=0,
    )
    xf.requires_grad_(True)
    (gf,) = torch.autograd.grad(roiops.roi_align(xf, rf, 3, 1.0, 2, True), xf, grad_out.float())
    torch.testing.assert_close(gf.double(), expected, atol=1e-5, rtol=0)
    pooled = roiops.roi_pool(x, rois, 3, 1.0)
    assert pooled.is_contiguous()
    torch.testing.assert_close(
        pooled, roiops.roi_pool(x.contiguous(memory_format=torch.channels_last), rois, 3, 1.0)
    )


def test_non_contiguous_input_gives_the_values_of_its_contiguous_copy(device):
    wide = random_feature((2, 6, 20, 30), 9)
    view = wide[:, ::2, :, 1::2]  # neither NCHW- nor channels_last-contiguous
    rois = random_rois(20, 2, 15, 10)
    expected = roiops.roi_align(view.contiguous(), rois, 4, 1.0, 2, False)
    got = roiops.roi_align(wide.to(device)[:, ::2, :, 1::2], rois.to(device), 4, 1.0, 2, False)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-5, rtol=1e-5)


# ---- the CUDA kernel against the CPU kernel and torchvision's CUDA op -----------------------------


@pytest.mark.cuda
@settings(max_examples=25)
@given(roi_cases(), st.sampled_from([torch.float32, torch.float64]))
def test_cuda_matches_cpu_in_value_dtype_and_memory_format(case, dtype):
    x, rois = build(case, dtype)
    args = (case["output_size"], case["spatial_scale"], case["sampling_ratio"], case["aligned"])
    expected = roiops.roi_align(x, rois, *args)
    got = roiops.roi_align(*to_cuda(x, rois), *args)
    assert got.device.type == CUDA.type and got.dtype == dtype
    assert_same_memory_format(got, expected)
    # GCC and nvcc contract different multiply-adds: a sample exactly on a jump may fall either way.
    keep = ~roi_align_bins_on_a_rounding_edge(case, rois, dtype)[:, None].expand_as(expected)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got.cpu()[keep], expected[keep], atol=tol, rtol=tol)


@pytest.mark.cuda
@settings(max_examples=25)
@given(roi_cases())
def test_cuda_matches_torchvision_cuda_away_from_rounding_edges(case):
    x, rois = build(case, torch.float32)
    args = (case["output_size"], case["spatial_scale"], case["sampling_ratio"], case["aligned"])
    ours = roiops.roi_align(*to_cuda(x, rois), *args).cpu()
    theirs = torchvision.ops.roi_align(*to_cuda(x, rois), *args).cpu()
    keep = ~roi_align_bins_on_a_rounding_edge(case, rois)[:, None].expand_as(ours)
    torch.testing.assert_close(ours[keep], theirs[keep], atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_half_types_match_cpu_forward_and_input_gradient(dtype, channels_last):
    x = random_feature((2, 8, 20, 24), 6, dtype, channels_last)
    rois = random_rois(30, 2, 40, 7, dtype)
    expected = roiops.roi_align(x, rois, 5, 0.5, 2, True)
    got = roiops.roi_align(*to_cuda(x, rois), 5, 0.5, 2, True)
    assert got.dtype == dtype
    assert_same_memory_format(got, expected)
    tol = HALF_TOL[dtype]
    torch.testing.assert_close(got.cpu().float(), expected.float(), atol=tol, rtol=tol)

    xg, rg = to_cuda(x, rois)
    xg = xg.detach().requires_grad_()
    roiops.roi_align(xg, rg, 5, 0.5, 2, True).float().sum().backward()
    xc = x.detach().clone().requires_grad_()
    roiops.roi_align(xc, rois, 5, 0.5, 2, True).float().sum().backward()
    assert xg.grad.dtype == dtype
    torch.testing.assert_close(xg.grad.cpu().float(), xc.grad.float(), atol=tol, rtol=tol)


@pytest.mark.cuda
def test_cuda_non_finite_and_huge_boxes_match_cpu():
    x = random_feature((1, 3, 10, 12), 11)
    rois = torch.tensor([[0, float("nan"), 0, 5, 5], [0, 0, 0, float("inf"), 5], [0, -1e7, -1e7, 1e7, 1e7],
                         [0, 3, 3, 2, 2], [0, 1, 1, 8, 9]])
    for aligned in (False, True):
        expected = roiops.roi_align(x, rois, 3, 1.0, -1, aligned)
        got = roiops.roi_align(*to_cuda(x, rois), 3, 1.0, -1, aligned)
        torch.testing.assert_close(got.cpu(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_graph_replay_gives_the_eager_result():
    # The host-side batch-index check needs a device-to-host copy; while capturing it is skipped.
    x = random_feature((1, 4, 16, 16), 12).to(CUDA)
    rois = random_rois(10, 1, 16, 13).to(CUDA)
    expected = roiops.roi_align(x, rois, 4, 1.0, 2, True)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        roiops.roi_align(x, rois, 4, 1.0, 2, True)  # warm up outside the capture
        with torch.cuda.graph(graph):
            out = roiops.roi_align(x, rois, 4, 1.0, 2, True)
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("bad_index", [-1.0, 2.0, 0.5, float("nan")])
def test_cuda_bad_batch_index_raises_the_cpu_error(bad_index):
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0], [bad_index, 1.0, 1.0, 5.0, 5.0]])
    cpu_error = error_of(lambda: roiops.roi_align(x, rois, 2, 1.0, 2, True))
    assert cpu_error is not None and cpu_error[0] is ValueError
    assert error_of(lambda: roiops.roi_align(*to_cuda(x, rois), 2, 1.0, 2, True)) == cpu_error


@pytest.mark.cuda
@pytest.mark.parametrize(
    "call",
    [
        lambda d: roiops.roi_align(torch.randn(1, 2, 4, 4, device=d), torch.zeros(1, 4, device=d), 2),
        lambda d: roiops.roi_align(torch.randn(1, 2, 4, 4, device=d), torch.zeros(1, 5, device=d), 0),
        lambda d: roiops.roi_align(torch.randn(1, 2, 4, 4, device=d),
                                   torch.zeros(1, 5, device=d, dtype=torch.float64), 2),
    ],
    ids=["four_columns", "zero_output_size", "dtype_mismatch"],
)
def test_cuda_bad_input_raises_the_cpu_error(call):
    cpu_error = error_of(lambda: call("cpu"))
    assert cpu_error is not None
    assert error_of(lambda: call(CUDA)) == cpu_error


@pytest.mark.cuda
def test_input_and_boxes_on_different_devices_raise_naming_them():
    with pytest.raises(ValueError, match="same device"):
        roiops.roi_align(torch.randn(1, 2, 4, 4, device=CUDA), torch.zeros(1, 5), 2)
