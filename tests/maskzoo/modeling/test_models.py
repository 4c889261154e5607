"""Whole models: every registered model builds; torchvision's state_dict maps one to one onto ours;
with the same weights the r18 models reproduce torchvision's detections and seeded training losses;
outputs are well formed in input coordinates; training runs backward; bad targets raise."""

import pytest
import torch
from _torchvision_oracle import narrow_config, to_maskzoo_state_dict, tv_model

import maskzoo
from maskzoo.modeling.roi_heads import RoIHeads

# Tiny images, few proposals and detections, narrow heads: the whole file stays cheap on 2 cores.
SMALL = dict(
    min_size=160,
    max_size=224,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=150,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=150,
    box_batch_size_per_image=64,
)


def build_small(name, **overrides):
    return maskzoo.build_from_config(narrow_config(name, **{**SMALL, **overrides}))


def tiny_target(h, w, n, num_classes, g, with_masks=True, with_keypoints=False):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
    wh = 16 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
    boxes = torch.cat([xy, xy + wh], dim=1)
    t = {"boxes": boxes, "labels": torch.randint(1, num_classes, (n,), generator=g)}
    if with_masks:
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for i, b in enumerate(boxes.long().tolist()):
            masks[i, b[1] : b[3], b[0] : b[2]] = 1
        t["masks"] = masks
    if with_keypoints:
        kp = xy[:, None] + torch.rand(n, 17, 2, generator=g) * wh[:, None]
        t["keypoints"] = torch.cat([kp, torch.randint(0, 3, (n, 17, 1), generator=g).float()], dim=2)
    return t


# ---- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", maskzoo.list_models())
def test_every_registered_model_builds_with_its_config(name):
    model = maskzoo.build(name)
    assert model.config.name == name
    assert all(torch.isfinite(p).all() for p in model.parameters())
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if model.config.backbone.trainable_layers < 5:
        assert any(n.startswith("backbone.body.stem.") for n in frozen)
    assert not any(n.startswith(("rpn.", "roi_heads.box_predictor")) for n in frozen)


@pytest.mark.slow
@pytest.mark.parametrize(
    "tv_builder, name, kwargs",
    [
        ("maskrcnn_resnet50_fpn", "r50_fpn", {}),
        ("keypointrcnn_resnet50_fpn", "keypoint_r50_fpn", {"num_classes": 2}),
        ("r101", "r101_fpn", {}),
        ("x101", "x101_32x8d_fpn", {}),
    ],
)
def test_torchvision_state_dict_maps_one_to_one(tv_builder, name, kwargs):
    from torchvision.models import detection
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d

    if tv_builder in ("r101", "x101"):
        trunk = "resnet101" if tv_builder == "r101" else "resnext101_32x8d"
        tv = detection.MaskRCNN(
            resnet_fpn_backbone(backbone_name=trunk, weights=None, norm_layer=FrozenBatchNorm2d),
            num_classes=91,
        )
    else:
        tv = getattr(detection, tv_builder)(weights=None, weights_backbone=None, **kwargs)
    tv_state = tv.state_dict()
    ours = maskzoo.build(name, **kwargs).state_dict()
    renamed = to_maskzoo_state_dict(
        {k: v for k, v in tv_state.items() if not k.endswith("num_batches_tracked")}
    )
    assert set(renamed) == set(ours)
    for key, value in renamed.items():
        assert value.shape == ours[key].shape, key


# ---- parity with torchvision (same weights) --------------------------------------------------


@pytest.mark.parametrize("kind", ["mask", "keypoint"])
def test_r18_inference_reproduces_torchvision(kind):
    kw = dict(SMALL, box_score_thresh=0.0, box_detections_per_img=60)
    num_classes = 5 if kind == "mask" else 2
    tv = tv_model(kind, 18, num_classes=num_classes, **kw).eval()
    name = "r18_fpn" if kind == "mask" else "keypoint_r18_fpn"
    ours = build_small(
        name, norm="frozen_bn", frozen_bn_eps=0.0, trainable_backbone_layers=3, num_classes=num_classes, **kw
    ).eval()
    ours.load_state_dict(to_maskzoo_state_dict(tv.state_dict()))
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 150, 200, generator=g), torch.rand(3, 230, 130, generator=g)]
    with torch.no_grad():
        expected, got = tv(images), ours(images)
    for e, o in zip(expected, got):
        assert 50 <= len(o["boxes"]) == len(e["boxes"])
        torch.testing.assert_close(o["boxes"], e["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(o["scores"], e["scores"], atol=1e-4, rtol=0)
        assert torch.equal(o["labels"], e["labels"])
        for key in ("masks", "keypoints", "keypoints_scores"):
            if key in e:
                torch.testing.assert_close(o[key], e[key], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["mask", "keypoint"])
def test_r18_seeded_training_losses_reproduce_torchvision(kind):
    num_classes = 5 if kind == "mask" else 2
    tv = tv_model(kind, 18, num_classes=num_classes, **SMALL).train()
    name = "r18_fpn" if kind == "mask" else "keypoint_r18_fpn"
    ours = build_small(
        name, norm="frozen_bn", frozen_bn_eps=0.0, trainable_backbone_layers=3, num_classes=num_classes
    ).train()
    ours.load_state_dict(to_maskzoo_state_dict(tv.state_dict()))
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 150, 200, generator=g), torch.rand(3, 230, 130, generator=g)]
    targets = [
        tiny_target(150, 200, 3, num_classes, g, kind == "mask", kind == "keypoint"),
        tiny_target(230, 130, 2, num_classes, g, kind == "mask", kind == "keypoint"),
    ]
    torch.manual_seed(7)
    expected = tv(images, targets)
    torch.manual_seed(7)
    got = ours(images, targets)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-4, rtol=0, msg=key)


# ---- behaviour -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return build_small("r18_fpn", box_score_thresh=0.0, box_detections_per_img=20)


def test_eval_outputs_are_well_formed_in_input_coordinates(r18):
    r18.eval()
    g = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 90, 300, generator=g),
        torch.randint(0, 256, (3, 257, 61), generator=g, dtype=torch.uint8),
    ]
    with torch.no_grad():
        out = r18(images)
    for o, img in zip(out, images):
        h, w = img.shape[-2:]
        d = o["boxes"].shape[0]
        assert 0 < d <= 20
        assert o["boxes"].dtype == torch.float32 and o["labels"].dtype == torch.int64
        assert o["scores"].shape == (d,) and bool((o["scores"][:-1] >= o["scores"][1:]).all())
        assert bool((o["labels"] >= 1).all()) and bool((o["labels"] < 91).all())
        assert bool((o["boxes"][:, 0::2] >= 0).all()) and bool((o["boxes"][:, 0::2] <= w).all())
        assert bool((o["boxes"][:, 1::2] >= 0).all()) and bool((o["boxes"][:, 1::2] <= h).all())
        assert o["masks"].shape == (d, 1, h, w)
        assert bool((o["masks"] >= 0).all()) and bool((o["masks"] <= 1).all())


def test_uint8_and_float_images_give_the_same_detections(r18):
    r18.eval()
    image = torch.randint(
        0, 256, (3, 120, 170), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    with torch.no_grad():
        a, b = r18([image])[0], r18([image.float() / 255])[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_detections_scale_with_the_input_image(r18):
    # The same picture at two resolutions becomes the same resized batch (up to resampling), so
    # boxes in input coordinates scale with the input.
    r18.eval()
    image = torch.rand(3, 112, 160, generator=torch.Generator().manual_seed(2))
    big = torch.nn.functional.interpolate(image[None], scale_factor=2.0, mode="nearest")[0]
    with torch.no_grad():
        small_out, big_out = r18([image])[0], r18([big])[0]
    assert small_out["masks"].shape[-2:] == (112, 160) and big_out["masks"].shape[-2:] == (224, 320)
    assert bool((small_out["boxes"] <= torch.tensor([160, 112, 160, 112])).all())
    assert bool((big_out["boxes"] <= torch.tensor([320, 224, 320, 224])).all())


def test_training_returns_finite_losses_and_backward_reaches_every_trainable_parameter(r18):
    r18.train()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 120, 160, generator=g), torch.rand(3, 100, 140, generator=g)]
    targets = [tiny_target(120, 160, 2, 91, g), tiny_target(100, 140, 1, 91, g)]
    r18.zero_grad()
    losses = r18(images, targets)
    assert set(losses) == {
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
    }
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in r18.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_an_image_without_objects_trains(r18):
    r18.train()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 120, 160, generator=g), torch.rand(3, 100, 140, generator=g)]
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, 100, 140, dtype=torch.uint8),
    }
    losses = r18(images, [tiny_target(120, 160, 2, 91, g), empty])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda t: t.pop("masks"), ValueError, "masks"),
        (lambda t: t.update(labels=t["labels"].int()), TypeError, "labels"),
        (lambda t: t.update(boxes=torch.tensor([[10.0, 10.0, 5.0, 20.0]])), ValueError, "width"),
        (lambda t: t.update(labels=torch.tensor([91])), ValueError, "labels"),
        (lambda t: t.update(masks=torch.zeros(1, 10, 10)), ValueError, "masks"),
    ],
)
def test_malformed_targets_raise_naming_the_key(r18, change, error, match):
    r18.train()
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.zeros(1, 100, 100, dtype=torch.uint8),
    }
    change(target)
    with pytest.raises(error, match=match):
        r18([torch.rand(3, 100, 100)], [target])


def test_training_without_targets_raises(r18):
    r18.train()
    with pytest.raises(ValueError, match="targets"):
        r18([torch.rand(3, 64, 64)])


def test_class_agnostic_mask_head_predicts_one_mask():
    model = build_small("r18_fpn", mask_class_agnostic=True, box_score_thresh=0.0, box_detections_per_img=5)
    assert model.roi_heads.mask_predictor.logits.out_channels == 1
    g = torch.Generator().manual_seed(0)
    model.train()
    losses = model([torch.rand(3, 100, 120, generator=g)], [tiny_target(100, 120, 2, 91, g)])
    assert torch.isfinite(losses["loss_mask"])
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 100, 120, generator=g)])[0]
    assert out["masks"].shape[1:] == (1, 100, 120)


def test_c4_model_trains_and_predicts_14x14_masks(monkeypatch):
    model = build_small(
        "r50_c4",
        box_score_thresh=0.0,
        box_detections_per_img=5,
        rpn_post_nms_top_n_test=50,
        rpn_post_nms_top_n_train=50,
        box_batch_size_per_image=32,
    )
    assert model.roi_heads.mask_head is None and model.rpn.head.objectness.out_channels == 15
    g = torch.Generator().manual_seed(0)
    model.train()
    losses = model([torch.rand(3, 100, 120, generator=g)], [tiny_target(100, 120, 2, 91, g)])
    assert set(losses) >= {"loss_classifier", "loss_mask"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.box_head.trunk[0].conv1.weight.grad is not None
    # The shared res5 output gives the mask loss that pooling the foreground RoIs again gives.
    assert model.roi_heads.shares_box_trunk
    images, targets = [torch.rand(3, 100, 120, generator=g)], [tiny_target(100, 120, 2, 91, g)]
    torch.manual_seed(1)
    shared = model(images, targets)["loss_mask"]
    monkeypatch.setattr(RoIHeads, "shares_box_trunk", property(lambda self: False))
    torch.manual_seed(1)
    recomputed = model(images, targets)["loss_mask"]
    monkeypatch.undo()
    torch.testing.assert_close(shared, recomputed, atol=1e-5, rtol=1e-5)
    model.eval()
    with torch.no_grad():
        pooled = model.roi_heads.mask_pooler(
            model.backbone(torch.zeros(1, 3, 64, 64)), [torch.tensor([[0.0, 0.0, 32.0, 32.0]])], [(64, 64)]
        )
        logits = model.roi_heads.mask_predictor(model.roi_heads.box_head.features(pooled))
        assert logits.shape == (1, 91, 14, 14)
        out = model([torch.rand(3, 100, 120, generator=g)])[0]
    assert out["masks"].shape == (len(out["boxes"]), 1, 100, 120)


def test_keypoint_model_predicts_keypoints_inside_the_image():
    model = build_small("keypoint_r18_fpn", box_score_thresh=0.0, box_detections_per_img=5).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 90, 130, generator=torch.Generator().manual_seed(0))])[0]
    d = len(out["boxes"])
    assert out["keypoints"].shape == (d, 17, 3) and out["keypoints_scores"].shape == (d, 17)
    assert bool((out["keypoints"][..., 0] <= 130).all()) and bool((out["keypoints"][..., 1] <= 90).all())
    assert bool((out["keypoints"][..., 2] == 1).all())


@pytest.mark.parametrize(
    "norm, layer", [("frozen_bn", "FrozenBatchNorm2d"), ("bn", "BatchNorm2d"), ("gn", "GroupNorm")]
)
def test_norm_choice_sets_every_backbone_norm_layer(norm, layer):
    model = maskzoo.build("r18_fpn", norm=norm)
    norms = {type(m).__name__ for n, m in model.backbone.body.named_modules() if "norm" in n.split(".")[-1]}
    assert norms == {layer}


@pytest.mark.parametrize(
    "trainable, frozen_stages",
    [(0, {"stem", "res2", "res3", "res4", "res5"}), (3, {"stem", "res2"}), (5, set())],
)
def test_trainable_backbone_layers_freeze_the_lowest_stages(trainable, frozen_stages):
    model = maskzoo.build("r18_fpn", trainable_backbone_layers=trainable)
    for name, p in model.backbone.body.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in frozen_stages), name
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())
    model.train()
    for name, m in model.backbone.body.named_children():
        assert m.training == (name not in frozen_stages), name


@pytest.mark.parametrize("name", ["r18_fpn", "keypoint_r18_fpn"])
def test_no_detection_gives_empty_well_formed_outputs(name):
    model = build_small(name, box_score_thresh=1.0).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 100, 120)])[0]
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["labels"].dtype == torch.int64
    if "masks" in out:
        assert out["masks"].shape == (0, 1, 100, 120)
    else:
        assert out["keypoints"].shape == (0, 17, 3) and out["keypoints_scores"].shape == (0, 17)


def test_images_must_be_a_list_of_chw_tensors(r18):
    r18.eval()
    with pytest.raises(TypeError, match="list"):
        r18(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="empty"):
        r18([])
