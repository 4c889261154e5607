"""The config fields that carry a foreign library's inference conventions (Detectron2's here)."""

import dataclasses

import torch

from maskzoo.config import TransformConfig
from maskzoo.modeling.anchors import AnchorGenerator, cell_anchors
from maskzoo.modeling.postprocess import paste_masks_at_pixel_centres
from maskzoo.modeling.transform import Transform


def test_bgr_0_255_input_is_exact_for_uint8_and_scaled_for_float():
    cfg = dataclasses.replace(
        TransformConfig(min_size=(8,), max_size=100),
        channel_order="BGR",
        pixel_scale=255.0,
        image_mean=(10.0, 20.0, 30.0),
        image_std=(1.0, 2.0, 4.0),
    )
    t = Transform(cfg).eval()
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = t([image])[0].tensors[0, :, :8, :8]  # padded to 32
    bgr = image.flip(0).float()
    expected = (bgr - torch.tensor([10.0, 20.0, 30.0])[:, None, None]) / torch.tensor([1.0, 2.0, 4.0])[
        :, None, None
    ]
    assert torch.equal(got, expected)
    as_float = t([image.float() / 255])[0].tensors[0, :, :8, :8]
    torch.testing.assert_close(as_float, expected, atol=1e-4, rtol=0)


def test_exact_anchors_are_unrounded_and_use_the_given_strides():
    exact = cell_anchors((32,), (0.5, 1.0, 2.0), rounded=False)
    w = (32**2 / 0.5) ** 0.5
    torch.testing.assert_close(exact[0], torch.tensor([-w / 2, -0.5 * w / 2, w / 2, 0.5 * w / 2]))
    assert not torch.equal(exact, cell_anchors((32,), (0.5, 1.0, 2.0)))  # torchvision rounds
    gen = AnchorGenerator(((32,), (64,)), (1.0,), strides=(4, 64), rounded=False)
    batch = torch.zeros(1, 3, 288, 288)
    # A 5 x 5 map on a 288 px batch: stride 64 as given, not 288 // 5 = 57.
    anchors = gen(batch, [torch.zeros(1, 1, 72, 72), torch.zeros(1, 1, 5, 5)])
    assert anchors.shape == (72 * 72 + 25, 4)
    torch.testing.assert_close(anchors[-1], torch.tensor([256 - 32.0, 256 - 32.0, 256 + 32.0, 256 + 32.0]))


def test_pixel_centre_pasting_covers_exactly_the_box():
    masks = torch.ones(1, 4, 4)
    boxes = torch.tensor([[2.0, 1.0, 6.0, 5.0]])
    pasted = paste_masks_at_pixel_centres(masks, boxes, (8, 8))[0]
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[1:5, 2:6] = True
    assert (pasted[inside] == 1).all()
    # Pixel centres half a mask cell outside the box get half the edge value; further out 0.
    assert (pasted[~inside] < 0.5 + 1e-6).all() and pasted[7, 7] == 0 and pasted[0, 0] == 0
