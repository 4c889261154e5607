"""Second stage: sample RoIs for training, pool their features, delegate to the box / mask / keypoint heads.

Each head owns its loss and inference (``box_head.py``, ``mask_head.py``, ``keypoint_head.py``);
this module only decides which RoIs each head sees.
"""

from __future__ import annotations

import torch
from torch import nn

import roiops
from maskzoo.config import ModelConfig
from maskzoo.modeling.box_head import box_inference, box_loss
from maskzoo.modeling.keypoint_head import keypoint_inference, keypoint_loss
from maskzoo.modeling.mask_head import mask_inference, mask_loss
from maskzoo.modeling.matching import BalancedPositiveNegativeSampler, Matcher
from maskzoo.modeling.precision import pool_in_box_precision, to_box_precision
from maskzoo.modeling.rpn import BBOX_XFORM_CLIP


class SingleLevelPooler(nn.Module):
    """RoIAlign on one feature map (C4 models).

    forward(features dict, boxes per image, image sizes) -> Tensor[K, C, S, S].
    """

    def __init__(
        self, feature_name: str, output_size: int, spatial_scale: float, sampling_ratio: int, aligned: bool
    ):
        super().__init__()
        self.feature_name = feature_name
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, features, boxes, image_sizes):
        return roiops.roi_align(
            features[self.feature_name],
            boxes,
            (self.output_size, self.output_size),
            spatial_scale=self.spatial_scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )


class RoIHeads(nn.Module):
    """forward(features, proposals per image, image sizes, targets | None) -> (detections, losses)

    Training: the ground-truth boxes join the proposals; proposals are matched to ground truth at
    ``box.fg_iou_thresh`` / ``box.bg_iou_thresh`` and a balanced sample is drawn; the box head sees
    the sample, the mask and keypoint heads its foreground part. Inference: the box head's
    detections go on to the mask and keypoint heads.

    A mask branch without its own ``mask_head`` (C4) runs the box head's res5 trunk on its RoIs.

    Precision (:mod:`maskzoo.modeling.precision`): the poolers read the maps in box precision
    (float32 when the layers run in half precision) and return the layers' dtype; the predictors'
    outputs (class logits, box deltas, mask logits, keypoint heatmaps) go to the losses and to
    inference in box precision, so detections come out in float32.
    """

    def __init__(
        self,
        config: ModelConfig,
        box_pooler,
        box_head,
        box_predictor,
        mask_pooler=None,
        mask_head=None,
        mask_predictor=None,
        keypoint_pooler=None,
        keypoint_head=None,
        keypoint_predictor=None,
    ):
        super().__init__()
        self.config = config
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        self.keypoint_pooler = keypoint_pooler
        self.keypoint_head = keypoint_head
        self.keypoint_predictor = keypoint_predictor
        box = config.box
        self.box_coder = roiops.BoxCoder(tuple(box.bbox_reg_weights), bbox_xform_clip=BBOX_XFORM_CLIP)
        self.matcher = Matcher(box.fg_iou_thresh, box.bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(box.batch_size_per_image, box.positive_fraction)

    @property
    def has_mask(self) -> bool:
        return self.mask_predictor is not None

    @property
    def has_keypoint(self) -> bool:
        return self.keypoint_predictor is not None

    @property
    def shares_box_trunk(self) -> bool:
        """True for C4: the mask branch runs on the box head's res5 output of identically pooled RoIs."""
        mp, bp = self.mask_pooler, self.box_pooler
        return (
            self.has_mask
            and self.mask_head is None
            and isinstance(mp, SingleLevelPooler)
            and isinstance(bp, SingleLevelPooler)
            and (mp.feature_name, mp.output_size, mp.spatial_scale, mp.sampling_ratio, mp.aligned)
            == (bp.feature_name, bp.output_size, bp.spatial_scale, bp.sampling_ratio, bp.aligned)
        )

    def forward(self, features, proposals, image_sizes, targets=None):
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            proposals, matched_idxs, labels, regression_targets = self.sample_proposals(proposals, targets)
        pooled = pool_in_box_precision(self.box_pooler, features, proposals, image_sizes)
        # C4 in training: the mask branch's RoIs are the box branch's foreground RoIs, pooled the
        # same way, so the res5 output computed for the boxes is reused rather than recomputed.
        reuse_trunk = self.training and self.shares_box_trunk
        trunk_out = self.box_head.features(pooled) if reuse_trunk else None
        box_features = trunk_out.mean(dim=(2, 3)) if reuse_trunk else self.box_head(pooled)
        class_logits, box_deltas = self.box_predictor(box_features)
        class_logits, box_deltas = to_box_precision(class_logits), to_box_precision(box_deltas)

        if self.training:
            loss_classifier, loss_box_reg = box_loss(
                class_logits, box_deltas, torch.cat(labels), torch.cat(regression_targets)
            )
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            fg = [torch.where(lab > 0)[0] for lab in labels]
            fg_proposals = [p[i] for p, i in zip(proposals, fg)]
            fg_matched = [m[i] for m, i in zip(matched_idxs, fg)]
            if self.has_mask:
                if reuse_trunk:
                    logits = to_box_precision(
                        self.mask_predictor(trunk_out[torch.where(torch.cat(labels) > 0)[0]])
                    )
                else:
                    logits = self.mask_logits(features, fg_proposals, image_sizes)
                losses["loss_mask"] = mask_loss(
                    logits,
                    fg_proposals,
                    [t["masks"] for t in targets],
                    [t["labels"] for t in targets],
                    fg_matched,
                )
            if self.has_keypoint:
                logits = self.keypoint_logits(features, fg_proposals, image_sizes)
                losses["loss_keypoint"] = keypoint_loss(
                    logits, fg_proposals, [t["keypoints"] for t in targets], fg_matched
                )
            return [], losses

        detections = [
            {"boxes": b, "labels": lab, "scores": s}
            for b, s, lab in box_inference(
                self.config.box, self.box_coder, class_logits, box_deltas, proposals, image_sizes
            )
        ]
        boxes = [d["boxes"] for d in detections]
        if self.has_mask:
            masks = mask_inference(
                self.mask_logits(features, boxes, image_sizes), [d["labels"] for d in detections]
            )
            for d, m in zip(detections, masks):
                d["masks"] = m
        if self.has_keypoint:
            keypoints = keypoint_inference(
                self.keypoint_logits(features, boxes, image_sizes), boxes, self.config.keypoint.decode
            )
            for d, (kp, kp_scores) in zip(detections, keypoints):
                d["keypoints"] = kp
                d["keypoints_scores"] = kp_scores
        return detections, {}

    def mask_logits(self, features, boxes, image_sizes):
        x = pool_in_box_precision(self.mask_pooler, features, boxes, image_sizes)
        x = self.box_head.features(x) if self.mask_head is None else self.mask_head(x)
        return to_box_precision(self.mask_predictor(x))

    def keypoint_logits(self, features, boxes, image_sizes):
        x = self.keypoint_head(pool_in_box_precision(self.keypoint_pooler, features, boxes, image_sizes))
        return to_box_precision(self.keypoint_predictor(x))

    def sample_proposals(self, proposals, targets):
        """Training RoIs per image: (proposals Tensor[R, 4], matched ground truth Tensor[R] int64,
        labels Tensor[R] int64 (0 = background), regression targets Tensor[R, 4])."""
        out_proposals, out_matched, out_labels, out_targets = [], [], [], []
        for props, target in zip(proposals, targets):
            gt_boxes = target["boxes"].to(props.dtype)
            gt_labels = target["labels"]
            # Ground-truth boxes are proposals too: every object has at least one perfect RoI.
            props = torch.cat([props, gt_boxes])
            if gt_boxes.numel() == 0:
                matched = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                labels = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
            else:
                idx = self.matcher(roiops.box_iou(gt_boxes, props))
                matched = idx.clamp(min=0)
                labels = gt_labels[matched].to(torch.int64)
                labels[idx == Matcher.BELOW_LOW_THRESHOLD] = 0
                labels[idx == Matcher.BETWEEN_THRESHOLDS] = -1
            pos_mask, neg_mask = self.sampler([labels])
            keep = torch.where(pos_mask[0] | neg_mask[0])[0]
            props, matched, labels = props[keep], matched[keep], labels[keep]
            if gt_boxes.numel() == 0:
                gt_boxes = torch.zeros((1, 4), dtype=props.dtype, device=props.device)
            out_targets.append(self.box_coder.encode_single(gt_boxes[matched], props))
            out_proposals.append(props)
            out_matched.append(matched)
            out_labels.append(labels)
        return out_proposals, out_matched, out_labels, out_targets
