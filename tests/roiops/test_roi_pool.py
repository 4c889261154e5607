"""roi_pool: the native kernels against the definition, torchvision, RoIPool's properties; its
gradient (argmax routing), double backward, degenerate and bad input; the CUDA kernels against the
CPU kernels and torchvision's CUDA op."""

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from roiops_cases import (
    assert_same_memory_format,
    build,
    error_of,
    random_feature,
    random_rois,
    roi_cases,
    to_cuda,
)

import roiops
from roiops._reference import roi_pool_reference


@given(roi_cases(max_rois=4, max_out=5))
def test_matches_definition_including_argmax(case):
    x, rois = build(case, torch.float64)
    out, argmax = torch.ops.roiops.roi_pool(x, rois, case["spatial_scale"], *case["output_size"])
    expected, expected_argmax = roi_pool_reference(x, rois, case["output_size"], case["spatial_scale"])
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert torch.equal(argmax, expected_argmax)


@given(roi_cases(max_out=7))
def test_matches_torchvision_forward_and_backward(case):
    x, rois = build(case)
    grad_out = torch.randn(
        (rois.shape[0], x.shape[1], *case["output_size"]), generator=torch.Generator().manual_seed(1)
    )
    ours_x = x.detach().requires_grad_(True)
    ours = roiops.roi_pool(ours_x, rois, case["output_size"], case["spatial_scale"])
    ours.backward(grad_out)
    theirs_x = x.detach().contiguous().requires_grad_(True)
    theirs = torchvision.ops.roi_pool(theirs_x, rois, case["output_size"], case["spatial_scale"])
    theirs.backward(grad_out)
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, atol=1e-6, rtol=0)
    if case["channels_last"] and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1 and rois.shape[0] > 0:
        assert ours.is_contiguous(memory_format=torch.channels_last)
        assert ours_x.grad.is_contiguous(memory_format=torch.channels_last)


def test_pool_bounds_align_for_whole_pixel_boxes():
    # With whole-pixel corners, RoIAlign (aligned=False, one bin) only interpolates pixels of the
    # box, so its average lies between the region's min and RoIPool's max of the same region.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 12, 12, generator=g, dtype=torch.float64)
    rois = torch.tensor(
        [[0, 0, 0, 11, 11], [0, 2, 3, 7, 9], [0, 5, 5, 6, 6], [0, 1, 8, 10, 10]], dtype=torch.float64
    )
    pooled = roiops.roi_pool(x, rois, 1, 1.0)
    for sr in (-1, 1, 3):
        aligned = roiops.roi_align(x, rois, 1, 1.0, sr, False)
        assert (pooled >= aligned - 1e-12).all()
        for k, (_, x1, y1, x2, y2) in enumerate(rois.int().tolist()):
            region_min = x[0, :, y1 : y2 + 1, x1 : x2 + 1].amin(dim=(1, 2))
            assert (aligned[k, :, 0, 0] >= region_min - 1e-12).all()


def test_ties_go_to_the_first_pixel_and_nan_wins():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 2] = math.nan
    out, argmax = torch.ops.roiops.roi_pool(x, torch.tensor([[0, 0, 0, 3, 3], [0, 0, 0, 1, 3.0]]), 1.0, 1, 1)
    assert math.isnan(out[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 1 * 4 + 2
    assert out[1, 0, 0, 0] == 0 and argmax[1, 0, 0, 0] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("output_size", [(3, 4), (2, 11)])
def test_many_channels_with_ties_and_nans_match_the_definition(dtype, channels_last, output_size):
    # 150 channels: whole channel blocks of the kernel and a short last one; quantized values give
    # ties, a few NaNs test that the first NaN wins; many overlapping RoIs in two images (spatially
    # reordered by the kernel) and a few outside the map; 11 bins in a row are pooled as 8 + 3.
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 4, (2, 150, 13, 17), generator=g).to(dtype)
    x[0, 3, 2, 5] = x[1, 100, 7, 7] = x[1, 149, 0, 0] = math.nan
    xy = torch.rand(60, 2, generator=g) * torch.tensor([17.0, 13.0]) * 1.2 - 1
    wh = torch.rand(60, 2, generator=g) * 12
    rois = torch.cat([torch.randint(0, 2, (60, 1), generator=g).to(dtype), xy, xy + wh], 1).to(dtype)
    rois[-3:, 1:] += 40
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out, argmax = torch.ops.roiops.roi_pool(x, rois, 1.0, *output_size)
    expected, expected_argmax = roi_pool_reference(x.contiguous(), rois, output_size, 1.0)
    torch.testing.assert_close(out, expected, atol=0, rtol=0, equal_nan=True)
    assert torch.equal(argmax, expected_argmax)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_and_gradgradcheck(channels_last, device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 7, 6, generator=g, dtype=torch.float64).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    rois = torch.tensor([[0, 0, 1, 5, 6], [1, 1.6, 0.2, 4.4, 3.9], [1, -3, -3, 30, 30]], dtype=torch.float64)
    rois = rois.to(device)

    def fn(t):
        return roiops.roi_pool(t, rois, (3, 2), 1.0)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_result_does_not_depend_on_thread_count():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 70, 30, 30, generator=g)
    rois = torch.cat(
        [torch.randint(0, 2, (50, 1)).float(), torch.rand(50, 2) * 15, torch.rand(50, 2) * 15 + 15], 1
    )
    before = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            for xi in (x, x.contiguous(memory_format=torch.channels_last)):
                xi = xi.detach().requires_grad_(True)
                out = roiops.roi_pool(xi, rois, 7, 1.0)
                out.backward(torch.ones_like(out))
                results.append((out, xi.grad))
    finally:
        torch.set_num_threads(before)
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(grad, results[0][1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes(dtype):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 9, 9, generator=g)
    rois = torch.tensor([[0, 1.0, 1, 7, 8]])
    out = roiops.roi_pool(x.to(dtype), rois.to(dtype), 3, 1.0)
    assert out.dtype == dtype
    # The max is exact in any dtype.
    torch.testing.assert_close(out, roiops.roi_pool(x, rois, 3, 1.0).to(dtype), atol=0, rtol=0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e30])
def test_degenerate_boxes_are_defined(bad):
    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 1.0, 1, 6, 6], [0, bad, 1, 6, 6], [0, -bad, -bad, bad, bad]])
    out = roiops.roi_pool(x, rois, 3, 1.0)
    assert out.shape == (3, 2, 3, 3)
    if math.isnan(bad):
        assert (out[1:] == 0).all()  # a NaN coordinate: empty bins
    else:
        assert torch.isfinite(out).all()


def test_empty_boxes_give_empty_output_and_zero_gradient(device):
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    out = roiops.roi_pool(x, torch.zeros(0, 5, device=device), (2, 3), 1.0)
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert (x.grad == 0).all()


def test_bad_input_raises_naming_the_argument_and_the_module_takes_box_lists():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match=r"batch index"):
        roiops.roi_pool(x, torch.tensor([[2.0, 0, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match="boxes must have last dimension 5"):
        roiops.roi_pool(x, torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="spatial_scale must be positive"):
        roiops.roi_pool(x, torch.zeros(1, 5), 2, 0.0)
    with pytest.raises(ValueError, match="output_size"):
        roiops.RoIPool(0, 1.0)
    module = roiops.RoIPool(2, 0.5)
    torch.testing.assert_close(
        module(x, [torch.tensor([[0.0, 0, 4, 4]]), torch.zeros(0, 4)]),
        roiops.roi_pool(x, torch.tensor([[0.0, 0, 0, 4, 4]]), 2, 0.5),
    )


# ---- the CUDA kernels against the CPU kernels and torchvision's CUDA op ---------------------------


@pytest.mark.cuda
@settings(max_examples=25)
@given(roi_cases(), st.sampled_from([torch.float32, torch.float64]))
def test_cuda_forward_and_argmax_match_cpu(case, dtype):
    x, rois = build(case, dtype)
    args = (case["spatial_scale"], *case["output_size"])
    expected, expected_argmax = torch.ops.roiops.roi_pool(x, rois, *args)
    got, got_argmax = torch.ops.roiops.roi_pool(*to_cuda(x, rois), *args)
    assert_same_memory_format(got, expected)
    assert torch.equal(got.cpu(), expected)
    assert torch.equal(got_argmax.cpu(), expected_argmax)


@pytest.mark.cuda
@settings(max_examples=25)
@given(roi_cases())
def test_cuda_matches_torchvision_cuda(case):
    x, rois = to_cuda(*build(case, torch.float32))
    expected = torchvision.ops.roi_pool(x, rois, case["output_size"], case["spatial_scale"])
    torch.testing.assert_close(roiops.roi_pool(x, rois, case["output_size"], case["spatial_scale"]), expected)


@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("det", [False, True])
def test_cuda_backward_matches_cpu_and_repeats_bitwise_in_deterministic_mode(channels_last, det):
    x = random_feature((2, 6, 15, 18), 14, torch.float64, channels_last)
    rois = random_rois(60, 2, 30, 15, torch.float64)
    weight = torch.randn(60, 6, 3, 4, generator=torch.Generator().manual_seed(16), dtype=torch.float64)

    def grad_of(x, rois, weight):
        x = x.detach().requires_grad_()
        (roiops.roi_pool(x, rois, (3, 4), 0.5) * weight).sum().backward()
        return x.grad

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(det)
    try:
        got = grad_of(*to_cuda(x, rois, weight))
        again = grad_of(*to_cuda(x, rois, weight))
    finally:
        torch.use_deterministic_algorithms(before)
    expected = grad_of(x, rois, weight)
    assert_same_memory_format(got, expected)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-12, rtol=1e-12)
    if det:
        assert torch.equal(got, again)


@pytest.mark.cuda
@pytest.mark.parametrize("bad_index", [-1.0, 2.0, 0.5, float("nan")])
def test_cuda_bad_batch_index_raises_the_cpu_error(bad_index):
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0], [bad_index, 1.0, 1.0, 5.0, 5.0]])
    cpu_error = error_of(lambda: roiops.roi_pool(x, rois, 2, 1.0))
    assert cpu_error is not None and cpu_error[0] is ValueError
    assert error_of(lambda: roiops.roi_pool(*to_cuda(x, rois), 2, 1.0)) == cpu_error
