"""Swapping torchvision.ops for roiops in working code: FX tracing (symbolic_trace,
create_feature_extractor, FX quantisation), TorchScript of the box functions, the exception types
torchvision raises, empty inputs and reprs, each checked against torchvision itself; and a map and
boxes of different float dtypes, which roiops' pooling ops accept outside autocast too."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import roiops

# ---- FX -----------------------------------------------------------------------------------------


def feature_map():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def rois():
    return torch.tensor([[0.0, 1.0, 1.0, 9.0, 12.0], [1.0, 0.5, 2.0, 14.0, 7.0]])


def score_maps():
    """Tensor[2, 8, 16, 16]: 2 output channels of position-sensitive score maps for 2x2 bins."""
    return torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(1))


class PooledHead(nn.Module):
    """A small model on roiops: a convolution, RoIAlign and RoIPool modules, the functional ops."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.align = roiops.RoIAlign(5, 1.0, -1)
        self.pool = roiops.RoIPool(3, 0.5)

    def forward(self, x, boxes):
        feats = torch.relu(self.conv(x))
        pooled = self.align(feats, boxes)
        pooled = pooled + roiops.roi_align(feats, boxes, 5, 1.0, 2, True)
        return pooled.flatten(1).sum(1) + self.pool(feats, boxes).flatten(1).sum(1)


class PositionSensitiveHead(nn.Module):
    """R-FCN's pooling: the modules and the functions called as ``roiops.<name>``."""

    def __init__(self):
        super().__init__()
        self.align = roiops.PSRoIAlign(2, 1.0, 2)
        self.pool = roiops.PSRoIPool(2, 0.5)

    def forward(self, x, boxes):
        pooled = self.align(x, boxes) + roiops.ps_roi_align(x, boxes, 2, 0.5, -1)
        return pooled + self.pool(x, boxes) + roiops.ps_roi_pool(x, boxes, 2, 1.0)


class PyramidHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.pooler = roiops.MultiScaleRoIAlign(["a", "b"], 4, 2)

    def forward(self, x, boxes: list[torch.Tensor]):
        feats = {"a": x, "b": nn.functional.avg_pool2d(x, 2)}
        return self.pooler(feats, boxes, [(64, 64), (64, 64)])


@pytest.mark.parametrize(
    "module, args",
    [
        (lambda: roiops.RoIAlign(5, 1.0, -1), lambda: (feature_map(), rois())),
        (lambda: roiops.RoIPool(5, 0.5), lambda: (feature_map(), rois())),
        (PooledHead, lambda: (feature_map(), rois())),
        (PyramidHead, lambda: (feature_map(), [rois()[:1, 1:] * 4, rois()[1:, 1:] * 4])),
        (lambda: roiops.PSRoIAlign(2, 1.0, 2), lambda: (score_maps(), rois())),
        (lambda: roiops.PSRoIPool(2, 0.5), lambda: (score_maps(), rois())),
        (PositionSensitiveHead, lambda: (score_maps(), rois())),
    ],
    ids=["RoIAlign", "RoIPool", "model", "MultiScaleRoIAlign", "PSRoIAlign", "PSRoIPool", "R-FCN model"],
)
def test_symbolic_trace_keeps_the_ops_as_leaves_and_computes_the_same(module, args):
    model, inputs = module(), args()
    traced = torch.fx.symbolic_trace(model)
    called = {getattr(n.target, "__name__", "") for n in traced.graph.nodes if n.op == "call_function"}
    assert called & {"roi_align", "roi_pool", "_multi_scale_roi_align_checked", "ps_roi_align", "ps_roi_pool"}
    torch.testing.assert_close(traced(*inputs), model(*inputs), atol=0, rtol=0)


def test_create_feature_extractor_on_a_model_using_roiops():
    model = PooledHead().eval()
    extractor = create_feature_extractor(model, return_nodes={"align": "aligned", "pool": "pooled"})
    x, boxes = feature_map(), rois()
    out = extractor(x, boxes)
    feats = torch.relu(model.conv(x))
    torch.testing.assert_close(out["aligned"], roiops.roi_align(feats, boxes, 5, 1.0, -1), atol=0, rtol=0)
    torch.testing.assert_close(out["pooled"], roiops.roi_pool(feats, boxes, 3, 0.5), atol=0, rtol=0)


def test_fx_quantisation_prepares_a_model_using_roiops():
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    model = PooledHead().eval()
    x, boxes = feature_map(), rois()
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), example_inputs=(x, boxes))
    # Observers only watch: the prepared model computes what the float model does.
    torch.testing.assert_close(prepared(x, boxes), model(x, boxes), atol=0, rtol=0)


class RotatedHead(nn.Module):
    """Rotated RoIs: RoIAlignRotated, and the rotated IoU and NMS called as ``roiops.<name>``."""

    def __init__(self):
        super().__init__()
        self.align = roiops.RoIAlignRotated(3, 1.0, 2)

    def forward(self, x, rois):
        boxes = rois[:, 1:]
        keep = roiops.nms_rotated(boxes, roiops.box_iou_rotated(boxes, boxes).sum(1), 0.5)
        keep_batched = roiops.batched_nms_rotated(boxes, rois[:, 2], rois[:, 0].long(), 0.5)
        pooled = self.align(x, rois) + roiops.roi_align_rotated(x, rois, 3, 0.5, 2)
        return pooled.flatten(1).sum(1), keep, keep_batched


def test_rotated_functions_are_fx_leaves():
    model = RotatedHead()
    x = score_maps()
    rois = torch.tensor([[0.0, 6.0, 7.5, 8.0, 4.5, 30.0], [1.0, 9.0, 8.0, 10.0, 5.0, -60.0]])
    traced = torch.fx.symbolic_trace(model)
    called = {getattr(n.target, "__name__", "") for n in traced.graph.nodes if n.op == "call_function"}
    assert {"roi_align_rotated", "box_iou_rotated", "nms_rotated", "batched_nms_rotated"} <= called
    for ours, expected in zip(traced(x, rois), model(x, rois)):
        torch.testing.assert_close(ours, expected, atol=0, rtol=0)


def test_box_functions_are_fx_leaves():
    class Matcher(nn.Module):
        def forward(self, a, b):
            return roiops.box_iou(a, b) + roiops.generalized_box_iou(a, b) + roiops.complete_box_iou(a, b)

    a, b = rois()[:, 1:], rois()[:, 1:] + 1
    traced = torch.fx.symbolic_trace(Matcher())
    torch.testing.assert_close(traced(a, b), Matcher()(a, b), atol=0, rtol=0)


# ---- TorchScript --------------------------------------------------------------------------------


def boxes_pair(dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(6, 2, generator=g) * 50
    a = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 20 + 1], 1)
    return a.to(dtype), (a.flip(0) + 3).to(dtype)


SCRIPTED = {
    "box_area": lambda f, a, b: f(a),
    "box_convert": lambda f, a, b: f(a, "xyxy", "cxcywh"),
    "box_iou": lambda f, a, b: f(a, b),
    "generalized_box_iou": lambda f, a, b: f(a, b),
    "distance_box_iou": lambda f, a, b: f(a, b),
    "complete_box_iou": lambda f, a, b: f(a, b),
    "generalized_box_iou_loss": lambda f, a, b: f(a, b, "mean"),
    "distance_box_iou_loss": lambda f, a, b: f(a, b, "sum"),
    "complete_box_iou_loss": lambda f, a, b: f(a, b, "none"),
    "masks_to_boxes": lambda f, a, b: f((a[:, :3, None] > 20).expand(6, 3, 5)),
}


@pytest.mark.parametrize("name", list(SCRIPTED))
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
def test_box_functions_script_and_equal_eager(name, dtype):
    eager = getattr(roiops, name)
    scripted = torch.jit.script(eager)
    a, b = boxes_pair(dtype)
    call = SCRIPTED[name]
    torch.testing.assert_close(call(scripted, a, b), call(eager, a, b), atol=0, rtol=0)


SCRIPTED_OTHERS = {
    "nms": lambda f, a, s: f(a, s, 0.3),
    "batched_nms": lambda f, a, s: f(a, s, torch.arange(len(a)) % 2, 0.3),
    "soft_nms": lambda f, a, s: torch.cat(f(a, s, 0.3, 0.5, 0.01, "gaussian")),
    "clip_boxes_to_image": lambda f, a, s: f(a, (30, 40)),
    "remove_small_boxes": lambda f, a, s: f(a, 8.0),
}


@pytest.mark.parametrize("name", list(SCRIPTED_OTHERS))
def test_suppression_and_box_helpers_script_and_equal_eager(name):
    eager = getattr(roiops, name)
    scripted = torch.jit.script(eager)
    a, _ = boxes_pair()
    scores = torch.rand(len(a), generator=torch.Generator().manual_seed(4))
    call = SCRIPTED_OTHERS[name]
    torch.testing.assert_close(call(scripted, a, scores), call(eager, a, scores), atol=0, rtol=0)


def test_modules_script_and_equal_eager():
    x, boxes = feature_map(), rois()
    for module in (roiops.RoIAlign(5, 1.0, -1), roiops.RoIPool(3, 0.5)):
        torch.testing.assert_close(torch.jit.script(module)(x, boxes), module(x, boxes), atol=0, rtol=0)
    for module in (roiops.PSRoIAlign(2, 0.5, -1), roiops.PSRoIPool((2, 2), 1.0)):
        scripted = torch.jit.script(module)
        torch.testing.assert_close(scripted(score_maps(), boxes), module(score_maps(), boxes), atol=0, rtol=0)
    pooler = roiops.MultiScaleRoIAlign(["a"], 4, 2)
    feats, per_image = {"a": x}, [boxes[:1, 1:], boxes[1:, 1:]]
    scripted = torch.jit.script(pooler)(feats, per_image, [(16, 16), (16, 16)])
    torch.testing.assert_close(scripted, pooler(feats, per_image, [(16, 16), (16, 16)]), atol=0, rtol=0)


def test_rotated_ops_script_and_equal_eager():
    """Detectron2 scripts models that call its rotated ops; roiops' script too, flags included."""
    g = torch.Generator().manual_seed(5)
    boxes = torch.cat([torch.rand(12, 2, generator=g) * 30, torch.rand(12, 2, generator=g) * 12 + 2,
                       torch.rand(12, 1, generator=g) * 360 - 180], dim=1)
    scores = torch.rand(12, generator=g)
    idxs = torch.arange(12) % 3
    for clockwise in (True, False):
        calls = [
            lambda f, cw=clockwise: f(boxes, boxes.flip(0), False, cw),
            lambda f, cw=clockwise: f(boxes, boxes.flip(0), True, cw),
        ]
        for call in calls:
            torch.testing.assert_close(call(torch.jit.script(roiops.box_iou_rotated)),
                                       call(roiops.box_iou_rotated), atol=0, rtol=0)
        assert torch.equal(torch.jit.script(roiops.nms_rotated)(boxes, scores, 0.2, clockwise),
                           roiops.nms_rotated(boxes, scores, 0.2, clockwise))
        assert torch.equal(torch.jit.script(roiops.batched_nms_rotated)(boxes, scores, idxs, 0.2, clockwise),
                           roiops.batched_nms_rotated(boxes, scores, idxs, 0.2, clockwise))
    x = feature_map()
    rois6 = rotated_rois()
    for module in (roiops.RoIAlignRotated(3, 0.5, 2), roiops.RoIAlignRotated((2, 3), 1.0, 0, False, True)):
        scripted = torch.jit.script(module)
        torch.testing.assert_close(scripted(x, rois6), module(x, rois6), atol=0, rtol=0)
        per_image = [rois6[:1, 1:], rois6[1:, 1:]]
        torch.testing.assert_close(scripted(x, per_image), module(x, rois6), atol=0, rtol=0)
    scripted_fn = torch.jit.script(roiops.roi_align_rotated)
    torch.testing.assert_close(scripted_fn(x.bfloat16(), rois6, [3, 2], 0.5, 2, True, True),
                               roiops.roi_align_rotated(x.bfloat16(), rois6, (3, 2), 0.5, 2, True, True),
                               atol=0, rtol=0)


POOLING_FUNCTIONS = {
    "roi_align": lambda f, x, b: f(x, b, [3, 2], 0.5, 2, True),
    "roi_pool": lambda f, x, b: f(x, b, [3, 2], 0.5),
    "ps_roi_align": lambda f, x, b: f(x, b, [2, 2], 0.5, -1),
    "ps_roi_pool": lambda f, x, b: f(x, b, [2, 2], 1.0),
}


@pytest.mark.parametrize("name", list(POOLING_FUNCTIONS))
def test_pooling_functions_script_and_equal_eager(name):
    eager = getattr(roiops, name)
    scripted = torch.jit.script(eager)
    x, boxes, call = score_maps(), rois(), POOLING_FUNCTIONS[name]
    torch.testing.assert_close(call(scripted, x, boxes), call(eager, x, boxes), atol=0, rtol=0)
    per_image = [boxes[:1, 1:], boxes[1:, 1:]]
    torch.testing.assert_close(call(scripted, x, per_image), call(eager, x, per_image), atol=0, rtol=0)
    # The mixed-dtype rule holds in the scripted functions too.
    half = x.to(torch.bfloat16)
    torch.testing.assert_close(call(scripted, half, boxes), call(eager, half, boxes), atol=0, rtol=0)


def test_scripted_pairwise_measures_keep_gradients():
    scripted = torch.jit.script(roiops.complete_box_iou)
    a, b = boxes_pair(torch.float64)
    a.requires_grad_()
    grad = torch.autograd.grad(scripted(a, b).sum(), a)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(roiops.complete_box_iou(a, b).sum(), a)[0])


# ---- exception types ----------------------------------------------------------------------------

F = torch.randn(2, 3, 8, 8)
PS = torch.randn(2, 8, 8, 8)  # 2 * 2 * 2 channels: position-sensitive maps for 2x2 bins
R = torch.tensor([[0.0, 1, 1, 5, 5]])
B = torch.tensor([[1.0, 1, 5, 5]])
S = torch.tensor([0.5])
I0 = torch.zeros(1, dtype=torch.int64)

# (situation, call on a module m in (torchvision.ops, roiops), the type torchvision raises, the
# argument roiops' message names). roiops must raise a ValueError or TypeError that is also an
# instance of torchvision's type.
ERRORS = [
    ("roi_align input 3-d", lambda m: m.roi_align(F[0], R, 2), RuntimeError, "input"),
    ("roi_align integer input", lambda m: m.roi_align(F.int(), R.int(), 2), RuntimeError, "input"),
    ("roi_align boxes [K, 4] tensor", lambda m: m.roi_align(F, B, 2), AssertionError, "boxes"),
    ("roi_align boxes 1-d", lambda m: m.roi_align(F, torch.zeros(5), 2), IndexError, "boxes"),
    ("roi_align boxes list of [L, 5]", lambda m: m.roi_align(F, [R], 2), AssertionError, "boxes"),
    ("roi_align boxes list of 1-d", lambda m: m.roi_align(F, [torch.zeros(4)], 2), IndexError, "boxes"),
    ("roi_align boxes neither", lambda m: m.roi_align(F, R.numpy(), 2), AssertionError, "boxes"),
    ("roi_align integer boxes", lambda m: m.roi_align(F, R.int(), 2), RuntimeError, "boxes"),
    ("roi_align list of integer boxes", lambda m: m.roi_align(F, [B.long()], 2), RuntimeError, "boxes"),
    ("roi_align negative output_size", lambda m: m.roi_align(F, R, -1), RuntimeError, "output_size"),
    ("roi_align input not a tensor", lambda m: m.roi_align(F.numpy(), R, 2), AttributeError, "input"),
    ("roi_pool input 3-d", lambda m: m.roi_pool(F[0], R, 2), RuntimeError, "input"),
    ("roi_pool boxes [K, 4] tensor", lambda m: m.roi_pool(F, B, 2), AssertionError, "boxes"),
    ("roi_pool integer boxes", lambda m: m.roi_pool(F, R.long(), 2), RuntimeError, "boxes"),
    ("roi_pool integer input", lambda m: m.roi_pool(F.int(), R.int(), 2), RuntimeError, "input"),
    ("nms boxes 1-d", lambda m: m.nms(torch.zeros(4), S, 0.5), RuntimeError, "boxes"),
    ("nms boxes [N, 5]", lambda m: m.nms(torch.zeros(1, 5), S, 0.5), RuntimeError, "boxes"),
    ("nms empty 1-d boxes", lambda m: m.nms(torch.zeros(0), torch.zeros(0), 0.5), RuntimeError, "boxes"),
    ("nms scores 2-d", lambda m: m.nms(B, S[None], 0.5), RuntimeError, "scores"),
    ("nms scores length", lambda m: m.nms(B, torch.zeros(2), 0.5), RuntimeError, "scores"),
    ("nms dtype mismatch", lambda m: m.nms(B, S.double(), 0.5), RuntimeError, "scores"),
    ("nms integer boxes", lambda m: m.nms(B.int(), S.int(), 0.5), RuntimeError, "boxes"),
    ("nms threshold not a number", lambda m: m.nms(B, S, "a"), RuntimeError, "iou_threshold"),
    ("nms boxes not a tensor", lambda m: m.nms(B.numpy(), S, 0.5), AttributeError, "boxes"),
    ("batched_nms idxs length", lambda m: m.batched_nms(B, S, torch.zeros(2, dtype=torch.int64), 0.5),
     RuntimeError, "idxs"),
    ("batched_nms scores length", lambda m: m.batched_nms(B, torch.zeros(2), I0, 0.5), RuntimeError,
     "scores"),
    ("batched_nms dtype mismatch", lambda m: m.batched_nms(B, S.double(), I0, 0.5), RuntimeError, "scores"),
    ("box_iou boxes [N, 5]", lambda m: m.box_iou(torch.zeros(1, 5), B), RuntimeError, "boxes1"),
    ("box_iou bool boxes", lambda m: m.box_iou(B.bool(), B.bool()), RuntimeError, "boxes1"),
    ("box_iou not a tensor", lambda m: m.box_iou(B.numpy(), B), AttributeError, "boxes1"),
    ("generalized_box_iou boxes [N, 5]", lambda m: m.generalized_box_iou(torch.zeros(1, 5), B), RuntimeError,
     "boxes1"),
    ("distance_box_iou boxes [N, 5]", lambda m: m.distance_box_iou(B, torch.zeros(1, 5)), RuntimeError,
     "boxes2"),
    ("complete_box_iou boxes [N, 5]", lambda m: m.complete_box_iou(torch.zeros(1, 5), B), RuntimeError,
     "boxes1"),
    ("box_area not a tensor", lambda m: m.box_area(B.numpy()), AttributeError, "boxes"),
    ("box_convert unknown format", lambda m: m.box_convert(B, "xyxy", "abc"), ValueError, "out_fmt"),
    ("box_convert boxes [N, 5]", lambda m: m.box_convert(torch.zeros(1, 5), "xyxy", "cxcywh"), ValueError,
     "boxes"),
    ("box_convert not a tensor", lambda m: m.box_convert(B.numpy(), "xyxy", "cxcywh"), AttributeError,
     "boxes"),
    ("clip_boxes_to_image bad size", lambda m: m.clip_boxes_to_image(B, (3,)), ValueError, "size"),
    ("clip_boxes_to_image boxes [N, 5]", lambda m: m.clip_boxes_to_image(torch.zeros(1, 5), (3, 3)),
     RuntimeError, "boxes"),
    ("remove_small_boxes min_size a string", lambda m: m.remove_small_boxes(B, "a"), TypeError, "min_size"),
    ("generalized_box_iou_loss reduction", lambda m: m.generalized_box_iou_loss(B, B, reduction="x"),
     ValueError, "reduction"),
    ("distance_box_iou_loss reduction", lambda m: m.distance_box_iou_loss(B, B, reduction="x"), ValueError,
     "reduction"),
    ("complete_box_iou_loss reduction", lambda m: m.complete_box_iou_loss(B, B, reduction="x"), ValueError,
     "reduction"),
    ("generalized_box_iou_loss shapes",
     lambda m: m.generalized_box_iou_loss(torch.zeros(2, 4), torch.zeros(3, 4)), RuntimeError, "boxes1"),
    ("distance_box_iou_loss boxes [N, 5]",
     lambda m: m.distance_box_iou_loss(torch.zeros(2, 5), torch.zeros(2, 5)), ValueError, "boxes1"),
    ("masks_to_boxes 2-d masks", lambda m: m.masks_to_boxes(torch.zeros(4, 4)), ValueError, "masks"),
    ("MultiScaleRoIAlign empty image_shapes",
     lambda m: m.MultiScaleRoIAlign(["0"], 2, 2)({"0": F}, [B, B], []), ValueError, "image_shapes"),
    ("MultiScaleRoIAlign boxes a tensor",
     lambda m: m.MultiScaleRoIAlign(["0"], 2, 2)({"0": F}, torch.cat([R, R]), [(32, 32)] * 2), TypeError,
     "boxes"),
    ("MultiScaleRoIAlign boxes list of [L, 5]",
     lambda m: m.MultiScaleRoIAlign(["0"], 2, 2)({"0": F}, [R, R], [(32, 32)] * 2), AssertionError, "boxes"),
    ("MultiScaleRoIAlign integer boxes",
     lambda m: m.MultiScaleRoIAlign(["0"], 2, 2)({"0": F}, [B.int()] * 2, [(32, 32)] * 2), RuntimeError,
     "boxes"),
    ("MultiScaleRoIAlign map 3-d",
     lambda m: m.MultiScaleRoIAlign(["0"], 2, 2)({"0": F[0]}, [B, B], [(32, 32)] * 2), RuntimeError, "x"),
    ("ps_roi_align input 3-d", lambda m: m.ps_roi_align(PS[0], R, 2), RuntimeError, "input"),
    ("ps_roi_align integer input", lambda m: m.ps_roi_align(PS.int(), R.int(), 2), RuntimeError, "input"),
    ("ps_roi_align integer boxes", lambda m: m.ps_roi_align(PS, R.int(), 2), RuntimeError, "boxes"),
    ("ps_roi_align boxes [K, 4] tensor", lambda m: m.ps_roi_align(PS, B, 2), AssertionError, "boxes"),
    ("ps_roi_align boxes 1-d", lambda m: m.ps_roi_align(PS, torch.zeros(5), 2), IndexError, "boxes"),
    ("ps_roi_align boxes list of [L, 5]", lambda m: m.ps_roi_align(PS, [R], 2), AssertionError, "boxes"),
    ("ps_roi_align boxes list of 1-d", lambda m: m.ps_roi_align(PS, [torch.zeros(4)], 2), IndexError,
     "boxes"),
    ("ps_roi_align boxes neither", lambda m: m.ps_roi_align(PS, R.numpy(), 2), AssertionError, "boxes"),
    ("ps_roi_align channels not a multiple of the bins", lambda m: m.ps_roi_align(PS, R, 3), RuntimeError,
     "input"),
    ("ps_roi_align negative output_size", lambda m: m.ps_roi_align(PS, R, -1), RuntimeError, "output_size"),
    ("ps_roi_align sampling_ratio a float", lambda m: m.ps_roi_align(PS, R, 2, 1.0, 2.5), RuntimeError,
     "sampling_ratio"),
    ("ps_roi_align spatial_scale a string", lambda m: m.ps_roi_align(PS, R, 2, "a"), RuntimeError,
     "spatial_scale"),
    ("ps_roi_align input not a tensor", lambda m: m.ps_roi_align(PS.numpy(), R, 2), RuntimeError, "input"),
    ("PSRoIAlign module input 3-d", lambda m: m.PSRoIAlign(2, 1.0, 2)(PS[0], R), RuntimeError, "input"),
    ("ps_roi_pool input 3-d", lambda m: m.ps_roi_pool(PS[0], R, 2), RuntimeError, "input"),
    ("ps_roi_pool integer boxes", lambda m: m.ps_roi_pool(PS, R.long(), 2), RuntimeError, "boxes"),
    ("ps_roi_pool boxes [K, 4] tensor", lambda m: m.ps_roi_pool(PS, B, 2), AssertionError, "boxes"),
    ("ps_roi_pool boxes neither", lambda m: m.ps_roi_pool(PS, R.numpy(), 2), AssertionError, "boxes"),
    ("ps_roi_pool channels not a multiple of the bins", lambda m: m.ps_roi_pool(PS, R, 3), RuntimeError,
     "input"),
    ("ps_roi_pool negative output_size", lambda m: m.ps_roi_pool(PS, R, -1), RuntimeError, "output_size"),
    ("ps_roi_pool input not a tensor", lambda m: m.ps_roi_pool(PS.numpy(), R, 2), RuntimeError, "input"),
    ("PSRoIPool module input 3-d", lambda m: m.PSRoIPool(2, 1.0)(PS[0], R), RuntimeError, "input"),
]


@pytest.mark.parametrize("call, torchvision_type, argument", [c[1:] for c in ERRORS],
                         ids=[c[0] for c in ERRORS])
def test_argument_errors_are_also_what_torchvision_raises(call, torchvision_type, argument):
    with pytest.raises(torchvision_type):
        call(torchvision.ops)
    with pytest.raises(torchvision_type, match=argument) as raised:
        call(roiops)
    assert isinstance(raised.value, (ValueError, TypeError))


# ---- empty inputs, reprs ------------------------------------------------------------------------


def test_batched_nms_of_empty_1d_boxes_is_empty_int64_as_torchvision():
    args = (torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    ours, theirs = roiops.batched_nms(*args), torchvision.ops.batched_nms(*args)
    assert ours.shape == theirs.shape == (0,) and ours.dtype == theirs.dtype == torch.int64


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.MultiScaleRoIAlign(["0", "1"], 7, 2),
        lambda m: m.MultiScaleRoIAlign(["p2"], (7, 5), -1),
        lambda m: m.RoIAlign(5, 1.0, -1),
        lambda m: m.RoIAlign((7, 3), 0.25, 2, True),
        lambda m: m.RoIPool(5, 1.0),
        lambda m: m.RoIPool((2, 3), 0.5),
        lambda m: m.PSRoIAlign(7, 0.0625, 2),
        lambda m: m.PSRoIAlign((3, 5), 1.0, -1),
        lambda m: m.PSRoIAlign([3, 3], 0.5, 0),
        lambda m: m.PSRoIPool(7, 0.0625),
        lambda m: m.PSRoIPool((2, 3), 0.5),
    ],
)
def test_repr_equals_torchvision(make):
    assert repr(make(roiops)) == repr(make(torchvision.ops))


def test_repr_shows_roiops_settings_only_when_set():
    text = repr(roiops.MultiScaleRoIAlign(["0"], 7, 2, aligned=True, canonical_level=5))
    assert "aligned=True" in text and "canonical_level=5" in text


# ---- a map and boxes of different float dtypes ----------------------------------------------------
#
# torchvision raises for these calls outside autocast; roiops pools in the wider dtype and returns the
# map's. The oracle is the call with both arguments cast up, its output cast to the map's dtype:
# roiops' own (exactly) and torchvision's where it has the op (to the map dtype's rounding).

MIXED_DTYPES = [
    (torch.bfloat16, torch.float32),
    (torch.float32, torch.float64),
    (torch.float16, torch.float32),
]


def pyramid_call(m, x, boxes):
    """MultiScaleRoIAlign over x and its 2x2 average (scales 1/4 and 1/8 of 64x64 images)."""
    feats = {"p2": x, "p3": nn.functional.avg_pool2d(x, 2)}
    return m.MultiScaleRoIAlign(["p2", "p3"], 3, 2)(feats, boxes, [(64, 64), (60, 64)])


def rotated_rois():
    return torch.tensor([[0.0, 6.0, 7.5, 8.0, 4.5, 30.0], [1.0, 9.0, 8.0, 10.0, 5.0, -60.0]])


# name -> (call on a module m in (torchvision.ops, roiops), box maker, torchvision has it, box gradient)
MIXED_OPS = {
    "roi_align": (lambda m, x, b: m.roi_align(x, b, (3, 2), 0.5, 2, True), rois, True, True),
    "roi_align list": (
        lambda m, x, b: m.roi_align(x, b, 3, 1.0, -1), lambda: [rois()[:1, 1:], rois()[1:, 1:]], True, True
    ),
    "RoIAlign": (lambda m, x, b: m.RoIAlign(3, 0.5, -1)(x, b), rois, True, True),
    "roi_pool": (lambda m, x, b: m.roi_pool(x, b, (3, 2), 0.5), rois, True, False),
    "RoIPool": (lambda m, x, b: m.RoIPool(2, 1.0)(x, b), rois, True, False),
    "MultiScaleRoIAlign": (pyramid_call, lambda: [rois()[:1, 1:] * 4, rois()[1:, 1:] * 4], True, True),
    "ps_roi_align": (lambda m, x, b: m.ps_roi_align(x, b, 2, 0.5, 2), rois, True, False),
    "PSRoIAlign": (lambda m, x, b: m.PSRoIAlign(2, 1.0, -1)(x, b), rois, True, False),
    "ps_roi_pool": (lambda m, x, b: m.ps_roi_pool(x, b, 2, 1.0), rois, True, False),
    "PSRoIPool": (lambda m, x, b: m.PSRoIPool(2, 0.5)(x, b), rois, True, False),
    "roi_align_rotated": (lambda m, x, b: m.roi_align_rotated(x, b, 3, 0.5, 2), rotated_rois, False, False),
    "RoIAlignRotated": (lambda m, x, b: m.RoIAlignRotated(3, 1.0, 0, aligned=False)(x, b), rotated_rois,
                        False, False),
}


def cast_boxes(boxes, dtype):
    return [b.to(dtype) for b in boxes] if isinstance(boxes, list) else boxes.to(dtype)


def mixed_problem(name, input_dtype, boxes_dtype):
    """(map Tensor[2, 8, 16, 16] of input_dtype, boxes of boxes_dtype, the dtype both cast up to).
    The coordinates are shifted by 0.3 pixel, which neither float16 nor bfloat16 represents."""
    boxes = MIXED_OPS[name][1]()
    if isinstance(boxes, list):
        boxes = [b.double() + 0.3 for b in boxes]
    else:
        boxes = torch.cat([boxes[:, :1], boxes[:, 1:] + 0.3], dim=1).double()
    wide = torch.promote_types(input_dtype, boxes_dtype)
    return score_maps().to(input_dtype), cast_boxes(boxes, boxes_dtype), wide


@pytest.mark.parametrize("input_dtype, boxes_dtype", MIXED_DTYPES)
@pytest.mark.parametrize("name", list(MIXED_OPS))
def test_mixed_dtypes_pool_in_the_wider_dtype_and_return_the_map_dtype(name, input_dtype, boxes_dtype):
    call, _, torchvision_has_it, _ = MIXED_OPS[name]
    x, boxes, wide = mixed_problem(name, input_dtype, boxes_dtype)
    ours = call(roiops, x, boxes)
    assert ours.dtype == input_dtype
    assert torch.equal(ours, call(roiops, x.to(wide), cast_boxes(boxes, wide)).to(input_dtype))
    assert ours.abs().sum() > 0
    if input_dtype in (torch.float16, torch.bfloat16) and "pool" not in name.lower():
        # The boxes were not rounded to the map's dtype on the way (RoIPool's own rounding to
        # whole pixels would hide it; the bilinear ops move with any coordinate).
        rounded = call(roiops, x.to(wide), cast_boxes(cast_boxes(boxes, input_dtype), wide)).to(input_dtype)
        assert not torch.equal(ours, rounded)
    if torchvision_has_it:
        theirs = call(torchvision.ops, x.to(wide), cast_boxes(boxes, wide)).to(input_dtype)
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("input_dtype, boxes_dtype", MIXED_DTYPES)
@pytest.mark.parametrize("name", list(MIXED_OPS))
def test_mixed_dtypes_gradients_come_back_in_each_argument_dtype(name, input_dtype, boxes_dtype):
    call, _, _, box_gradient = MIXED_OPS[name]
    x, boxes, wide = mixed_problem(name, input_dtype, boxes_dtype)
    box_list = boxes if isinstance(boxes, list) else [boxes]
    x.requires_grad_()
    for b in box_list:
        b.requires_grad_()
    x_wide = x.detach().to(wide).requires_grad_()
    boxes_wide = [b.detach().to(wide).requires_grad_() for b in box_list]
    ours = call(roiops, x, box_list if isinstance(boxes, list) else box_list[0])
    ref = call(roiops, x_wide, boxes_wide if isinstance(boxes, list) else boxes_wide[0]).to(input_dtype)
    upstream = torch.randn(ours.shape, generator=torch.Generator().manual_seed(5)).to(input_dtype)
    grads = torch.autograd.grad(ours, [x, *box_list], upstream, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, [x_wide, *boxes_wide], upstream, allow_unused=True)
    assert grads[0].dtype == input_dtype
    assert torch.equal(grads[0], ref_grads[0].to(input_dtype))
    assert grads[0].abs().sum() > 0
    for g, ref_g in zip(grads[1:], ref_grads[1:]):
        if not box_gradient:
            assert g is None and ref_g is None
            continue
        assert g.dtype == boxes_dtype
        assert torch.equal(g, ref_g.to(boxes_dtype))
