import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from maskzoo.data.transforms import (
    COCO_PERSON_KEYPOINT_FLIP_PAIRS,
    RandomHorizontalFlip,
    ResizeShortestSide,
    flip_pair_permutation,
    hflip,
)


def _sample(h=20, w=30):
    image = torch.rand(3, h, w)
    masks = torch.zeros(1, h, w, dtype=torch.uint8)
    masks[0, 2:6, 3:10] = 1
    target = {
        "boxes": torch.tensor([[3.0, 2.0, 10.0, 6.0]]),
        "masks": masks,
        "keypoints": torch.tensor([[[3.0, 2.0, 2.0], [10.0, 6.0, 1.0], [0.0, 0.0, 0.0]]]),
        "labels": torch.tensor([1]),
    }
    return image, target


def test_flip_keeps_box_equal_to_mask_extent_and_swaps_pairs():
    image, target = _sample()
    flipped_image, flipped = hflip(image, target, flip_pairs=[(0, 1)])
    assert torch.equal(flipped_image, image.flip(-1))
    ys, xs = torch.nonzero(flipped["masks"][0], as_tuple=True)
    extent = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert flipped["boxes"].tolist() == [extent]
    # Keypoint 0 (3, 2) -> x = 30 - 3 = 27, now at index 1; keypoint 1 -> x = 20 at index 0.
    assert flipped["keypoints"][0].tolist() == [[20.0, 6.0, 1.0], [27.0, 2.0, 2.0], [0.0, 0.0, 0.0]]


def test_flip_twice_is_identity():
    image, target = _sample()
    once = hflip(image, target, COCO_PERSON_KEYPOINT_FLIP_PAIRS[:1])
    twice = hflip(*once, COCO_PERSON_KEYPOINT_FLIP_PAIRS[:1])
    assert torch.equal(twice[0], image)
    for key in ("boxes", "masks", "keypoints"):
        assert torch.equal(twice[1][key], target[key])


def test_random_choices_follow_the_generator():
    image, target = _sample()
    flip = RandomHorizontalFlip(0.5)
    a = [flip(image, target, torch.Generator().manual_seed(s))[0] for s in range(8)]
    b = [flip(image, target, torch.Generator().manual_seed(s))[0] for s in range(8)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(torch.equal(x, image) for x in a) and any(not torch.equal(x, image) for x in a)


@pytest.mark.parametrize("min_size, max_size, expected", [(40, 1333, (40, 60)), (40, 45, (30, 45))])
def test_resize_shorter_side_to_choice_and_caps_longer(min_size, max_size, expected):
    image, target = _sample()
    out, t = ResizeShortestSide([min_size], max_size)(image, target, None)
    assert tuple(out.shape[-2:]) == expected and tuple(t["masks"].shape[-2:]) == expected
    scale = expected[0] / 20
    assert torch.allclose(t["boxes"], target["boxes"] * scale)
    assert torch.allclose(t["keypoints"][..., :2], target["keypoints"][..., :2] * scale)


def test_default_resize_is_the_papers_range():
    r = ResizeShortestSide()
    assert r.min_sizes == (640, 672, 704, 736, 768, 800) and r.max_size == 1333


def test_bad_flip_pairs_raise():
    with pytest.raises(ValueError, match="flip_pairs"):
        flip_pair_permutation(3, [(0, 5)])


@given(h=st.integers(4, 40), w=st.integers(4, 40), data=st.data())
def test_flip_maps_the_mask_extent_box_to_the_flipped_mask_extent(h, w, data):
    y1 = data.draw(st.integers(0, h - 1))
    y2 = data.draw(st.integers(y1 + 1, h))
    x1 = data.draw(st.integers(0, w - 1))
    x2 = data.draw(st.integers(x1 + 1, w))
    masks = torch.zeros(1, h, w, dtype=torch.uint8)
    masks[0, y1:y2, x1:x2] = 1
    kps = torch.tensor([[[x1 + 0.25, y1 + 0.5, 2.0], [x2 - 0.5, y2 - 0.25, 2.0]]])
    boxes = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)
    target = {"boxes": boxes, "masks": masks, "keypoints": kps}
    _, flipped = hflip(torch.zeros(3, h, w), target, flip_pairs=[(0, 1)])
    ys, xs = torch.nonzero(flipped["masks"][0], as_tuple=True)
    extent = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    assert flipped["boxes"][0].tolist() == extent
    # A keypoint inside pixel column c lands inside pixel column w - 1 - c.
    for (x, _, _), (fx, _, _) in zip(kps[0].tolist(), flipped["keypoints"][0].flip(0).tolist()):
        assert int(fx) == w - 1 - int(x)
