"""nms_rotated and batched_nms_rotated: against textbook greedy NMS over an exact float64 IoU, the
rank rules of roiops.nms, degenerate boxes, and agreement with nms at angle 0."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from rotated_cases import clustered_rotated_boxes, greedy_nms, random_rotated_boxes, rotated_box

import roiops

thresholds = st.sampled_from([0.01, 0.1, 0.3, 0.5, 0.7, 0.9])


@st.composite
def detections(draw, max_n=40):
    rows = draw(st.lists(rotated_box, min_size=0, max_size=max_n))
    n = len(rows)
    scores = draw(st.lists(st.integers(0, 10), min_size=n, max_size=n))  # ties on purpose
    idxs = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    # Shrink the spread so that boxes overlap often.
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 5) * torch.tensor([0.3, 0.3, 1, 1, 1])
    return boxes, torch.tensor(scores, dtype=torch.float32) / 10, torch.tensor(idxs, dtype=torch.int64)


@given(detections(), thresholds)
def test_nms_matches_greedy_over_exact_iou(det, threshold):
    boxes, scores, _ = det
    assert roiops.nms_rotated(boxes, scores, threshold).tolist() == greedy_nms(boxes, scores, threshold)


@given(detections(), thresholds)
def test_batched_matches_greedy_per_category(det, threshold):
    boxes, scores, idxs = det
    assert roiops.batched_nms_rotated(boxes, scores, idxs, threshold).tolist() == greedy_nms(
        boxes, scores, threshold, idxs
    )


def test_grid_path_matches_flat_greedy():
    # Enough boxes for the grid (>= 48), clustered so that suppression happens everywhere.
    boxes = clustered_rotated_boxes(300, 0, clusters=12, extent=300)
    scores = torch.rand(300, generator=torch.Generator().manual_seed(1))
    for threshold in (0.2, 0.5, 0.8):
        assert roiops.nms_rotated(boxes, scores, threshold).tolist() == greedy_nms(boxes, scores, threshold)
    idxs = torch.randint(0, 4, (300,), generator=torch.Generator().manual_seed(2))
    assert roiops.batched_nms_rotated(boxes, scores, idxs, 0.5).tolist() == greedy_nms(
        boxes, scores, 0.5, idxs
    )


def test_rank_rules_ties_lower_index_nan_last():
    boxes = torch.tensor(
        [[0, 0, 10, 10, 0], [1, 0, 10, 10, 5], [50, 50, 4, 4, 0], [80, 80, 4, 4, 0]], dtype=torch.float32
    )
    scores = torch.tensor([0.5, 0.5, math.nan, 0.9])
    # Box 0 and 1 tie: the lower index ranks first and suppresses 1; NaN ranks after everything.
    assert roiops.nms_rotated(boxes, scores, 0.3).tolist() == [3, 0, 2]


def test_threshold_edges():
    boxes = random_rotated_boxes(30, 3, extent=20)
    scores = torch.rand(30, generator=torch.Generator().manual_seed(3))
    top = int(scores.argmax())
    assert roiops.nms_rotated(boxes, scores, -0.1).tolist() == [top]
    assert sorted(roiops.nms_rotated(boxes, scores, 1.0).tolist()) == list(range(30))


def test_degenerate_boxes_are_kept_and_suppress_nothing():
    boxes = torch.tensor(
        [
            [10, 10, 0, 5, 0],  # zero width, top score
            [10, 10, 5, 5, 0],
            [10, 10, math.nan, 5, 0],
            [10, 10, 5, 5, math.inf],
            [10.5, 10, 5, 5, 0],  # suppressed by box 1
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    assert roiops.nms_rotated(boxes, scores, 0.5).tolist() == [0, 1, 2, 3]


def test_identical_boxes_suppress_each_other_below_threshold_one():
    boxes = torch.tensor([[5, 5, 4, 2, 33.0]] * 3)
    scores = torch.tensor([0.1, 0.3, 0.2])
    assert roiops.nms_rotated(boxes, scores, 0.999).tolist() == [1]
    assert roiops.nms_rotated(boxes, scores, 1.0).tolist() == [1, 2, 0]


@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(1, 16), st.integers(1, 16)),
        min_size=0,
        max_size=60,
    ),
    st.sampled_from([0.17, 0.43, 0.61]),
)
def test_angle_zero_keeps_what_nms_keeps(rows, threshold):
    # Integer corners: the centre / size form is exact, and no IoU lands on these thresholds.
    xyxy = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]
    rotated = torch.cat(
        [(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2], torch.zeros(len(rows), 1)], 1
    )
    scores = torch.rand(len(rows), generator=torch.Generator().manual_seed(len(rows)))
    assert (
        roiops.nms_rotated(rotated, scores, threshold).tolist()
        == roiops.nms(xyxy, scores, threshold).tolist()
    )
    # A quarter turn with width and height swapped is the same rectangle.
    turned = rotated[:, [0, 1, 3, 2, 4]] + torch.tensor([0, 0, 0, 0, 90.0])
    assert (
        roiops.nms_rotated(turned, scores, threshold).tolist() == roiops.nms(xyxy, scores, threshold).tolist()
    )


def test_results_do_not_depend_on_thread_count():
    boxes = clustered_rotated_boxes(3000, 4)
    scores = torch.rand(3000, generator=torch.Generator().manual_seed(4))
    idxs = torch.randint(0, 8, (3000,), generator=torch.Generator().manual_seed(5))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (roiops.nms_rotated(boxes, scores, 0.5), roiops.batched_nms_rotated(boxes, scores, idxs, 0.5))
        torch.set_num_threads(2)
        two = (roiops.nms_rotated(boxes, scores, 0.5), roiops.batched_nms_rotated(boxes, scores, idxs, 0.5))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(x, y) for x, y in zip(one, two))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes(device, dtype):
    boxes = clustered_rotated_boxes(200, 6, clusters=10, extent=200)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(6))
    b, s = boxes.to(dtype), scores.to(dtype)
    expected = greedy_nms(b.double(), s.double(), 0.5)
    assert roiops.nms_rotated(b.to(device), s.to(device), 0.5).tolist() == expected


def test_clockwise_flag_negates_angles():
    boxes = clustered_rotated_boxes(100, 7, clusters=5, extent=100)
    scores = torch.rand(100, generator=torch.Generator().manual_seed(7))
    flipped = boxes * torch.tensor([1, 1, 1, 1, -1.0])
    assert torch.equal(
        roiops.nms_rotated(boxes, scores, 0.4, clockwise=False), roiops.nms_rotated(flipped, scores, 0.4)
    )


def test_empty_input(device):
    empty = torch.zeros(0, 5, device=device)
    assert roiops.nms_rotated(empty, torch.zeros(0, device=device), 0.5).shape == (0,)
    assert roiops.batched_nms_rotated(
        empty, torch.zeros(0, device=device), torch.zeros(0, dtype=torch.int64, device=device), 0.5
    ).shape == (0,)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: roiops.nms_rotated(torch.zeros(3, 4), torch.zeros(3), 0.5), ValueError, "boxes"),
        (lambda: roiops.nms_rotated(torch.zeros(3, 5), torch.zeros(2), 0.5), ValueError, "scores"),
        (
            lambda: roiops.nms_rotated(torch.zeros(3, 5), torch.zeros(3), math.nan),
            ValueError,
            "iou_threshold",
        ),
        (
            lambda: roiops.nms_rotated(torch.zeros(3, 5), torch.zeros(3, dtype=torch.float64), 0.5),
            TypeError,
            "same dtype",
        ),
        (
            lambda: roiops.batched_nms_rotated(torch.zeros(3, 5), torch.zeros(3), torch.zeros(3), 0.5),
            TypeError,
            "idxs",
        ),
        (
            lambda: roiops.batched_nms_rotated(
                torch.zeros(3, 5), torch.zeros(3), torch.zeros(2, dtype=torch.int64), 0.5
            ),
            ValueError,
            "idxs",
        ),
        (lambda: torch.ops.roiops.nms_rotated(torch.zeros(3, 4), torch.zeros(3), 0.5), ValueError, "boxes"),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
