"""Assigning ground truth to anchors / proposals, and sampling balanced training minibatches."""

from __future__ import annotations

import torch


class Matcher:
    """Matches each prediction (column) to its best ground-truth box (row) by a quality matrix (IoU).

    __call__(Tensor[G, P]) -> Tensor[P] int64: the matched row, or
      * BELOW_LOW_THRESHOLD (-1) where the best quality is < low_threshold (background),
      * BETWEEN_THRESHOLDS (-2) where it is in [low_threshold, high_threshold) (ignored).
    With ``allow_low_quality_matches`` (RPN, Faster R-CNN section 3.1.2) every prediction that
    attains some ground truth's highest quality (ties included) keeps its best match even below
    the thresholds, so that no ground-truth box is left without a positive.

    Raises ValueError on an empty matrix (no ground truth or no predictions for an image).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: torch.Tensor) -> torch.Tensor:
        if quality.numel() == 0:
            which = "ground-truth boxes" if quality.shape[0] == 0 else "predictions"
            raise ValueError(f"cannot match: no {which} for an image")
        best_quality, matches = quality.max(dim=0)
        best_matches = matches.clone() if self.allow_low_quality_matches else None
        matches[best_quality < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (best_quality >= self.low_threshold) & (best_quality < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS
        if best_matches is not None:
            best_per_gt = quality.max(dim=1).values
            _, restored = torch.where(quality == best_per_gt[:, None])
            matches[restored] = best_matches[restored]
        return matches


class BalancedPositiveNegativeSampler:
    """Draws at most ``batch_size_per_image`` labels per image, up to ``positive_fraction`` positive.

    __call__(labels: list of Tensor[P_i]) with 1+ = positive, 0 = negative, -1 = ignore
        -> (positive masks, negative masks), lists of uint8 Tensor[P_i].
    Positives and negatives are drawn uniformly without replacement with ``torch.randperm`` on the
    labels' device, positives first, image by image (so a seeded run is reproducible, and draws
    the same elements as torchvision's sampler).
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        positive_masks, negative_masks = [], []
        for labels_per_image in labels:
            positive = torch.where(labels_per_image >= 1)[0]
            negative = torch.where(labels_per_image == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pos = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
            neg = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
            pos_mask = torch.zeros_like(labels_per_image, dtype=torch.uint8)
            neg_mask = torch.zeros_like(labels_per_image, dtype=torch.uint8)
            pos_mask[pos] = 1
            neg_mask[neg] = 1
            positive_masks.append(pos_mask)
            negative_masks.append(neg_mask)
        return positive_masks, negative_masks
