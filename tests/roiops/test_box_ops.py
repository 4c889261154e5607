"""generalized_box_iou, clip_boxes_to_image, remove_small_boxes, box_convert: plain-PyTorch
references from the definitions, torchvision as an oracle, and properties."""

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st

import roiops

coords = st.floats(-200, 1200, width=32)
sizes = st.floats(0, 300, width=32)
boxes_strategy = st.lists(st.tuples(coords, coords, sizes, sizes), min_size=0, max_size=30)


def to_boxes(rows, dtype=torch.float64) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    t[:, 2:] += t[:, :2]
    return t.to(dtype)


def reference_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU by its definition, one pair at a time, in float64, with 0/0 -> 0."""
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i, (ax1, ay1, ax2, ay2) in enumerate(a.double().tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(b.double().tolist()):
            area_a = max(ax2 - ax1, 0) * max(ay2 - ay1, 0)
            area_b = max(bx2 - bx1, 0) * max(by2 - by1, 0)
            inter = max(min(ax2, bx2) - max(ax1, bx1), 0) * max(min(ay2, by2) - max(ay1, by1), 0)
            union = area_a + area_b - inter
            hull = max(max(ax2, bx2) - min(ax1, bx1), 0) * max(max(ay2, by2) - min(ay1, by1), 0)
            iou = inter / union if union > 0 else 0.0
            out[i, j] = iou - ((hull - union) / hull if hull > 0 else 0.0)
    return out


@given(boxes_strategy, boxes_strategy)
def test_generalized_box_iou_matches_definition_and_torchvision(rows1, rows2):
    a, b = to_boxes(rows1), to_boxes(rows2)
    ours = roiops.generalized_box_iou(a, b)
    torch.testing.assert_close(ours, reference_giou(a, b), atol=1e-6, rtol=0)
    theirs = torchvision.ops.generalized_box_iou(a, b)
    finite = torch.isfinite(theirs)
    torch.testing.assert_close(ours[finite], theirs[finite], atol=1e-6, rtol=0)
    assert bool(((ours >= -1) & (ours <= 1)).all())


def test_generalized_box_iou_float32_half_and_properties():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 500
    a = torch.cat([xy, xy + torch.rand(50, 2, generator=g) * 100 + 1], 1)
    giou = roiops.generalized_box_iou(a, a)
    torch.testing.assert_close(giou, giou.T)
    torch.testing.assert_close(giou.diagonal(), torch.ones(50))
    torch.testing.assert_close(giou, torchvision.ops.generalized_box_iou(a, a), atol=1e-6, rtol=0)
    half = roiops.generalized_box_iou(a.half(), a.half())
    assert half.dtype == torch.float16
    # Coordinates are rounded to half first (ulp 0.25 at 500 px), then computed in float32.
    expected = roiops.generalized_box_iou(a.half().float(), a.half().float())
    torch.testing.assert_close(half.float(), expected, atol=1e-3, rtol=0)
    # GIoU <= IoU, with equality when one box contains the other's hull.
    assert bool((giou <= roiops.box_iou(a, a) + 1e-6).all())


@given(st.lists(st.tuples(coords, coords, coords, coords), max_size=20), st.integers(0, 1000),
       st.integers(0, 1000))
def test_clip_boxes_matches_clamp_and_torchvision(rows, height, width):
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    ours = roiops.clip_boxes_to_image(boxes, (height, width))
    expected = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                            boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], 1)
    assert torch.equal(ours, expected)
    assert torch.equal(ours, torchvision.ops.clip_boxes_to_image(boxes, (height, width)))


def test_clip_boxes_keeps_leading_dims_and_does_not_modify_input():
    boxes = torch.tensor([[[-5.0, -5.0, 50.0, 70.0]], [[10.0, 20.0, 30.0, 40.0]]])
    before = boxes.clone()
    out = roiops.clip_boxes_to_image(boxes, (60, 40))
    assert out.shape == (2, 1, 4)
    assert torch.equal(out[0, 0], torch.tensor([0.0, 0.0, 40.0, 60.0]))
    assert torch.equal(out[1], before[1])
    assert torch.equal(boxes, before)


@given(boxes_strategy, st.floats(0, 100, width=32))
def test_remove_small_boxes_keeps_exactly_boxes_with_both_sides_at_least_min_size(rows, min_size):
    boxes = to_boxes(rows, torch.float32)
    keep = roiops.remove_small_boxes(boxes, min_size)
    expected = [i for i, (x1, y1, x2, y2) in enumerate(boxes.tolist())
                if x2 - x1 >= min_size and y2 - y1 >= min_size]
    assert keep.dtype == torch.int64 and keep.tolist() == expected
    assert torch.equal(keep, torchvision.ops.remove_small_boxes(boxes, min_size))


def test_remove_small_boxes_drops_nan_boxes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [float("nan"), 0.0, 10.0, 10.0], [0.0, 0.0, 0.5, 9.0]])
    assert roiops.remove_small_boxes(boxes, 1.0).tolist() == [0]


FORMATS = ["xyxy", "xywh", "cxcywh"]


def reference_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Per-format definitions through xyxy, in float64."""
    b = boxes.double()
    if in_fmt == "xyxy":
        x1, y1, x2, y2 = b.unbind(-1)
    elif in_fmt == "xywh":
        x1, y1, w, h = b.unbind(-1)
        x2, y2 = x1 + w, y1 + h
    else:
        cx, cy, w, h = b.unbind(-1)
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if out_fmt == "xyxy":
        return torch.stack([x1, y1, x2, y2], -1)
    if out_fmt == "xywh":
        return torch.stack([x1, y1, x2 - x1, y2 - y1], -1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


@pytest.mark.parametrize("in_fmt", FORMATS)
@pytest.mark.parametrize("out_fmt", FORMATS)
def test_box_convert_matches_definition_torchvision_and_round_trips(in_fmt, out_fmt):
    g = torch.Generator().manual_seed(5)
    boxes = torch.rand(3, 7, 4, generator=g, dtype=torch.float64) * 1000
    ours = roiops.box_convert(boxes, in_fmt, out_fmt)
    assert ours.shape == boxes.shape and ours.dtype == boxes.dtype
    torch.testing.assert_close(ours, reference_convert(boxes, in_fmt, out_fmt), atol=1e-9, rtol=0)
    theirs = torchvision.ops.box_convert(boxes.float(), in_fmt, out_fmt)
    # Between xywh and cxcywh torchvision recomputes the size as (x + w) - x, one float32 rounding
    # that ours skips; everywhere else the arithmetic is the same.
    rtol = 1e-5 if {in_fmt, out_fmt} == {"xywh", "cxcywh"} else 1e-6
    ours32 = roiops.box_convert(boxes.float(), in_fmt, out_fmt)
    torch.testing.assert_close(ours32, theirs, atol=1e-6, rtol=rtol)
    back = roiops.box_convert(ours, out_fmt, in_fmt)
    torch.testing.assert_close(back, boxes, atol=1e-9, rtol=0)
    if in_fmt == out_fmt:
        assert ours.data_ptr() != boxes.data_ptr()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: roiops.box_convert(torch.zeros(2, 4), "xyxy", "xyzw"), ValueError, "out_fmt"),
        (lambda: roiops.box_convert(torch.zeros(2, 4), "yxyx", "xyxy"), ValueError, "in_fmt"),
        (lambda: roiops.box_convert(torch.zeros(2, 5), "xyxy", "xywh"), ValueError, "boxes"),
        (lambda: roiops.box_convert(torch.zeros(2, 4).bool(), "xyxy", "xywh"), TypeError, "boxes"),
        (lambda: roiops.clip_boxes_to_image(torch.zeros(2, 4), 5), ValueError, "size"),
        (lambda: roiops.clip_boxes_to_image(torch.zeros(()), (5, 5)), ValueError, "boxes"),
        (lambda: roiops.remove_small_boxes(torch.zeros(2, 3), 1.0), ValueError, "boxes"),
        (lambda: roiops.remove_small_boxes(torch.zeros(2, 4), "1"), TypeError, "min_size"),
        (lambda: roiops.generalized_box_iou(torch.zeros(2, 4), torch.zeros(2, 4).double()), TypeError,
         "boxes1 and boxes2"),
        (lambda: roiops.generalized_box_iou(torch.zeros(2, 4), [[0, 0, 1, 1]]), TypeError, "boxes2"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_box_ops_compile_fullgraph():
    def f(a, b):
        a = roiops.box_convert(a, "xywh", "xyxy")
        a = roiops.clip_boxes_to_image(a, (480, 640))
        return roiops.generalized_box_iou(a, b).amax(dim=1)

    g = torch.Generator().manual_seed(6)
    a, b = torch.rand(6, 4, generator=g) * 300, torch.rand(5, 4, generator=g) * 300
    b[:, 2:] += b[:, :2]
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(a, b), f(a, b))
