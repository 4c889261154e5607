"""The exported inference graph (torch.export, ONNX in onnxruntime, AOTInductor in a process
without maskzoo) returns eager's detections on images of several sizes, zero detections included.

One small r18_fpn (images resized to 160 px, random weights with realistic frozen batch norms) is
exported once per module; its score threshold lets blob images through and rejects noise."""

import subprocess
import sys

import onnx
import onnxruntime as ort
import pytest
import torch
from _small_detector import assert_same_detections, blobs, small_r18_fpn

import maskzoo.export


@pytest.fixture(scope="module")
def model():
    return small_r18_fpn()


@pytest.fixture(scope="module")
def images():
    """(image, whether eager finds objects): three sizes with detections, noise without."""
    g = torch.Generator().manual_seed(1)
    return [
        (blobs(g, 96, 128), True),
        (blobs(g, 150, 90), True),
        (torch.zeros(3, 120, 100), True),
        (torch.rand(3, 96, 128, generator=g), False),
    ]


@pytest.fixture(scope="module")
def eager(model, images):
    with torch.no_grad():
        return [model([image])[0] for image, _ in images]


@pytest.fixture(scope="module")
def program(model):
    return maskzoo.export.export_program(model)


def test_exported_program_matches_eager_on_several_sizes_and_zero_detections(program, images, eager):
    assert [len(e["boxes"]) > 0 for e in eager] == [found for _, found in images]
    graph = program.module()
    with torch.no_grad():
        for (image, _), expected in zip(images, eager):
            assert_same_detections(graph(image), expected)


def test_exported_graph_keeps_sizes_symbolic_and_calls_roiops_ops(program):
    (image,) = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == "image"]
    assert all(not isinstance(s, int) for s in image.meta["val"].shape[1:])
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {
        "roiops.box_decode.default",
        "roiops.batched_nms.default",
        "roiops.multi_scale_roi_align.default",
        "roiops.paste_masks.default",
    } <= targets
    # The op chains, not the fused ops whose list outputs AOTInductor cannot compile.
    assert not {"roiops.rpn_proposals.default", "roiops.detections_from_box_head.default"} & targets


def test_exported_graph_runs_image_convolutions_channels_last_and_roi_convolutions_nchw(program):
    # The program's strides, which AOTInductor (no layout optimisation) starts from: NHWC where the
    # batch is the image (fast oneDNN path), NCHW weights over the RoIs (data-dependent batch: NHWC
    # miscompiles on AOTInductor's unpacked path; the frozen package's packed ones follow the input).
    # The stride-1 3x3 convolutions of the backbone, the FPN, the RPN and the mask head are roiops'
    # Winograd op, a kernel of its own (channels_last output) that Inductor calls as it is.
    convs = [n for n in program.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    winograd = [n for n in program.graph.nodes if n.target == torch.ops.roiops.winograd_conv3x3.default]
    image_convs = [n for n in convs if isinstance(n.args[0].meta["val"].shape[0], int)]
    roi_convs = [n for n in convs if not isinstance(n.args[0].meta["val"].shape[0], int)]
    roi_winograd = [n for n in winograd if not isinstance(n.args[0].meta["val"].shape[0], int)]
    assert len(image_convs) > 20 and len(roi_convs) >= 1 and len(roi_winograd) == 4
    # ResNet-18's 13 unstrided, the FPN outputs, the RPN conv at each of 5 levels, the mask head
    assert len(winograd) == 13 + 4 + 5 + 4
    for node in image_convs:
        for t in (node.args[0].meta["val"], node.meta["val"]):
            assert t.stride()[1] == 1 and t.stride()[3] == t.shape[1], node.name
    for node in roi_convs:  # their outputs' layout is the convolution's (the first reads NHWC RoIs)
        t = node.meta["val"]
        assert t.stride()[3] == 1 and t.stride()[1] == t.shape[2] * t.shape[3], node.name


def test_mask_deconvolution_runs_as_1x1_convolution_and_depth_to_space_with_the_same_logits(model, program):
    graph = maskzoo.export.DeployGraph(model)
    predictor = model.roi_heads.mask_predictor
    g = torch.Generator().manual_seed(2)
    for rois in (5, 0):
        x = torch.randn(rois, predictor.deconv.in_channels, 14, 14, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(graph.mask_logits(x), predictor(x), rtol=1e-5, atol=1e-5)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("conv_transpose" in t for t in targets)


@pytest.mark.slow
def test_onnx_file_has_only_standard_ops_and_matches_eager_in_onnxruntime_and_openvino(
    program, images, eager, tmp_path
):
    path = maskzoo.export.onnx_program(program, tmp_path / "r18.onnx")
    assert {node.domain for node in onnx.load(path).graph.node} <= {""}
    session = ort.InferenceSession(path)
    for (image, _), expected in zip(images, eager):
        assert_same_detections(session.run(None, {"image": image.numpy()}), expected)
    # The same file in OpenVINO (its ONNX reader; no custom ops to register).
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for (image, _), expected in zip(images[:2], eager[:2]):
        results = compiled(image.numpy())
        assert_same_detections([results[o] for o in compiled.outputs], expected)


AOTI_RUNNER = """
import sys, torch, roiops
assert "maskzoo" not in sys.modules
runner = torch._inductor.aoti_load_package(sys.argv[1])
images = torch.load(sys.argv[2])
torch.save([tuple(runner(image)) for image in images], sys.argv[3])
assert "maskzoo" not in sys.modules
"""


@pytest.mark.slow
def test_aoti_package_runs_without_maskzoo_and_matches_eager(program, images, eager, tmp_path):
    # In file order this compiles the program that the ONNX test has just exported.
    package = maskzoo.export.package_program(program, tmp_path / "r18.pt2")
    torch.save([image for image, _ in images], tmp_path / "images.pt")
    subprocess.run(
        [sys.executable, "-c", AOTI_RUNNER, package, str(tmp_path / "images.pt"), str(tmp_path / "out.pt")],
        check=True,
    )
    for outputs, expected in zip(torch.load(tmp_path / "out.pt"), eager):
        assert_same_detections(outputs, expected)


def test_export_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        maskzoo.export.export_program(maskzoo.build("r18_fpn_demo"))


def test_export_command_builds_the_model_and_writes_the_chosen_format(monkeypatch, tmp_path, capsys):
    from maskzoo import cli

    calls = []
    monkeypatch.setattr(maskzoo.export, "to_pt2", lambda m, path: calls.append(("pt2", m, path)) or str(path))
    monkeypatch.setattr(
        maskzoo.export, "to_onnx", lambda m, path: calls.append(("onnx", m, path)) or str(path)
    )
    for fmt in ("pt2", "onnx"):
        out = tmp_path / f"model.{fmt}"
        args = [
            "export",
            "--model",
            "r18_fpn_demo",
            "--set",
            "min_size=64",
            "--format",
            fmt,
            "--out",
            str(out),
        ]
        assert cli.main(args) == 0
        kind, exported, path = calls[-1]
        assert kind == fmt and str(path) == str(out) and not exported.training
        assert exported.config.name == "r18_fpn_demo" and exported.config.transform.min_size == (64,)
    assert cli.main(["export", "--format", "pt2", "--out", str(tmp_path / "x.pt2")]) == 2
    assert "give --model, --checkpoint or both" in capsys.readouterr().err
