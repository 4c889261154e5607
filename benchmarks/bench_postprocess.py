"""Detection post-processing against torchvision on r50_fpn inference shapes (one 800 x 1216 image):
the RPN's proposal step (roiops.rpn_proposals against torchvision's BoxCoder.decode of every anchor
plus RegionProposalNetwork.filter_proposals: 242,991 anchors over 5 levels, pre_nms_top_n 1000 per
level, post_nms_top_n 1000) and the box head's detections (roiops.detections_from_box_head against
RoIHeads.postprocess_detections: 1000 proposals x 91 classes)."""

import math

import pytest
import torch
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

import roiops

IMAGE = (800, 1216)  # (height, width), both divisible by 32 as after the batch padding
STRIDES = (4, 8, 16, 32, 64)
ANCHOR_SIZES = (32, 64, 128, 256, 512)
RATIOS = (0.5, 1.0, 2.0)
PRE_NMS_TOP_N, POST_NMS_TOP_N, RPN_NMS = 1000, 1000, 0.7
PROPOSALS, CLASSES = 1000, 91
SCORE_THRESH, BOX_NMS, DETECTIONS = 0.05, 0.5, 100


def anchor_grid():
    """Tensor[A, 4] anchors in the RPN's order (level, then y, x, then ratio) and the level sizes."""
    anchors, counts = [], []
    for stride, size in zip(STRIDES, ANCHOR_SIZES):
        h, w = math.ceil(IMAGE[0] / stride), math.ceil(IMAGE[1] / stride)
        ratios = torch.tensor(RATIOS)
        hs, ws = size * ratios.sqrt(), size / ratios.sqrt()
        cell = (torch.stack([-ws, -hs, ws, hs], 1) / 2).round()
        ys, xs = torch.meshgrid(torch.arange(h) * stride, torch.arange(w) * stride, indexing="ij")
        shifts = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4).float()
        anchors.append((shifts + cell).reshape(-1, 4))
        counts.append(h * w * len(RATIOS))
    return torch.cat(anchors), counts


@pytest.fixture(scope="module")
def rpn_data() -> dict:
    g = torch.Generator().manual_seed(0)
    anchors, counts = anchor_grid()
    a = anchors.shape[0]
    return {
        "objectness": torch.randn(1, a, generator=g) * 2,
        "deltas": torch.randn(1, a, 4, generator=g) * 0.2,
        "anchors": anchors,
        "counts": counts,
    }


@pytest.fixture(scope="module")
def box_head_data() -> dict:
    """Logits like a trained head's: background dominant on most proposals, one confident class on
    every tenth (a few hundred (proposal, class) pairs pass the 0.05 threshold)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(PROPOSALS, CLASSES, generator=g)
    logits[:, 0] += 4
    rows = torch.arange(0, PROPOSALS, 10)
    logits[rows, torch.randint(1, CLASSES, (len(rows),), generator=g)] += 8
    xy = torch.rand(PROPOSALS, 2, generator=g) * torch.tensor([IMAGE[1], IMAGE[0]]) * 0.8
    wh = torch.rand(PROPOSALS, 2, generator=g) * 250 + 10
    return {
        "class_logits": logits,
        "box_deltas": torch.randn(PROPOSALS, 4 * CLASSES, generator=g) * 0.5,
        "proposals": torch.cat([xy, xy + wh], 1),
    }


def torchvision_rpn_step(rpn, d):
    proposals = rpn.box_coder.decode(d["deltas"].reshape(-1, 4), [d["anchors"]]).view(1, -1, 4)
    return rpn.filter_proposals(proposals, d["objectness"], [IMAGE], d["counts"])


def roiops_rpn_step(d):
    return roiops.rpn_proposals(
        d["objectness"],
        d["deltas"],
        d["anchors"],
        [IMAGE],
        d["counts"],
        PRE_NMS_TOP_N,
        POST_NMS_TOP_N,
        RPN_NMS,
        1e-3,
        0.0,
    )


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
def test_rpn_proposals(benchmark, rpn_data, impl):
    benchmark.group = f"rpn proposals {rpn_data['anchors'].shape[0]} anchors, top {PRE_NMS_TOP_N} per level"
    if impl == "roiops":
        benchmark(roiops_rpn_step, rpn_data)
    else:
        rpn = RegionProposalNetwork(
            None,
            None,
            0.7,
            0.3,
            256,
            0.5,
            {"training": 2000, "testing": PRE_NMS_TOP_N},
            {"training": 2000, "testing": POST_NMS_TOP_N},
            RPN_NMS,
        ).eval()
        benchmark(torchvision_rpn_step, rpn, rpn_data)


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
def test_box_head_detections(benchmark, box_head_data, impl):
    benchmark.group = f"box head detections {PROPOSALS} proposals x {CLASSES} classes"
    d = box_head_data
    if impl == "roiops":
        benchmark(
            roiops.detections_from_box_head,
            d["class_logits"],
            d["box_deltas"],
            [d["proposals"]],
            [IMAGE],
            SCORE_THRESH,
            BOX_NMS,
            DETECTIONS,
        )
    else:
        heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, SCORE_THRESH, BOX_NMS, DETECTIONS)
        benchmark(heads.postprocess_detections, d["class_logits"], d["box_deltas"], [d["proposals"]], [IMAGE])
