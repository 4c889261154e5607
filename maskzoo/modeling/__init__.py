"""maskzoo's model components. The module tree of an FPN model (``maskzoo.build("r50_fpn")``)::

    transform                     Transform (no parameters)
    backbone.body                 ResNet: stem.{conv, norm},
                                  res2..res5.<i>.{conv1..3, norm1..3, shortcut.{conv, norm}}
    backbone.fpn                  FPN: lateral.<0..3> (1x1), output.<0..3> (3x3)
    rpn.head                      RPNHead: conv (3x3), objectness (1x1, A), box_deltas (1x1, 4A)
    roi_heads.box_head            FPNBoxHead: fc1, fc2
    roi_heads.box_predictor       BoxPredictor: class_logits, box_deltas
    roi_heads.mask_head           FPNMaskHead: convs.<0..3>
    roi_heads.mask_predictor      MaskPredictor: deconv (2x2 s2), logits (1x1)
    roi_heads.keypoint_head       KeypointHead: convs.<0..7>
    roi_heads.keypoint_predictor  KeypointPredictor: deconv (4x4 s2), then 2x bilinear upsampling

Norm layers (FrozenBatchNorm2d) hold the buffers weight, bias, running_mean, running_var.

torchvision's improved model (``r50_fpn_v2``) puts a batch norm after the FPN's and the heads'
convolutions: those become ``ConvNorm`` modules with ``.conv`` (no bias) and ``.norm``
(``backbone.fpn.lateral.<i>.conv.weight``, ``...lateral.<i>.norm.running_var``,
``roi_heads.mask_head.convs.<i>.conv/norm``); its box head is ``ConvFCBoxHead``
(``roi_heads.box_head.convs.<i>.conv/norm``, ``roi_heads.box_head.fcs.0``) and its RPN head has a
second 3x3 conv at ``rpn.head.extra_convs.0``. The rename rules from torchvision's v2 layout and
from Detectron2's are in ``maskzoo/checkpoint/torchvision.py`` and ``maskzoo/checkpoint/detectron2.py``.

Rename table from torchvision's maskrcnn_resnet50_fpn / keypointrcnn_resnet50_fpn state_dict
(and the resnet_fpn_backbone layouts of R101 / X101), one to one, same shapes:

    torchvision                                          maskzoo
    backbone.body.conv1.weight                           backbone.body.stem.conv.weight
    backbone.body.bn1.{weight,bias,running_mean,running_var}
                                                         backbone.body.stem.norm.{...}
    backbone.body.layer{k}.{i}.conv{j}.weight            backbone.body.res{k+1}.{i}.conv{j}.weight
    backbone.body.layer{k}.{i}.bn{j}.{...}               backbone.body.res{k+1}.{i}.norm{j}.{...}
    backbone.body.layer{k}.0.downsample.0.weight         backbone.body.res{k+1}.0.shortcut.conv.weight
    backbone.body.layer{k}.0.downsample.1.{...}          backbone.body.res{k+1}.0.shortcut.norm.{...}
    backbone.fpn.inner_blocks.{i}.0.{weight,bias}        backbone.fpn.lateral.{i}.{weight,bias}
    backbone.fpn.layer_blocks.{i}.0.{weight,bias}        backbone.fpn.output.{i}.{weight,bias}
    rpn.head.conv.0.0.{weight,bias}                      rpn.head.conv.{weight,bias}
        (old files: rpn.head.conv.{weight,bias})
    rpn.head.cls_logits.{weight,bias}                    rpn.head.objectness.{weight,bias}
    rpn.head.bbox_pred.{weight,bias}                     rpn.head.box_deltas.{weight,bias}
    roi_heads.box_head.fc6.{weight,bias}                 roi_heads.box_head.fc1.{weight,bias}
    roi_heads.box_head.fc7.{weight,bias}                 roi_heads.box_head.fc2.{weight,bias}
    roi_heads.box_predictor.cls_score.{weight,bias}      roi_heads.box_predictor.class_logits.{weight,bias}
    roi_heads.box_predictor.bbox_pred.{weight,bias}      roi_heads.box_predictor.box_deltas.{weight,bias}
    roi_heads.mask_head.{i}.0.{weight,bias}              roi_heads.mask_head.convs.{i}.{weight,bias}
        (old files: roi_heads.mask_head.mask_fcn{i+1}.{weight,bias})
    roi_heads.mask_predictor.conv5_mask.{weight,bias}    roi_heads.mask_predictor.deconv.{weight,bias}
    roi_heads.mask_predictor.mask_fcn_logits.{...}       roi_heads.mask_predictor.logits.{weight,bias}
    roi_heads.keypoint_head.{2i}.{weight,bias}           roi_heads.keypoint_head.convs.{i}.{weight,bias}
    roi_heads.keypoint_predictor.kps_score_lowres.{...}  roi_heads.keypoint_predictor.deconv.{weight,bias}

torchvision's COCO files were made with FrozenBatchNorm2d eps = 0 (torchvision's builders call
overwrite_eps(model, 0.0) after loading them): build maskzoo with ``frozen_bn_eps=0.0`` for them.
ImageNet backbone files (resnet50-*.pth: conv1, bn1, layer1..4, fc) map onto backbone.body with the
same rules (fc dropped) and keep eps = 1e-5.

C4 models (no torchvision counterpart): backbone.body is the ResNet up to res4; res5 lives at
roi_heads.box_head.trunk.<i>.{conv1..3, norm1..3, shortcut.*} and is shared by the mask branch
(roi_heads.mask_head is None; roi_heads.mask_predictor deconvolves the res5 output).
"""
