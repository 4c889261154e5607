"""BoxCoder gradients: the native ops' registered backward against gradcheck (float64) and against
autograd through the element-wise formulas (encode: the one the kernels replaced; decode:
torchvision's, since the replaced one could not differentiate its in-place exp with respect to the
codes)."""

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

import roiops
from roiops._reference import box_encode_reference

WEIGHTS = (20.0, 10.0, 7.0, 3.0)


def random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50 + 5
    return torch.cat([xy, xy + wh], 1)


def test_encode_gradcheck_and_gradgradcheck():
    g = torch.Generator().manual_seed(0)
    gt = random_boxes(6, g).requires_grad_()
    p = random_boxes(6, g).requires_grad_()
    coder = roiops.BoxCoder(WEIGHTS)
    assert torch.autograd.gradcheck(coder.encode_single, (gt, p))
    assert torch.autograd.gradgradcheck(coder.encode_single, (gt, p))


@pytest.mark.parametrize("image_size", [None, (60, 90)])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_decode_gradcheck_and_gradgradcheck(num_classes, image_size):
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(5, g).requires_grad_()
    codes = torch.randn(5, 4 * num_classes, generator=g, dtype=torch.float64)
    codes[0, 2] = 40.0  # past the clamp: no gradient to that code
    codes.requires_grad_()
    coder = roiops.BoxCoder(WEIGHTS, bbox_xform_clip=1.5)

    def f(c, b):
        return coder.decode_single(c, b, image_size=image_size)

    assert torch.autograd.gradcheck(f, (codes, boxes))
    assert torch.autograd.gradgradcheck(f, (codes, boxes))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_equal_autograd_through_the_elementwise_formula(dtype):
    g = torch.Generator().manual_seed(2)
    gt, p = random_boxes(300, g).to(dtype), random_boxes(300, g).to(dtype)
    codes = (torch.randn(300, 12, generator=g, dtype=torch.float64) * 3).to(dtype)
    codes[::4, 2::4] = 30.0  # clamped
    upstream_e = torch.randn(300, 4, generator=g, dtype=torch.float64).to(dtype)
    upstream_d = torch.randn(300, 12, generator=g, dtype=torch.float64).to(dtype)
    coder = roiops.BoxCoder(WEIGHTS)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}

    def grads(f, *inputs, upstream):
        inputs = [t.clone().requires_grad_() for t in inputs]
        return torch.autograd.grad(f(*inputs), inputs, upstream)

    ours = grads(coder.encode_single, gt, p, upstream=upstream_e)
    theirs = grads(lambda a, b: box_encode_reference(a, b, WEIGHTS), gt, p, upstream=upstream_e)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tol)
    ours = grads(coder.decode_single, codes, p, upstream=upstream_d)
    theirs = grads(TorchvisionBoxCoder(WEIGHTS).decode_single, codes, p, upstream=upstream_d)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **tol)


def test_decode_of_detached_inputs_needs_no_graph():
    g = torch.Generator().manual_seed(3)
    codes = torch.randn(4, 8, generator=g, requires_grad=True)
    out = roiops.BoxCoder().decode_single(codes.detach(), random_boxes(4, g).float())
    assert not out.requires_grad
    out = roiops.BoxCoder().decode_single(codes, random_boxes(4, g).float())
    assert out.requires_grad
