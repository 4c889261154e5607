"""The small detector the deployment tests (export, torch.compile) run: r18_fpn with images
resized to 160 px, random weights with realistic frozen batch norms, and a score threshold that
lets blob images through and rejects noise; its test images; and the comparison of detections
with eager's (boxes 1e-3 px, scores 1e-4, labels equal, masks IoU > 0.99)."""

import numpy as np
import torch

import maskzoo
from benchmarks._frozen_norms import randomize_frozen_norms
from maskzoo.modeling.backbone import FrozenBatchNorm2d


def small_r18_fpn() -> torch.nn.Module:
    torch.manual_seed(0)
    m = maskzoo.build("r18_fpn", min_size=160, max_size=256, box_score_thresh=0.05)
    return randomize_frozen_norms(m, FrozenBatchNorm2d, seed=0).eval()


def blobs(g: torch.Generator, h: int, w: int) -> torch.Tensor:
    """Tensor[3, h, w]: four flat-coloured 30 x 40 rectangles on black."""
    image = torch.zeros(3, h, w)
    for _ in range(4):
        y, x = (
            int(torch.randint(0, h - 20, (1,), generator=g)),
            int(torch.randint(0, w - 20, (1,), generator=g)),
        )
        image[:, y : y + 30, x : x + 40] = torch.rand(3, 1, 1, generator=g)
    return image


def assert_same_detections(outputs, expected: dict) -> None:
    """outputs: (boxes, labels, scores, masks), tensors or arrays; expected: eager's dict."""
    boxes, labels, scores, masks = (torch.as_tensor(np.asarray(o)) for o in outputs)
    assert boxes.shape == expected["boxes"].shape
    torch.testing.assert_close(boxes, expected["boxes"], rtol=0, atol=1e-3)
    torch.testing.assert_close(scores, expected["scores"], rtol=0, atol=1e-4)
    assert torch.equal(labels, expected["labels"])
    assert masks.shape == expected["masks"].shape
    a, b = masks[:, 0] > 0.5, expected["masks"][:, 0] > 0.5
    inter, union = (a & b).flatten(1).sum(1), (a | b).flatten(1).sum(1)
    assert bool(((inter > 0.99 * union) | (union == 0)).all())
