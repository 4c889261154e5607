"""The rotated-box ops against Detectron2's results, saved by
tests/roiops/fixtures/make_rotated_fixtures.py (which needs Detectron2 and is run by hand)."""

import os

import pytest
import torch
from rotated_cases import iou_matrix

import roiops

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "rotated_detectron2.pt")


@pytest.fixture(scope="module")
def d2():
    return torch.load(FIXTURES, weights_only=True)


def test_fixture_file_is_small():
    assert os.path.getsize(FIXTURES) < 1 << 20


def test_iou_of_tricky_pairs_matches_detectron2_and_the_exact_oracle(d2):
    a, b = d2["iou_boxes1"], d2["iou_boxes2"]
    ours = roiops.box_iou_rotated(a, b, aligned=True)
    exact = iou_matrix(a, b).diagonal()
    # Ours is float64 geometry rounded once; Detectron2 clips in float32 with its own algorithm.
    torch.testing.assert_close(ours.double(), exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours, d2["iou"], atol=2e-4, rtol=0)


def test_iou_matrix_matches_detectron2(d2):
    ours = roiops.box_iou_rotated(d2["iou_random1"], d2["iou_random2"])
    torch.testing.assert_close(ours, d2["iou_matrix"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_keeps_what_detectron2_keeps(d2, threshold):
    name = f"{threshold}".replace(".", "p")
    boxes, scores, idxs = d2["nms_boxes"], d2["nms_scores"], d2["nms_idxs"]
    assert torch.equal(roiops.nms_rotated(boxes, scores, threshold), d2[f"keep_nms_{name}"])
    assert torch.equal(roiops.batched_nms_rotated(boxes, scores, idxs, threshold), d2[f"keep_batched_{name}"])


@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align_rotated_matches_detectron2(d2, sampling_ratio):
    x = d2["ra_input"].clone().requires_grad_()
    out = roiops.roi_align_rotated(x, d2["ra_rois"], (3, 4), 0.5, sampling_ratio, aligned=True)
    torch.testing.assert_close(out, d2[f"ra_out_s{sampling_ratio}"], atol=1e-12, rtol=0)
    (grad,) = torch.autograd.grad((out * d2["ra_grad_out"]).sum(), x)
    torch.testing.assert_close(grad, d2[f"ra_grad_s{sampling_ratio}"], atol=1e-12, rtol=0)
    module = roiops.RoIAlignRotated((3, 4), 0.5, sampling_ratio)
    torch.testing.assert_close(module(d2["ra_input"], d2["ra_rois"]), out.detach(), atol=0, rtol=0)


def test_rotated_box_coder_matches_box2box_transform_rotated(d2):
    coder = roiops.RotatedBoxCoder(weights=(10.0, 10.0, 5.0, 5.0, 2.0))
    codes = coder.encode_single(d2["coder_dst"], d2["coder_src"])
    torch.testing.assert_close(codes, d2["coder_deltas"], atol=1e-12, rtol=0)
    torch.testing.assert_close(
        coder.decode_single(d2["coder_codes"], d2["coder_src"]), d2["coder_decoded"], atol=1e-9, rtol=0
    )
