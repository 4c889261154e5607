"""nms, batched_nms and soft_nms: greedy references written here, torchvision as an oracle, and the
properties that define greedy suppression; the CUDA kernels against the CPU kernels and
torchvision's CUDA ops."""

import math

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from roiops_cases import CUDA, error_of, random_image_boxes, to_cuda

import roiops


def iou_same_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU from its definition, elementwise in the boxes' own dtype (so rounding matches a kernel
    computing in that dtype), 0 for an empty box."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    iw, ih = (hi - lo).clamp(min=0).unbind(-1)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    valid = (area_a[:, None] > 0) & (area_b[None, :] > 0)
    return torch.where(valid, inter / torch.where(valid, union, 1), 0)


def rank(scores: torch.Tensor) -> list[int]:
    """Decreasing score, NaN last, ties by lower index."""
    s = scores.tolist()
    return sorted(range(len(s)), key=lambda i: (math.isnan(s[i]), -s[i] if not math.isnan(s[i]) else 0, i))


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Textbook greedy NMS: visit by rank, keep a box unless a kept box overlaps it by IoU > threshold."""
    iou = iou_same_dtype(boxes, boxes)
    kept: list[int] = []
    for i in rank(scores):
        if all(not bool(iou[k, i] > threshold) for k in kept):
            kept.append(i)
    return kept


def reference_batched_nms(boxes, scores, idxs, threshold) -> list[int]:
    kept = set()
    for c in idxs.unique().tolist():
        members = torch.nonzero(idxs == c).flatten()
        kept.update(members[reference_nms(boxes[members], scores[members], threshold)].tolist())
    return [i for i in rank(scores) if i in kept]


# Boxes from a small grid of corners and sizes: duplicates, touching, nested, empty (size 0) and
# far-apart boxes all occur; scores from a few values: ties occur.
box_rows = st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 6), st.integers(0, 6))
score_values = st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9, 1.0])


@st.composite
def detections(draw, max_n=40, far=True):
    rows = draw(st.lists(box_rows, max_size=max_n))
    scale = draw(st.sampled_from([1.0, 7.5] + ([1e4] if far else [])))
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4) * scale
    boxes[:, 2:] += boxes[:, :2]
    scores = torch.tensor(draw(st.lists(score_values, min_size=len(rows), max_size=len(rows))),
                          dtype=torch.float32)
    return boxes, scores


thresholds = st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.99, 1.0])


@given(detections(), thresholds)
def test_nms_matches_greedy_reference_with_ties_duplicates_and_empty_boxes(det, threshold):
    boxes, scores = det
    keep = roiops.nms(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    assert keep.tolist() == reference_nms(boxes, scores, threshold)


@given(detections(max_n=60), thresholds)
def test_nms_properties(det, threshold):
    boxes, scores = det
    keep = roiops.nms(boxes, scores, threshold)
    kept = keep.tolist()
    assert len(set(kept)) == len(kept) and all(0 <= i < len(boxes) for i in kept)
    assert all(scores[a] >= scores[b] for a, b in zip(kept, kept[1:]))
    iou = roiops.box_iou(boxes, boxes)
    if len(kept) > 1:
        pairwise = iou[keep][:, keep]
        assert bool((pairwise.triu(diagonal=1) <= threshold).all())
    position = {i: r for r, i in enumerate(rank(scores))}
    for s in set(range(len(boxes))) - set(kept):
        assert any(iou[k, s] > threshold and position[k] < position[s] for k in kept)
    # Idempotent: the kept boxes suppress none of each other.
    again = roiops.nms(boxes[keep], scores[keep], threshold)
    assert again.tolist() == list(range(len(kept)))


def clustered_boxes(n: int, g: torch.Generator, clusters: int = 0, image: float = 1000.0):
    clusters = clusters or max(1, n // 20)
    centres = torch.rand(clusters, 2, generator=g) * image
    sizes = torch.rand(clusters, 2, generator=g) * 120 + 8
    which = torch.randint(0, clusters, (n,), generator=g)
    ctr = centres[which] + torch.randn(n, 2, generator=g) * sizes[which] * 0.15
    wh = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
    return boxes, (torch.randperm(n, generator=g).float() + 1) / n  # distinct scores


@pytest.mark.parametrize("n", [0, 1, 2, 300, 3000])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_equals_torchvision_on_distinct_scores(n, threshold):
    g = torch.Generator().manual_seed(n)
    boxes, scores = clustered_boxes(n, g)
    assert torch.equal(roiops.nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


def test_nms_equals_torchvision_on_uniform_random_boxes_float64():
    g = torch.Generator().manual_seed(7)
    xy = torch.rand(2000, 2, generator=g, dtype=torch.float64) * 500
    boxes = torch.cat([xy, xy + torch.rand(2000, 2, generator=g, dtype=torch.float64) * 80], 1)
    scores = torch.rand(2000, generator=g, dtype=torch.float64)
    assert torch.equal(roiops.nms(boxes, scores, 0.4), torchvision.ops.nms(boxes, scores, 0.4))


def assert_is_greedy_result(boxes, scores, keep, threshold, chunk=2048):
    """The two properties that pin greedy NMS down uniquely (by induction over rank): no kept box
    overlaps a higher-ranked kept box above the threshold, and every suppressed box does. Checked
    in chunks with box_iou (the same IoU arithmetic), so it scales to 100k boxes."""
    n = len(boxes)
    position = torch.empty(n, dtype=torch.int64)
    position[torch.tensor(rank(scores))] = torch.arange(n)
    kept = torch.zeros(n, dtype=torch.bool)
    kept[keep] = True
    kept_boxes, kept_pos = boxes[keep], position[keep]
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk))
        higher = kept_pos[None, :] < position[rows, None]  # kept box ranks above the row's box
        overlapping = (roiops.box_iou(boxes[rows], kept_boxes) > threshold) & higher
        suppressed_by_some = overlapping.any(dim=1)
        assert torch.equal(suppressed_by_some, ~kept[rows])


@pytest.mark.slow
def test_nms_100k_clustered_boxes_is_the_greedy_result():
    g = torch.Generator().manual_seed(100)
    boxes, scores = clustered_boxes(100_000, g, clusters=400)
    # A few outliers: huge boxes, empty boxes and a NaN box among them.
    boxes[:5] = torch.tensor([0.0, 0.0, 1000.0, 1000.0])
    boxes[5:10, 2:] = boxes[5:10, :2]
    boxes[10, 0] = float("nan")
    for threshold in (0.3, 0.5):
        keep = roiops.nms(boxes, scores, threshold)
        assert bool((scores[keep][1:] < scores[keep][:-1]).all())
        assert_is_greedy_result(boxes, scores, keep, threshold)


def test_greedy_properties_check_agrees_with_torchvision_at_10k():
    g = torch.Generator().manual_seed(20)
    boxes, scores = clustered_boxes(10_000, g)
    keep = roiops.nms(boxes, scores, 0.7)
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.7))
    assert_is_greedy_result(boxes, scores, keep, 0.7)


def test_nan_scores_rank_last_and_nan_boxes_are_never_suppressed():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10], [float("nan"), 0, 10, 10]])
    scores = torch.tensor([float("nan"), 0.5, 0.9, 0.95])
    keep = roiops.nms(boxes, scores, 0.5)
    # 3 (NaN box, IoU 0 with all) and 2 are kept; 1 is suppressed by 2; 0 (NaN score) comes last
    # and is suppressed by 2 as well.
    assert keep.tolist() == [3, 2]
    assert roiops.nms(boxes, scores, 0.9).tolist() == [3, 2, 1]


def test_equal_scores_keep_lower_index():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 3 + [[0.0, 0, 10, 10.5]])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5])
    assert roiops.nms(boxes, scores, 0.5).tolist() == [0]
    assert roiops.nms(boxes.flip(0), scores, 0.5).tolist() == [0]


def test_threshold_extremes():
    g = torch.Generator().manual_seed(3)
    boxes, scores = clustered_boxes(500, g)
    top = int(scores.argmax())
    assert roiops.nms(boxes, scores, -0.1).tolist() == [top]
    assert sorted(roiops.nms(boxes, scores, 1.0).tolist()) == list(range(500))
    assert roiops.nms(boxes, scores, math.inf).shape == (500,)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_match_reference(dtype, device):
    g = torch.Generator().manual_seed(4)
    boxes, scores = clustered_boxes(400, g)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    keep = roiops.nms(boxes.to(device), scores.to(device), 0.5).cpu()
    # The half types are compared in float32 after rounding the inputs.
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    assert keep.tolist() == reference_nms(boxes.to(wide), scores.to(wide), 0.5)


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(5)
    boxes, scores = clustered_boxes(300, g)
    wide = torch.zeros(300, 8)
    wide[:, ::2] = boxes
    both = torch.stack([scores, scores], 1)
    assert torch.equal(roiops.nms(wide[:, ::2], both[:, 0], 0.5), roiops.nms(boxes, scores, 0.5))


def test_results_independent_of_thread_count():
    g = torch.Generator().manual_seed(6)
    boxes, scores = clustered_boxes(5000, g)
    idxs = torch.randint(0, 30, (5000,), generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = roiops.nms(boxes, scores, 0.5), roiops.batched_nms(boxes, scores, idxs, 0.5)
        torch.set_num_threads(2)
        two = roiops.nms(boxes, scores, 0.5), roiops.batched_nms(boxes, scores, idxs, 0.5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


# ---- batched_nms ---------------------------------------------------------------------------------


@given(detections(), thresholds, st.data())
def test_batched_nms_equals_union_of_per_class_nms(det, threshold, data):
    boxes, scores = det
    idxs = torch.tensor(data.draw(st.lists(st.integers(-2, 3), min_size=len(boxes), max_size=len(boxes))),
                        dtype=torch.int64)
    keep = roiops.batched_nms(boxes, scores, idxs, threshold)
    assert keep.tolist() == reference_batched_nms(boxes, scores, idxs, threshold)


@pytest.mark.parametrize("num_classes", [1, 5, 80])
def test_batched_nms_equals_torchvision(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    boxes, scores = clustered_boxes(4000, g)
    idxs = torch.randint(0, num_classes, (4000,), generator=g)
    expected = torchvision.ops.boxes._batched_nms_vanilla(boxes, scores, idxs, 0.5)
    assert torch.equal(roiops.batched_nms(boxes, scores, idxs, 0.5), expected)
    assert torch.equal(roiops.batched_nms(boxes, scores, idxs.int(), 0.5), expected)


def test_batched_nms_sparse_huge_category_ids():
    g = torch.Generator().manual_seed(8)
    boxes, scores = clustered_boxes(1000, g)
    dense = torch.randint(0, 7, (1000,), generator=g)
    huge = torch.tensor([-(2**62), -5, 0, 3, 2**40, 2**50, 2**62])[dense]
    expected = roiops.batched_nms(boxes, scores, dense, 0.5)
    assert torch.equal(roiops.batched_nms(boxes, scores, huge, 0.5), expected)


def test_batched_nms_exact_at_large_coordinates_where_the_offset_trick_fails():
    # Two categories of nearly coincident boxes far from the origin: the offset trick adds
    # category * (max + 1) to float32 coordinates and rounds the boxes together.
    base = torch.tensor([[3.0e6, 3.0e6, 3.0e6 + 8, 3.0e6 + 8]])
    boxes = torch.cat([base, base + torch.tensor([0.0, 0, 0.5, 0.5]), base, base + 4])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idxs = torch.tensor([0, 0, 1, 1])
    expected = reference_batched_nms(boxes, scores, idxs, 0.5)
    assert roiops.batched_nms(boxes, scores, idxs, 0.5).tolist() == expected


# ---- soft_nms ------------------------------------------------------------------------------------


def reference_soft_nms(boxes, scores, iou_threshold, sigma, score_threshold, method):
    """Bodla et al. 2017, Algorithm 1, in float64."""
    iou = iou_same_dtype(boxes.double(), boxes.double())
    live = {i: float(s) for i, s in enumerate(scores.tolist()) if s >= score_threshold}
    out, out_scores = [], []
    while live:
        best = max(live, key=lambda i: (live[i], -i))
        out.append(best)
        out_scores.append(live.pop(best))
        for j in list(live):
            o = float(iou[best, j])
            if method == "linear":
                live[j] *= (1 - o) if o > iou_threshold else 1.0
            else:
                live[j] *= math.exp(-(o * o) / sigma)
            if not live[j] >= score_threshold:
                del live[j]
    return out, out_scores


@given(detections(max_n=30, far=False), st.sampled_from(["linear", "gaussian"]),
       st.sampled_from([0.0, 0.3, 0.5]), st.sampled_from([0.001, 0.3]))
def test_soft_nms_matches_algorithm_1(det, method, iou_threshold, score_threshold):
    boxes, scores = det
    scores = scores + torch.arange(len(scores)) * 1e-3  # distinct: float32 vs float64 decay ties
    keep, kept_scores = roiops.soft_nms(boxes.double(), scores.double(), iou_threshold, 0.5,
                                        score_threshold, method)
    expected, expected_scores = reference_soft_nms(boxes, scores.double(), iou_threshold, 0.5,
                                                   score_threshold, method)
    assert keep.tolist() == expected
    torch.testing.assert_close(kept_scores, torch.tensor(expected_scores, dtype=torch.float64))
    assert bool((kept_scores[1:] <= kept_scores[:-1]).all())
    assert bool((kept_scores <= scores.double()[keep]).all())


def test_soft_nms_linear_with_zero_score_threshold_keeps_disjoint_boxes_untouched():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, kept_scores = roiops.soft_nms(boxes, scores, 0.5, 0.5, 0.0, "linear")
    assert keep.tolist() == [0, 1, 2]
    torch.testing.assert_close(kept_scores, torch.tensor([0.9, 0.8, 0.7 * 0.1]))


def test_soft_nms_drops_nan_scores_and_handles_empty():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    keep, kept_scores = roiops.soft_nms(boxes, torch.tensor([float("nan"), 0.5]), 0.3, 0.5, 0.001, "gaussian")
    assert keep.tolist() == [1] and kept_scores.tolist() == [0.5]
    keep, kept_scores = roiops.soft_nms(torch.zeros(0, 4), torch.zeros(0), 0.3, 0.5, 0.001, "linear")
    assert keep.shape == (0,) and kept_scores.shape == (0,)


# ---- bad input -----------------------------------------------------------------------------------

B, S = torch.zeros(3, 4), torch.zeros(3)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: roiops.nms(torch.zeros(3, 5), S, 0.5), ValueError, "boxes"),
        (lambda: roiops.nms(B, torch.zeros(4), 0.5), ValueError, "scores"),
        (lambda: roiops.nms(B, torch.zeros(3, 1), 0.5), ValueError, "scores"),
        (lambda: roiops.nms(B.long(), S.long(), 0.5), TypeError, "boxes"),
        (lambda: roiops.nms(B, S.double(), 0.5), TypeError, "boxes and scores"),
        (lambda: roiops.nms(B, S, float("nan")), ValueError, "iou_threshold"),
        (lambda: roiops.nms(B, S, "0.5"), TypeError, "iou_threshold"),
        (lambda: roiops.nms(B.tolist(), S, 0.5), TypeError, "boxes"),
        (lambda: roiops.batched_nms(B, S, torch.zeros(3), 0.5), TypeError, "idxs"),
        (lambda: roiops.batched_nms(B, S, torch.zeros(4, dtype=torch.int64), 0.5), ValueError, "idxs"),
        (lambda: roiops.soft_nms(B, S, method="hard"), ValueError, "method"),
        (lambda: roiops.soft_nms(B, S, sigma=0.0), ValueError, "sigma"),
        (lambda: roiops.soft_nms(B, S, score_threshold=float("nan")), ValueError, "score_threshold"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("threshold", [0.05, 0.1, 0.2, 0.3, 0.45])
def test_nms_equals_torchvision_at_low_thresholds_with_sizes_spanning_25x(threshold):
    # At t < 1/2 two boxes with IoU > t can sit (1 - t) / (2t) widths apart, centre to centre, much
    # farther than at high thresholds: the grid search (n >= 48) must reach that far, across box
    # sizes that differ by more than 10x.
    g = torch.Generator().manual_seed(int(threshold * 100))
    for _ in range(60):
        n = int(torch.randint(48, 400, (1,), generator=g))
        ctr = torch.rand(n, 2, generator=g) * 300
        side = 4 * 25 ** torch.rand(n, 1, generator=g)  # 4 to 100 pixels, log-uniform
        wh = side * (0.5 + torch.rand(n, 2, generator=g))
        boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
        scores = torch.rand(n, generator=g)
        expected = torchvision.ops.nms(boxes, scores, threshold)
        assert torch.equal(roiops.nms(boxes, scores, threshold), expected)


def test_nms_suppresses_a_small_box_whose_wide_suppressor_is_centred_far_away():
    # IoU([0,0,3,1], [0,0,1,1]) = 1/3 > 0.3, with the centres a full small-box width apart; ~100
    # far-away tiny boxes put the search on its grid path.
    g = torch.Generator().manual_seed(5)
    tiny_xy = 50 + torch.rand(100, 2, generator=g) * 400
    tiny = torch.cat([tiny_xy, tiny_xy + 0.5], 1)
    boxes = torch.cat([torch.tensor([[0.0, 0, 3, 1], [0, 0, 1, 1]]), tiny])
    scores = torch.cat([torch.tensor([0.9, 0.5]), torch.rand(100, generator=g) * 0.4])
    keep = roiops.nms(boxes, scores, 0.3)
    assert 0 in keep.tolist() and 1 not in keep.tolist()
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.3))


# ---- on every device; the CUDA kernels against the CPU kernels and torchvision's CUDA ops ---------


def test_empty_input_keeps_nothing(device):
    no_boxes, no_scores = torch.zeros(0, 4, device=device), torch.zeros(0, device=device)
    assert roiops.nms(no_boxes, no_scores, 0.5).shape == (0,)
    no_idxs = torch.zeros(0, dtype=torch.int64, device=device)
    assert roiops.batched_nms(no_boxes, no_scores, no_idxs, 0.5).shape == (0,)


@pytest.mark.cuda
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 500, 3000])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.7, 1.0, -0.5])
def test_cuda_nms_matches_cpu_with_tied_scores(n, threshold):
    boxes = random_image_boxes(n, n + 1)
    g = torch.Generator().manual_seed(n)
    # Repeated scores, so that the tie-breaking (lower index first) is exercised.
    scores = (torch.rand(n, generator=g) * 20).round() / 20
    expected = roiops.nms(boxes, scores, threshold)
    got = roiops.nms(*to_cuda(boxes, scores), threshold)
    assert got.dtype == torch.int64 and got.device.type == CUDA.type
    assert torch.equal(got.cpu(), expected)


@pytest.mark.cuda
def test_cuda_nms_matches_torchvision_cuda_for_distinct_scores():
    boxes = random_image_boxes(2000, 19).to(CUDA)
    scores = torch.randperm(2000, generator=torch.Generator().manual_seed(20)).float().to(CUDA)
    for threshold in (0.3, 0.5, 0.7):
        expected = torchvision.ops.nms(boxes, scores, threshold)
        assert torch.equal(roiops.nms(boxes, scores, threshold), expected)


@pytest.mark.cuda
def test_cuda_nms_nan_scores_and_degenerate_boxes_match_cpu():
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


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_cuda_nms_other_dtypes_match_cpu(dtype):
    boxes = random_image_boxes(400, 25, dtype)
    scores = torch.rand(400, generator=torch.Generator().manual_seed(26)).to(dtype)
    assert torch.equal(roiops.nms(*to_cuda(boxes, scores), 0.5).cpu(), roiops.nms(boxes, scores, 0.5))


@pytest.mark.cuda
@pytest.mark.parametrize("n", [0, 100, 2500])
def test_cuda_batched_nms_matches_cpu_and_torchvision_cuda(n):
    boxes = random_image_boxes(n, 23)
    g = torch.Generator().manual_seed(24)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, 7, (n,), generator=g)
    expected = roiops.batched_nms(boxes, scores, idxs, 0.5)
    got = roiops.batched_nms(*to_cuda(boxes, scores, idxs), 0.5)
    assert torch.equal(got.cpu(), expected)
    theirs = torchvision.ops.batched_nms(*to_cuda(boxes, scores, idxs), 0.5)
    assert torch.equal(got, theirs)


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("n", [0, 1, 50, 700])
def test_cuda_soft_nms_matches_cpu(method, n):
    boxes = random_image_boxes(n, 27)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(28))
    kwargs = dict(iou_threshold=0.3, sigma=0.5, score_threshold=0.05, method=method)
    expected_keep, expected_scores = roiops.soft_nms(boxes, scores, **kwargs)
    got_keep, got_scores = roiops.soft_nms(*to_cuda(boxes, scores), **kwargs)
    assert torch.equal(got_keep.cpu(), expected_keep)
    torch.testing.assert_close(got_scores.cpu(), expected_scores, atol=1e-6, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "call",
    [
        lambda d: roiops.nms(torch.zeros(3, 4, device=d), torch.zeros(2, device=d), 0.5),
        lambda d: roiops.nms(torch.zeros(3, 4, device=d), torch.zeros(3, device=d), float("nan")),
    ],
    ids=["scores_length", "nan_threshold"],
)
def test_cuda_bad_input_raises_the_cpu_error(call):
    cpu_error = error_of(lambda: call("cpu"))
    assert cpu_error is not None
    assert error_of(lambda: call(CUDA)) == cpu_error


@pytest.mark.cuda
def test_boxes_and_scores_on_different_devices_raise_naming_them():
    with pytest.raises(ValueError, match="same device"):
        roiops.nms(torch.zeros(3, 4, device=CUDA), torch.zeros(3), 0.5)
