"""The CUDA kernels against the CPU kernels (the reference the other tests pin) and against
torchvision's CUDA ops: outputs, gradients, the deterministic backward, memory formats, dtypes,
empty and bad inputs. Every test needs a GPU (marker ``cuda``; skipped without one).
"""

import pytest
import torch
import torchvision
from roiops_cases import (
    CUDA,
    HALF_TOL,
    error_of,
    random_image_boxes,
    to_cuda,
)

import roiops

pytestmark = pytest.mark.cuda


# ---- suppression -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 500, 3000])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0, -0.5])
def test_nms_matches_cpu(n, threshold):
    boxes = random_image_boxes(n, n + 1)
    g = torch.Generator().manual_seed(n)
    # Repeated scores, so that the tie-breaking (lower index first) is exercised.
    scores = (torch.rand(n, generator=g) * 20).round() / 20
    expected = roiops.nms(boxes, scores, threshold)
    got = roiops.nms(*to_cuda(boxes, scores), threshold)
    assert got.dtype == torch.int64 and got.device.type == CUDA.type
    assert torch.equal(got.cpu(), expected)


def test_nms_matches_torchvision_cuda_for_distinct_scores():
    boxes = random_image_boxes(2000, 19).to(CUDA)
    scores = torch.randperm(2000, generator=torch.Generator().manual_seed(20)).float().to(CUDA)
    for threshold in (0.3, 0.5, 0.7):
        expected = torchvision.ops.nms(boxes, scores, threshold)
        assert torch.equal(roiops.nms(boxes, scores, threshold), expected)


def test_nms_nan_scores_and_degenerate_boxes_match_cpu():
    boxes = random_image_boxes(200, 21)
    boxes[::7, 2] = boxes[::7, 0]  # empty
    boxes[3::11, 1] = float("nan")
    boxes[5::13, 3] = float("inf")
    scores = torch.rand(200, generator=torch.Generator().manual_seed(22))
    scores[::5] = float("nan")
    scores[1::9] = 0.5
    for threshold in (0.0, 0.5):
        expected = roiops.nms(boxes, scores, threshold)
        assert torch.equal(roiops.nms(*to_cuda(boxes, scores), threshold).cpu(), expected)


@pytest.mark.parametrize("n", [0, 100, 2500])
def test_batched_nms_matches_cpu_and_torchvision(n):
    boxes = random_image_boxes(n, 23)
    g = torch.Generator().manual_seed(24)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 7, (n,), generator=g)
    expected = roiops.batched_nms(boxes, scores, idxs, 0.5)
    got = roiops.batched_nms(*to_cuda(boxes, scores, idxs), 0.5)
    assert torch.equal(got.cpu(), expected)
    theirs = torchvision.ops.batched_nms(*to_cuda(boxes, scores, idxs), 0.5)
    assert torch.equal(got, theirs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_nms_dtypes_match_cpu(dtype):
    boxes = random_image_boxes(400, 25, dtype)
    scores = torch.rand(400, generator=torch.Generator().manual_seed(26)).to(dtype)
    assert torch.equal(roiops.nms(*to_cuda(boxes, scores), 0.5).cpu(), roiops.nms(boxes, scores, 0.5))


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("n", [0, 1, 50, 700])
def test_soft_nms_matches_cpu(method, n):
    boxes = random_image_boxes(n, 27)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(28))
    kwargs = dict(iou_threshold=0.3, sigma=0.5, score_threshold=0.05, method=method)
    expected_keep, expected_scores = roiops.soft_nms(boxes, scores, **kwargs)
    got_keep, got_scores = roiops.soft_nms(*to_cuda(boxes, scores), **kwargs)
    assert torch.equal(got_keep.cpu(), expected_keep)
    torch.testing.assert_close(got_scores.cpu(), expected_scores, atol=1e-6, rtol=1e-5)


# ---- paste_masks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [None, 0.5])
@pytest.mark.parametrize("mask_size", [14, 28])
def test_paste_masks_matches_cpu(threshold, mask_size):
    g = torch.Generator().manual_seed(mask_size)
    masks = torch.rand(30, 1, mask_size, mask_size, generator=g)
    boxes = random_image_boxes(30, 29, scale=300.0)
    boxes[0] = torch.tensor([-20.0, -10.0, 40.0, 30.0])  # across the border
    boxes[1] = torch.tensor([500.0, 500.0, 600.0, 600.0])  # outside the image
    boxes[2] = torch.tensor([10.0, 10.0, 10.5, 10.2])  # tiny
    boxes[3, 0] = float("nan")
    expected = roiops.paste_masks(masks, boxes, (240, 320), threshold=threshold)
    got = roiops.paste_masks(*to_cuda(masks, boxes), (240, 320), threshold=threshold)
    assert got.dtype == expected.dtype
    assert torch.equal(got.cpu(), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_paste_masks_dtypes_match_cpu(dtype):
    masks = torch.rand(5, 28, 28, generator=torch.Generator().manual_seed(30)).to(dtype)
    boxes = random_image_boxes(5, 31, dtype, scale=100.0)
    expected = roiops.paste_masks(masks, boxes, (120, 130))
    got = roiops.paste_masks(*to_cuda(masks, boxes), (120, 130))
    torch.testing.assert_close(got.cpu(), expected, atol=HALF_TOL.get(dtype, 1e-12), rtol=0)


# ---- empty and bad input ---------------------------------------------------------------------------


def test_empty_inputs_give_empty_outputs_on_cuda():
    x = torch.randn(2, 3, 8, 8, device=CUDA)
    no_rois = torch.zeros(0, 5, device=CUDA)
    assert roiops.roi_align(x, no_rois, 2, 1.0, 2, True).shape == (0, 3, 2, 2)
    assert roiops.roi_pool(x, no_rois, 2, 1.0).shape == (0, 3, 2, 2)
    no_boxes, no_scores = torch.zeros(0, 4, device=CUDA), torch.zeros(0, device=CUDA)
    assert roiops.nms(no_boxes, no_scores, 0.5).shape == (0,)
    no_idxs = torch.zeros(0, dtype=torch.int64, device=CUDA)
    assert roiops.batched_nms(no_boxes, no_scores, no_idxs, 0.5).shape == (0,)
    assert roiops.paste_masks(torch.zeros(0, 28, 28, device=CUDA), no_boxes, (10, 12)).shape == (0, 10, 12)
    x.requires_grad_()
    roiops.roi_align(x, no_rois, 2, 1.0, 2, True).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("bad_index", [-1.0, 2.0, 0.5, float("nan")])
@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_bad_batch_index_raises_the_cpu_error(op, bad_index):
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0], [bad_index, 1.0, 1.0, 5.0, 5.0]])
    call = {"roi_align": lambda x, r: roiops.roi_align(x, r, 2, 1.0, 2, True),
            "roi_pool": lambda x, r: roiops.roi_pool(x, r, 2, 1.0)}[op]
    cpu_error = error_of(lambda: call(x, rois))
    assert cpu_error is not None and cpu_error[0] is ValueError
    assert error_of(lambda: call(*to_cuda(x, rois))) == cpu_error


@pytest.mark.parametrize(
    "call",
    [
        lambda d: roiops.roi_align(torch.randn(1, 2, 4, 4, device=d), torch.zeros(1, 4, device=d), 2),
        lambda d: roiops.roi_align(torch.randn(1, 2, 4, 4, device=d), torch.zeros(1, 5, device=d), 0),
        lambda d: roiops.roi_align(torch.randn(1, 2, 4, 4, device=d),
                                   torch.zeros(1, 5, device=d, dtype=torch.float64), 2),
        lambda d: roiops.nms(torch.zeros(3, 4, device=d), torch.zeros(2, device=d), 0.5),
        lambda d: roiops.nms(torch.zeros(3, 4, device=d), torch.zeros(3, device=d), float("nan")),
        lambda d: roiops.paste_masks(torch.zeros(2, 5, 5, device=d), torch.zeros(3, 4, device=d), (4, 4)),
    ],
)
def test_bad_input_raises_the_same_error_on_cuda_as_on_cpu(call):
    cpu_error = error_of(lambda: call("cpu"))
    assert cpu_error is not None
    assert error_of(lambda: call("cuda")) == cpu_error


def test_mixed_devices_raise_naming_the_arguments():
    with pytest.raises(ValueError, match="same device"):
        roiops.roi_align(torch.randn(1, 2, 4, 4, device=CUDA), torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match="same device"):
        roiops.nms(torch.zeros(3, 4, device=CUDA), torch.zeros(3), 0.5)
