"""The CUDA kernels against the CPU kernels (the reference the other tests pin) and against
torchvision's CUDA ops: outputs, gradients, the deterministic backward, memory formats, dtypes,
empty and bad inputs. Every test needs a GPU (marker ``cuda``; skipped without one).
"""

import pytest
import torch
from roiops_cases import (
    CUDA,
    error_of,
    to_cuda,
)

import roiops

pytestmark = pytest.mark.cuda


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
