"""Region Proposal Network (Faster R-CNN section 3.1; FPN section 4.1): head, proposals, loss."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import roiops
from maskzoo.config import RPNConfig
from maskzoo.modeling.anchors import AnchorGenerator
from maskzoo.modeling.backbone import conv_relu
from maskzoo.modeling.matching import BalancedPositiveNegativeSampler, Matcher
from maskzoo.modeling.precision import to_box_precision

# Largest log-size change a decoded box may take: a box grows at most 1000/16 times.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then 1x1 convs for A objectness logits and 4A deltas.

    forward(list of Tensor[N, C, H_l, W_l])
        -> (list of Tensor[N, A, H_l, W_l], list of Tensor[N, 4A, H_l, W_l])
    """

    def __init__(self, channels: int, num_anchors: int, num_convs: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        # torchvision v2 stacks a second 3x3 conv + ReLU; the first keeps its name for old files.
        self.extra_convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1) for _ in range(num_convs - 1)
        )
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.box_deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]):
        logits, deltas = [], []
        for x in features:
            x = conv_relu(self.conv, x)
            for conv in self.extra_convs:
                x = conv_relu(conv, x)
            logits.append(self.objectness(x))
            deltas.append(self.box_deltas(x))
        return logits, deltas


def use_winograd_convolutions(head: RPNHead) -> None:
    """Replaces the head's 3x3 convolutions (and their ReLUs) by :class:`roiops.WinogradConv3x3`,
    in place: for inference on the CPU, where they are most of the RPN's time."""
    head.conv = roiops.WinogradConv3x3.from_conv(head.conv, relu=True)
    for i, conv in enumerate(head.extra_convs):
        head.extra_convs[i] = roiops.WinogradConv3x3.from_conv(conv, relu=True)


def flatten_predictions(logits: list[torch.Tensor], deltas: list[torch.Tensor]):
    """Per-level head outputs -> Tensor[N, total anchors] logits and Tensor[N, total anchors, 4]
    deltas, in the anchor order of :mod:`maskzoo.modeling.anchors` ((y, x) major, anchor minor)."""
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas):
        n, a, h, w = lg.shape
        flat_logits.append(lg.permute(0, 2, 3, 1).reshape(n, -1))
        flat_deltas.append(dl.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return torch.cat(flat_logits, dim=1), torch.cat(flat_deltas, dim=1)


class RPN(nn.Module):
    """forward(batch: ImageBatch, features: dict of levels, targets | None)
        -> (proposals: list of Tensor[P_i, 4] in resized-image pixels, losses: dict)

    Proposal selection per image: the ``pre_nms_top_n`` highest logits of every level, decoded,
    clipped to the image, boxes smaller than ``min_box_size`` dropped, probabilities below
    ``score_thresh`` dropped, NMS per level at ``nms_thresh``, the ``post_nms_top_n`` best kept.
    """

    def __init__(self, config: RPNConfig, anchor_generator: AnchorGenerator, head: RPNHead):
        super().__init__()
        self.config = config
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = roiops.BoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=BBOX_XFORM_CLIP)
        self.matcher = Matcher(config.fg_iou_thresh, config.bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(config.batch_size_per_image, config.positive_fraction)

    def forward(self, batch, features, targets=None):
        levels = list(features.values())
        logits, deltas = self.head(levels)
        anchors = self.anchor_generator(batch.tensors, levels)
        num_per_level = [lg.shape[1] * lg.shape[2] * lg.shape[3] for lg in logits]
        logits, deltas = flatten_predictions(logits, deltas)
        # Decoding, top-k, NMS and the losses in box precision (float32 under autocast).
        logits, deltas = to_box_precision(logits), to_box_precision(deltas)
        proposals = self.select_proposals(
            anchors, logits.detach(), deltas.detach(), batch.image_sizes, num_per_level
        )
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            labels, matched_gt = assign_anchors(self.matcher, anchors, [t["boxes"] for t in targets])
            losses = rpn_loss(self.sampler, self.box_coder, logits, deltas, anchors, labels, matched_gt)
        return proposals, losses

    def select_proposals(
        self, anchors, logits, deltas, image_sizes, num_per_level, *, op_chain: bool = False
    ):
        """Proposals per image (Tensor[P_i, 4]) from logits [N, A], deltas [N, A, 4], anchors [A, 4].

        torchvision's rules run as one native call for every level and image (roiops.rpn_proposals);
        Detectron2's rules (a converted Detectron2 file), or ``op_chain=True``, run the op chain of
        :meth:`select_proposals_op_chain`, which gives the same proposals for torchvision's rules.
        """
        cfg = self.config
        pre_nms_top_n = cfg.pre_nms_top_n_train if self.training else cfg.pre_nms_top_n_test
        post_nms_top_n = cfg.post_nms_top_n_train if self.training else cfg.post_nms_top_n_test
        if op_chain or cfg.rank_by_logit or cfg.min_box_size_strict:
            return self.select_proposals_op_chain(
                anchors, logits, deltas, image_sizes, num_per_level, pre_nms_top_n, post_nms_top_n
            )
        proposals, _ = roiops.rpn_proposals(
            logits, deltas, anchors, [tuple(s) for s in image_sizes], num_per_level, pre_nms_top_n,
            post_nms_top_n, cfg.nms_thresh, cfg.min_box_size, cfg.score_thresh,
            weights=self.box_coder.weights, bbox_xform_clip=self.box_coder.bbox_xform_clip,
        )
        return proposals

    def select_proposals_op_chain(
        self, anchors, logits, deltas, image_sizes, num_per_level, pre_nms_top_n, post_nms_top_n
    ):
        """roiops.rpn_proposals' steps as a chain of single-output ops (per-level topk, decoding,
        remove_small_boxes, the score test, batched_nms): Tensor[P_i, 4] per image.

        Two users need the chain. Detectron2's rules, which the native op does not implement: NMS
        and the final top-k rank by the logit (the float32 sigmoid of confident proposals ties, and
        the tie order changes the result), and with ``min_box_size_strict`` a side must exceed
        ``min_box_size``. And the export graph (maskzoo.export.DeployGraph): torch 2.14's
        AOTInductor cannot compile an op returning lists of tensors with data-dependent sizes, as
        rpn_proposals does. With torchvision's rules the chain returns the native op's boxes bit for
        bit, in its order (tests/maskzoo/modeling/test_postprocess_op_chains.py).
        """
        cfg = self.config
        top_idx, top_level = [], []
        offset = 0
        for level, (lg, n) in enumerate(zip(logits.split(num_per_level, dim=1), num_per_level)):
            idx = lg.topk(min(pre_nms_top_n, n), dim=1).indices
            top_idx.append(idx + offset)
            top_level.append(torch.full_like(idx, level))
            offset += n
        top_idx = torch.cat(top_idx, dim=1)
        top_level = torch.cat(top_level, dim=1)
        proposals = []
        for i, size in enumerate(image_sizes):
            idx = top_idx[i]
            boxes = self.box_coder.decode_single(deltas[i, idx], anchors[idx], image_size=size)
            scores = torch.sigmoid(logits[i, idx])
            level = top_level[i]
            # Detectron2 ranks by the logit: the sigmoid saturates, tying confident proposals in float32.
            ranks = logits[i, idx] if cfg.rank_by_logit else scores
            keep = roiops.remove_small_boxes(boxes, cfg.min_box_size)
            boxes, scores, level, ranks = boxes[keep], scores[keep], level[keep], ranks[keep]
            if cfg.min_box_size_strict:  # Detectron2: a side equal to min_box_size goes too
                keep = torch.where(
                    (boxes[:, 2] - boxes[:, 0] > cfg.min_box_size)
                    & (boxes[:, 3] - boxes[:, 1] > cfg.min_box_size)
                )[0]
                boxes, scores, level, ranks = boxes[keep], scores[keep], level[keep], ranks[keep]
            keep = torch.where(scores >= cfg.score_thresh)[0]
            boxes, scores, level, ranks = boxes[keep], scores[keep], level[keep], ranks[keep]
            keep = roiops.batched_nms(boxes, ranks, level, cfg.nms_thresh)[:post_nms_top_n]
            proposals.append(boxes[keep])
        return proposals


def assign_anchors(matcher: Matcher, anchors: torch.Tensor, gt_boxes: list[torch.Tensor]):
    """Objectness labels (float: 1 positive, 0 negative, -1 ignored) and matched ground-truth boxes
    (Tensor[A, 4]) per image. An image without ground truth has only negatives."""
    labels, matched = [], []
    for boxes in gt_boxes:
        if boxes.numel() == 0:
            labels.append(torch.zeros(anchors.shape[0], dtype=torch.float32, device=anchors.device))
            matched.append(torch.zeros_like(anchors, dtype=torch.float32))
            continue
        idx = matcher(roiops.box_iou(boxes, anchors))
        matched.append(boxes[idx.clamp(min=0)])
        lab = (idx >= 0).to(torch.float32)
        lab[idx == Matcher.BELOW_LOW_THRESHOLD] = 0.0
        lab[idx == Matcher.BETWEEN_THRESHOLDS] = -1.0
        labels.append(lab)
    return labels, matched


def rpn_loss(sampler, box_coder, logits, deltas, anchors, labels, matched_gt):
    """(loss_objectness, loss_rpn_box_reg) over a balanced sample of anchors.

    logits: Tensor[N, A]; deltas: Tensor[N, A, 4]; anchors: Tensor[A, 4]; labels, matched_gt: per
    image. Objectness: mean binary cross-entropy over the sampled anchors. Box: smooth L1
    (beta = 1/9) over the sampled positives, summed and divided by the number of sampled anchors.
    """
    pos_masks, neg_masks = sampler(labels)
    pos = torch.where(torch.cat(pos_masks))[0]
    neg = torch.where(torch.cat(neg_masks))[0]
    sampled = torch.cat([pos, neg])
    # Anchors are the same in every image: the flat index of image i's anchor a is i * A + a.
    targets = box_coder.encode_single(torch.cat(matched_gt)[pos], anchors[pos % anchors.shape[0]])
    box_loss = (
        F.smooth_l1_loss(deltas.reshape(-1, 4)[pos], targets, beta=1 / 9, reduction="sum") / sampled.numel()
    )
    objectness_loss = F.binary_cross_entropy_with_logits(
        logits.reshape(-1)[sampled], torch.cat(labels)[sampled]
    )
    return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}
