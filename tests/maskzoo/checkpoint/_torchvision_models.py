"""torchvision's COCO detection models with random but realistic weights: the parity tests' oracle.

Built the way torchvision builds them when its published COCO_V1 weights are loaded
(``maskrcnn_resnet50_fpn(weights=COCO_V1)``): FrozenBatchNorm2d in the backbone, 3 trainable
backbone stages, and ``overwrite_eps(model, 0.0)`` after loading (the v1 files were trained before
torchvision's frozen batch norm had an eps). Then the weights are randomised so that nothing is an
identity: conv weights scaled per layer, frozen batch norm statistics set from the activations
they actually see (as training leaves them) times a random distortion, random affine parameters,
and peaked class logits so that scores are well separated.
"""

import torch
from torch import nn
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNN
from torchvision.models.detection.mask_rcnn import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.resnet import resnet50
from torchvision.ops.misc import FrozenBatchNorm2d


def coco_v2_like(**kwargs) -> nn.Module:
    # maskrcnn_resnet50_fpn_v2 has trainable BatchNorm2d everywhere and no eps surgery: the
    # builder without weights is the published structure.
    return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91, **kwargs)


def coco_v1_like(kind: str, **kwargs) -> nn.Module:
    # What the builders do for weights=COCO_V1, minus the download: is_trained -> frozen BN and
    # trainable_backbone_layers=3; after load_state_dict, eps=0 in every frozen BN.
    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    if kind == "mask":
        model = MaskRCNN(backbone, num_classes=91, **kwargs)
    else:
        model = KeypointRCNN(backbone, num_classes=2, num_keypoints=17, **kwargs)
    overwrite_eps(model, 0.0)
    return model


def synthetic_image(height: int, width: int, seed: int) -> torch.Tensor:
    """Float image Tensor[3, H, W] in [0, 1]: smooth background, a few solid rectangles and discs."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    img = torch.stack([0.3 + 0.4 * xx, 0.5 - 0.3 * yy, 0.4 + 0.2 * xx * yy])
    for _ in range(6):
        colour = torch.rand(3, 1, 1, generator=g)
        cx, cy = torch.rand(2, generator=g).tolist()
        r = 0.05 + 0.2 * torch.rand(1, generator=g).item()
        if torch.rand(1, generator=g).item() < 0.5:
            inside = ((xx - cx).abs() < r) & ((yy - cy).abs() < r * 0.7)
        else:
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img = torch.where(inside, colour.expand(3, height, width), img)
    return (img + 0.03 * torch.randn(3, height, width, generator=g)).clamp(0, 1)


@torch.no_grad()
def randomise(model: nn.Module, calibration_image: torch.Tensor, seed: int) -> None:
    """Realistic random weights: see the module docstring. Deterministic given ``seed``."""
    g = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=g)

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            module.weight.normal_(0.0, 1.0, generator=g)
            fan_in = (
                module.weight[0].numel()
                if not isinstance(module, nn.ConvTranspose2d)
                else (module.weight.shape[0] * module.weight.shape[2] * module.weight.shape[3] // 4)
            )
            # Per layer scale over two orders of magnitude, so batch norm variances are far
            # from 1 (and from each other) and eps matters where it should.
            module.weight.mul_(uniform((), 0.05, 1.0) * (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.02, generator=g)

    # Frozen BN statistics from the activations each one sees, in forward order, distorted.
    def calibrate(bn, inputs):
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3))
        c = mean.numel()
        bn.running_mean.copy_(mean + 0.1 * var.sqrt() * torch.randn(c, generator=g))
        bn.running_var.copy_(var * uniform(c, 0.5, 2.0) + 1e-12)
        bn.weight.copy_(uniform(c, 0.3, 1.2))
        bn.bias.copy_(0.2 * torch.randn(c, generator=g))

    norms = (FrozenBatchNorm2d, nn.BatchNorm2d)
    handles = [m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, norms)]
    was_training = model.training
    model.eval()
    if any(isinstance(m, nn.BatchNorm2d) for m in model.roi_heads.modules()):
        # v2: the heads' batch norms too, on the RoIs they see (every detection kept, so that the
        # mask head sees some).
        threshold = model.roi_heads.score_thresh
        model.roi_heads.score_thresh = 0.0
        model([calibration_image])
        model.roi_heads.score_thresh = threshold
    else:
        model.backbone(model.transform([calibration_image])[0].tensors)
    for h in handles:
        h.remove()
    model.train(was_training)

    heads = model.roi_heads
    # Peaked but not saturated class scores: few near-ties, and no scores rounded to 1.0.
    heads.box_predictor.cls_score.weight.mul_(40.0 if heads.box_predictor.cls_score.out_features > 2 else 6.0)
    heads.box_predictor.bbox_pred.weight.mul_(5.0)


def build_torchvision(kind: str, seed: int, **kwargs) -> nn.Module:
    """torchvision's maskrcnn_resnet50_fpn (kind "mask"), maskrcnn_resnet50_fpn_v2 ("mask_v2") or
    keypointrcnn_resnet50_fpn ("keypoint")."""
    torch.manual_seed(seed)
    model = coco_v2_like(**kwargs) if kind == "mask_v2" else coco_v1_like(kind, **kwargs)
    randomise(model, synthetic_image(320, 416, seed + 1), seed)
    return model.eval()
