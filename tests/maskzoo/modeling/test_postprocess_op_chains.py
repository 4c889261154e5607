"""The op chains that the export graph runs (RPN.select_proposals_op_chain, box_inference_op_chain)
against the fused native ops that eager inference runs (roiops.rpn_proposals,
roiops.detections_from_box_head): the same boxes, scores and labels, bit for bit and in the same
order, so that an exported model cannot drift from the eager one."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import roiops
from maskzoo.config import BoxHeadConfig, RPNConfig
from maskzoo.modeling.anchors import AnchorGenerator
from maskzoo.modeling.box_head import box_inference, box_inference_op_chain
from maskzoo.modeling.rpn import BBOX_XFORM_CLIP, RPN, RPNHead

COUNTS = [8 * 10 * 3, 4 * 5 * 3, 0, 2 * 3 * 3]  # anchors per level, an empty level included
SIZES = [(60, 80), (45, 70)]  # two images of different sizes


def assert_identical(ours, expected):
    assert ours.dtype == expected.dtype and ours.shape == expected.shape, (ours.shape, expected.shape)
    assert torch.equal(ours, expected), (ours, expected)


def rpn_inputs(seed, quantize):
    """logits [2, A], deltas [2, A, 4], anchors [A, 4] over an 80 x 80 area, some anchors small
    enough for the size test; ``quantize`` rounds the logits to many exact ties."""
    g = torch.Generator().manual_seed(seed)
    a = sum(COUNTS)
    logits = torch.randn(2, a, generator=g) * 2
    if quantize:
        logits = logits.round()
    deltas = torch.randn(2, a, 4, generator=g) * 0.3
    centre = torch.rand(a, 2, generator=g) * 80
    half = torch.rand(a, 2, generator=g) * 20 + torch.where(torch.rand(a, 1, generator=g) < 0.2, 0.01, 1.0)
    return logits, deltas, torch.cat([centre - half, centre + half], 1)


def make_rpn(**config):
    cfg = RPNConfig(**config)
    generator = AnchorGenerator(((32,),), cfg.aspect_ratios)
    return RPN(cfg, generator, RPNHead(8, len(cfg.aspect_ratios))).eval()


@given(
    seed=st.integers(0, 2**16),
    quantize=st.booleans(),
    pre=st.sampled_from([1, 20, 500]),
    post=st.sampled_from([0, 7, 1000]),
    nms_thresh=st.sampled_from([0.0, 0.5, 0.7, 1.0]),
    score_thresh=st.sampled_from([0.0, 0.5, 0.9]),
    min_box_size=st.sampled_from([1e-3, 1.0, 5.0]),
)
def test_rpn_op_chain_equals_the_native_op(
    seed, quantize, pre, post, nms_thresh, score_thresh, min_box_size
):
    rpn = make_rpn(
        pre_nms_top_n_test=pre,
        post_nms_top_n_test=post,
        nms_thresh=nms_thresh,
        score_thresh=score_thresh,
        min_box_size=min_box_size,
    )
    logits, deltas, anchors = rpn_inputs(seed, quantize)
    native = rpn.select_proposals(anchors, logits, deltas, SIZES, COUNTS)
    chain = rpn.select_proposals(anchors, logits, deltas, SIZES, COUNTS, op_chain=True)
    assert len(chain) == len(native) == 2
    for ours, expected in zip(chain, native):
        assert_identical(ours, expected)


def test_rpn_op_chain_equals_the_native_op_on_a_busy_case():
    # Many proposals survive, tied logits among them; select_proposals' default is the native op
    # called with the config's values.
    rpn = make_rpn(pre_nms_top_n_test=100, post_nms_top_n_test=50)
    logits, deltas, anchors = rpn_inputs(0, quantize=True)
    default = rpn.select_proposals(anchors, logits, deltas, SIZES, COUNTS)
    native, _ = roiops.rpn_proposals(
        logits, deltas, anchors, SIZES, COUNTS, 100, 50, 0.7, 1e-3, 0.0, bbox_xform_clip=BBOX_XFORM_CLIP
    )
    chain = rpn.select_proposals_op_chain(anchors, logits, deltas, SIZES, COUNTS, 100, 50)
    for ours, d, n in zip(chain, default, native):
        assert n.shape[0] == 50
        assert_identical(d, n)
        assert_identical(ours, n)


def box_head_inputs(seed, counts, num_classes, peaked):
    """class_logits [K, C], box_deltas [K, 4C], one Tensor[P_i, 4] of proposals per image; ``peaked``
    gives many exact score ties, between proposals (eight distinct logit rows, repeated) and between
    the classes of a proposal (whole-number logits)."""
    g = torch.Generator().manual_seed(seed)
    k = sum(counts)
    logits = torch.randn(k, num_classes, generator=g) * (2 if peaked else 1)
    if peaked:
        logits = logits[torch.arange(k) % 8].round()
    deltas = torch.randn(k, 4 * num_classes, generator=g) * 0.5
    proposals = []
    for (h, w), n in zip(SIZES, counts):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.4, h * 0.4]) + 0.05
        proposals.append(torch.cat([xy, xy + wh], 1))
    return logits, deltas, proposals


@given(
    seed=st.integers(0, 2**16),
    counts=st.sampled_from([(40, 30), (0, 25), (60, 0)]),
    num_classes=st.sampled_from([2, 5]),
    peaked=st.booleans(),
    score_thresh=st.sampled_from([0.0, 0.05, 0.4]),
    nms_thresh=st.sampled_from([0.0, 0.5, 1.0]),
    detections_per_img=st.sampled_from([0, 10, 100]),
    min_box_size=st.sampled_from([1e-2, 2.0]),
)
def test_box_inference_op_chain_equals_the_native_op(
    seed, counts, num_classes, peaked, score_thresh, nms_thresh, detections_per_img, min_box_size
):
    cfg = BoxHeadConfig(
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        min_box_size=min_box_size,
    )
    coder = roiops.BoxCoder(cfg.bbox_reg_weights, bbox_xform_clip=BBOX_XFORM_CLIP)
    logits, deltas, proposals = box_head_inputs(seed, counts, num_classes, peaked)
    native = box_inference(cfg, coder, logits, deltas, proposals, SIZES)
    chain = box_inference_op_chain(cfg, coder, logits, deltas, proposals, SIZES)
    assert len(chain) == len(native) == 2
    for ours, expected in zip(chain, native):
        for a, b in zip(ours, expected):
            assert_identical(a, b)


@pytest.mark.parametrize("peaked", [False, True])
def test_box_inference_op_chain_equals_the_native_op_on_a_busy_case(peaked):
    # Many detections and, when peaked, many equal scores: the order between ties must agree too.
    cfg = BoxHeadConfig(score_thresh=0.05, nms_thresh=0.5, detections_per_img=30)
    coder = roiops.BoxCoder(cfg.bbox_reg_weights, bbox_xform_clip=BBOX_XFORM_CLIP)
    logits, deltas, proposals = box_head_inputs(1, (80, 50), 6, peaked)
    native = box_inference(cfg, coder, logits, deltas, proposals, SIZES)
    chain = box_inference_op_chain(cfg, coder, logits, deltas, proposals, SIZES)
    for ours, expected in zip(chain, native):
        assert expected[0].shape[0] == 30
        if peaked:
            assert len(set(expected[1].tolist())) < 30
        for a, b in zip(ours, expected):
            assert_identical(a, b)
