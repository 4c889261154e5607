"""The CUDA kernels against the CPU kernels (the reference the other tests pin) and against
torchvision's CUDA ops: outputs, gradients, the deterministic backward, memory formats, dtypes,
empty and bad inputs. Every test needs a GPU (marker ``cuda``; skipped without one).
"""

import pytest
import torch
from roiops_cases import (
    CUDA,
    HALF_TOL,
    error_of,
    random_image_boxes,
    to_cuda,
)

import roiops

pytestmark = pytest.mark.cuda


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
