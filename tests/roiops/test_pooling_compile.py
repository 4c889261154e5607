"""A head using roi_align, roi_pool and MultiScaleRoIAlign together under torch.compile(fullgraph=True),
torch.export and TorchScript, against eager. (Each op's schema, fake kernel and autograd registration:
test_opcheck.py.)"""

import pytest
import torch
from roiops_cases import three_rois

import roiops


def maps(channels_last, dtype=torch.float32, requires_grad=False):
    x = torch.randn(2, 3, 8, 9, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


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
    rois = three_rois()
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
    rois = three_rois()
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x, rois), model(x, rois))


def test_export_runs_like_eager():
    torch.manual_seed(0)
    model = BoxAndMaskHead().eval()
    x = torch.randn(2, 3, 8, 9)
    rois = three_rois()
    exported = torch.export.export(model, (x, rois))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {
        "roiops.roi_align.default",
        "roiops.roi_pool.default",
        "roiops.multi_scale_roi_align.default",
    } <= targets
    other_rois = three_rois() + torch.tensor([0, 0.5, 0.5, 1.0, 1.0])
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
    rois = three_rois()
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
    boxes = [three_rois()[:1, 1:], three_rois()[1:, 1:]]
    expected = roiops.roi_align(x, boxes, 3, 0.5, -1, True) + roiops.roi_pool(x, boxes, 3, 0.5)
    torch.testing.assert_close(pool_both(x, boxes), expected, atol=0, rtol=0)
    # The Python checks do not run under TorchScript; the native ones still raise, not crash.
    with pytest.raises(Exception, match="batch index"):
        pool_both(x, [boxes[0], boxes[1], boxes[1]])
