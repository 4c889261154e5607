"""BoxCoder: the R-CNN (dx, dy, dw, dh) parameterization against its formula, torchvision's BoxCoder
(bit for bit) and the encode/decode round trip."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

import roiops


def random_boxes(n: int, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 800
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 300 + 1
    return torch.cat([xy, xy + wh], 1).to(dtype)


# Every weight different: a coder that swaps x and y, or the centre and size weights, fails.
ASYMMETRIC_WEIGHTS = (20.0, 10.0, 7.0, 3.0)


def reference_encode(gt: torch.Tensor, p: torch.Tensor, weights) -> torch.Tensor:
    """The formula of Girshick et al. 2014 (appendix C) with weights, in float64."""
    gt, p = gt.double(), p.double()
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
    wx, wy, ww, wh = weights
    return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph,
                        ww * torch.log(gw / pw), wh * torch.log(gh / ph)], 1)


@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), ASYMMETRIC_WEIGHTS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_matches_formula_and_torchvision_bitwise(weights, dtype):
    g = torch.Generator().manual_seed(0)
    gt, p = random_boxes(500, g, dtype), random_boxes(500, g, dtype)
    ours = roiops.BoxCoder(weights).encode(gt, p)
    assert ours.dtype == dtype and ours.shape == (500, 4)
    torch.testing.assert_close(ours.double(), reference_encode(gt, p, weights), atol=1e-4, rtol=1e-5)
    theirs = TorchvisionBoxCoder(weights).encode_single(gt, p)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("num_classes", [1, 3, 91])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_decode_class_specific_layout_matches_torchvision_bitwise(num_classes, dtype):
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(64, g, torch.float32)
    codes = (torch.randn(64, 4 * num_classes, generator=g) * 2).to(dtype)
    codes[::7, 2::4] = 10.0  # beyond bbox_xform_clip * ww: exercises the clamp
    ours, theirs = roiops.BoxCoder(), TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0))
    # decode_single: [N, 4C]; decode: [N, C, 4]; boxes converted to the codes' dtype.
    single = ours.decode_single(codes, boxes)
    assert single.dtype == dtype and single.shape == (64, 4 * num_classes)
    assert torch.equal(single, theirs.decode_single(codes, boxes))
    batched = ours.decode(codes, [boxes[:40], boxes[40:]])
    assert batched.shape == (64, num_classes, 4)
    assert torch.equal(batched, theirs.decode(codes, [boxes[:40], boxes[40:]]))
    assert torch.equal(ours.decode(codes, boxes), batched)


def test_encode_of_lists_splits_per_image_like_torchvision():
    g = torch.Generator().manual_seed(2)
    gts = [random_boxes(n, g) for n in (3, 0, 5)]
    props = [random_boxes(n, g) for n in (3, 0, 5)]
    ours = roiops.BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(gts, props)
    theirs = TorchvisionBoxCoder((1.0, 1.0, 1.0, 1.0)).encode(gts, props)
    assert isinstance(ours, tuple) and [t.shape[0] for t in ours] == [3, 0, 5]
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


positive_boxes = st.lists(
    st.tuples(st.floats(-1000, 1000), st.floats(-1000, 1000), st.floats(0.5, 500), st.floats(0.5, 500)),
    min_size=1, max_size=20,
)


@given(positive_boxes, positive_boxes,
       st.sampled_from([(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), ASYMMETRIC_WEIGHTS]))
def test_decode_inverts_encode(gt_rows, p_rows, weights):
    n = min(len(gt_rows), len(p_rows))
    to_xyxy = lambda rows: torch.tensor(rows[:n], dtype=torch.float64) @ torch.tensor(  # noqa: E731
        [[1.0, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    gt, p = to_xyxy(gt_rows), to_xyxy(p_rows)
    coder = roiops.BoxCoder(weights, bbox_xform_clip=math.inf)
    back = coder.decode(coder.encode(gt, p), p)[:, 0]
    torch.testing.assert_close(back, gt, atol=1e-6, rtol=1e-9)


def test_decode_clamps_growth_at_bbox_xform_clip():
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    huge = torch.tensor([[0.0, 0.0, 1e6, 1e6]])
    out = roiops.BoxCoder().decode_single(huge, box)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_empty_inputs():
    coder = roiops.BoxCoder()
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), [torch.zeros(0, 4)]).shape == (0, 2, 4)
    assert coder.decode_single(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 8)


CODER = roiops.BoxCoder()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: roiops.BoxCoder((1.0, 1.0, 1.0)), ValueError, "weights"),
        (lambda: roiops.BoxCoder((1.0, 1.0, 0.0, 1.0)), ValueError, "weights"),
        (lambda: CODER.encode(torch.zeros(3, 4), torch.zeros(2, 4)), ValueError, "proposals"),
        (lambda: CODER.encode(torch.zeros(3, 5), torch.zeros(3, 4)), ValueError, "reference_boxes"),
        (lambda: CODER.encode([torch.zeros(3, 4)], torch.zeros(3, 4)), TypeError, "proposals"),
        (lambda: CODER.decode(torch.zeros(3, 6), torch.zeros(3, 4)), ValueError, "rel_codes"),
        (lambda: CODER.decode_single(torch.zeros(3, 8), torch.zeros(2, 4)), ValueError, "rel_codes"),
        (lambda: CODER.decode(torch.zeros(3, 4), "boxes"), TypeError, "boxes"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_coder_is_frozen_config():
    coder = roiops.BoxCoder()
    with pytest.raises(AttributeError):
        coder.weights = (1.0, 1.0, 1.0, 1.0)


def test_encode_decode_compile_fullgraph():
    coder = roiops.BoxCoder()

    def f(gt, p, codes):
        return coder.encode(gt, p).sum(1) + coder.decode(codes, p).sum((1, 2))

    g = torch.Generator().manual_seed(3)
    gt, p = random_boxes(10, g), random_boxes(10, g)
    codes = torch.randn(10, 12, generator=g)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(gt, p, codes), f(gt, p, codes))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_with_asymmetric_weights_matches_formula_and_torchvision_bitwise(dtype):
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(300, g, dtype)
    codes = (torch.randn(300, 8, generator=g, dtype=torch.float64) * 3).to(dtype)
    ours = roiops.BoxCoder(ASYMMETRIC_WEIGHTS).decode_single(codes, boxes)
    assert torch.equal(ours, TorchvisionBoxCoder(ASYMMETRIC_WEIGHTS).decode_single(codes, boxes))
    # The formula, inverted by hand: centre += (d / w_xy) * size, size *= exp(d / w_wh).
    b, c = boxes.double(), codes.double().view(300, 2, 4)
    wx, wy, ww, wh = ASYMMETRIC_WEIGHTS
    pw, ph = (b[:, 2] - b[:, 0])[:, None], (b[:, 3] - b[:, 1])[:, None]
    px, py = b[:, 0:1] + pw / 2, b[:, 1:2] + ph / 2
    clip = math.log(1000.0 / 16)
    cx, cy = px + c[..., 0] / wx * pw, py + c[..., 1] / wy * ph
    w = pw * torch.exp((c[..., 2] / ww).clamp(max=clip))
    h = ph * torch.exp((c[..., 3] / wh).clamp(max=clip))
    expected = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).view(300, 8)
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(ours.double(), expected, atol=tol, rtol=1e-5)
