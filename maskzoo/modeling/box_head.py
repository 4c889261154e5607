"""Box branch: RoI feature -> class logits and class-specific box deltas; its loss and inference."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import roiops
from maskzoo.config import BoxHeadConfig
from maskzoo.modeling.mask_head import ConvReLUStack


class FPNBoxHead(nn.Module):
    """Two hidden FC layers ("2fc"): Tensor[K, C, 7, 7] -> Tensor[K, representation_size]."""

    def __init__(self, in_features: int, representation_size: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, representation_size)
        self.fc2 = nn.Linear(representation_size, representation_size)
        self.out_features = representation_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return torch.relu(self.fc2(x))


class ConvFCBoxHead(ConvReLUStack):
    """3x3 conv (+ norm) + ReLU layers, then hidden FC layers + ReLU (torchvision v2: "4conv1fc" with
    batch norm): Tensor[K, C, S, S] -> Tensor[K, representation_size]."""

    def __init__(
        self,
        in_channels: int,
        pool_size: int,
        conv_channels: tuple[int, ...],
        norm: str,
        representation_size: int,
        num_fc: int,
    ):
        super().__init__(in_channels, conv_channels, norm)
        sizes = [self.out_channels * pool_size**2] + [representation_size] * num_fc
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out_features = representation_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x).flatten(1)
        for fc in self.fcs:
            x = torch.relu(fc(x))
        return x


class Res5BoxHead(nn.Module):
    """C4 RoI head: res5 on 14x14 RoI features (stride 2 -> 7x7), then average pooling.

    ``trunk`` is shared with the C4 mask branch, which deconvolves its 7x7 output (paper Fig. 4 left).
    forward(Tensor[K, 1024, 14, 14]) -> Tensor[K, 2048]; ``features`` gives the 7x7 map itself.
    """

    def __init__(self, trunk: nn.Module, out_features: int):
        super().__init__()
        self.trunk = trunk
        self.out_features = out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))


class BoxPredictor(nn.Module):
    """Linear class logits Tensor[K, num_classes] and box deltas Tensor[K, num_classes * 4]."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.class_logits = nn.Linear(in_features, num_classes)
        self.box_deltas = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: torch.Tensor):
        x = x.flatten(1)
        return self.class_logits(x), self.box_deltas(x)


def box_loss(class_logits, box_deltas, labels, regression_targets):
    """Fast R-CNN loss -> (loss_classifier, loss_box_reg).

    class_logits: Tensor[K, C]; box_deltas: Tensor[K, 4C]; labels: Tensor[K] int64 (0 =
    background); regression_targets: Tensor[K, 4] encoded towards the matched ground truth.
    Classification: mean cross-entropy. Box: smooth L1 (beta = 1/9) of the ground-truth class's
    deltas over foreground RoIs, summed and divided by all K sampled RoIs.
    """
    classification = F.cross_entropy(class_logits, labels)
    fg = torch.where(labels > 0)[0]
    deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)[fg, labels[fg]]
    regression = (
        F.smooth_l1_loss(deltas, regression_targets[fg], beta=1 / 9, reduction="sum") / labels.numel()
    )
    return classification, regression


def box_inference(config: BoxHeadConfig, box_coder, class_logits, box_deltas, proposals, image_sizes):
    """Detections per image: (boxes Tensor[D, 4], scores Tensor[D], labels Tensor[D] int64).

    Per image: softmax over classes; every (proposal, foreground class) pair becomes a candidate with
    its class's decoded box clipped to the image; candidates with score <= score_thresh or a side
    below min_box_size are dropped; NMS per class at nms_thresh; the detections_per_img best kept,
    in decreasing score order. One native call for all images (roiops.detections_from_box_head);
    :func:`box_inference_op_chain` is the same as a chain of ops.
    """
    boxes, scores, labels = roiops.detections_from_box_head(
        class_logits, box_deltas, list(proposals), [tuple(s) for s in image_sizes], config.score_thresh,
        config.nms_thresh, config.detections_per_img, weights=box_coder.weights,
        bbox_xform_clip=box_coder.bbox_xform_clip, min_size=config.min_box_size,
    )
    return list(zip(boxes, scores, labels))


def box_inference_op_chain(
    config: BoxHeadConfig, box_coder, class_logits, box_deltas, proposals, image_sizes
):
    """:func:`box_inference` as a chain of single-output ops (softmax, decoding, the score and size
    tests, batched_nms), with the same arguments and results: the native op's detections bit for
    bit, in its order (tests/maskzoo/modeling/test_postprocess_op_chains.py).

    The export graph (maskzoo.export.DeployGraph) uses it because torch 2.14's AOTInductor cannot
    compile an op returning lists of tensors with data-dependent sizes, as
    roiops.detections_from_box_head does; eager inference keeps the faster native op.
    """
    num_classes = class_logits.shape[-1]
    counts = [p.shape[0] for p in proposals]
    probs = F.softmax(class_logits, -1)
    results = []
    per_image = zip(box_deltas.split(counts), proposals, probs.split(counts), image_sizes)
    for deltas, props, prob, size in per_image:
        # Every class's box decoded and clipped in one pass; the class count is given so that an
        # image without proposals reshapes to [0, num_classes, 4].
        boxes = box_coder.decode_single(deltas, props, image_size=size).reshape(-1, num_classes, 4)
        # Candidates are (proposal, foreground class) pairs, proposal-major: the native op's order,
        # which decides between equal scores.
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = prob[:, 1:].reshape(-1)
        labels = torch.arange(1, num_classes, device=boxes.device).repeat(prob.shape[0])
        keep = torch.where(scores > config.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = roiops.remove_small_boxes(boxes, config.min_box_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = roiops.batched_nms(boxes, scores, labels, config.nms_thresh)[: config.detections_per_img]
        results.append((boxes[keep], scores[keep], labels[keep]))
    return results
