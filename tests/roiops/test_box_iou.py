"""box_iou: the native kernel against a plain-PyTorch reference, torchvision, and IoU's properties."""

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st

import roiops


def reference_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU from its definition, in float64, with the documented 0/0 -> 0 convention."""
    a = a.double()
    b = b.double()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(union))


def random_boxes(n: int, generator: torch.Generator, scale: float = 100.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale / 2
    return torch.cat([xy, xy + wh], dim=1)


boxes_strategy = st.integers(0, 40).flatmap(
    lambda n: st.lists(
        st.tuples(
            st.floats(-50, 150, width=32), st.floats(-50, 150, width=32),
            st.floats(0, 80, width=32), st.floats(0, 80, width=32),
        ),
        min_size=n, max_size=n,
    )
)


def to_boxes(rows, dtype=torch.float32) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)
    t[:, 2:] += t[:, :2]
    return t.to(dtype)


@given(boxes_strategy, boxes_strategy)
def test_matches_reference_on_random_boxes(rows1, rows2):
    a, b = to_boxes(rows1), to_boxes(rows2)
    torch.testing.assert_close(roiops.box_iou(a, b).double(), reference_box_iou(a, b), atol=1e-6, rtol=0)


@given(boxes_strategy, boxes_strategy)
def test_matches_torchvision_for_boxes_with_area(rows1, rows2):
    a, b = to_boxes(rows1), to_boxes(rows2)
    # torchvision divides 0 by 0 for two empty boxes; compare where its union is positive.
    expected = torchvision.ops.box_iou(a, b)
    finite = torch.isfinite(expected)
    torch.testing.assert_close(roiops.box_iou(a, b)[finite], expected[finite], atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtypes_keep_input_dtype_and_accuracy(device, dtype):
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(37, g), random_boxes(53, g)
    out = roiops.box_iou(a.to(device, dtype), b.to(device, dtype))
    assert out.dtype == dtype and out.device.type == device.type
    # The half types round the coordinates first, then compute in float32.
    expected = reference_box_iou(a.to(dtype), b.to(dtype))
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(out.double().cpu(), expected, atol=tol, rtol=0)


def test_properties_symmetric_unit_diagonal_bounded():
    g = torch.Generator().manual_seed(1)
    a = random_boxes(200, g)
    iou = roiops.box_iou(a, a)
    torch.testing.assert_close(iou, iou.T)
    torch.testing.assert_close(iou.diagonal(), torch.ones(200, dtype=a.dtype))
    assert bool((iou >= 0).all() and (iou <= 1).all())


def test_empty_inputs_give_empty_outputs(device):
    a = torch.zeros(0, 4, device=device)
    b = torch.rand(5, 4, device=device)
    assert roiops.box_iou(a, b).shape == (0, 5)
    assert roiops.box_iou(b, a).shape == (5, 0)
    assert roiops.box_iou(a, a).shape == (0, 0)


def test_degenerate_and_nan_boxes_give_zero_not_nan():
    empty = torch.tensor([[5.0, 5.0, 5.0, 5.0], [3.0, 3.0, 1.0, 1.0]])
    nan = torch.tensor([[float("nan"), 0.0, 1.0, 1.0]])
    normal = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert roiops.box_iou(empty, empty).eq(0).all()
    assert roiops.box_iou(nan, normal).eq(0).all()
    assert roiops.box_iou(torch.cat([empty, normal]), normal)[2, 0] == 1


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(2)
    a = random_boxes(30, g).float()
    wide = torch.zeros(30, 8)
    wide[:, ::2] = a
    strided = wide[:, ::2]
    assert not strided.is_contiguous()
    torch.testing.assert_close(roiops.box_iou(strided, a), roiops.box_iou(a, a))


def test_result_independent_of_thread_count():
    g = torch.Generator().manual_seed(3)
    a, b = random_boxes(300, g).float(), random_boxes(700, g).float()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = roiops.box_iou(a, b)
        torch.set_num_threads(2)
        two = roiops.box_iou(a, b)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.zeros(3, 5), torch.zeros(2, 4)), ValueError, "boxes1"),
        ((torch.zeros(3, 4), torch.zeros(4)), ValueError, "boxes2"),
        ((torch.zeros(3, 4, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)), TypeError, "boxes1"),
        ((torch.zeros(3, 4), torch.zeros(2, 4, dtype=torch.float64)), TypeError, "boxes1 and boxes2"),
        (([[0, 0, 1, 1]], torch.zeros(2, 4)), TypeError, "boxes1"),
    ],
)
def test_bad_input_raises_naming_the_argument(args, error, match):
    with pytest.raises(error, match=match):
        roiops.box_iou(*args)


def test_compile_fullgraph_matches_eager():
    g = torch.Generator().manual_seed(4)
    a, b = random_boxes(8, g).float(), random_boxes(6, g).float()
    compiled = torch.compile(lambda x, y: roiops.box_iou(x, y).max(dim=1).values, fullgraph=True)
    torch.testing.assert_close(compiled(a, b), roiops.box_iou(a, b).max(dim=1).values)
