import subprocess
import sys

import numpy as np
import pytest
import torch

from maskzoo.viz import PALETTE, draw_predictions


def _prediction(scores=(0.9, 0.2)):
    masks = torch.zeros(2, 1, 40, 60)
    masks[0, 0, 10:20, 10:30] = 0.9
    masks[1, 0, 25:35, 40:55] = 0.9
    return {
        "boxes": torch.tensor([[10.0, 10.0, 30.0, 20.0], [40.0, 25.0, 55.0, 35.0]]),
        "labels": torch.tensor([1, 2]),
        "scores": torch.tensor(scores),
        "masks": masks,
        "keypoints": torch.tensor(
            [[[12.0, 12.0, 1.0], [0.0, 0.0, 0.0]], [[45.0, 30.0, 1.0], [50.0, 30.0, 1.0]]]
        ),
    }


def test_masks_boxes_drawn_only_for_detections_above_threshold():
    image = torch.zeros(3, 40, 60)
    out = np.asarray(draw_predictions(image, _prediction(), ["bg", "a", "b"], score_thresh=0.5))
    assert out.shape == (40, 60, 3)
    inside = out[15, 20]  # inside mask 0, away from the box edge and the label
    expected = np.round(0.45 * np.array(PALETTE[0]))
    assert np.abs(inside.astype(int) - expected).max() <= 1
    assert (out[30, 47] == 0).all()  # the low-scoring detection is not drawn
    assert (out[19, 10:31] != 0).any()  # box outline


def test_bad_image_or_mask_size_raise():
    with pytest.raises(ValueError, match="image"):
        draw_predictions(torch.zeros(40, 60), _prediction())
    with pytest.raises(ValueError, match="masks"):
        draw_predictions(torch.zeros(3, 20, 60), _prediction())


def test_keep_freed_memory_applies_on_glibc():
    code = "from maskzoo.runtime import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")
