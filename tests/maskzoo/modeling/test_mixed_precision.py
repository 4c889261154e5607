"""Mixed precision: under torch.autocast (bfloat16 on the CPU here; float16 on CUDA in train --amp)
the models train with float32 losses and finite gradients, keep anchors and boxes in float32, and
detect what the float32 run detects, in float32."""

import pytest
import torch
from _torchvision_oracle import narrow_config

import maskzoo
import roiops
from maskzoo.modeling.anchors import AnchorGenerator
from maskzoo.modeling.precision import to_box_precision

# Three classes, small images, few proposals: each model runs in a few seconds on 2 cores.
TINY = dict(
    num_classes=3,
    min_size=128,
    max_size=160,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=200,
    rpn_post_nms_top_n_test=100,
    box_batch_size_per_image=32,
    box_score_thresh=0.0,
    box_detections_per_img=10,
)


def tiny_model(name):
    torch.manual_seed(0)
    return maskzoo.build_from_config(narrow_config(name, **TINY))


def target(h, w, keypoints=False):
    boxes = torch.tensor([[10.0, 10.0, 60.0, 70.0], [70.0, 30.0, 140.0, 100.0]])
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    t = {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}
    if keypoints:
        g = torch.Generator().manual_seed(0)
        size = boxes[:, None, 2:] - boxes[:, None, :2]
        xy = boxes[:, None, :2] + torch.rand(2, 17, 2, generator=g) * size
        t["keypoints"] = torch.cat([xy, torch.full((2, 17, 1), 2.0)], dim=2)
        del t["masks"]
    return t


def test_to_box_precision_widens_half_types_only():
    half = torch.tensor([1216.0], dtype=torch.bfloat16)
    assert to_box_precision(half).dtype == torch.float32
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor([1216.3], dtype=dtype)
        assert to_box_precision(t) is t  # float32 / float64 runs compute exactly as before


def test_anchors_of_half_feature_maps_are_the_float32_anchors():
    # A 1216 px batch: bfloat16 would round the far anchors to multiples of 8 px.
    gen = AnchorGenerator(((32,), (64,)), (0.5, 1.0, 2.0))
    batch = torch.zeros(1, 3, 1216, 1216)
    maps = [torch.zeros(1, 1, 152, 152), torch.zeros(1, 1, 76, 76)]
    expected = gen(batch, maps)
    anchors = gen(batch, [m.bfloat16() for m in maps])
    assert anchors.dtype == torch.float32
    assert torch.equal(anchors, expected)


@pytest.mark.parametrize("name", ["r18_fpn", "keypoint_r18_fpn", "r50_c4"])
def test_train_step_under_bf16_autocast_gives_float32_losses_and_finite_gradients(name):
    model = tiny_model(name).train()
    images = [torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(1))]
    targets = [target(120, 150, keypoints=name.startswith("keypoint"))]
    torch.manual_seed(2)
    reference = model(images, targets)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert losses.keys() == reference.keys()
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values()), losses
    # Anchors match ground truth in float32 as in the float32 run, so the same anchors are sampled
    # and the RPN losses differ only by the bfloat16 head outputs.
    for key in ("loss_objectness", "loss_rpn_box_reg"):
        torch.testing.assert_close(losses[key], reference[key].detach(), rtol=0.05, atol=1e-3)
    model.zero_grad()
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n, p in trainable if p.grad is None] == []
    assert [n for n, p in trainable if not torch.isfinite(p.grad).all()] == []


def test_keypoint_inference_under_bf16_autocast_is_float32():
    model = tiny_model("keypoint_r18_fpn").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model([torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(3))])[0]
    assert len(out["boxes"]) > 0
    for key in ("boxes", "scores", "keypoints", "keypoints_scores"):
        assert out[key].dtype == torch.float32, key
    assert bool((out["keypoints"][..., 0] <= 150).all()) and bool((out["keypoints"][..., 1] <= 120).all())


def test_inference_under_bf16_autocast_detects_what_float32_detects_in_float32():
    model = tiny_model("r18_fpn").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # Decisive class logits: near-uniform random-init scores would rank by rounding noise.
        w = model.roi_heads.box_predictor.class_logits.weight
        w.copy_(torch.randn(w.shape, generator=g) * 0.2)
        image = [torch.rand(3, 120, 150, generator=g)]
        ref = model(image)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(image)[0]
    assert {k: v.dtype for k, v in out.items()} == {
        "boxes": torch.float32,
        "labels": torch.int64,
        "scores": torch.float32,
        "masks": torch.float32,
    }
    assert len(out["boxes"]) == len(ref["boxes"]) > 0
    # bfloat16 features move boxes by a fraction of a pixel and reorder near-equal scores: most
    # detections have a float32 twin (IoU > 0.9, same label), and the top scores agree loosely.
    best_iou, twin = roiops.box_iou(out["boxes"], ref["boxes"]).max(dim=1)
    same = (best_iou > 0.9) & (out["labels"] == ref["labels"][twin])
    assert same.float().mean() >= 0.6, (best_iou, out["labels"], ref["labels"][twin])
    torch.testing.assert_close(out["scores"][:3], ref["scores"][:3], atol=0.05, rtol=0)
    assert out["masks"].shape == ref["masks"].shape


def test_a_bfloat16_model_without_autocast_pools_float32_boxes_and_detects_in_float32():
    # A model converted to bfloat16 (no autocast): the poolers get float32 boxes with bfloat16
    # maps, which they read in float32 rather than rounding the boxes.
    model = tiny_model("r18_fpn").bfloat16().eval()
    with torch.no_grad():
        out = model([torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(4)).bfloat16()])[0]
    assert len(out["boxes"]) > 0
    assert out["boxes"].dtype == out["scores"].dtype == out["masks"].dtype == torch.float32


@pytest.mark.cuda
def test_cuda_float16_train_step_with_grad_scaler_and_float32_inference():
    # What `maskzoo train --amp` runs: float16 autocast, GradScaler, one SGD step.
    cuda = torch.device("cuda")
    model = tiny_model("r18_fpn").to(cuda).train()
    images = [torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(1)).to(cuda)]
    targets = [{k: v.to(cuda) for k, v in target(120, 150).items()}]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        losses = model(images, targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values()), losses
    scaler.scale(sum(losses.values())).backward()
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.isfinite(p).all() for p in params)
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        out = model(images)[0]
    assert out["boxes"].dtype == out["scores"].dtype == out["masks"].dtype == torch.float32
