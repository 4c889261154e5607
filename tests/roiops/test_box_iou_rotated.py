"""box_iou_rotated: exact IoU against an independent float64 oracle, hand values, degenerate boxes,
and the invariances of IoU."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from rotated_cases import iou, iou_matrix, random_rotated_boxes, rotated_box

import roiops


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype).reshape(-1, 5)


def test_oracle_agrees_with_hand_values():
    # Two 2x2 squares offset by 1: intersection 2, union 6.
    assert iou([0, 0, 2, 2, 0], [1, 0, 2, 2, 0]) == pytest.approx(1 / 3, abs=1e-12)
    # A 2x2 square and itself turned 45 degrees: a regular octagon of area 8 (sqrt(2) - 1).
    octagon = 8 * (math.sqrt(2) - 1)
    assert iou([0, 0, 2, 2, 0], [0, 0, 2, 2, 45]) == pytest.approx(octagon / (8 - octagon), abs=1e-12)


def test_hand_values():
    octagon = 8 * (math.sqrt(2) - 1)
    a = t([[0, 0, 2, 2, 0], [5, 5, 4, 2, 90]])
    b = t([[1, 0, 2, 2, 0], [0, 0, 2, 2, 45], [5, 5, 2, 4, 0]])
    expected = torch.tensor([[1 / 3, octagon / (8 - octagon), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(roiops.box_iou_rotated(a, b), expected, atol=1e-12, rtol=0)


@given(st.lists(rotated_box, min_size=0, max_size=8), st.lists(rotated_box, min_size=0, max_size=8))
def test_matches_exact_oracle(rows1, rows2):
    a, b = t(rows1, torch.float32), t(rows2, torch.float32)
    torch.testing.assert_close(roiops.box_iou_rotated(a, b).double(), iou_matrix(a, b), atol=2e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtypes_keep_input_dtype(device, dtype):
    a, b = random_rotated_boxes(30, 0), random_rotated_boxes(20, 1)
    out = roiops.box_iou_rotated(a.to(device, dtype), b.to(device, dtype))
    assert out.dtype == dtype and out.shape == (30, 20)
    expected = iou_matrix(a.to(dtype), b.to(dtype))
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 2e-6}.get(dtype, 1e-12)
    torch.testing.assert_close(out.double().cpu(), expected, atol=tol, rtol=0)


def test_aligned_is_the_diagonal(device):
    a, b = random_rotated_boxes(40, 2).to(device), random_rotated_boxes(40, 3).to(device)
    b[::2] = a[::2] + torch.tensor([3.0, -2.0, 1.0, 0.5, 10.0], device=device)  # overlapping pairs
    aligned = roiops.box_iou_rotated(a, b, aligned=True)
    assert aligned.shape == (40,)
    torch.testing.assert_close(aligned, roiops.box_iou_rotated(a, b).diagonal(), atol=0, rtol=0)
    assert (aligned[::2] > 0).all()


def test_identical_boxes_have_iou_exactly_one(device):
    boxes = random_rotated_boxes(50, 4).to(device)
    boxes[:5, 4] = torch.tensor([0.0, 90.0, -180.0, 45.0, 33.3])
    iou_self = roiops.box_iou_rotated(boxes, boxes).diagonal()
    assert (iou_self == 1).all()
    # 360 degrees apart is the same rectangle to the bit (the angle is reduced exactly) when the
    # turned angle is itself exact: angles in 1/8 degree steps.
    boxes[:, 4] = torch.round(boxes[:, 4] * 8) / 8
    turned = boxes.clone()
    turned[:, 4] += 360
    assert (roiops.box_iou_rotated(boxes, turned, aligned=True) == 1).all()


def test_degenerate_boxes_give_zero_not_nan(device):
    good = t([[10, 10, 4, 4, 30]], torch.float32).to(device)
    bad = t(
        [
            [10, 10, 0, 4, 30],  # zero width
            [10, 10, 4, 0, 30],  # zero height
            [10, 10, -4, 4, 30],  # negative width
            [math.nan, 10, 4, 4, 30],
            [10, 10, 4, 4, math.nan],
            [10, 10, math.inf, 4, 0],
            [10, 10, 4, 4, math.inf],
        ],
        torch.float32,
    ).to(device)
    out = roiops.box_iou_rotated(bad, torch.cat([good, bad]))
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(roiops.box_iou_rotated(good, bad), torch.zeros(1, bad.size(0), device=device))


def test_touching_and_contained_boxes(device):
    a = t([[0, 0, 2, 2, 0], [0, 0, 10, 10, 30]], torch.float32).to(device)
    b = t([[2, 0, 2, 2, 0], [0, 0, 2, 2, 77]], torch.float32).to(device)
    out = roiops.box_iou_rotated(a, b, aligned=True)
    assert out[0] == 0  # sharing an edge: no area
    torch.testing.assert_close(out[1].item(), 4 / 100, atol=1e-7, rtol=0)  # contained: area ratio


def test_nearly_parallel_edges_stay_exact(device):
    # The second box differs by a tiny rotation and shift: edges nearly coincide.
    base = [50.0, 40.0, 30.0, 10.0, 20.0]
    rows = [
        [50.0 + d, 40.0, 30.0, 10.0, 20.0 + e] for d in (0.0, 1e-4, 1e-2) for e in (1e-6, 1e-4, 1e-3, 1e-2)
    ]
    a = t([base] * len(rows)).to(device)
    b = t(rows).to(device)
    expected = torch.tensor([iou(base, r) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(roiops.box_iou_rotated(a, b, aligned=True).cpu(), expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("offset", [1e4, 1e6, 1e7])
def test_far_from_origin_keeps_precision(device, offset):
    # The same pairs translated far away: float32 holds the translated integer centres exactly (up
    # to 2^24), so the IoU must not change beyond float32 rounding of the IoU itself.
    rows_a = [[0.0, 0.0, 20.0, 10.0, 30.0], [5.0, 5.0, 8.0, 8.0, 0.0], [1.0, -2.0, 6.0, 3.0, 89.0]]
    rows_b = [[3.0, 1.0, 20.0, 10.0, 35.0], [6.0, 6.0, 8.0, 8.0, 45.0], [2.0, -2.0, 6.0, 3.0, -1.0]]
    near = roiops.box_iou_rotated(
        t(rows_a, torch.float32).to(device), t(rows_b, torch.float32).to(device), True
    )
    shift = torch.tensor([offset, offset, 0, 0, 0])
    far = roiops.box_iou_rotated(
        (t(rows_a) + shift).float().to(device), (t(rows_b) + shift).float().to(device), True
    )
    torch.testing.assert_close(far, near, atol=1e-6, rtol=0)
    assert (near > 0.05).all()


rigid = st.tuples(st.floats(-180, 180), st.floats(-500, 500), st.floats(-500, 500))


@given(st.lists(rotated_box, min_size=1, max_size=6), st.lists(rotated_box, min_size=1, max_size=6), rigid)
def test_invariances(rows1, rows2, motion):
    a, b = t(rows1), t(rows2)
    base = roiops.box_iou_rotated(a, b)
    assert ((base >= 0) & (base <= 1)).all()
    torch.testing.assert_close(roiops.box_iou_rotated(b, a), base.T, atol=1e-12, rtol=0)
    # Turning both boxes about a common point and translating them together.
    theta, tx, ty = motion
    c, s = math.cos(math.radians(theta)), math.sin(math.radians(theta))

    def move(boxes):
        x, y = boxes[:, 0] - 50, boxes[:, 1] - 50
        out = boxes.clone()
        out[:, 0] = x * c + y * s + 50 + tx
        out[:, 1] = -x * s + y * c + 50 + ty
        out[:, 4] = boxes[:, 4] + theta
        return out

    torch.testing.assert_close(roiops.box_iou_rotated(move(a), move(b)), base, atol=1e-9, rtol=0)
    # A half turn of a box, or swapping width and height with a quarter turn, is the same rectangle.
    half = a.clone()
    half[:, 4] += 180
    torch.testing.assert_close(roiops.box_iou_rotated(half, b), base, atol=1e-9, rtol=0)
    swapped = a[:, [0, 1, 3, 2, 4]].clone()
    swapped[:, 4] += 90
    torch.testing.assert_close(roiops.box_iou_rotated(swapped, b), base, atol=1e-9, rtol=0)


@given(
    st.lists(
        st.tuples(st.integers(-20, 20), st.integers(-20, 20), st.integers(0, 12), st.integers(0, 12)),
        min_size=0,
        max_size=10,
    )
)
def test_angle_zero_equals_axis_aligned_box_iou(rows):
    xyxy = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]
    rotated = torch.cat(
        [(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2], torch.zeros(len(rows), 1)], 1
    )
    torch.testing.assert_close(
        roiops.box_iou_rotated(rotated, rotated), roiops.box_iou(xyxy, xyxy), atol=1e-7, rtol=0
    )


def test_clockwise_flag_negates_angles():
    a, b = random_rotated_boxes(10, 5, extent=30), random_rotated_boxes(12, 6, extent=30)
    flipped_a, flipped_b = a.clone(), b.clone()
    flipped_a[:, 4] *= -1
    flipped_b[:, 4] *= -1
    torch.testing.assert_close(
        roiops.box_iou_rotated(a, b, clockwise=False),
        roiops.box_iou_rotated(flipped_a, flipped_b),
        atol=0,
        rtol=0,
    )


def test_autocast_takes_mixed_dtypes():
    a, b = random_rotated_boxes(6, 7), random_rotated_boxes(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roiops.box_iou_rotated(a.to(torch.bfloat16), b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, roiops.box_iou_rotated(a.to(torch.bfloat16).float(), b))


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.zeros(3, 4), torch.zeros(2, 5)), ValueError, "boxes1"),
        ((torch.zeros(3, 5), torch.zeros(2, 5, 1)), ValueError, "boxes2"),
        ((torch.zeros(3, 5, dtype=torch.int64), torch.zeros(2, 5)), TypeError, "boxes1"),
        ((torch.zeros(3, 5), torch.zeros(2, 5, dtype=torch.float64)), TypeError, "same dtype"),
        (([1.0] * 5, torch.zeros(2, 5)), TypeError, "boxes1"),
    ],
)
def test_bad_input_names_the_argument(args, error, match):
    with pytest.raises(error, match=match):
        roiops.box_iou_rotated(*args)


def test_aligned_needs_equal_counts():
    with pytest.raises(ValueError, match="aligned"):
        roiops.box_iou_rotated(torch.zeros(3, 5), torch.zeros(2, 5), aligned=True)
    with pytest.raises(ValueError, match="aligned"):
        torch.ops.roiops.box_iou_rotated(torch.zeros(3, 5), torch.zeros(2, 5), True)


def test_empty_inputs(device):
    assert roiops.box_iou_rotated(
        torch.zeros(0, 5, device=device), torch.zeros(3, 5, device=device)
    ).shape == (0, 3)
    assert roiops.box_iou_rotated(
        torch.zeros(0, 5, device=device), torch.zeros(0, 5, device=device), aligned=True
    ).shape == (0,)
