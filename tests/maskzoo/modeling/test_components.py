"""Component parity with torchvision's detection components (the oracle), and their own properties:
anchors, image transform, matcher, sampler, and the four training losses."""

import pytest
import torch
import torchvision.models.detection._utils as tv_utils
from hypothesis import given
from hypothesis import strategies as st
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import fastrcnn_loss, keypointrcnn_loss, maskrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

import roiops
from maskzoo.config import TransformConfig
from maskzoo.modeling.anchors import AnchorGenerator, cell_anchors
from maskzoo.modeling.box_head import box_loss
from maskzoo.modeling.keypoint_head import keypoint_loss
from maskzoo.modeling.mask_head import mask_loss
from maskzoo.modeling.matching import BalancedPositiveNegativeSampler, Matcher
from maskzoo.modeling.rpn import BBOX_XFORM_CLIP, assign_anchors, rpn_loss
from maskzoo.modeling.transform import Transform

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))


def random_boxes(n, h=200.0, w=300.0, min_side=4.0, generator=None):
    xy = torch.rand(n, 2, generator=generator) * torch.tensor([w * 0.7, h * 0.7])
    wh = min_side + torch.rand(n, 2, generator=generator) * torch.tensor([w * 0.3, h * 0.3])
    return torch.cat([xy, xy + wh], dim=1)


# ---- anchors ---------------------------------------------------------------------------------


def test_cell_anchors_are_rounded_ratio_major_around_the_origin():
    a = cell_anchors((32,), (0.5, 1.0, 2.0))
    # ratio 0.5 (h / w): w = 32 / sqrt(0.5) = 45.25 -> half 22.6 -> 23; h = 22.6 -> half 11.3 -> 11
    assert a.tolist() == [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]


@pytest.mark.parametrize("batch_hw", [(800, 1216), (320, 416), (224, 96)])
def test_anchors_equal_torchvisions_anchor_generator(batch_hw):
    h, w = batch_hw
    strides = (4, 8, 16, 32, 64)
    feats = [torch.zeros(1, 1, -(-h // s), -(-w // s)) for s in strides]
    ours = AnchorGenerator(FPN_SIZES, (0.5, 1.0, 2.0))(torch.zeros(2, 3, h, w), feats)
    tv = TVAnchorGenerator(FPN_SIZES, ((0.5, 1.0, 2.0),) * 5)(
        ImageList(torch.zeros(2, 3, h, w), [(h, w)] * 2), feats
    )
    assert torch.equal(ours, tv[0]) and torch.equal(ours, tv[1])


def test_multi_size_level_anchors_equal_torchvisions():
    sizes = ((32, 64, 128, 256, 512),)
    feats = [torch.zeros(1, 1, 20, 26)]
    ours = AnchorGenerator(sizes, (0.5, 1.0, 2.0))(torch.zeros(1, 3, 320, 416), feats)
    tv = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),))(
        ImageList(torch.zeros(1, 3, 320, 416), [(320, 416)]), feats
    )
    assert ours.shape == (20 * 26 * 15, 4) and torch.equal(ours, tv[0])


# ---- transform -------------------------------------------------------------------------------


def make_targets(h, w, n, g):
    boxes = random_boxes(n, h, w, generator=g)
    masks = (torch.rand(n, h, w, generator=g) > 0.5).to(torch.uint8)
    kps = torch.cat([torch.rand(n, 17, 2, generator=g) * torch.tensor([w, h]), torch.ones(n, 17, 1)], dim=2)
    return {"boxes": boxes, "labels": torch.ones(n, dtype=torch.int64), "masks": masks, "keypoints": kps}


@pytest.mark.parametrize("sizes", [[(200, 300)], [(240, 320), (300, 200), (97, 131)], [(1000, 90)]])
@pytest.mark.parametrize("training", [False, True])
def test_transform_equals_generalized_rcnn_transform(sizes, training):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=g) for h, w in sizes]
    targets = [make_targets(h, w, 2, g) for h, w in sizes]
    ours = Transform(TransformConfig(min_size=(320,), max_size=512)).train(training)
    tv = GeneralizedRCNNTransform(320, 512, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).train(training)
    batch, our_targets = ours(images, targets)
    tv_batch, tv_targets = tv(images, [dict(t) for t in targets])
    assert torch.equal(batch.tensors, tv_batch.tensors)
    assert batch.image_sizes == [tuple(s) for s in tv_batch.image_sizes]
    assert batch.tensors.shape[-1] % 32 == 0 and batch.tensors.shape[-2] % 32 == 0
    for a, b in zip(our_targets, tv_targets):
        for key in ("boxes", "masks", "keypoints"):
            assert torch.equal(a[key], b[key]), key


def test_uint8_images_are_scaled_to_unit_range():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 50, 70), generator=g, dtype=torch.uint8)
    t = Transform(TransformConfig(min_size=(64,), max_size=100)).eval()
    a, _ = t([image])
    b, _ = t([image.float() / 255])
    assert torch.equal(a.tensors, b.tensors)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.rand(1, 3, 20, 20), ValueError, "images\\[0\\]"),
        (torch.rand(4, 20, 20), ValueError, "images\\[0\\]"),
        (torch.zeros(3, 20, 20, dtype=torch.int32), TypeError, "uint8"),
        (torch.zeros(3, 0, 20), ValueError, "empty"),
    ],
)
def test_transform_rejects_malformed_images(bad, error, match):
    with pytest.raises(error, match=match):
        Transform(TransformConfig())([bad])


# ---- matcher and sampler ---------------------------------------------------------------------


@given(st.integers(1, 5), st.integers(1, 40), st.booleans(), st.integers(0, 2**31 - 1))
def test_matcher_equals_torchvisions(num_gt, num_pred, low_quality, seed):
    g = torch.Generator().manual_seed(seed)
    # Quantised qualities make ties (several predictions sharing a ground truth's best) common.
    quality = (torch.rand(num_gt, num_pred, generator=g) * 10).floor() / 10
    ours = Matcher(0.7, 0.3, allow_low_quality_matches=low_quality)(quality.clone())
    tv = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=low_quality)(quality.clone())
    assert torch.equal(ours, tv)


def test_matcher_low_quality_match_keeps_every_ground_truth_matched():
    quality = torch.tensor([[0.1, 0.2, 0.05], [0.0, 0.1, 0.4]])
    assert Matcher(0.7, 0.3, allow_low_quality_matches=False)(quality.clone()).tolist() == [-1, -1, -2]
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality.clone()).tolist() == [-1, 0, 1]


def test_matcher_rejects_an_empty_matrix():
    with pytest.raises(ValueError, match="ground-truth"):
        Matcher(0.5, 0.5)(torch.zeros(0, 4))


@given(st.lists(st.integers(0, 300), min_size=1, max_size=3), st.integers(1, 64), st.floats(0.1, 0.9))
def test_sampler_draws_torchvisions_sample_with_the_same_seed(sizes, batch, fraction):
    g = torch.Generator().manual_seed(sum(sizes))
    labels = [torch.randint(-1, 3, (n,), generator=g) for n in sizes]
    torch.manual_seed(1)
    pos, neg = BalancedPositiveNegativeSampler(batch, fraction)(labels)
    torch.manual_seed(1)
    tv_pos, tv_neg = tv_utils.BalancedPositiveNegativeSampler(batch, fraction)(labels)
    for p, n, tp, tn, lab in zip(pos, neg, tv_pos, tv_neg, labels):
        assert torch.equal(p, tp) and torch.equal(n, tn)
        assert int(p.sum()) <= int(batch * fraction) and int(p.sum() + n.sum()) <= batch
        assert bool((lab[p.bool()] >= 1).all()) and bool((lab[n.bool()] == 0).all())


# ---- losses ----------------------------------------------------------------------------------


def test_box_loss_equals_fastrcnn_loss():
    g = torch.Generator().manual_seed(0)
    k, c = 64, 5
    logits = torch.randn(k, c, generator=g, requires_grad=True)
    deltas = torch.randn(k, 4 * c, generator=g, requires_grad=True)
    labels = [torch.randint(0, c, (40,), generator=g), torch.randint(0, c, (24,), generator=g)]
    targets = [torch.randn(40, 4, generator=g), torch.randn(24, 4, generator=g)]
    ours = box_loss(logits, deltas, torch.cat(labels), torch.cat(targets))
    tv = fastrcnn_loss(logits, deltas, labels, targets)
    for a, b in zip(ours, tv):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    ga = torch.autograd.grad(sum(ours), (logits, deltas))
    gb = torch.autograd.grad(sum(tv), (logits, deltas))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


def test_mask_loss_equals_maskrcnn_loss():
    g = torch.Generator().manual_seed(0)
    h, w, c, m = 60, 80, 4, 28
    gt_masks = [
        (torch.rand(3, h, w, generator=g) > 0.5).to(torch.uint8),
        (torch.rand(2, h, w, generator=g) > 0.5),
    ]
    gt_labels = [torch.tensor([1, 3, 2]), torch.tensor([2, 2])]
    proposals = [random_boxes(5, h, w, generator=g), random_boxes(4, h, w, generator=g)]
    matched = [torch.tensor([0, 1, 2, 2, 0]), torch.tensor([1, 0, 1, 1])]
    logits = torch.randn(9, c, m, m, generator=g, requires_grad=True)
    ours = mask_loss(logits, proposals, gt_masks, gt_labels, matched)
    tv = maskrcnn_loss(logits, proposals, gt_masks, gt_labels, matched)
    torch.testing.assert_close(ours, tv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(tv, logits)[0])


def test_mask_loss_uses_only_the_ground_truth_class_channel():
    g = torch.Generator().manual_seed(0)
    masks = [torch.ones(1, 40, 40, dtype=torch.uint8)]
    proposals = [torch.tensor([[5.0, 5.0, 30.0, 30.0]])]
    logits = torch.randn(1, 3, 14, 14, generator=g)
    base = mask_loss(logits, proposals, masks, [torch.tensor([2])], [torch.tensor([0])])
    logits_other = logits.clone()
    logits_other[:, :2] = 100.0  # other classes' channels change; class 2's does not
    assert mask_loss(logits_other, proposals, masks, [torch.tensor([2])], [torch.tensor([0])]) == base
    # An all-ones target inside the box: the loss is softplus(-logit) averaged.
    torch.testing.assert_close(base, torch.nn.functional.softplus(-logits[0, 2]).mean())


def test_mask_loss_of_no_foreground_is_zero_and_differentiable():
    logits = torch.randn(0, 3, 28, 28, requires_grad=True)
    loss = mask_loss(
        logits,
        [torch.zeros(0, 4)],
        [torch.zeros(1, 10, 10)],
        [torch.tensor([1])],
        [torch.zeros(0, dtype=torch.int64)],
    )
    assert loss.item() == 0.0
    loss.backward()


def test_keypoint_loss_equals_keypointrcnn_loss():
    g = torch.Generator().manual_seed(0)
    proposals = [random_boxes(6, generator=g), random_boxes(3, generator=g)]
    gt = []
    for n in (2, 3):
        xy = torch.rand(n, 17, 2, generator=g) * torch.tensor([300.0, 200.0])
        vis = torch.randint(0, 3, (n, 17, 1), generator=g).float()
        gt.append(torch.cat([xy, vis], dim=2))
    # A keypoint exactly on a box's right edge goes to the last heatmap column.
    gt[0][0, 0, 0] = proposals[0][0, 2]
    gt[0][0, 0, 2] = 2
    matched = [torch.tensor([0, 1, 0, 1, 1, 0]), torch.tensor([2, 0, 1])]
    logits = torch.randn(9, 17, 56, 56, generator=g, requires_grad=True)
    ours = keypoint_loss(logits, proposals, gt, matched)
    tv = keypointrcnn_loss(logits, proposals, gt, matched)
    torch.testing.assert_close(ours, tv, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(tv, logits)[0])


def test_rpn_loss_equals_torchvisions_with_the_same_seed():
    g = torch.Generator().manual_seed(0)
    h, w = 128, 160
    feats = [torch.zeros(1, 1, h // s, w // s) for s in (4, 8, 16, 32, 64)]
    anchors = AnchorGenerator(FPN_SIZES, (0.5, 1.0, 2.0))(torch.zeros(2, 3, h, w), feats)
    gt = [
        random_boxes(3, h, w, min_side=10, generator=g),
        torch.zeros(0, 4),
    ]
    logits = torch.randn(2, anchors.shape[0], generator=g, requires_grad=True)
    deltas = torch.randn(2, anchors.shape[0], 4, generator=g, requires_grad=True)

    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    labels, matched = assign_anchors(matcher, anchors, gt)
    coder = roiops.BoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=BBOX_XFORM_CLIP)
    torch.manual_seed(3)
    ours = rpn_loss(
        BalancedPositiveNegativeSampler(256, 0.5), coder, logits, deltas, anchors, labels, matched
    )

    tv_rpn = RegionProposalNetwork(
        TVAnchorGenerator(),
        TVRPNHead(1, 3),
        0.7,
        0.3,
        256,
        0.5,
        {"training": 1, "testing": 1},
        {"training": 1, "testing": 1},
        0.7,
    )
    tv_labels, tv_matched = tv_rpn.assign_targets_to_anchors([anchors, anchors], [{"boxes": b} for b in gt])
    for a, b in zip(labels, tv_labels):
        assert torch.equal(a, b)
    regression_targets = tv_rpn.box_coder.encode(tv_matched, [anchors, anchors])
    torch.manual_seed(3)
    tv = tv_rpn.compute_loss(logits.reshape(-1, 1), deltas.reshape(-1, 4), tv_labels, regression_targets)
    torch.testing.assert_close(ours["loss_objectness"], tv[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours["loss_rpn_box_reg"], tv[1], atol=1e-6, rtol=1e-5)
    ga = torch.autograd.grad(sum(ours.values()), (logits, deltas))
    gb = torch.autograd.grad(sum(tv), (logits, deltas))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


# ---- inference post-processing ---------------------------------------------------------------


def test_box_inference_equals_torchvisions_postprocess_detections():
    from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads

    from maskzoo.config import BoxHeadConfig
    from maskzoo.modeling.box_head import box_inference

    g = torch.Generator().manual_seed(0)
    c = 6
    proposals = [random_boxes(80, 200, 300, generator=g), random_boxes(50, 120, 90, generator=g)]
    logits = torch.randn(130, c, generator=g) * 3
    deltas = torch.randn(130, 4 * c, generator=g)
    sizes = [(200, 300), (120, 90)]
    cfg = BoxHeadConfig(score_thresh=0.05, nms_thresh=0.5, detections_per_img=40)
    coder = roiops.BoxCoder((10.0, 10.0, 5.0, 5.0), bbox_xform_clip=BBOX_XFORM_CLIP)
    ours = box_inference(cfg, coder, logits, deltas, proposals, sizes)
    tv = TVRoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 40)
    tv_boxes, tv_scores, tv_labels = tv.postprocess_detections(logits, deltas, proposals, sizes)
    for (b, s, lab), tb, ts, tl in zip(ours, tv_boxes, tv_scores, tv_labels):
        assert len(b) > 10
        torch.testing.assert_close(b, tb, atol=1e-4, rtol=0)
        torch.testing.assert_close(s, ts)
        assert torch.equal(lab, tl)


def test_heatmaps_to_keypoints_equals_torchvisions():
    from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_heatmaps_to_keypoints

    from maskzoo.modeling.keypoint_head import heatmaps_to_keypoints

    g = torch.Generator().manual_seed(0)
    rois = random_boxes(5, 200, 300, min_side=0.5, generator=g)
    maps = torch.randn(5, 17, 56, 56, generator=g)
    ours = heatmaps_to_keypoints(maps, rois)
    tv = tv_heatmaps_to_keypoints(maps, rois)
    for a, b in zip(ours, tv):
        torch.testing.assert_close(a, b)
    assert bool((ours[0][..., 0] >= rois[:, None, 0]).all()) and bool((ours[0][..., 2] == 1).all())
