"""paste_masks: a plain-PyTorch reference of the pixel model, torchvision's paste_masks_in_image
(boxes inside and across the image), bounded behaviour outside it, and compile; the CUDA kernel
against the CPU kernel."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from roiops_cases import CUDA, HALF_TOL, error_of, random_image_boxes, to_cuda
from torchvision.models.detection.roi_heads import paste_masks_in_image

import roiops


def reference_paste(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The documented pixel model, one mask at a time: pad by one pixel, grow the box by
    (M + 2) / M about its centre, truncate to integers, resize with F.interpolate
    (align_corners=False) to the inclusive integer box, and copy the part inside the image."""
    out = torch.zeros(len(masks), height, width, dtype=masks.dtype)
    mask_h, mask_w = masks.shape[-2:]
    for i, (mask, box) in enumerate(zip(masks, boxes)):
        if not bool(torch.isfinite(box).all()):
            continue
        half_w = (box[2] - box[0]) * 0.5 * ((mask_w + 2) / mask_w)
        half_h = (box[3] - box[1]) * 0.5 * ((mask_h + 2) / mask_h)
        cx, cy = (box[2] + box[0]) * 0.5, (box[3] + box[1]) * 0.5
        x0, x1 = int((cx - half_w).item()), int((cx + half_w).item())
        y0, y1 = int((cy - half_h).item()), int((cy + half_h).item())
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        patch = F.interpolate(F.pad(mask, (1, 1, 1, 1))[None, None], size=(h, w), mode="bilinear",
                              align_corners=False)[0, 0]
        xa, xb = max(x0, 0), min(x1 + 1, width)
        ya, yb = max(y0, 0), min(y1 + 1, height)
        if xa < xb and ya < yb:
            out[i, ya:yb, xa:xb] = patch[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out


def random_case(n, g, height=120, width=160, size=28, inside=True, dtype=torch.float32):
    masks = torch.rand(n, size, size, generator=g, dtype=torch.float64).to(dtype)
    if inside:
        # Boxes that overlap the image (possibly sticking out of it).
        xy = torch.rand(n, 2, generator=g) * torch.tensor([width, height]) * 0.9 - 10
        wh = torch.rand(n, 2, generator=g) * 90 + 12
    else:
        xy = (torch.rand(n, 2, generator=g) - 0.5) * torch.tensor([width, height]) * 4
        wh = torch.rand(n, 2, generator=g) * 150
    return masks, torch.cat([xy, xy + wh], 1).to(dtype)


@pytest.mark.parametrize("seed", range(3))
def test_equals_torchvision_bitwise_on_boxes_inside_and_across_the_image(seed):
    g = torch.Generator().manual_seed(seed)
    masks, boxes = random_case(60, g)
    # Both of PyTorch's CPU bilinear kernels (patch h + w <= 128 and above) are exercised.
    expected = paste_masks_in_image(masks[:, None], boxes, (120, 160))[:, 0]
    assert torch.equal(roiops.paste_masks(masks, boxes, (120, 160), threshold=None), expected)
    assert torch.equal(roiops.paste_masks(masks, boxes, (120, 160)), expected > 0.5)
    assert torch.equal(roiops.paste_masks(masks, boxes, (120, 160), threshold=0.3), expected > 0.3)


sizes = st.integers(1, 30)
image_sides = st.integers(0, 50)


@given(st.integers(0, 2**31 - 1), sizes, sizes, image_sides, image_sides)
def test_matches_reference_inside_across_and_outside(seed, mask_h, mask_w, height, width):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(6, mask_h, mask_w, generator=g)
    xy = (torch.rand(6, 2, generator=g) - 0.3) * 60
    boxes = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 40], 1)
    boxes[0] = torch.tensor([-100.0, -100.0, -60.0, -60.0])  # entirely outside
    boxes[1, 2:] = boxes[1, :2] - 3  # inverted
    ours = roiops.paste_masks(masks, boxes, (height, width), threshold=None)
    assert ours.shape == (6, height, width)
    assert torch.equal(ours, reference_paste(masks, boxes, height, width))
    assert not ours[0].any()


def test_outside_and_non_finite_boxes_give_empty_masks():
    masks = torch.ones(4, 28, 28)
    boxes = torch.tensor([[500.0, 500, 600, 600], [-50, 10, -20, 40], [float("nan"), 0, 10, 10],
                          [0, 0, float("inf"), 10]])
    out = roiops.paste_masks(masks, boxes, (100, 100))
    assert out.dtype == torch.bool and out.shape == (4, 100, 100) and not out.any()


def test_threshold_is_strict_and_none_returns_probabilities():
    masks = torch.full((1, 28, 28), 0.5)
    boxes = torch.tensor([[10.0, 10, 60, 60]])
    assert not roiops.paste_masks(masks, boxes, (80, 80), threshold=0.5).any()
    probs = roiops.paste_masks(masks, boxes, (80, 80), threshold=None)
    assert probs.dtype == torch.float32 and probs.max() == 0.5
    assert roiops.paste_masks(masks, boxes, (80, 80), threshold=0.49).sum() == (probs > 0.49).sum()


def test_pixel_model_by_hand():
    # A 2x2 mask of ones into box (2, 2, 6, 6): grown by 4/2 to (0, 0, 8, 8), a 9 x 9 patch of the
    # 4x4 zero-padded mask. Patch column i samples (i + 0.5) * 4 / 9 - 0.5: the centre column
    # (i = 4) lands at 1.5, between the two ones -> 1.0; column 0 at 0 (clamped) -> 0.
    out = roiops.paste_masks(torch.ones(1, 2, 2), torch.tensor([[2.0, 2, 6, 6]]), (10, 10), None)[0]
    assert out[4, 4] == 1.0 and out[0, 0] == 0.0 and out[4, 0] == 0.0
    assert not out[9:].any() and not out[:, 9:].any()
    src = (1 + 0.5) * 4 / 9 - 0.5  # column 1 -> 0.1667, weight of the first ones pixel
    torch.testing.assert_close(out[4, 1], torch.tensor(src))
    # Symmetric about the patch centre (4, 4) up to rounding, and exactly about the diagonal.
    torch.testing.assert_close(out[:9, :9], out[:9, :9].flip(0), atol=1e-6, rtol=0)
    assert torch.equal(out, out.T)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes(dtype):
    g = torch.Generator().manual_seed(11)
    masks, boxes = random_case(10, g)
    ours = roiops.paste_masks(masks.to(dtype), boxes, (120, 160), threshold=None)
    assert ours.dtype == dtype
    expected = reference_paste(masks.double(), boxes, 120, 160)
    tol = {torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(ours.double(), expected, atol=tol, rtol=0)
    # boxes in float64 give the same integer extents here
    torch.testing.assert_close(roiops.paste_masks(masks, boxes.double(), (120, 160), None),
                               roiops.paste_masks(masks, boxes, (120, 160), None))


def test_accepts_torchvision_layout_and_empty_inputs(device):
    g = torch.Generator().manual_seed(12)
    masks, boxes = random_case(5, g)
    masks, boxes = masks.to(device), boxes.to(device)
    expected = roiops.paste_masks(masks, boxes, (120, 160))
    assert torch.equal(roiops.paste_masks(masks[:, None], boxes, (120, 160)), expected)
    no_masks, no_boxes = torch.zeros(0, 28, 28, device=device), torch.zeros(0, 4, device=device)
    assert roiops.paste_masks(no_masks, no_boxes, (120, 160)).shape == (0, 120, 160)
    assert roiops.paste_masks(masks, boxes, (0, 160)).shape == (5, 0, 160)


def test_results_independent_of_thread_count():
    g = torch.Generator().manual_seed(13)
    masks, boxes = random_case(40, g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = roiops.paste_masks(masks, boxes, (120, 160), None)
        torch.set_num_threads(2)
        two = roiops.paste_masks(masks, boxes, (120, 160), None)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


M, BX = torch.zeros(2, 28, 28), torch.zeros(2, 4)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: roiops.paste_masks(torch.zeros(2, 28), BX, (10, 10)), ValueError, "masks"),
        (lambda: roiops.paste_masks(M.long(), BX, (10, 10)), TypeError, "masks"),
        (lambda: roiops.paste_masks(torch.zeros(2, 0, 5), BX, (10, 10)), ValueError, "masks"),
        (lambda: roiops.paste_masks(M, torch.zeros(3, 4), (10, 10)), ValueError, "boxes"),
        (lambda: roiops.paste_masks(M, torch.zeros(2, 5), (10, 10)), ValueError, "boxes"),
        (lambda: roiops.paste_masks(M, BX, (10,)), ValueError, "image_shape"),
        (lambda: roiops.paste_masks(M, BX, (10, -1)), ValueError, "image_shape"),
        (lambda: roiops.paste_masks(M, BX, (10.0, 10)), TypeError, "image_shape"),
        (lambda: roiops.paste_masks(M, BX, (10, 10), threshold=math.nan), ValueError, "threshold"),
        (lambda: roiops.paste_masks(M, BX, (10, 10), threshold="0.5"), TypeError, "threshold"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_compile_fullgraph_of_detection_postprocess():
    """A small inference tail: decode boxes, clip, nms, paste the kept masks."""
    coder = roiops.BoxCoder()

    def postprocess(codes, proposals, scores, masks):
        boxes = coder.decode_single(codes, proposals)
        boxes = roiops.clip_boxes_to_image(boxes, (120, 160))
        keep = roiops.nms(boxes, scores, 0.5)
        return keep, roiops.paste_masks(masks[keep], boxes[keep], (120, 160), threshold=0.5)

    g = torch.Generator().manual_seed(15)
    masks, proposals = random_case(30, g)
    codes = torch.randn(30, 4, generator=g)
    scores = torch.rand(30, generator=g)
    torch._dynamo.reset()
    keep, pasted = torch.compile(postprocess, fullgraph=True)(codes, proposals, scores, masks)
    keep_eager, pasted_eager = postprocess(codes, proposals, scores, masks)
    assert torch.equal(keep, keep_eager) and torch.equal(pasted, pasted_eager)


# ---- the CUDA kernel against the CPU kernel ---------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("threshold", [None, 0.5])
@pytest.mark.parametrize("mask_size", [14, 28])
def test_cuda_matches_cpu_bitwise_inside_across_and_outside_the_image(threshold, mask_size):
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


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_cuda_other_dtypes_match_cpu(dtype):
    masks = torch.rand(5, 28, 28, generator=torch.Generator().manual_seed(30)).to(dtype)
    boxes = random_image_boxes(5, 31, dtype, scale=100.0)
    expected = roiops.paste_masks(masks, boxes, (120, 130))
    got = roiops.paste_masks(*to_cuda(masks, boxes), (120, 130))
    torch.testing.assert_close(got.cpu(), expected, atol=HALF_TOL.get(dtype, 1e-12), rtol=0)


@pytest.mark.cuda
def test_cuda_bad_input_raises_the_cpu_error():
    def call(d):
        return roiops.paste_masks(torch.zeros(2, 5, 5, device=d), torch.zeros(3, 4, device=d), (4, 4))

    cpu_error = error_of(lambda: call("cpu"))
    assert cpu_error is not None
    assert error_of(lambda: call(CUDA)) == cpu_error
