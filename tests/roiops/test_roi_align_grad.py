"""roi_align gradients: to the input (against torchvision and the definition), double backward, to
the box coordinates and second derivatives through that (against autograd through the definition),
gradcheck / gradgradcheck in float64 on every device, determinism; the CUDA kernels against the CPU
kernels, and CUDA's deterministic mode."""

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from roiops_cases import (
    CUDA,
    assert_same_memory_format,
    build,
    random_feature,
    random_rois,
    roi_cases,
    to_cuda,
)

import roiops
from roiops._reference import roi_align_reference


def args(case):
    return case["output_size"], case["spatial_scale"], case["sampling_ratio"], case["aligned"]


def input_grad(fn, x, rois, grad_out, *a):
    x = x.detach().requires_grad_(True)
    fn(x, rois, *a).backward(grad_out)
    return x.grad


@given(roi_cases())
def test_input_gradient_matches_torchvision_in_float32(case):
    x, rois = build(case)
    g = torch.Generator().manual_seed(case["seed"] + 1)
    out_shape = (rois.shape[0], x.shape[1], *case["output_size"])
    grad_out = torch.randn(out_shape, generator=g)
    ours = input_grad(roiops.roi_align, x, rois, grad_out, *args(case))
    theirs = input_grad(torchvision.ops.roi_align, x.contiguous(), rois, grad_out, *args(case))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    if case["channels_last"] and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:
        assert ours.is_contiguous(memory_format=torch.channels_last)


@given(roi_cases(max_rois=4, max_size=8, max_out=5))
def test_box_gradient_matches_autograd_through_the_definition(case):
    x, rois = build(case, torch.float64)
    # Off the kinks of the piecewise-bilinear map (samples on whole pixels, a box exactly 1 wide).
    g = torch.Generator().manual_seed(case["seed"])
    rois[:, 1:] += torch.rand(rois.shape[0], 4, generator=g, dtype=torch.float64) * 1e-3
    grad_out = torch.randn(
        (rois.shape[0], x.shape[1], *case["output_size"]), generator=g, dtype=torch.float64
    )
    coords = rois[:, 1:].clone().requires_grad_(True)
    full = torch.cat([rois[:, :1], coords], dim=1)
    roiops.roi_align(x, full, *args(case)).backward(grad_out)
    ours = coords.grad
    coords_ref = rois[:, 1:].clone().requires_grad_(True)
    full_ref = torch.cat([rois[:, :1], coords_ref], dim=1)
    out_ref = roi_align_reference(x, full_ref, *args(case))
    if out_ref.requires_grad:
        out_ref.backward(grad_out)
    expected = coords_ref.grad if coords_ref.grad is not None else torch.zeros_like(coords_ref)
    torch.testing.assert_close(ours, expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_gradcheck_and_gradgradcheck_input(aligned, channels_last, sampling_ratio, device):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    rois = torch.tensor(
        [[0, 0.3, 1.1, 4.6, 5.2], [1, -1.3, 2.2, 3.7, 9.1], [1, 2.2, 0.7, 2.9, 1.9]], dtype=torch.float64
    ).to(device)

    def fn(t):
        return roiops.roi_align(t, rois, (3, 2), 0.9, sampling_ratio, aligned)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


@given(roi_cases(max_rois=2, max_size=5, max_out=3))
def test_gradcheck_and_gradgradcheck_on_small_random_cases(case):
    x, rois = build(case, torch.float64)
    g = torch.Generator().manual_seed(case["seed"])
    # Off the kinks (samples on whole pixels or on the border, a box exactly 1 wide), which
    # finite differences would straddle.
    coords = (rois[:, 1:] + torch.rand(rois.shape[0], 4, generator=g, dtype=torch.float64) * 1e-3)
    index = rois[:, :1]
    x.requires_grad_(True)
    coords.requires_grad_(True)

    def fn(t, c):
        return roiops.roi_align(t, torch.cat([index, c], dim=1), *args(case))

    assert torch.autograd.gradcheck(fn, (x, coords))
    assert torch.autograd.gradgradcheck(fn, (x, coords))


def test_box_gradient_through_the_backward_gives_rois_gradient_of_double_backward():
    # Differentiating the input gradient with respect to the boxes (mixed second derivative).
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.zeros(2, 1, dtype=torch.float64)
    coords = torch.tensor(
        [[0.31, 1.13, 4.62, 5.27], [1.37, 0.21, 3.73, 4.11]], dtype=torch.float64, requires_grad=True
    )
    grad_out = torch.randn(2, 2, 2, 2, generator=g, dtype=torch.float64)

    def input_grad_of(c):
        out = roiops.roi_align(x, torch.cat([index, c], dim=1), 2, 1.0, 2, True)
        (gx,) = torch.autograd.grad(out, x, grad_out, create_graph=True)
        return gx

    assert torch.autograd.gradcheck(input_grad_of, (coords,))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
def test_gradcheck_and_gradgradcheck_boxes_and_input_together(aligned, channels_last, sampling_ratio, device):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 2, 7, 6, generator=g, dtype=torch.float64).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    index = torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64, device=device)
    # Boxes inside, across the border and small enough for aligned=False's 1-pixel clamp on one axis.
    coords = torch.tensor(
        [[0.31, 1.13, 4.62, 5.27], [-1.37, 2.21, 3.73, 9.11], [2.23, 0.71, 2.94, 1.93]], dtype=torch.float64
    ).to(device).requires_grad_(True)

    def fn(t, c):
        return roiops.roi_align(t, torch.cat([index, c], dim=1), (2, 3), 1.1, sampling_ratio, aligned)

    assert torch.autograd.gradcheck(fn, (x, coords))
    assert torch.autograd.gradgradcheck(fn, (x, coords))
    # The box gradient alone (the input not requiring grad).
    assert torch.autograd.gradcheck(lambda c: fn(x.detach(), c), (coords,))
    assert torch.autograd.gradgradcheck(lambda c: fn(x.detach(), c), (coords,))


def second_derivatives(fn, x, coords, index, grad_out, direction, *a):
    """d/d(grad_out, x, coords) of <direction, d<grad_out, fn(x, rois)>/d(coords)>, zeros where unused."""
    x = x.detach().requires_grad_(True)
    coords = coords.detach().requires_grad_(True)
    grad_out = grad_out.detach().requires_grad_(True)
    out = fn(x, torch.cat([index, coords], dim=1), *a)
    if not out.requires_grad:  # e.g. the definition with no samples anywhere
        return [torch.zeros_like(t) for t in (grad_out, x, coords)]
    (box_grad,) = torch.autograd.grad(out, coords, grad_out, create_graph=True)
    if not box_grad.requires_grad:
        return [torch.zeros_like(t) for t in (grad_out, x, coords)]
    grads = torch.autograd.grad((box_grad * direction).sum(), (grad_out, x, coords), allow_unused=True)
    return [torch.zeros_like(t) if d is None else d for d, t in zip(grads, (grad_out, x, coords))]


@given(roi_cases(max_rois=4, max_size=8, max_out=4))
def test_second_derivatives_through_box_gradient_match_the_definition(case):
    x, rois = build(case, torch.float64)
    g = torch.Generator().manual_seed(case["seed"])
    rois[:, 1:] += torch.rand(rois.shape[0], 4, generator=g, dtype=torch.float64) * 1e-3  # off the kinks
    out_shape = (rois.shape[0], x.shape[1], *case["output_size"])
    grad_out = torch.randn(out_shape, generator=g, dtype=torch.float64)
    direction = torch.randn(rois.shape[0], 4, generator=g, dtype=torch.float64)
    index, coords = rois[:, :1], rois[:, 1:]
    ours = second_derivatives(roiops.roi_align, x, coords, index, grad_out, direction, *args(case))
    expected = second_derivatives(roi_align_reference, x, coords, index, grad_out, direction, *args(case))
    for name, o, e in zip(("grad", "input", "boxes"), ours, expected):
        torch.testing.assert_close(o, e, atol=1e-9, rtol=1e-9, msg=lambda m, name=name: f"d/d {name}: {m}")


@given(roi_cases(max_rois=8))
def test_second_derivatives_do_not_depend_on_thread_count(case):
    x, rois = build(case, torch.float64)
    g = torch.Generator().manual_seed(case["seed"])
    out_shape = (rois.shape[0], x.shape[1], *case["output_size"])
    grad_out = torch.randn(out_shape, generator=g, dtype=torch.float64)
    direction = torch.randn(rois.shape[0], 4, generator=g, dtype=torch.float64)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(
                second_derivatives(
                    roiops.roi_align, x, rois[:, 1:], rois[:, :1], grad_out, direction, *args(case)
                )
            )
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results):
        assert torch.equal(one, two)


def test_second_derivative_to_the_input_keeps_the_memory_format_and_half_types_accumulate_in_float32():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(1, 4, 9, 9, generator=g).contiguous(memory_format=torch.channels_last)
    coords = torch.tensor([[1.3, 1.2, 7.6, 6.9]]).repeat(32, 1) + torch.rand(32, 4, generator=g)
    index = torch.zeros(32, 1)
    grad_out = torch.rand(32, 4, 3, 3, generator=g)
    direction = torch.randn(32, 4, generator=g)
    exact = second_derivatives(
        roiops.roi_align, x.double(), coords.double(), index.double(), grad_out.double(), direction.double(),
        3, 1.0, 2, True,
    )
    for dtype in (torch.float32, torch.bfloat16):
        got = second_derivatives(
            roiops.roi_align, x.to(dtype), coords.to(dtype), index.to(dtype), grad_out.to(dtype),
            direction.to(dtype), 3, 1.0, 2, True,
        )
        assert got[1].dtype == dtype and got[1].is_contiguous(memory_format=torch.channels_last)
        if dtype == torch.float32:
            for o, e in zip(got, exact):
                torch.testing.assert_close(o.double(), e, atol=1e-4, rtol=1e-4)


def test_third_derivative_through_box_gradient_raises_clearly():
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    coords = torch.tensor([[0.3, 0.4, 3.3, 3.9]], dtype=torch.float64, requires_grad=True)
    out = roiops.roi_align(x, torch.cat([torch.zeros(1, 1, dtype=torch.float64), coords], 1), 2, 1.0, 2, True)
    (gc,) = torch.autograd.grad(out.sum(), coords, create_graph=True)
    (gcc,) = torch.autograd.grad((gc * gc).sum(), coords, create_graph=True)
    with pytest.raises(NotImplementedError, match="second order only"):
        gcc.sum().backward()


def test_second_derivative_op_rejects_a_direction_of_the_wrong_shape():
    x = torch.randn(1, 1, 5, 5)
    rois = torch.tensor([[0, 0.3, 0.4, 3.3, 3.9]])
    grad = torch.randn(1, 1, 2, 2)
    with pytest.raises(ValueError, match="grad_grad_rois"):
        torch.ops.roiops.roi_align_backward_rois_backward(
            grad, [x], rois, torch.zeros(1, 4), [1.0], 2, 2, 2, True, 224.0, 4, True
        )


@given(roi_cases(max_rois=8))
def test_backward_does_not_depend_on_thread_count(case):
    x, rois = build(case)
    grad_out = torch.randn(
        (rois.shape[0], x.shape[1], *case["output_size"]), generator=torch.Generator().manual_seed(0)
    )
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = input_grad(roiops.roi_align, x, rois, grad_out, *args(case))
        torch.set_num_threads(2)
        two = input_grad(roiops.roi_align, x, rois, grad_out, *args(case))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_type_gradient_accumulates_in_float32(dtype):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 8, 12, 12, generator=g)
    # Many overlapping boxes: float16 accumulation in float16 would drift well beyond one rounding.
    rois = torch.cat([torch.zeros(64, 1), torch.tensor([[1.0, 1.0, 10.0, 10.0]]).repeat(64, 1)], dim=1)
    grad_out = torch.rand(64, 8, 7, 7, generator=g)
    ours = input_grad(roiops.roi_align, x.to(dtype), rois.to(dtype), grad_out.to(dtype), 7, 1.0, 2, True)
    exact = input_grad(
        roiops.roi_align, x.double(), rois.double(), grad_out.to(dtype).double(), 7, 1.0, 2, True
    )
    # One rounding of the float32 sum.
    torch.testing.assert_close(
        ours.double(), exact, rtol={torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype], atol=1e-3
    )


def test_empty_boxes_give_empty_output_and_zero_gradients(device):
    for channels_last in (False, True):
        x = torch.randn(2, 3, 5, 5, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        coords = torch.zeros(0, 4, device=device, requires_grad=True)
        out = roiops.roi_align(x, torch.cat([torch.zeros(0, 1, device=device), coords], 1), 3, 1.0, 2, True)
        assert out.shape == (0, 3, 3, 3)
        out.sum().backward()
        assert x.grad.shape == x.shape and (x.grad == 0).all()
        assert coords.grad.shape == (0, 4)


def test_non_finite_box_gets_no_gradient():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    coords = torch.tensor([[float("nan"), 1.0, 4.0, 4.0]], requires_grad=True)
    roiops.roi_align(x, torch.cat([torch.zeros(1, 1), coords], 1), 2, 1.0, 2, True).sum().backward()
    assert (x.grad == 0).all() and (coords.grad == 0).all()


# ---- the CUDA kernels against the CPU kernels; CUDA's deterministic mode ----------------------------


@pytest.mark.cuda
@settings(max_examples=20)
@given(roi_cases(), st.booleans())
def test_cuda_gradients_match_cpu(case, with_respect_to_boxes):
    x, rois = build(case, torch.float64)
    a = args(case)

    def grads(x, rois):
        x = x.detach().requires_grad_()
        rois = rois.detach().requires_grad_(with_respect_to_boxes)
        out = roiops.roi_align(x, rois, *a)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
        inputs = (x, rois) if with_respect_to_boxes else (x,)
        return torch.autograd.grad((out * weight).sum(), inputs, allow_unused=True)

    expected = grads(x, rois)
    got = grads(*to_cuda(x, rois))
    for g, e in zip(got, expected):
        if e is None:
            assert g is None or not g.any()
            continue
        assert_same_memory_format(g, e)
        torch.testing.assert_close(g.cpu(), e, atol=1e-9, rtol=1e-9)


@pytest.mark.cuda
@settings(max_examples=20)
@given(roi_cases(max_rois=8))
def test_cuda_second_derivatives_through_box_gradient_match_cpu(case):
    x, rois = build(case, torch.float64)
    g = torch.Generator().manual_seed(case["seed"])
    grad = torch.randn((rois.shape[0], x.shape[1], *case["output_size"]), generator=g, dtype=torch.float64)
    direction = torch.randn(rois.shape[0], 5, generator=g, dtype=torch.float64)
    op_args = ([case["spatial_scale"]], *case["output_size"], case["sampling_ratio"], case["aligned"], 224.0,
               4, True)
    op = torch.ops.roiops.roi_align_backward_rois_backward
    expected = op(grad, [x], rois, direction, *op_args)
    got = op(grad.to(CUDA), [x.to(CUDA)], *to_cuda(rois, direction), *op_args)
    torch.testing.assert_close(got[0].cpu(), expected[0], atol=1e-9, rtol=1e-9)
    assert_same_memory_format(got[1][0], expected[1][0])
    torch.testing.assert_close(got[1][0].cpu(), expected[1][0], atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(got[2].cpu(), expected[2], atol=1e-9, rtol=1e-9)


@pytest.mark.cuda
def test_cuda_second_derivative_to_the_input_is_refused_in_deterministic_mode(deterministic):
    # Its scatter uses atomics; the box and grad parts are deterministic and still run.
    x = random_feature((1, 2, 8, 8), 14, torch.float64).to(CUDA)
    rois = random_rois(4, 1, 8, 15, torch.float64).to(CUDA)
    grad = torch.randn(4, 2, 2, 2, dtype=torch.float64, device=CUDA)
    direction = torch.randn(4, 5, dtype=torch.float64, device=CUDA)
    op = torch.ops.roiops.roi_align_backward_rois_backward
    with pytest.raises(RuntimeError, match="deterministic"):
        op(grad, [x], rois, direction, [1.0], 2, 2, 2, True, 224.0, 4, True)
    first = op(grad, [x], rois, direction, [1.0], 2, 2, 2, True, 224.0, 4, False)
    second = op(grad, [x], rois, direction, [1.0], 2, 2, 2, True, 224.0, 4, False)
    assert first[1] == [] and torch.equal(first[0], second[0]) and torch.equal(first[2], second[2])


@pytest.mark.cuda
def test_cuda_deterministic_backward_equals_atomics_and_repeats_bitwise(deterministic):
    torch.use_deterministic_algorithms(False)
    x = random_feature((2, 16, 40, 56), 0).to(CUDA).requires_grad_()
    rois = random_rois(300, 2, 48, 1).to(CUDA)
    grad = torch.randn(300, 16, 7, 7, generator=torch.Generator().manual_seed(2)).to(CUDA)

    def backward():
        out = roiops.roi_align(x, rois, 7, 0.5, 2, True)
        (g,) = torch.autograd.grad(out, x, grad)
        return g

    atomic = backward()
    torch.use_deterministic_algorithms(True)
    first, second = backward(), backward()
    assert torch.equal(first, second)
    torch.testing.assert_close(first, atomic, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_cuda_deterministic_backward_matches_cpu(deterministic, channels_last, sampling_ratio, aligned):
    # Boxes of every kind the gather must find: inside, across the border, tiny, outside.
    rois = torch.cat([
        random_rois(40, 2, 16, 4, torch.float64),
        torch.tensor([[0, -3.0, -3.0, 0.2, 0.3], [1, 15.5, 11.0, 40.0, 30.0], [0, 5.0, 5.0, 5.001, 5.002],
                      [1, 100.0, 100.0, 120.0, 130.0], [0, 16.0, 12.0, 16.0, 12.0]], dtype=torch.float64),
    ])
    grad = torch.randn(rois.size(0), 5, 3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    op_args = (rois, 1.0, 3, 4, 2, 5, 13, 17, sampling_ratio, aligned, channels_last)
    expected = torch.ops.roiops.roi_align_backward(grad, *op_args)
    got = torch.ops.roiops.roi_align_backward(grad.to(CUDA), rois.to(CUDA), *op_args[1:])
    assert_same_memory_format(got, expected)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-12, rtol=1e-12)
