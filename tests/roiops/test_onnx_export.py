"""roiops' ops exported to ONNX as standard operators and run in onnxruntime equal the eager ops.

Each graph is exported once (dynamic sizes) and then run on several inputs, so the test also pins
that nothing was specialised to the example's sizes."""

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import roiops
import roiops.onnx

Dim = torch.export.Dim


class _Call(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, a, b, c=None):
        return self.fn(a, b) if c is None else self.fn(a, b, c)


def _export(tmp_path_factory, fn, args, dynamic, name):
    dynamic = {k: v for k, v in zip(("a", "b", "c"), dynamic)}
    return _export_module(tmp_path_factory, _Call(fn), args, dynamic, name)


def _export_module(tmp_path_factory, module, args, dynamic, name):
    """(onnxruntime session, op types, domains) of module exported with dynamic shapes."""
    path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
    roiops.onnx.export(module.eval(), tuple(args), path, dynamic_shapes=dynamic)
    model = onnx.load(str(path))
    return (
        ort.InferenceSession(str(path)),
        {n.op_type for n in model.graph.node},
        {n.domain for n in model.graph.node},
    )


def _run(session, *args):
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    return session.run(None, feeds)


def _boxes(g, n, extent, max_size=None):
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * (max_size or extent / 2)
    return torch.cat([xy, xy + wh], dim=1)


def _rois(g, n, batch, extent):
    return torch.cat([torch.randint(0, batch, (n, 1), generator=g).float(), _boxes(g, n, extent)], dim=1)


POOL_CONFIGS = [(True, 0), (True, 2), (False, -1), (False, 3)]  # (aligned, sampling_ratio)


@pytest.fixture(scope="module")
def roi_align_graph(tmp_path_factory):
    def fn(x, rois):
        return tuple(
            roiops.roi_align(x, rois, (7, 5), spatial_scale=0.5, sampling_ratio=sr, aligned=al)
            for al, sr in POOL_CONFIGS
        )

    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 3, 20, 24), _rois(g, 6, 2, 40))
    return _export(tmp_path_factory, fn, args, ({2: Dim("h"), 3: Dim("w")}, {0: Dim("k")}), "roi_align")


def test_roi_align_exports_as_roialign_in_the_default_domain(roi_align_graph):
    _, ops, domains = roi_align_graph
    assert "RoiAlign" in ops
    assert domains <= {""}


@settings(max_examples=8, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    k=st.integers(0, 12),
    seed=st.integers(0, 2**16),
)
def test_roi_align_in_onnxruntime_equals_eager(roi_align_graph, h, w, k, seed):
    session = roi_align_graph[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, h, w, generator=g)
    # Boxes inside, across and outside the map, including tiny ones (the 1-pixel minimum of aligned=False).
    rois = torch.cat([torch.randint(0, 2, (k, 1), generator=g).float(), _boxes(g, k, 3 * max(h, w), 8)], 1)
    for out, (al, sr) in zip(_run(session, x, rois), POOL_CONFIGS):
        expected = roiops.roi_align(x, rois, (7, 5), spatial_scale=0.5, sampling_ratio=sr, aligned=al)
        np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_roi_pool_exports_as_maxroipool_and_equals_eager(tmp_path_factory):
    g = torch.Generator().manual_seed(1)
    args = (torch.randn(2, 3, 20, 24), _rois(g, 6, 2, 40))
    session, ops, _ = _export(
        tmp_path_factory,
        lambda x, r: roiops.roi_pool(x, r, (4, 3), 0.5),
        args,
        ({2: Dim("h"), 3: Dim("w")}, {0: Dim("k")}),
        "roi_pool",
    )
    assert "MaxRoiPool" in ops
    for h, w, k in ((20, 24, 6), (9, 31, 15), (16, 16, 0)):
        x, rois = torch.randn(2, 3, h, w, generator=g), _rois(g, k, 2, 60)
        np.testing.assert_array_equal(
            _run(session, x, rois)[0], roiops.roi_pool(x, rois, (4, 3), 0.5).numpy()
        )


def test_winograd_conv3x3_exports_as_conv_and_relu(tmp_path_factory):
    conv = torch.nn.Conv2d(6, 5, 3, padding=1)
    module = roiops.WinogradConv3x3.from_conv(conv, relu=True).eval()
    with torch.no_grad():
        dynamic = {"x": {2: Dim("h"), 3: Dim("w")}}
        example = (torch.randn(1, 6, 12, 10),)
        session, ops, _ = _export_module(tmp_path_factory, module, example, dynamic, "winograd")
    assert {"Conv", "Relu"} <= ops
    g = torch.Generator().manual_seed(3)
    for h, w in ((12, 10), (5, 17)):
        x = torch.randn(1, 6, h, w, generator=g)
        with torch.no_grad():
            expected = torch.relu(conv(x))
        np.testing.assert_allclose(_run(session, x)[0], expected.numpy(), atol=1e-5, rtol=0)


def test_fpn_pooler_exports_as_level_assignment_and_per_level_roialign(tmp_path_factory):
    pooler = roiops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2, aligned=False)

    def fn(features, rois):
        maps = dict(zip(["p2", "p3", "p4", "p5"], features))
        return pooler(maps, [rois], [(256, 320)])

    def pyramid(g, h, w):
        return [torch.randn(1, 4, h // 2**i, w // 2**i, generator=g) for i in range(2, 6)]

    g = torch.Generator().manual_seed(2)
    session, ops, domains = _export(
        tmp_path_factory, fn, (pyramid(g, 256, 320), _boxes(g, 20, 300)), ([None] * 4, {0: Dim("k")}), "fpn"
    )
    assert {"RoiAlign", "ScatterND", "NonZero"} <= ops and domains <= {""}
    # Sizes on every level, exactly on the level boundaries (112, 224, 448 px) and degenerate boxes.
    edges = torch.tensor(
        [
            [0, 0, 112, 112],
            [10, 10, 234, 234],
            [0, 0, 448, 448],
            [5, 5, 5, 40],
            [30, 30, 20, 20],
            [0, 0, 2000, 2000.0],
        ]
    )
    for boxes in (_boxes(g, 40, 300), _boxes(g, 30, 200, 500), edges, edges[:0]):
        features = pyramid(g, 256, 320)
        (out,) = _run(session, *features, boxes)
        expected = fn(features, boxes)
        np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


def _clustered_boxes(g, n):
    centres = torch.rand(4, 2, generator=g) * 100
    xy = centres[torch.randint(0, 4, (n,), generator=g)] + torch.randn(n, 2, generator=g) * 6
    return torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 10], dim=1)


def test_nms_exports_as_nonmaxsuppression_and_keeps_the_same_boxes_in_order(tmp_path_factory):
    g = torch.Generator().manual_seed(3)
    b = _clustered_boxes(g, 50)
    session, ops, _ = _export(
        tmp_path_factory,
        lambda b, s: roiops.nms(b, s, 0.5),
        (b, torch.rand(50, generator=g)),
        ({0: Dim("n")}, {0: Dim("n")}),
        "nms",
    )
    assert "NonMaxSuppression" in ops
    for n in (300, 7, 0):
        b, s = _clustered_boxes(g, n), torch.rand(n, generator=g)
        np.testing.assert_array_equal(_run(session, b, s)[0], roiops.nms(b, s, 0.5).numpy())


def test_an_exported_program_can_be_traced_again_after_its_onnx_export(tmp_path):
    # The ONNX exporter runs the program on fake tensors; the data-dependent sizes it allocates
    # (the NMS count here) must not stay pending in the program's ShapeEnv, or the next trace of
    # the same program (run_decompositions, AOTInductor) fails.
    g = torch.Generator().manual_seed(5)
    args = (_clustered_boxes(g, 40), torch.rand(40, generator=g))
    module = _Call(lambda b, s: roiops.nms(b, s, 0.5)[:10] * 2)
    program = torch.export.export(module, args, dynamic_shapes=({0: Dim("n")}, {0: Dim("n")}))
    roiops.onnx.export(program, (), tmp_path / "nms.onnx")
    again = program.run_decompositions()
    b, s = _clustered_boxes(g, 70), torch.rand(70, generator=g)
    expected = roiops.nms(b, s, 0.5)[:10] * 2
    assert torch.equal(again.module()(b, s), expected)
    np.testing.assert_array_equal(_run(ort.InferenceSession(str(tmp_path / "nms.onnx")), b, s)[0], expected)


def test_batched_nms_exports_exactly_per_category(tmp_path_factory):
    g = torch.Generator().manual_seed(4)

    def fn(b, s, i):
        return roiops.batched_nms(b, s, i, 0.4)

    n = 60
    args = (_clustered_boxes(g, n), torch.rand(n, generator=g), torch.randint(0, 3, (n,), generator=g))
    session, ops, _ = _export(tmp_path_factory, fn, args, ({0: Dim("n")},) * 3, "batched_nms")
    assert "NonMaxSuppression" in ops
    for n, categories, low in ((400, 6, 0), (50, 2, 90), (10, 1, 3), (0, 1, 0)):
        b, s = _clustered_boxes(g, n), torch.rand(n, generator=g)
        # Equal scores across categories: roiops' order breaks the tie by the lower index.
        s[: n // 4] = s[n // 4 : 2 * (n // 4)]
        i = torch.randint(low, low + categories, (n,), generator=g)
        np.testing.assert_array_equal(_run(session, b, s, i)[0], fn(b, s, i).numpy())


def test_box_ops_export_as_elementwise_ops(tmp_path_factory):
    g = torch.Generator().manual_seed(5)
    weights = [10.0, 10.0, 5.0, 5.0]
    iou, ops, _ = _export(
        tmp_path_factory,
        roiops.box_iou,
        (_boxes(g, 5, 50), _boxes(g, 6, 50)),
        ({0: Dim("n")}, {0: Dim("m")}),
        "box_iou",
    )
    a, b = _boxes(g, 30, 50), _boxes(g, 20, 50)
    a[:3, 2] = a[:3, 0]  # empty boxes: IoU 0
    a[3, 0] = float("nan")
    np.testing.assert_allclose(_run(iou, a, b)[0], roiops.box_iou(a, b).numpy(), rtol=1e-6, atol=1e-7)

    encode, _, _ = _export(
        tmp_path_factory,
        lambda r, p: torch.ops.roiops.box_encode(r, p, weights),
        (_boxes(g, 5, 50), _boxes(g, 5, 50)),
        ({0: Dim("n")}, {0: Dim("n")}),
        "box_encode",
    )
    r, p = _boxes(g, 40, 50), _boxes(g, 40, 50)
    np.testing.assert_allclose(
        _run(encode, r, p)[0], torch.ops.roiops.box_encode(r, p, weights).numpy(), rtol=1e-5, atol=1e-6
    )

    coder = roiops.BoxCoder(tuple(weights))
    decode, _, _ = _export(
        tmp_path_factory,
        lambda c, p: coder.decode_single(c, p, image_size=(60, 70)),
        (torch.randn(5, 12), _boxes(g, 5, 50)),
        ({0: Dim("n")}, {0: Dim("n")}),
        "box_decode",
    )
    c, p = torch.randn(40, 12, generator=g) * 3, _boxes(g, 40, 80)
    c[0, 2] = 100.0  # clamped before exp
    np.testing.assert_allclose(
        _run(decode, c, p)[0], coder.decode_single(c, p, image_size=(60, 70)).numpy(), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_paste_masks_exports_with_standard_ops(tmp_path_factory, threshold):
    g = torch.Generator().manual_seed(6)

    def fn(m, b):
        return roiops.paste_masks(m, b, (70, 90), threshold=threshold)

    session, ops, domains = _export(
        tmp_path_factory,
        fn,
        (torch.rand(3, 28, 28), _boxes(g, 3, 60)),
        ({0: Dim("n")}, {0: Dim("n")}),
        f"paste_{threshold}",
    )
    assert "MatMul" in ops and domains <= {""}
    boxes = torch.cat(
        [
            _boxes(g, 12, 100, 60),
            torch.tensor([[-20.0, -10, 30, 40], [60, 50, 200, 300], [5, 5, 5.5, 6], [200, 200, 300, 300]]),
        ]
    )
    masks = torch.rand(16, 28, 28, generator=g)
    out, expected = _run(session, masks, boxes)[0], fn(masks, boxes).numpy()
    if threshold is None:
        np.testing.assert_allclose(out, expected, atol=1e-5)
    else:
        # A probability within rounding of the threshold may land on either side.
        assert (out != expected).mean() < 1e-4


def _assert_same_lists(outputs, expected, atol):
    """ONNX outputs (flat) equal the eager op's lists (flattened the same way): same counts, same
    order, values within atol (integers exactly)."""
    expected = [t for lists in expected for t in lists]
    assert len(outputs) == len(expected)
    for out, ref in zip(outputs, expected):
        assert out.shape == tuple(ref.shape)
        if ref.dtype == torch.int64:
            np.testing.assert_array_equal(out, ref.numpy())
        else:
            np.testing.assert_allclose(out, ref.numpy(), rtol=0, atol=atol)


class _RpnProposals(torch.nn.Module):
    """Two images, two levels split 3:1 (symbolic counts), shared anchors."""

    def forward(self, objectness, deltas, anchors):
        a = objectness.shape[1]
        levels = [a // 4 * 3, a - a // 4 * 3]
        boxes, scores = roiops.rpn_proposals(
            objectness, deltas, anchors, [(60, 80), (45, 90)], levels, 60, 50, 0.6, 1.0, 0.05
        )
        return (*boxes, *scores)


def _rpn_inputs(g, a, *, logit_shift=0.0):
    objectness = torch.randn(2, a, generator=g) * 2 + logit_shift
    deltas = torch.randn(2, a, 4, generator=g) * 0.3
    centres = torch.rand(6, 2, generator=g) * torch.tensor([80.0, 60.0])
    xy = centres[torch.randint(0, 6, (a,), generator=g)] + torch.randn(a, 2, generator=g) * 5
    anchors = torch.cat([xy, xy + 4 + torch.rand(a, 2, generator=g) * 20], dim=1)
    return objectness, deltas, anchors


def test_rpn_proposals_export_as_topk_and_nms_and_equal_eager(tmp_path_factory):
    g = torch.Generator().manual_seed(8)
    session, ops, domains = _export_module(
        tmp_path_factory,
        _RpnProposals(),
        _rpn_inputs(g, 160),
        ({1: Dim("a")}, {1: Dim("a")}, {0: Dim("a")}),
        "rpn_proposals",
    )
    assert {"TopK", "Sigmoid", "NonMaxSuppression"} <= ops and domains <= {""}
    # More and fewer anchors than pre_nms_top_n per level (the cut, and every anchor taken), and
    # logits so low that nothing passes the score threshold.
    for a, shift in ((400, 0.0), (160, 0.0), (36, 0.0), (120, -12.0)):
        inputs = _rpn_inputs(g, a, logit_shift=shift)
        if shift == 0.0:
            # Confident anchors 1 px and 0.875 px wide, undeformed: min_size 1 keeps the first (>=).
            objectness, deltas, anchors = inputs
            objectness[:, :20] += 8.0
            deltas[:, :20] = 0.0
            anchors[:20, 0] = anchors[:20, 0].round()
            anchors[:20, 2] = anchors[:20, 0] + torch.tensor([1.0, 0.875]).repeat(10)
        expected = roiops.rpn_proposals(
            *inputs, [(60, 80), (45, 90)], [a // 4 * 3, a - a // 4 * 3], 60, 50, 0.6, 1.0, 0.05
        )
        assert all(len(b) > 0 for b in expected[0]) == (shift == 0.0)
        if shift == 0.0:
            widths = torch.cat(expected[0])[:, 2] - torch.cat(expected[0])[:, 0]
            assert (widths == 1.0).any() and not (widths < 1.0).any()
        # exp and sigmoid are the runtime's own: a few float32 ulps of the coordinates.
        _assert_same_lists(_run(session, *inputs), expected, atol=2e-5)


class _BoxHeadDetections(torch.nn.Module):
    """Two images of 7 classes (background included), dynamic proposal counts."""

    def forward(self, class_logits, box_deltas, proposals):
        boxes, scores, labels = roiops.detections_from_box_head(
            class_logits, box_deltas, proposals, [(70, 90), (50, 60)], 0.2, 0.5, 12
        )
        return (*boxes, *scores, *labels)


def _box_head_inputs(g, p0, p1, *, classes=7, logit_scale=3.0):
    k = p0 + p1
    class_logits = torch.randn(k, classes, generator=g) * logit_scale
    box_deltas = torch.randn(k, 4 * classes, generator=g)
    return class_logits, box_deltas, [_clustered_boxes(g, p0), _clustered_boxes(g, p1)]


def test_detections_from_box_head_export_as_softmax_and_nms_and_equal_eager(tmp_path_factory):
    g = torch.Generator().manual_seed(9)
    session, ops, domains = _export_module(
        tmp_path_factory,
        _BoxHeadDetections(),
        _box_head_inputs(g, 20, 30),
        ({0: Dim("k")}, {0: Dim("k")}, [{0: Dim("p0")}, {0: Dim("p1")}]),
        "detections_from_box_head",
    )
    assert {"Softmax", "GatherND", "NonMaxSuppression"} <= ops and domains <= {""}
    # Many candidates (more survivors than detections_per_img), few, one image without proposals,
    # no proposals at all, and flat logits (every probability 1/7, below the threshold).
    for p0, p1, scale in ((200, 90, 3.0), (9, 14, 3.0), (0, 25, 3.0), (0, 0, 3.0), (40, 40, 0.0)):
        inputs = _box_head_inputs(g, p0, p1, logit_scale=scale)
        if p0 >= 20:
            # Equal scores in one class: both orders put the lower (proposal, class) position first.
            inputs[0][10:20] = inputs[0][:10]
        expected = roiops.detections_from_box_head(*inputs, [(70, 90), (50, 60)], 0.2, 0.5, 12)
        assert (sum(len(b) for b in expected[0]) == 0) == (scale == 0.0 or p0 + p1 == 0)
        _assert_same_lists(_run(session, inputs[0], inputs[1], *inputs[2]), expected, atol=2e-5)


def test_soft_nms_has_no_onnx_equivalent_and_says_so(tmp_path):
    with pytest.raises(Exception, match="soft_nms has no standard ONNX equivalent"):
        roiops.onnx.export(
            _Call(lambda b, s: roiops.soft_nms(b, s)[0]),
            (_boxes(torch.Generator(), 4, 9), torch.rand(4)),
            tmp_path / "soft.onnx",
        )


def test_torchscript_exporter_emits_the_same_standard_ops(tmp_path):
    roiops.onnx.register_torchscript_symbolics()

    class Model(torch.nn.Module):
        def forward(self, x, rois, boxes, scores):
            return (
                roiops.roi_align(x, rois, 7, 0.5, 0, True),
                roiops.roi_align(x, rois, 7, 0.5, 2, False),
                roiops.roi_pool(x, rois, 5, 0.5),
                roiops.nms(boxes, scores, 0.5),
            )

    g = torch.Generator().manual_seed(7)
    args = (torch.randn(2, 3, 20, 24), _rois(g, 8, 2, 40), _clustered_boxes(g, 40), torch.rand(40))
    path = tmp_path / "ts.onnx"
    torch.onnx.export(
        Model(),
        args,
        str(path),
        dynamo=False,
        opset_version=roiops.onnx.OPSET,
        input_names=["x", "rois", "boxes", "scores"],
        dynamic_axes={"x": [2, 3], "rois": [0], "boxes": [0], "scores": [0]},
    )
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"RoiAlign", "MaxRoiPool", "NonMaxSuppression"} <= ops
    session = ort.InferenceSession(str(path))
    args = (
        torch.randn(2, 3, 13, 29),
        _rois(g, 11, 2, 50),
        _clustered_boxes(g, 90),
        torch.rand(90, generator=g),
    )
    for out, expected in zip(_run(session, *args), Model()(*args)):
        np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_importing_roiops_does_not_import_onnxscript():
    code = "import sys, roiops; assert 'onnxscript' not in sys.modules and 'roiops.onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
