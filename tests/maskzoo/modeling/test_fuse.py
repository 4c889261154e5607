"""fuse_for_inference: frozen batch norm folded into convolutions, channels_last; same outputs."""

import copy

import pytest
import torch

import maskzoo
import roiops
from benchmarks._frozen_norms import randomize_frozen_norms
from maskzoo.modeling.backbone import Bottleneck, FrozenBatchNorm2d
from maskzoo.modeling.box_head import ConvFCBoxHead
from maskzoo.modeling.fuse import fold_frozen_batch_norm, fuse_for_inference, is_fused


@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_folding_equals_convolution_then_frozen_norm(eps):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, bias=True).double()
    norm = randomize_frozen_norms(FrozenBatchNorm2d(16, eps=eps), FrozenBatchNorm2d, seed=1).double()
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64)
    expected = norm(conv(x))
    fold_frozen_batch_norm(conv, norm)
    torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def frozen_small_model():
    torch.manual_seed(0)
    model = maskzoo.build(
        "r18_fpn",
        norm="frozen_bn",
        num_classes=5,
        min_size=160,
        max_size=224,
        box_score_thresh=0.0,
        box_detections_per_img=10,
    )
    with torch.no_grad():  # peaked, well separated scores: no near-ties to reorder
        model.roi_heads.box_predictor.class_logits.weight.mul_(50.0)
        model.rpn.head.objectness.weight.mul_(50.0)
    return randomize_frozen_norms(model, FrozenBatchNorm2d, seed=2).eval()


def test_fused_model_has_no_frozen_norms_left_and_gives_the_same_features(frozen_small_model):
    fused = fuse_for_inference(copy.deepcopy(frozen_small_model))
    assert is_fused(fused) and not is_fused(frozen_small_model)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fused.modules())
    x = torch.rand(1, 3, 160, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = frozen_small_model.backbone(x)
        got = fused.backbone(x)
    for level in expected:
        torch.testing.assert_close(
            got[level], expected[level], rtol=1e-4, atol=1e-4 * expected[level].abs().max()
        )


def test_fused_model_gives_the_same_detections(frozen_small_model):
    fused = fuse_for_inference(copy.deepcopy(frozen_small_model))
    image = torch.rand(3, 170, 200, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, b = frozen_small_model([image])[0], fused([image])[0]
    assert a["boxes"].shape[0] == 10
    assert torch.equal(a["labels"], b["labels"])
    torch.testing.assert_close(b["boxes"], a["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(b["scores"], a["scores"], atol=1e-4, rtol=0)


def test_fused_model_runs_its_stride_1_3x3_convolutions_by_winograd(frozen_small_model):
    fused = fuse_for_inference(copy.deepcopy(frozen_small_model))
    plain = fuse_for_inference(copy.deepcopy(frozen_small_model), winograd=False)
    winograd = [name for name, m in fused.named_modules() if isinstance(m, roiops.WinogradConv3x3)]
    mask_convs = [f"roi_heads.mask_head.convs.{i}" for i in range(len(fused.roi_heads.mask_head.convs))]
    fpn_outputs = [f"backbone.fpn.output.{i}" for i in range(4)]
    # ResNet-18's blocks: every conv2; conv1 except in res3-res5's first blocks, which are strided.
    blocks = [f"backbone.body.res{stage}.{block}" for stage in (2, 3, 4, 5) for block in (0, 1)]
    unstrided = [b for b in blocks if b.endswith(".1") or ".res2." in b]
    backbone = [f"{b}.conv2" for b in blocks] + [f"{b}.conv1" for b in unstrided]
    assert sorted(winograd) == sorted(backbone + fpn_outputs + ["rpn.head.conv"] + mask_convs)
    assert fused.rpn.head.conv.relu and fused.roi_heads.mask_head.convs[0].relu
    assert fused.backbone.body.res2[0].conv1.relu and not fused.backbone.body.res2[0].conv2.relu
    assert not fused.backbone.fpn.output[0].relu
    assert not any(isinstance(m, roiops.WinogradConv3x3) for m in plain.modules())
    image = torch.rand(3, 170, 200, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = plain([image])[0], fused([image])[0]
    assert torch.equal(a["labels"], b["labels"])
    torch.testing.assert_close(b["boxes"], a["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(b["scores"], a["scores"], atol=1e-4, rtol=0)
    torch.testing.assert_close(b["masks"], a["masks"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 1), (1, 4)], ids=["plain", "strided", "grouped"])
def test_bottleneck_runs_only_its_stride_1_ungrouped_3x3_by_winograd(stride, groups):
    torch.manual_seed(0)

    def norm(channels):
        return randomize_frozen_norms(FrozenBatchNorm2d(channels), FrozenBatchNorm2d, seed=channels)

    block = Bottleneck(64, 16, stride, groups, 64 // groups, norm).eval()
    x = torch.randn(2, 64, 13, 18)
    with torch.no_grad():
        expected = block(x)
        fused = fuse_for_inference(copy.deepcopy(block))
        by_winograd = stride == 1 and groups == 1
        assert isinstance(fused.conv2, roiops.WinogradConv3x3) == by_winograd
        assert not by_winograd or fused.conv2.relu
        torch.testing.assert_close(fused(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("norm", ["none", "bn"])
def test_conv_box_head_runs_its_3x3_convolutions_by_winograd(norm):
    # torchvision v2's "4conv1fc" box head: four 3x3 convolutions over every proposal's 7x7 feature.
    torch.manual_seed(0)
    head = ConvFCBoxHead(16, 7, (16, 16), norm, representation_size=32, num_fc=1)
    for m in head.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    head.eval()
    x = torch.randn(5, 16, 7, 7)
    with torch.no_grad():
        expected = head(x)
        fused = fuse_for_inference(copy.deepcopy(head))
        # A batch norm folded into its convolution leaves nothing between it and its ReLU.
        assert all(isinstance(c, roiops.WinogradConv3x3) and c.relu for c in fused.convs)
        torch.testing.assert_close(fused(x), expected, atol=1e-4, rtol=1e-4)


def test_fused_model_cannot_be_saved(frozen_small_model, tmp_path):
    fused = fuse_for_inference(copy.deepcopy(frozen_small_model))
    with pytest.raises(ValueError, match="fused"):
        maskzoo.save(fused, tmp_path / "fused.safetensors")
