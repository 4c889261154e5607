"""The ops inside torch.autocast: each runs as its float32 op on the inputs cast up (the pooling ops
cast back to the map's dtype), agrees with torchvision.ops under the same autocast where
torchvision registers one, and leaves float32 calls as they were; outside autocast the pooling ops
accept a half map with float32 boxes too (the same values), the other ops still raise.

CPU runs bfloat16 autocast, CUDA float16 (the `device` fixture; CUDA cases are marked `cuda`)."""

import pytest
import torch
import torchvision
from roiops_cases import HALF_TOL, error_of, random_feature, random_image_boxes, random_rois

import roiops

AMP_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}


def amp(device):
    return torch.autocast(device.type, dtype=AMP_DTYPE[device.type])


def pooling_problem(device, channels_last=False):
    """(half map Tensor[2, 3, 16, 20], float32 rois Tensor[6, 5]) on device."""
    x = random_feature((2, 3, 16, 20), seed=1, channels_last=channels_last).to(AMP_DTYPE[device.type])
    return x.to(device), random_rois(6, 2, 32, seed=2).to(device)


def separated_boxes(device, n=40, seed=3):
    """(boxes Tensor[n, 4] exact in bfloat16 and float16: whole pixels below 256, float32 scores
    Tensor[n], distinct) on device."""
    boxes = random_image_boxes(n, seed, scale=160.0).round()
    scores = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).float() / n
    return boxes.to(device), scores.to(device)


@pytest.mark.parametrize("channels_last", [False, True])
def test_roi_align_under_autocast_is_float32_roi_align_cast_back(device, channels_last):
    x, rois = pooling_problem(device, channels_last)
    with amp(device):
        ours = roiops.roi_align(x, rois, (4, 5), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    expected = roiops.roi_align(x.float(), rois, (4, 5), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    assert ours.dtype == x.dtype
    assert torch.equal(ours, expected.to(x.dtype))
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_roi_align_under_autocast_matches_torchvision(device):
    x, rois = pooling_problem(device)
    with amp(device):
        ours = roiops.roi_align(x, rois, 7, spatial_scale=0.5, sampling_ratio=-1, aligned=False)
        theirs = torchvision.ops.roi_align(x, rois, 7, spatial_scale=0.5, sampling_ratio=-1, aligned=False)
    assert ours.dtype == theirs.dtype == x.dtype
    # Both pool in float32 and round once; values agree to float32 rounding, so to a half ulp.
    torch.testing.assert_close(ours.float(), theirs.float(), atol=HALF_TOL[x.dtype], rtol=0)


def test_roi_align_gradients_under_autocast_are_the_float32_gradients(device):
    x, rois = pooling_problem(device)
    x.requires_grad_()
    rois.requires_grad_()
    with amp(device):
        out = roiops.roi_align(x, rois, 3, spatial_scale=0.5, sampling_ratio=2, aligned=True)
    out.float().pow(2).sum().backward()
    x32 = x.detach().float().requires_grad_()
    rois32 = rois.detach().clone().requires_grad_()
    ref = roiops.roi_align(x32, rois32, 3, spatial_scale=0.5, sampling_ratio=2, aligned=True)
    # The same upstream gradient as the autocast run: 2 * output rounded to the half type.
    ref.backward(2 * ref.detach().to(x.dtype).float())
    assert x.grad.dtype == x.dtype and rois.grad.dtype == torch.float32
    assert torch.equal(x.grad, x32.grad.to(x.dtype))
    assert torch.equal(rois.grad, rois32.grad)


def test_roi_pool_under_autocast_is_float32_roi_pool_cast_back(device):
    x, rois = pooling_problem(device)
    with amp(device):
        ours = roiops.roi_pool(x, rois, (3, 4), spatial_scale=0.5)
    expected = roiops.roi_pool(x.float(), rois, (3, 4), spatial_scale=0.5).to(x.dtype)
    # torchvision registers roi_pool's autocast for CUDA only: its float32 op, cast back, is the oracle.
    theirs = torchvision.ops.roi_pool(x.float(), rois, (3, 4), spatial_scale=0.5).to(x.dtype)
    assert ours.dtype == x.dtype
    assert torch.equal(ours, expected)
    assert torch.equal(ours, theirs)


def test_multi_scale_roi_align_under_autocast_matches_float32_and_torchvision(device):
    half = AMP_DTYPE[device.type]
    names = ["0", "1", "2"]
    feats = {
        n: random_feature((2, 4, 32 >> i, 40 >> i), seed=10 + i).to(device, half) for i, n in enumerate(names)
    }
    boxes = [random_image_boxes(5, seed=s, scale=100.0).to(device) for s in (4, 5)]
    sizes = [(128, 160), (120, 150)]
    pooler = roiops.MultiScaleRoIAlign(names, 5, 2, canonical_scale=32)
    with amp(device):
        ours = pooler(feats, boxes, sizes)
    expected = pooler({n: f.float() for n, f in feats.items()}, boxes, sizes).to(half)
    assert ours.dtype == half
    assert torch.equal(ours, expected)
    tv_pooler = torchvision.ops.MultiScaleRoIAlign(names, 5, 2, canonical_scale=32)
    with amp(device):
        theirs = tv_pooler(feats, boxes, sizes)
    torch.testing.assert_close(ours.float(), theirs.float(), atol=HALF_TOL[half], rtol=0)


def test_box_iou_under_autocast_is_float32_iou(device):
    half = AMP_DTYPE[device.type]
    a = random_image_boxes(7, seed=6).to(device, half)
    b = random_image_boxes(9, seed=7).to(device)
    with amp(device):
        ours = roiops.box_iou(a, b)
        theirs = torchvision.ops.box_iou(a, b)
        ours_both_half = roiops.box_iou(a, b.to(half))
        giou = roiops.generalized_box_iou(a, b)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, roiops.box_iou(a.float(), b))
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert ours_both_half.dtype == torch.float32
    assert torch.equal(ours_both_half, roiops.box_iou(a.float(), b.to(half).float()))
    assert giou.dtype == torch.float32
    assert torch.equal(giou, roiops.generalized_box_iou(a.float(), b))


def test_nms_under_autocast_keeps_the_float32_set_and_torchvision_s(device):
    boxes, scores = separated_boxes(device)
    half = AMP_DTYPE[device.type]
    labels = (torch.arange(boxes.shape[0], device=device) % 3)
    with amp(device):
        kept = roiops.nms(boxes.to(half), scores, 0.3)
        theirs = torchvision.ops.nms(boxes.to(half), scores, 0.3)
        kept_batched = roiops.batched_nms(boxes.to(half), scores, labels, 0.3)
        theirs_batched = torchvision.ops.batched_nms(boxes.to(half), scores, labels, 0.3)
    assert torch.equal(kept, roiops.nms(boxes, scores, 0.3))
    assert torch.equal(kept, theirs)
    assert torch.equal(kept_batched, roiops.batched_nms(boxes, scores, labels, 0.3))
    assert torch.equal(kept_batched, theirs_batched)


def test_soft_nms_under_autocast_decays_in_float32_and_returns_scores_dtype(device):
    boxes, scores = separated_boxes(device)
    half = AMP_DTYPE[device.type]
    with amp(device):
        keep, decayed = roiops.soft_nms(boxes, scores.to(half), 0.3, method="linear")
    ref_keep, ref_decayed = roiops.soft_nms(boxes, scores.to(half).float(), 0.3, method="linear")
    assert decayed.dtype == half
    assert torch.equal(keep, ref_keep)
    assert torch.equal(decayed, ref_decayed.to(half))


def test_float32_calls_are_unchanged_by_autocast(device):
    x, rois = pooling_problem(device)
    x = x.float()
    boxes, scores = separated_boxes(device)
    calls = {
        "roi_align": lambda: roiops.roi_align(x, rois, 3, 0.5, 2, True),
        "roi_pool": lambda: roiops.roi_pool(x, rois, 3, 0.5),
        "box_iou": lambda: roiops.box_iou(boxes, boxes[:5]),
        "nms": lambda: roiops.nms(boxes, scores, 0.5),
        "soft_nms": lambda: roiops.soft_nms(boxes, scores),
    }
    for name, call in calls.items():
        outside = call()
        with amp(device):
            inside = call()
        outside = outside if isinstance(outside, tuple) else (outside,)
        inside = inside if isinstance(inside, tuple) else (inside,)
        assert all(torch.equal(a, b) for a, b in zip(outside, inside)), name


def test_float64_boxes_keep_float64_under_autocast(device):
    x, rois = pooling_problem(device)
    with amp(device):
        ours = roiops.roi_align(x, rois.double(), 3, 0.5, 2, True)
        iou = roiops.box_iou(rois[:, 1:].double(), rois[:, 1:])
    assert torch.equal(ours, roiops.roi_align(x.double(), rois.double(), 3, 0.5, 2, True).to(x.dtype))
    assert iou.dtype == torch.float64


def test_pooling_ops_give_the_autocast_values_outside_autocast(device):
    x, rois = pooling_problem(device)
    calls = {
        "roi_align": lambda: roiops.roi_align(x, rois, 3, 0.5, 2, True),
        "roi_pool": lambda: roiops.roi_pool(x, rois, 3, 0.5),
        "ps_roi_align": lambda: roiops.ps_roi_align(x, rois, 1, 0.5, 2),
        "ps_roi_pool": lambda: roiops.ps_roi_pool(x, rois, 1, 0.5),
        "MultiScaleRoIAlign": lambda: roiops.MultiScaleRoIAlign(["0"], 3, 2)(
            {"0": x}, [rois[rois[:, 0] == i, 1:] for i in range(2)], [(32, 40)] * 2
        ),
    }
    for name, call in calls.items():
        outside = call()
        with amp(device):
            inside = call()
        assert outside.dtype == x.dtype, name
        assert torch.equal(outside, inside), name


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the CUDA autocast on a CPU-only machine
def test_mismatched_dtypes_still_raise_outside_autocast(device):
    """For the ops that are not pooling ops, and for the native pooling ops called directly."""
    x, rois = pooling_problem(device)
    boxes, scores = separated_boxes(device)
    half = x.dtype
    calls = [
        lambda: roiops.box_iou(boxes.to(half), boxes),
        lambda: roiops.nms(boxes.to(half), scores, 0.5),
        lambda: roiops.soft_nms(boxes, scores.to(half)),
        lambda: torch.ops.roiops.roi_align(x, rois, 1.0, 3, 3, 2, False),
    ]
    for call in calls:
        err = error_of(call)
        assert err is not None and "dtype" in err[1], err
    # Autocast for another device type does not relax the check.
    other = "cuda" if device.type == "cpu" else "cpu"
    with torch.autocast(other, dtype=AMP_DTYPE[other]):
        assert error_of(lambda: roiops.nms(boxes.to(half), scores, 0.5)) is not None
