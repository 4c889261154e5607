"""distance_box_iou, complete_box_iou (and generalized_box_iou through the same native op), the
three IoU losses and masks_to_boxes: torchvision as the oracle, a per-pair reference from the
definitions, properties, gradients."""

import math

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from roiops_cases import random_image_boxes

import roiops

PAIRWISE = {
    "generalized": (roiops.generalized_box_iou, torchvision.ops.generalized_box_iou),
    "distance": (roiops.distance_box_iou, torchvision.ops.distance_box_iou),
    "complete": (roiops.complete_box_iou, torchvision.ops.complete_box_iou),
}
LOSSES = {
    "generalized": (roiops.generalized_box_iou_loss, torchvision.ops.generalized_box_iou_loss),
    "distance": (roiops.distance_box_iou_loss, torchvision.ops.distance_box_iou_loss),
    "complete": (roiops.complete_box_iou_loss, torchvision.ops.complete_box_iou_loss),
}

coords = st.floats(-200, 1200, width=32)
sizes = st.floats(0, 300, width=32)
boxes_strategy = st.lists(st.tuples(coords, coords, sizes, sizes), min_size=0, max_size=20)


def to_boxes(rows, dtype=torch.float64) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    t[:, 2:] += t[:, :2]
    return t.to(dtype)


def reference(kind: str, a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """The measure by its definition, one pair at a time in float64; IoU 0 where a box is empty,
    the GIoU penalty 0 where the enclosing box is empty, aspect angle 0 for w = h = 0."""
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i, (ax1, ay1, ax2, ay2) in enumerate(a.double().tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(b.double().tolist()):
            area_a = max(ax2 - ax1, 0) * max(ay2 - ay1, 0)
            area_b = max(bx2 - bx1, 0) * max(by2 - by1, 0)
            inter = max(min(ax2, bx2) - max(ax1, bx1), 0) * max(min(ay2, by2) - max(ay1, by1), 0)
            union = area_a + area_b - inter
            iou = inter / union if area_a > 0 and area_b > 0 else 0.0
            cw = max(max(ax2, bx2) - min(ax1, bx1), 0)
            ch = max(max(ay2, by2) - min(ay1, by1), 0)
            if kind == "generalized":
                hull = cw * ch
                out[i, j] = iou - ((hull - union) / hull if hull > 0 else 0.0)
                continue
            d2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
            diou = iou - d2 / (cw**2 + ch**2 + eps)
            if kind == "distance":
                out[i, j] = diou
                continue

            def angle(w, h):
                if w == 0 and h == 0:
                    return 0.0
                return math.atan(w / h) if h != 0 else math.copysign(math.pi / 2, w)

            v = 4 / math.pi**2 * (angle(ax2 - ax1, ay2 - ay1) - angle(bx2 - bx1, by2 - by1)) ** 2
            out[i, j] = diou - v / (1 - iou + v + eps) * v
    return out


@pytest.mark.parametrize("kind", list(PAIRWISE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_matches_torchvision(device, kind, dtype):
    ours_fn, theirs_fn = PAIRWISE[kind]
    a = random_image_boxes(37, 1, dtype).to(device)
    b = random_image_boxes(53, 2, dtype).to(device)
    ours = ours_fn(a, b)
    assert ours.dtype == dtype and ours.shape == (37, 53)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, theirs_fn(a, b), atol=tol, rtol=0)


@pytest.mark.parametrize("kind", list(PAIRWISE))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pairwise_half_types_are_computed_in_float32(device, kind, dtype):
    ours_fn, _ = PAIRWISE[kind]
    a = random_image_boxes(20, 3, dtype).to(device)
    b = random_image_boxes(30, 4, dtype).to(device)
    ours = ours_fn(a, b)
    assert ours.dtype == dtype
    # The coordinates as rounded to the half type, computed in float32, rounded once at the end.
    expected = ours_fn(a.float(), b.float()).to(dtype)
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)


@given(boxes_strategy, boxes_strategy, st.sampled_from(list(PAIRWISE)))
def test_pairwise_matches_definition_and_torchvision_where_finite(rows1, rows2, kind):
    a, b = to_boxes(rows1), to_boxes(rows2)
    ours_fn, theirs_fn = PAIRWISE[kind]
    ours = ours_fn(a, b)
    torch.testing.assert_close(ours, reference(kind, a, b), atol=1e-9, rtol=0)
    theirs = theirs_fn(a, b)
    finite = torch.isfinite(theirs)
    torch.testing.assert_close(ours[finite], theirs[finite], atol=1e-9, rtol=0)


@given(boxes_strategy, boxes_strategy)
def test_pairwise_bounds_and_symmetry(rows1, rows2):
    a, b = to_boxes(rows1), to_boxes(rows2)
    iou = roiops.box_iou(a, b)
    giou = roiops.generalized_box_iou(a, b)
    diou = roiops.distance_box_iou(a, b)
    ciou = roiops.complete_box_iou(a, b)
    for values in (giou, diou):
        assert bool(((values >= -1) & (values <= 1)).all())
    assert bool((giou <= iou + 1e-12).all()) and bool((diou <= iou + 1e-12).all())
    assert bool((ciou <= diou + 1e-12).all())
    for fn in (roiops.generalized_box_iou, roiops.distance_box_iou, roiops.complete_box_iou):
        torch.testing.assert_close(fn(b, a), fn(a, b).T, atol=1e-12, rtol=0)


def test_degenerate_boxes_are_defined(device):
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # proper
            [0.0, 0.0, 10.0, 10.0],  # identical to the first
            [20.0, 20.0, 30.0, 40.0],  # disjoint
            [5.0, 5.0, 5.0, 5.0],  # a point (zero area)
            [3.0, 0.0, 3.0, 8.0],  # a vertical segment
        ],
        dtype=torch.float64,
        device=device,
    )
    for kind, (fn, _) in PAIRWISE.items():
        values = fn(boxes, boxes)
        assert bool(torch.isfinite(values).all()), kind
        expected = reference(kind, boxes.cpu(), boxes.cpu())
        torch.testing.assert_close(values.cpu(), expected, atol=1e-12, rtol=0)
        # Identical proper boxes: 1 for every measure; disjoint ones: below 0.
        assert values[0, 1].item() == pytest.approx(1.0) and values[0, 2].item() < 0


@pytest.mark.parametrize("kind", list(PAIRWISE))
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int16, torch.uint8])
def test_integer_boxes_as_torchvision(kind, dtype):
    ours_fn, theirs_fn = PAIRWISE[kind]
    a = (random_image_boxes(9, 5, scale=100.0)).to(dtype)
    b = (random_image_boxes(7, 6, scale=100.0)).to(dtype)
    ours, theirs = ours_fn(a, b), theirs_fn(a, b)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, ours_fn(a.double(), b.double()).float(), atol=1e-7, rtol=0)
    if dtype != torch.uint8:  # torchvision subtracts uint8 corners before widening them: wraps around
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_pairwise_gradients_match_torchvision(kind):
    ours_fn, theirs_fn = PAIRWISE[kind]
    a = random_image_boxes(6, 7, torch.float64).requires_grad_()
    b = random_image_boxes(5, 8, torch.float64).requires_grad_()
    g = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = torch.autograd.grad(ours_fn(a, b), (a, b), g)
    theirs = torch.autograd.grad(theirs_fn(a, b), (a, b), g)
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("kind", ["generalized", "distance"])
def test_pairwise_gradcheck(kind):
    fn, _ = PAIRWISE[kind]
    # Overlapping, unequal boxes away from the kinks (equal corners, touching edges).
    a = (random_image_boxes(3, 9, torch.float64, scale=20.0) + 0.1).requires_grad_()
    b = random_image_boxes(4, 10, torch.float64, scale=20.0).requires_grad_()
    assert torch.autograd.gradcheck(fn, (a, b))


def test_complete_box_iou_gradient_treats_alpha_as_constant():
    # gradcheck differentiates alpha too, so check against the alpha-constant definition.
    a = random_image_boxes(3, 11, torch.float64, scale=20.0).requires_grad_()
    b = random_image_boxes(4, 12, torch.float64, scale=20.0)
    ours = torch.autograd.grad(roiops.complete_box_iou(a, b).sum(), a)[0]
    diou = roiops.distance_box_iou(a, b)
    with torch.no_grad():
        iou = roiops.box_iou(a, b)
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    wb, hb = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    v = 4 / math.pi**2 * (torch.atan(w / h)[:, None] - torch.atan(wb / hb)[None, :]) ** 2
    alpha = (v / (1 - iou + v + 1e-7)).detach()
    expected = torch.autograd.grad((diou - alpha * v).sum(), a)[0]
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=0)


def test_pairwise_without_grad_uses_the_native_kernel_and_agrees_with_the_grad_path():
    a = random_image_boxes(30, 13, torch.float64)
    b = torch.cat([random_image_boxes(30, 14, torch.float64), a[:3], torch.tensor([[5.0, 5, 5, 5]]).double()])
    for fn, _ in PAIRWISE.values():
        native = fn(a, b)
        differentiable = fn(a.clone().requires_grad_(), b)
        assert differentiable.requires_grad and not native.requires_grad
        torch.testing.assert_close(differentiable.detach(), native, atol=1e-12, rtol=0)


def test_pairwise_empty_inputs(device):
    for fn, _ in PAIRWISE.values():
        assert fn(torch.zeros(0, 4, device=device), torch.zeros(3, 4, device=device)).shape == (0, 3)
        assert fn(torch.zeros(2, 4, device=device), torch.zeros(0, 4, device=device)).shape == (2, 0)


# ---- losses -------------------------------------------------------------------------------------


def aligned_pairs(n, seed, dtype=torch.float32):
    """Tensor[n, 4] pairs: overlapping, disjoint and identical boxes."""
    a = random_image_boxes(n, seed, dtype, scale=60.0)
    b = random_image_boxes(n, seed + 1, dtype, scale=60.0)
    b[: n // 4] = a[: n // 4]
    return a, b


@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_equal_torchvision_bitwise(device, kind, reduction, dtype):
    ours_fn, theirs_fn = LOSSES[kind]
    a, b = (t.to(device) for t in aligned_pairs(40, 15, dtype))
    ours, theirs = ours_fn(a, b, reduction=reduction), theirs_fn(a, b, reduction=reduction)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    ours_eps, theirs_eps = ours_fn(a, b, reduction, eps=1e-3), theirs_fn(a, b, reduction, eps=1e-3)
    torch.testing.assert_close(ours_eps, theirs_eps, atol=0, rtol=0)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_losses_gradients_equal_torchvision(kind):
    ours_fn, theirs_fn = LOSSES[kind]
    a, b = aligned_pairs(12, 16, torch.float64)
    grads = []
    for fn in (ours_fn, theirs_fn):
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
        grads.append(torch.autograd.grad(fn(x, y, reduction="sum"), (x, y)))
    for o, t in zip(*grads):
        torch.testing.assert_close(o, t, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["generalized", "distance"])
def test_losses_gradcheck(kind):
    fn, _ = LOSSES[kind]
    a, b = aligned_pairs(6, 17, torch.float64)
    a = (a + 0.1).requires_grad_()
    b = b.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: fn(x, y, reduction="mean"), (a, b))


@pytest.mark.parametrize("kind", list(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.int32])
def test_losses_other_dtypes_and_single_box_as_torchvision(kind, dtype):
    ours_fn, theirs_fn = LOSSES[kind]
    a, b = aligned_pairs(8, 18)
    a, b = a.to(dtype), (b + 5).to(dtype)
    torch.testing.assert_close(ours_fn(a, b), theirs_fn(a, b), atol=0, rtol=0)
    torch.testing.assert_close(ours_fn(a[0], b[0]), theirs_fn(a[0], b[0]), atol=0, rtol=0)


@pytest.mark.parametrize("kind", list(LOSSES))
def test_losses_mean_of_no_boxes_is_zero_with_a_graph(kind):
    fn, _ = LOSSES[kind]
    a = torch.zeros(0, 4, requires_grad=True)
    loss = fn(a, torch.zeros(0, 4), reduction="mean")
    assert loss.item() == 0.0 and loss.requires_grad


@given(boxes_strategy, st.sampled_from(list(LOSSES)))
def test_losses_are_symmetric_and_bounded(rows, kind):
    fn, _ = LOSSES[kind]
    a = to_boxes(rows)
    b = a.flip(0)
    loss = fn(a, b)
    # A point box's CIoU aspect term is atan(0 / 0): NaN in both orders, as torchvision's loss.
    torch.testing.assert_close(loss, fn(b, a), atol=1e-12, rtol=0, equal_nan=True)
    proper = ((a[:, 2:] > a[:, :2]).all(1)) & ((b[:, 2:] > b[:, :2]).all(1))
    assert bool((loss[proper] >= -1e-6).all())
    if kind != "complete":
        assert bool((loss[proper] <= 2 + 1e-6).all())


# ---- masks_to_boxes -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32])
def test_masks_to_boxes_matches_torchvision(device, dtype):
    g = torch.Generator().manual_seed(19)
    masks = torch.zeros(6, 20, 30, dtype=dtype)
    for i in range(5):
        y, x = torch.randint(0, 15, (2,), generator=g).tolist()
        masks[i, y : y + 1 + i, x : x + 2 + i] = 1
    masks[4, 19, 29] = 1  # a far corner pixel
    # masks[5] stays empty: (0, 0, 0, 0).
    masks = masks.to(device)
    ours = roiops.masks_to_boxes(masks)
    assert ours.dtype == torch.float32 and ours.device == masks.device
    torch.testing.assert_close(ours, torchvision.ops.masks_to_boxes(masks), atol=0, rtol=0)


@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_masks_to_boxes_contains_every_pixel_tightly(n, h, w, seed):
    masks = torch.rand(n, h, w, generator=torch.Generator().manual_seed(seed)) > 0.7
    boxes = roiops.masks_to_boxes(masks)
    torch.testing.assert_close(boxes, torchvision.ops.masks_to_boxes(masks), atol=0, rtol=0)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.long().tolist()):
        ys, xs = torch.where(mask)
        if len(ys):
            assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_masks_to_boxes_empty_inputs():
    assert roiops.masks_to_boxes(torch.zeros(0, 5, 5)).shape == (0, 4)
    torch.testing.assert_close(roiops.masks_to_boxes(torch.zeros(2, 0, 5)), torch.zeros(2, 4))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: roiops.distance_box_iou(torch.zeros(2, 4), torch.zeros(2, 4), eps="x"), TypeError, "eps"),
        (lambda: roiops.complete_box_iou(torch.zeros(2, 5), torch.zeros(2, 4)), ValueError, "boxes1"),
        (lambda: roiops.complete_box_iou(torch.zeros(2, 4), torch.zeros(2, 4).double()), TypeError, "boxes1"),
        (lambda: roiops.generalized_box_iou_loss(torch.zeros(2, 4), torch.zeros(3, 4)), ValueError, "boxes1"),
        (lambda: roiops.distance_box_iou_loss(torch.zeros(2, 4), torch.zeros(2, 4), "avg"), ValueError,
         "reduction"),
        (lambda: roiops.complete_box_iou_loss(torch.zeros(2, 3), torch.zeros(2, 3)), ValueError, "boxes1"),
        (lambda: roiops.masks_to_boxes(torch.zeros(4, 4)), ValueError, "masks"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_complete_box_iou_compiles_fullgraph():
    a, b = random_image_boxes(7, 20), random_image_boxes(5, 21)
    compiled = torch.compile(roiops.complete_box_iou, fullgraph=True)
    torch.testing.assert_close(compiled(a, b), roiops.complete_box_iou(a, b), atol=0, rtol=0)
