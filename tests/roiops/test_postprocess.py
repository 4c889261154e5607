"""rpn_proposals and detections_from_box_head against torchvision's RegionProposalNetwork
(decode + filter_proposals) and RoIHeads.postprocess_detections: the same boxes, scores and labels,
bit for bit, in the same order, on random and adversarial inputs."""

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

import roiops

LEVELS = [(8, 10), (4, 5), (2, 3)]  # feature map sizes, 3 anchors per position
SIZES = [(60, 80), (45, 70)]  # two images of different sizes


def level_counts(levels=LEVELS, per_position=3):
    return [h * w * per_position for h, w in levels]


def rpn_inputs(counts, seed, n=2, dtype=torch.float32, quantize=None, size=80.0):
    """objectness [N, A], deltas [N, A, 4], anchors [A, 4] across a size x size area."""
    g = torch.Generator().manual_seed(seed)
    a = sum(counts)
    objectness = torch.randn(n, a, generator=g, dtype=torch.float64) * 2
    if quantize is not None:  # many equal logits
        objectness = (objectness * quantize).round() / quantize
    deltas = torch.randn(n, a, 4, generator=g, dtype=torch.float64) * 0.3
    centre = torch.rand(a, 2, generator=g, dtype=torch.float64) * size
    half = torch.rand(a, 2, generator=g, dtype=torch.float64) * size / 4 + 1
    anchors = torch.cat([centre - half, centre + half], 1)
    return objectness.to(dtype), deltas.to(dtype), anchors.to(dtype)


def torchvision_rpn(
    objectness, deltas, anchors, image_sizes, counts, pre, post, nms_thresh, min_size, score_thresh
):
    rpn = RegionProposalNetwork(
        None,
        None,
        0.7,
        0.3,
        256,
        0.5,
        {"training": pre, "testing": pre},
        {"training": post, "testing": post},
        nms_thresh,
        score_thresh,
    ).eval()
    rpn.min_size = min_size
    n = objectness.shape[0]
    proposals = rpn.box_coder.decode(deltas.reshape(-1, 4), [anchors] * n).view(n, -1, 4)
    return rpn.filter_proposals(proposals, objectness, image_sizes, counts)


def ours_rpn(objectness, deltas, anchors, image_sizes, counts, pre, post, nms_thresh, min_size, score_thresh):
    return roiops.rpn_proposals(
        objectness, deltas, anchors, image_sizes, counts, pre, post, nms_thresh, min_size, score_thresh
    )


def assert_same_lists(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.shape == y.shape, (x.shape, y.shape)
            assert torch.equal(x, y), (x, y)


def check_rpn(
    objectness,
    deltas,
    anchors,
    counts,
    pre=20,
    post=30,
    nms_thresh=0.7,
    min_size=1e-3,
    score_thresh=0.0,
    image_sizes=SIZES,
):
    args = (
        objectness,
        deltas,
        anchors,
        image_sizes[: objectness.shape[0]],
        counts,
        pre,
        post,
        nms_thresh,
        min_size,
        score_thresh,
    )
    ours = ours_rpn(*args)
    assert_same_lists(ours, torchvision_rpn(*args))
    return ours


# ---- rpn_proposals ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rpn_proposals_equal_torchvision_for_two_images_of_different_sizes(dtype):
    counts = level_counts()
    boxes, scores = check_rpn(*rpn_inputs(counts, 0, dtype=dtype), counts)
    assert boxes[0].shape[0] > 0 and boxes[1].shape[0] > 0
    assert boxes[0].dtype == dtype and scores[0].dtype == dtype


@given(
    seed=st.integers(0, 2**16),
    pre=st.integers(0, 300),
    post=st.integers(0, 100),
    nms_thresh=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    score_thresh=st.sampled_from([0.0, 0.4, 0.9]),
    quantize=st.sampled_from([None, 1.0]),
)
def test_rpn_proposals_equal_torchvision_on_random_settings(
    seed, pre, post, nms_thresh, score_thresh, quantize
):
    counts = level_counts()
    check_rpn(
        *rpn_inputs(counts, seed, quantize=quantize),
        counts,
        pre=pre,
        post=post,
        nms_thresh=nms_thresh,
        score_thresh=score_thresh,
    )


def test_rpn_proposals_order_equal_scores_as_torchvision():
    # Logits in steps of 1/2 and large ones (sigmoid rounds to 1.0): many equal scores, so the order
    # of ties (torch.topk's, then the position) is what is compared.
    counts = level_counts()
    objectness, deltas, anchors = rpn_inputs(counts, 3, quantize=2.0)
    objectness[:, ::7] = 40.0
    check_rpn(objectness, deltas, anchors, counts, pre=60, post=100, nms_thresh=0.9)


def test_rpn_proposals_above_1000_candidates_order_ties_as_torchvision():
    # Over 1000 candidates torchvision's batched_nms orders the kept boxes by an unstable sort.
    counts = [1200, 900, 300]
    objectness, deltas, anchors = rpn_inputs(counts, 4, n=1, quantize=1.0, size=2000.0)
    boxes, _ = check_rpn(
        objectness, deltas, anchors, counts, pre=1000, post=2000, nms_thresh=0.95, image_sizes=[(2000, 2000)]
    )
    assert boxes[0].shape[0] > 1000


def test_rpn_proposals_keep_a_score_equal_to_score_thresh():
    # sigmoid(0) is exactly 0.5: those proposals stay at score_thresh 0.5 (>=, as torchvision).
    counts = level_counts()
    objectness, deltas, anchors = rpn_inputs(counts, 13)
    objectness[:, ::2] = 0.0
    boxes, scores = check_rpn(objectness, deltas, anchors, counts, pre=60, post=100, score_thresh=0.5)
    assert bool((scores[0] == 0.5).any())


def test_rpn_proposals_of_tiny_boxes_are_empty():
    counts = level_counts()
    boxes, scores = check_rpn(*rpn_inputs(counts, 5), counts, min_size=1000.0)
    assert [b.shape for b in boxes] == [(0, 4), (0, 4)] and [s.shape for s in scores] == [(0,), (0,)]


def test_rpn_proposals_with_an_empty_level():
    counts = [240, 0, 18]
    check_rpn(*rpn_inputs(counts, 6), counts, pre=25)


@pytest.mark.parametrize("pre", [1, 5, 1000])
def test_rpn_proposals_with_more_or_fewer_anchors_than_pre_nms_top_n(pre):
    counts = level_counts()
    check_rpn(*rpn_inputs(counts, 7), counts, pre=pre, post=1000)


def test_rpn_proposals_never_return_nan_scores_or_boxes():
    # A NaN logit takes a top-k slot (torch.topk ranks NaN first) but fails the score threshold; a
    # NaN delta gives a NaN box, which fails the small-box test.
    counts = level_counts()
    objectness, deltas, anchors = rpn_inputs(counts, 8)
    objectness[:, ::3] = float("nan")
    deltas[:, 1::5, 2] = float("nan")
    boxes, scores = check_rpn(objectness, deltas, anchors, counts, pre=40)
    for b, s in zip(boxes, scores):
        assert not b.isnan().any() and not s.isnan().any() and b.shape[0] > 0


def test_rpn_proposals_accept_torchvision_layouts():
    counts = level_counts()
    objectness, deltas, anchors = rpn_inputs(counts, 9)
    expected = ours_rpn(objectness, deltas, anchors, SIZES, counts, 20, 30, 0.7, 1e-3, 0.0)
    got = roiops.rpn_proposals(
        objectness,
        deltas.reshape(-1, 4),
        [anchors.clone(), anchors.clone()],
        SIZES,
        counts,
        20,
        30,
        0.7,
        1e-3,
        0.0,
    )
    assert_same_lists(got, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rpn_proposals_in_half_precision_equal_torchvision_in_that_dtype(dtype, monkeypatch):
    # torchvision's CPU nms has no half kernel: its suppression runs on the boxes cast to float32
    # (as roiops compares half boxes). Over 1000 candidates its batched_nms takes the per-level path
    # (below, the category offsets it adds would be rounded to the half dtype).
    float_nms = torchvision.ops.boxes.nms
    monkeypatch.setattr(torchvision.ops.boxes, "nms", lambda b, s, t: float_nms(b.float(), s.float(), t))
    counts = [1200, 900, 300]
    objectness, deltas, anchors = rpn_inputs(counts, 10, n=1, dtype=dtype, size=2000.0)
    boxes, scores = check_rpn(
        objectness, deltas, anchors, counts, pre=1000, post=2000, nms_thresh=0.8, image_sizes=[(2000, 2000)]
    )
    assert boxes[0].dtype == dtype and boxes[0].shape[0] > 1000


def test_rpn_proposals_do_not_depend_on_the_thread_count():
    counts = level_counts()
    args = (*rpn_inputs(counts, 11), SIZES, counts, 50, 40, 0.7, 1e-3, 0.0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ours_rpn(*args)
    finally:
        torch.set_num_threads(before)
    assert_same_lists(ours_rpn(*args), one)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(counts=[200, 50, 1]), "num_anchors_per_level"),
        (dict(deltas=torch.zeros(2, 258, 3)), "deltas"),
        (dict(anchors=torch.zeros(7, 4)), "anchors"),
        (dict(deltas=torch.zeros(2, 258, 4, dtype=torch.float64)), "deltas"),
        (dict(image_sizes=[(60, 80)]), "image_sizes"),
        (dict(counts=[258, -1, 1]), "num_anchors_per_level"),
        (dict(pre=-1), "pre_nms_top_n"),
        (dict(nms_thresh=float("nan")), "nms_thresh"),
        (dict(objectness=torch.zeros(2, 258, dtype=torch.int64)), "objectness"),
    ],
)
def test_rpn_proposals_bad_input_names_the_argument(change, message):
    counts = level_counts()
    objectness, deltas, anchors = rpn_inputs(counts, 12)
    args = dict(
        objectness=objectness,
        deltas=deltas,
        anchors=anchors,
        image_sizes=SIZES,
        counts=counts,
        pre=20,
        post=30,
        nms_thresh=0.7,
        min_size=1e-3,
        score_thresh=0.0,
    )
    args.update(change)
    with pytest.raises((TypeError, ValueError), match=message):
        ours_rpn(**args)


def test_rpn_proposals_native_checks_guard_direct_calls():
    with pytest.raises(ValueError, match="num_anchors_per_level"):
        torch.ops.roiops.rpn_proposals(
            torch.zeros(1, 4),
            torch.zeros(1, 4, 4),
            torch.zeros(4, 4),
            [3],
            [5, 5],
            [1.0] * 4,
            4.0,
            10,
            10,
            0.7,
            0.0,
            0.0,
        )


# ---- detections_from_box_head -------------------------------------------------------------------


def box_head_inputs(counts, seed, classes=5, dtype=torch.float32, quantize=None, scale=2.0):
    """class_logits [K, C], box_deltas [K, 4C], proposals per image inside 80 x 60 images."""
    g = torch.Generator().manual_seed(seed)
    k = sum(counts)
    logits = torch.randn(k, classes, generator=g, dtype=torch.float64) * scale
    if quantize is not None:
        logits = (logits * quantize).round() / quantize
    deltas = torch.randn(k, 4 * classes, generator=g, dtype=torch.float64)
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * 50
    wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * 30 + 1
    proposals = torch.cat([xy, xy + wh], 1).to(dtype).split(counts)
    return logits.to(dtype), deltas.to(dtype), list(proposals)


def check_box_head(
    logits, deltas, proposals, score_thresh=0.05, nms_thresh=0.5, detections=100, image_sizes=SIZES
):
    heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, score_thresh, nms_thresh, detections)
    sizes = image_sizes[: len(proposals)]
    theirs = heads.postprocess_detections(logits, deltas, proposals, sizes)
    ours = roiops.detections_from_box_head(
        logits, deltas, proposals, sizes, score_thresh, nms_thresh, detections
    )
    assert_same_lists(ours, theirs)
    return ours


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_head_detections_equal_torchvision_for_two_images_of_different_sizes(dtype):
    boxes, scores, labels = check_box_head(*box_head_inputs([40, 30], 0, dtype=dtype))
    assert boxes[0].shape[0] > 0 and labels[0].dtype == torch.int64 and bool((labels[0] > 0).all())


@given(
    seed=st.integers(0, 2**16),
    classes=st.integers(1, 8),
    score_thresh=st.sampled_from([0.0, 0.05, 0.3]),
    nms_thresh=st.sampled_from([0.0, 0.5, 1.0]),
    detections=st.integers(0, 60),
    quantize=st.sampled_from([None, 1.0]),
)
def test_box_head_detections_equal_torchvision_on_random_settings(
    seed, classes, score_thresh, nms_thresh, detections, quantize
):
    check_box_head(
        *box_head_inputs([25, 17], seed, classes=classes, quantize=quantize),
        score_thresh,
        nms_thresh,
        detections,
    )


def test_box_head_detections_above_1000_candidates_order_ties_as_torchvision():
    logits, deltas, proposals = box_head_inputs([400], 1, classes=8, quantize=1.0, scale=0.5)
    boxes, _, _ = check_box_head(
        logits, deltas, proposals, score_thresh=0.0, nms_thresh=0.9, detections=5000, image_sizes=[(60, 80)]
    )
    assert boxes[0].shape[0] > 1000


def test_box_head_detections_drop_a_score_equal_to_score_thresh():
    # Two equal logits of two classes score exactly 0.5: dropped at score_thresh 0.5 (>, as
    # torchvision), kept just below it.
    logits, deltas, proposals = box_head_inputs([30, 20], 6, classes=2)
    logits[::2] = 0.0
    check_box_head(logits, deltas, proposals, score_thresh=0.5)
    _, scores, _ = check_box_head(logits, deltas, proposals, score_thresh=0.4999)
    assert bool((scores[0] == 0.5).any())


def test_box_head_detections_skip_nan_logits_and_empty_boxes():
    logits, deltas, proposals = box_head_inputs([30, 20], 2)
    logits[::4, 2] = float("nan")
    proposals[0][::3, 2] = proposals[0][::3, 0]  # zero-width proposals decode to zero-width boxes
    boxes, scores, _ = check_box_head(logits, deltas, proposals, score_thresh=0.0)
    for b, s in zip(boxes, scores):
        assert not s.isnan().any() and bool(((b[:, 2:] - b[:, :2]) >= 1e-2).all())


def test_box_head_detections_of_an_image_without_proposals():
    logits, deltas, proposals = box_head_inputs([0, 12], 3)
    boxes, scores, labels = check_box_head(logits, deltas, proposals)
    assert boxes[0].shape == (0, 4) and labels[0].shape == (0,)


def test_box_head_detections_take_the_weights_and_min_size():
    logits, deltas, proposals = box_head_inputs([30], 4)
    plain = roiops.detections_from_box_head(logits, deltas, proposals, [(60, 80)], 0.0, 0.5, 100)
    wide = roiops.detections_from_box_head(
        logits, deltas, proposals, [(60, 80)], 0.0, 0.5, 100, weights=(1.0, 1.0, 1.0, 1.0), min_size=5.0
    )
    assert not torch.equal(plain[0][0], wide[0][0])
    assert bool(((wide[0][0][:, 2:] - wide[0][0][:, :2]) >= 5.0).all())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(box_deltas=torch.zeros(70, 19)), "box_deltas"),
        (dict(proposals=[torch.zeros(40, 4)]), "proposals"),
        (dict(proposals=torch.zeros(70, 4)), "proposals"),
        (dict(image_sizes=[(60, 80)]), "image_sizes"),
        (dict(detections=-2), "detections_per_img"),
        (dict(score_thresh=None), "score_thresh"),
        (dict(class_logits=torch.zeros(70, 5, dtype=torch.float64)), "box_deltas"),
    ],
)
def test_box_head_detections_bad_input_names_the_argument(change, message):
    logits, deltas, proposals = box_head_inputs([40, 30], 5)
    args = dict(
        class_logits=logits,
        box_deltas=deltas,
        proposals=proposals,
        image_sizes=SIZES,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections=100,
    )
    args.update(change)
    d = args.pop("detections")
    with pytest.raises((TypeError, ValueError), match=message):
        roiops.detections_from_box_head(**args, detections_per_img=d)


# ---- both: devices, compile and export ----------------------------------------------------------


@pytest.mark.cuda
def test_cuda_postprocessing_matches_the_cpu():
    # CUDA's exp and sigmoid may round a last bit differently from the CPU's: close, same order.
    def assert_close_lists(ours, expected):
        for a, b in zip(ours, expected):
            for x, y in zip(a, b):
                torch.testing.assert_close(x.cpu(), y, atol=1e-4, rtol=1e-5)

    counts = level_counts()
    cpu_args = rpn_inputs(counts, 13)
    ours = ours_rpn(*[t.cuda() for t in cpu_args], SIZES, counts, 20, 30, 0.7, 1e-3, 0.0)
    assert_close_lists(ours, ours_rpn(*cpu_args, SIZES, counts, 20, 30, 0.7, 1e-3, 0.0))
    logits, deltas, proposals = box_head_inputs([40, 30], 14)
    ours = roiops.detections_from_box_head(
        logits.cuda(), deltas.cuda(), [p.cuda() for p in proposals], SIZES, 0.05, 0.5, 100
    )
    expected = roiops.detections_from_box_head(logits, deltas, proposals, SIZES, 0.05, 0.5, 100)
    assert_close_lists(ours, expected)


def postprocess_both(objectness, deltas, anchors, class_logits, box_deltas, proposals):
    """Both steps on one image: its proposals, and detections from given head outputs."""
    boxes, scores = roiops.rpn_proposals(
        objectness, deltas, anchors, [(60, 80)], [240, 60], 20, 30, 0.7, 1e-3, 0.0
    )
    dets = roiops.detections_from_box_head(class_logits, box_deltas, [proposals], [(60, 80)], 0.05, 0.5, 10)
    return boxes[0], scores[0], *[d[0] for d in dets]


def test_postprocessing_compiles_fullgraph_and_exports():
    objectness, deltas, anchors = rpn_inputs([240, 60], 15, n=1)
    logits, box_deltas, proposals = box_head_inputs([30], 16)
    args = (objectness, deltas, anchors, logits, box_deltas, proposals[0])
    expected = postprocess_both(*args)
    compiled = torch.compile(postprocess_both, fullgraph=True, backend="eager")(*args)
    assert all(torch.equal(a, b) for a, b in zip(compiled, expected))

    class Module(torch.nn.Module):
        def forward(self, *inputs):
            return postprocess_both(*inputs)

    exported = torch.export.export(Module(), args)
    assert all(torch.equal(a, b) for a, b in zip(exported.module()(*args), expected))
    assert expected[0].shape[0] > 0 and expected[2].shape[0] > 0
