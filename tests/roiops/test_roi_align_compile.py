"""The RoI pooling ops as PyTorch sees them: torch.library.opcheck of every op (schema, fake
kernel, autograd registration), torch.compile(fullgraph=True) and torch.export of a module that
uses them."""

import pytest
import torch

import roiops


def sample_rois(dtype=torch.float32):
    return torch.tensor(
        [[0, 1.2, 0.7, 6.3, 5.9], [1, 0.0, 2.5, 4.1, 7.8], [1, -2.0, -1.0, 9.5, 3.3]], dtype=dtype
    )


def maps(channels_last, dtype=torch.float32, requires_grad=False):
    x = torch.randn(2, 3, 8, 9, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_roi_align_and_its_backward_ops(channels_last):
    x = maps(channels_last, torch.float64, requires_grad=True)
    rois = sample_rois(torch.float64)
    torch.library.opcheck(torch.ops.roiops.roi_align.default, (x, rois, 0.5, 3, 2, 2, True))
    torch.library.opcheck(
        torch.ops.roiops.roi_align.default, (x, rois.requires_grad_(True), 1.0, 2, 2, -1, False)
    )
    grad = torch.randn(3, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        torch.ops.roiops.roi_align_backward.default,
        (grad, sample_rois(torch.float64), 0.5, 3, 2, 2, 3, 8, 9, 2, True, channels_last),
    )
    torch.library.opcheck(
        torch.ops.roiops.roi_align_backward_rois.default,
        (grad, x, sample_rois(torch.float64).requires_grad_(True), 0.5, 3, 2, 2, True),
    )
    direction = torch.randn(3, 5, dtype=torch.float64)
    for features_grad in (False, True):
        torch.library.opcheck(
            torch.ops.roiops.roi_align_backward_rois_backward.default,
            # Third derivatives are refused, so no argument requires grad here.
            (grad.detach(), [x.detach()], sample_rois(torch.float64), direction, [0.5], 3, 2, 2, True,
             224.0, 4, features_grad),
        )


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_roi_pool_and_its_backward(channels_last):
    x = maps(channels_last, requires_grad=True)
    torch.library.opcheck(torch.ops.roiops.roi_pool.default, (x, sample_rois(), 0.5, 3, 2))
    _, argmax = torch.ops.roiops.roi_pool(x.detach(), sample_rois(), 0.5, 3, 2)
    grad = torch.randn(3, 3, 3, 2, requires_grad=True)
    torch.library.opcheck(
        torch.ops.roiops.roi_pool_backward.default, (grad, sample_rois(), argmax, 2, 3, 8, 9, channels_last)
    )


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_multi_scale_roi_align_and_its_backward_ops(channels_last):
    feats = [maps(channels_last, requires_grad=True), maps(channels_last, requires_grad=True)[..., :4, :5]]
    feats[1] = (
        feats[1]
        .detach()
        .contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        .requires_grad_(True)
    )
    rois = sample_rois() * torch.tensor([1.0, 8, 8, 8, 8])
    args = (feats, rois, [0.5, 0.25], 2, 2, 2, False, 16.0, 4)
    torch.library.opcheck(torch.ops.roiops.multi_scale_roi_align.default, args)
    grad = torch.randn(3, 3, 2, 2, requires_grad=True)
    torch.library.opcheck(
        torch.ops.roiops.multi_scale_roi_align_backward.default,
        (grad, rois, [0.5, 0.25], 2, 2, 2, 3, [8, 4], [9, 5], 2, False, 16.0, 4, channels_last),
    )
    torch.library.opcheck(
        torch.ops.roiops.multi_scale_roi_align_backward_rois.default,
        (grad, feats, rois.requires_grad_(True), [0.5, 0.25], 2, 2, 2, False, 16.0, 4),
    )
    torch.library.opcheck(
        torch.ops.roiops.roi_align_backward_rois_backward.default,
        (grad.detach(), [f.detach() for f in feats], rois.detach(), torch.randn(3, 5), [0.5, 0.25], 2, 2, 2,
         False, 16.0, 4, True),
    )


class BoxAndMaskHead(torch.nn.Module):
    """A conv, then the three poolers, as a detector's heads use them."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.align = roiops.RoIAlign((3, 3), 0.5, 2, aligned=True)
        self.pool = roiops.RoIPool(2, 0.5)
        self.fpn = roiops.MultiScaleRoIAlign(["0", "1"], 2, 2, aligned=False)

    def forward(self, x, rois):
        f = self.conv(x)
        coarse = torch.nn.functional.avg_pool2d(f, 2)
        boxes = [rois[:2, 1:], rois[2:, 1:]]
        a = self.align(f, rois).flatten(1)
        b = self.pool(f, rois).flatten(1)
        c = self.fpn({"0": f, "1": coarse}, boxes, [(16, 18), (16, 18)]).flatten(1)
        return torch.cat([a, b, c], dim=1)


def test_compile_fullgraph_matches_eager_forward_and_backward():
    torch.manual_seed(0)
    model = BoxAndMaskHead()
    x = torch.randn(2, 3, 8, 9)
    rois = sample_rois()
    expected = model(x, rois)
    expected.square().sum().backward()
    expected_grad = model.conv.weight.grad.clone()
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x, rois)
    out.square().sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(model.conv.weight.grad, expected_grad)


@pytest.mark.slow
def test_compile_with_inductor():
    torch.manual_seed(0)
    model = BoxAndMaskHead()
    x = torch.randn(2, 3, 8, 9)
    rois = sample_rois()
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x, rois), model(x, rois))


def test_export_runs_like_eager():
    torch.manual_seed(0)
    model = BoxAndMaskHead().eval()
    x = torch.randn(2, 3, 8, 9)
    rois = sample_rois()
    exported = torch.export.export(model, (x, rois))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {
        "roiops.roi_align.default",
        "roiops.roi_pool.default",
        "roiops.multi_scale_roi_align.default",
    } <= targets
    other_rois = sample_rois() + torch.tensor([0, 0.5, 0.5, 1.0, 1.0])
    torch.testing.assert_close(exported.module()(x, other_rois), model(x, other_rois))


class ScriptableHead(BoxAndMaskHead):
    """BoxAndMaskHead with TorchScript's type annotations on forward."""

    def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        coarse = torch.nn.functional.avg_pool2d(f, 2)
        boxes = [rois[:2, 1:], rois[2:, 1:]]
        a = self.align(f, rois).flatten(1)
        b = self.pool(f, boxes).flatten(1)
        c = self.fpn({"0": f, "1": coarse}, boxes, [(16, 18), (16, 18)]).flatten(1)
        return torch.cat([a, b, c], dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("channels_last", [False, True])
def test_jit_script_of_the_modules_matches_eager_forward_and_backward(channels_last):
    torch.manual_seed(0)
    model = ScriptableHead()
    x = maps(channels_last)
    rois = sample_rois()
    expected = model(x, rois)
    expected.square().sum().backward()
    expected_grad = model.conv.weight.grad.clone()
    model.zero_grad()
    scripted = torch.jit.script(model)
    out = scripted(x, rois)
    out.square().sum().backward()
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    torch.testing.assert_close(model.conv.weight.grad, expected_grad)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_jit_script_of_the_functions_and_its_errors():
    @torch.jit.script
    def pool_both(x: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        return roiops.roi_align(x, boxes, 3, 0.5, -1, True) + roiops.roi_pool(x, boxes, [3, 3], 0.5)

    x = maps(False)
    boxes = [sample_rois()[:1, 1:], sample_rois()[1:, 1:]]
    expected = roiops.roi_align(x, boxes, 3, 0.5, -1, True) + roiops.roi_pool(x, boxes, 3, 0.5)
    torch.testing.assert_close(pool_both(x, boxes), expected, atol=0, rtol=0)
    # The Python checks do not run under TorchScript; the native ones still raise, not crash.
    with pytest.raises(Exception, match="batch index"):
        pool_both(x, [boxes[0], boxes[1], boxes[1]])
