"""roi_align_rotated / RoIAlignRotated: against a float64 plain-PyTorch definition, roi_align at
angle 0, the half-turn symmetry, gradients (float64 gradcheck), dtypes, layouts and bad input."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from rotated_cases import roi_align_rotated_reference

import roiops


@st.composite
def rotated_roi_cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    scale = draw(st.sampled_from([1.0, 0.5]))
    k = draw(st.integers(0, 4))
    frac = st.floats(-0.25, 1.25, width=32)
    rows = []
    for _ in range(k):
        rows.append(
            [
                draw(st.integers(0, n - 1)),
                draw(frac) * w / scale,
                draw(frac) * h / scale,
                draw(st.floats(0, 1.25, width=32)) * w / scale,
                draw(st.floats(0, 1.25, width=32)) * h / scale,
                draw(st.floats(-360, 360, width=32)),
            ]
        )
    return {
        "shape": (n, c, h, w),
        "rois": rows,
        "scale": scale,
        "output_size": (draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        "sampling_ratio": draw(st.integers(-1, 3)),
        "aligned": draw(st.booleans()),
        "channels_last": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def build(case, dtype=torch.float64):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["shape"], generator=g, dtype=torch.float64).to(dtype)
    if case["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.tensor(case["rois"], dtype=torch.float64).reshape(-1, 6).to(dtype)


def call(case, x, rois):
    return roiops.roi_align_rotated(
        x, rois, case["output_size"], case["scale"], case["sampling_ratio"], case["aligned"]
    )


@given(rotated_roi_cases())
def test_matches_definition_in_float64(case):
    x, rois = build(case)
    expected = roi_align_rotated_reference(
        x, rois, case["output_size"], case["scale"], case["sampling_ratio"], case["aligned"]
    )
    torch.testing.assert_close(call(case, x, rois), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("tiny", [1.43e-28, 1e-12, 3e-8])
def test_tiny_side_keeps_its_adaptive_sample(tiny, aligned):
    """A side a tiny fraction of a pixel long still has ceil(size / bins) = 1 sample per bin, as
    the definition says; computed as (size - 0.5) + 0.5 it would round to 0 and pool nothing."""
    x = torch.randn(1, 2, 6, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rois = torch.tensor([[0, 3.2, 2.6, 2.0, tiny, 0.0], [0, 2.5, 3.5, tiny, 3.0, 30.0]], dtype=torch.float64)
    expected = roi_align_rotated_reference(x, rois, (2, 2), 1.0, 0, aligned)
    assert expected.abs().amin() > 0
    pooled = roiops.roi_align_rotated(x, rois, 2, 1.0, 0, aligned)
    torch.testing.assert_close(pooled, expected, atol=1e-10, rtol=0)
    pooled32 = roiops.roi_align_rotated(x.float(), rois.float(), 2, 1.0, 0, aligned)
    torch.testing.assert_close(pooled32, expected.float(), atol=1e-5, rtol=0)


def random_map_and_rois(k=12, seed=0, n=2, c=5, h=15, w=17, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    rois = torch.cat(
        [
            torch.randint(0, n, (k, 1), generator=g).to(dtype),
            torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype) * 2,
            torch.rand(k, 2, generator=g, dtype=dtype) * 20 + 2,
            torch.rand(k, 1, generator=g, dtype=dtype) * 360 - 180,
        ],
        1,
    )
    return x, rois


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_angle_zero_equals_roi_align(device, aligned, sampling_ratio):
    x, rois = random_map_and_rois(seed=1)
    rois[:, 5] = 0
    xyxy = torch.cat([rois[:, :1], rois[:, 1:3] - rois[:, 3:5] / 2, rois[:, 1:3] + rois[:, 3:5] / 2], 1)
    x, rois, xyxy = x.to(device), rois.to(device), xyxy.to(device)
    out = roiops.roi_align_rotated(x, rois, (3, 4), 0.5, sampling_ratio, aligned)
    expected = roiops.roi_align(x, xyxy, (3, 4), 0.5, sampling_ratio, aligned)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_half_turn_flips_the_output(device):
    x, rois = random_map_and_rois(seed=2)
    turned = rois.clone()
    turned[:, 5] += 180
    x, rois, turned = x.to(device), rois.to(device), turned.to(device)
    out = roiops.roi_align_rotated(x, rois, (4, 3), 0.5, 2, True)
    torch.testing.assert_close(
        roiops.roi_align_rotated(x, turned, (4, 3), 0.5, 2, True), out.flip(2, 3), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize(("channels_last", "aligned"), [(False, True), (True, False)])
def test_gradcheck_float64(device, channels_last, aligned):
    x, rois = random_map_and_rois(k=3, seed=3, n=2, c=2, h=5, w=6)
    rois[:, 1:5] /= 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(device).requires_grad_()
    rois = rois.to(device)

    def f(inp):
        return roiops.roi_align_rotated(inp, rois, (2, 2), 1.0, -1, aligned)

    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=True)


def test_input_gradient_matches_definition():
    x, rois = random_map_and_rois(k=4, seed=4, n=2, c=2, h=6, w=7)
    rois[:, 1:5] /= 2
    x.requires_grad_()
    g = torch.randn(4, 2, 2, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (grad,) = torch.autograd.grad((roiops.roi_align_rotated(x, rois, (2, 3), 1.0, 2, True) * g).sum(), x)
    (expected,) = torch.autograd.grad(
        (roi_align_rotated_reference(x, rois, (2, 3), 1.0, 2, True) * g).sum(), x
    )
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)


def test_channels_last_in_channels_last_out_same_values(device):
    x, rois = random_map_and_rois(seed=6, c=20, dtype=torch.float32)
    x, rois = x.to(device), rois.to(device)
    xcl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    out_cl = roiops.roi_align_rotated(xcl, rois, 7, 0.5, 2, True)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    xn = x.clone().requires_grad_()
    out = roiops.roi_align_rotated(xn, rois, 7, 0.5, 2, True)
    assert out.is_contiguous()
    torch.testing.assert_close(out_cl, out, atol=1e-6, rtol=0)
    g = torch.randn_like(out)
    out_cl.backward(g)
    out.backward(g)
    assert xcl.grad.is_contiguous(memory_format=torch.channels_last) and xn.grad.is_contiguous()
    torch.testing.assert_close(xcl.grad, xn.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes_accumulate_in_float32(device, dtype):
    x, rois = random_map_and_rois(seed=7, c=8)
    expected = roiops.roi_align_rotated(x.to(dtype).double(), rois.to(dtype).double(), 5, 0.5, 2, True)
    xd = x.to(device, dtype).requires_grad_()
    out = roiops.roi_align_rotated(xd, rois.to(device, dtype), 5, 0.5, 2, True)
    assert out.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    torch.testing.assert_close(out.double().cpu(), expected, atol=tol, rtol=0)
    out.sum().backward()
    assert xd.grad.dtype == dtype


def test_list_of_boxes_equals_rois_tensor():
    x, rois = random_map_and_rois(seed=8)
    rois[:, 0] = torch.tensor([0.0] * 5 + [1.0] * 7)
    boxes = [rois[:5, 1:], rois[5:, 1:]]
    torch.testing.assert_close(
        roiops.roi_align_rotated(x, boxes, 3, 0.5, 2),
        roiops.roi_align_rotated(x, rois, 3, 0.5, 2),
        atol=0,
        rtol=0,
    )
    module = roiops.RoIAlignRotated(3, 0.5, 2)
    # output_size as given, as torchvision's and Detectron2's modules show it
    assert repr(module) == (
        "RoIAlignRotated(output_size=3, spatial_scale=0.5, sampling_ratio=2, aligned=True, clockwise=False)"
    )
    assert "output_size=(3, 4)" in repr(roiops.RoIAlignRotated((3, 4), 0.5, 2))
    torch.testing.assert_close(module(x, rois), roiops.roi_align_rotated(x, rois, 3, 0.5, 2), atol=0, rtol=0)


def test_clockwise_flag_negates_angles():
    x, rois = random_map_and_rois(seed=9)
    flipped = rois * torch.tensor([1, 1, 1, 1, 1, -1.0], dtype=rois.dtype)
    torch.testing.assert_close(
        roiops.roi_align_rotated(x, rois, 3, 0.5, 2, clockwise=True),
        roiops.roi_align_rotated(x, flipped, 3, 0.5, 2),
        atol=0,
        rtol=0,
    )


def test_degenerate_rois_pool_to_zero(device):
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, device=device, requires_grad=True)
    rois = torch.tensor(
        [
            [0, 4, 4, -2, 3, 0],
            [0, math.nan, 4, 2, 3, 0],
            [0, 4, 4, 2, 3, math.inf],
            [0, 4, 4, math.inf, 3, 0],
        ],
        dtype=torch.float64,
        device=device,
    )
    out = roiops.roi_align_rotated(x, rois, 2, 1.0, 2, True)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_far_outside_and_empty(device):
    x = torch.randn(1, 2, 5, 5, device=device)
    far = torch.tensor([[0, 1e6, 1e6, 10, 10, 30]], device=device)
    assert torch.equal(roiops.roi_align_rotated(x, far, 2, 1.0, 2), torch.zeros(1, 2, 2, 2, device=device))
    assert roiops.roi_align_rotated(x, torch.zeros(0, 6, device=device), 2, 1.0, 2).shape == (0, 2, 2, 2)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wide_channels_match_definition_at_any_thread_count(channels_last, dtype):
    # 40 channels: two whole 16-channel blocks and a short one in the NCHW kernel; 60 RoIs x 40
    # channels x 25 bins is enough work to run on the thread pool. RoIs reach past the map's
    # border and beyond it, so clamped and dropped samples are in the mix.
    x, rois = random_map_and_rois(k=60, seed=12, n=2, c=40, h=20, w=20, dtype=torch.float32)
    x, rois = x.to(dtype), rois.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = roi_align_rotated_reference(x, rois, (5, 5), 0.5, 2, True)
    tol = {torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]  # bfloat16: the output's rounding
    outs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(roiops.roi_align_rotated(x, rois, 5, 0.5, 2, True))
    finally:
        torch.set_num_threads(before)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert outs[0].is_contiguous(memory_format=layout)
    assert outs[0].dtype == dtype
    torch.testing.assert_close(outs[0].double(), expected, atol=tol, rtol=0)
    assert torch.equal(outs[0], outs[1])


def test_backward_is_deterministic_across_thread_counts():
    x, rois = random_map_and_rois(k=200, seed=10, n=2, c=40, h=30, w=30, dtype=torch.float32)
    g = torch.randn(200, 40, 7, 7, generator=torch.Generator().manual_seed(11))
    grads = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            xi = x.clone().requires_grad_()
            roiops.roi_align_rotated(xi, rois, 7, 0.5, 2).backward(g)
            grads.append(xi.grad)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(grads[0], grads[1])


def test_autocast_casts_the_map_up_and_the_output_back():
    x, rois = random_map_and_rois(seed=12, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roiops.roi_align_rotated(x.to(torch.bfloat16), rois, 3, 0.5, 2)
    assert out.dtype == torch.bfloat16
    expected = roiops.roi_align_rotated(x.to(torch.bfloat16).float(), rois, 3, 0.5, 2)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input": torch.zeros(2, 3, 4)}, ValueError, "input"),
        ({"input": torch.zeros(1, 3, 4, 4, dtype=torch.int64)}, TypeError, "input"),
        ({"rois": torch.zeros(2, 5)}, ValueError, "rois"),
        ({"rois": torch.zeros(2, 6, dtype=torch.int64)}, TypeError, "rois must be float32"),
        ({"rois": [torch.zeros(2, 4)]}, ValueError, r"rois\[0\]"),
        ({"output_size": 0}, ValueError, "output_size"),
        ({"spatial_scale": -1.0}, ValueError, "spatial_scale"),
        ({"sampling_ratio": 1.5}, TypeError, "sampling_ratio"),
        ({"aligned": 1}, TypeError, "aligned"),
        ({"rois": torch.tensor([[3.0, 1, 1, 2, 2, 0]])}, ValueError, "batch index"),
        ({"rois": torch.tensor([[0.5, 1, 1, 2, 2, 0]])}, ValueError, "batch index"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, match):
    args = {
        "input": torch.zeros(1, 3, 4, 4),
        "rois": torch.zeros(2, 6),
        "output_size": 2,
        "spatial_scale": 1.0,
        "sampling_ratio": 2,
        "aligned": True,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        roiops.roi_align_rotated(**args)
