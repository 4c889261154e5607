"""The published COCO weights maskzoo loads, with the AP their source reports.

Sources: torchvision's weight tables (``torchvision.models.detection`` ``*_Weights.COCO_V1``
metadata) and Detectron2's ``MODEL_ZOO.md`` (COCO val2017, single scale). Each file loads with
``maskzoo.build(model, checkpoint=file)`` (converted on load, with its source's conventions) and
``maskzoo convert file out.safetensors`` writes it as a maskzoo file. ``maskzoo list`` and the
README's model table show this list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["PUBLISHED", "PublishedWeights", "for_model", "recognise"]

_D2 = "https://dl.fbaipublicfiles.com/detectron2/"
_TV = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class PublishedWeights:
    model: str  # maskzoo registry name the file loads into
    source: str  # "torchvision" or "Detectron2"
    description: str  # the source's name for the model and schedule
    url: str
    box_ap: float  # COCO box AP the source reports
    mask_ap: float | None = None  # COCO mask AP (Mask R-CNN)
    keypoint_ap: float | None = None  # COCO keypoint AP (Keypoint R-CNN)

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def ap_text(self) -> str:
        second = f"mask {self.mask_ap}" if self.mask_ap is not None else f"keypoint {self.keypoint_ap}"
        return f"box {self.box_ap} / {second}"


PUBLISHED = (
    PublishedWeights(
        "r50_fpn",
        "torchvision",
        "maskrcnn_resnet50_fpn COCO_V1",
        _TV + "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
        37.9,
        mask_ap=34.6,
    ),
    PublishedWeights(
        "r50_fpn_v2",
        "torchvision",
        "maskrcnn_resnet50_fpn_v2 COCO_V1",
        _TV + "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
        47.4,
        mask_ap=41.8,
    ),
    PublishedWeights(
        "keypoint_r50_fpn",
        "torchvision",
        "keypointrcnn_resnet50_fpn COCO_V1",
        _TV + "keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
        54.6,
        keypoint_ap=65.0,
    ),
    PublishedWeights(
        "r50_c4",
        "Detectron2",
        "Mask R-CNN R50-C4 1x",
        _D2 + "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x/137259246/model_final_9243eb.pkl",
        36.8,
        mask_ap=32.2,
    ),
    PublishedWeights(
        "r50_c4",
        "Detectron2",
        "Mask R-CNN R50-C4 3x",
        _D2 + "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x/137849525/model_final_4ce675.pkl",
        39.8,
        mask_ap=34.4,
    ),
    PublishedWeights(
        "r101_c4",
        "Detectron2",
        "Mask R-CNN R101-C4 3x",
        _D2 + "COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x/138363239/model_final_a2914c.pkl",
        42.6,
        mask_ap=36.7,
    ),
    PublishedWeights(
        "r50_fpn",
        "Detectron2",
        "Mask R-CNN R50-FPN 1x",
        _D2 + "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/137260431/model_final_a54504.pkl",
        38.6,
        mask_ap=35.2,
    ),
    PublishedWeights(
        "r50_fpn",
        "Detectron2",
        "Mask R-CNN R50-FPN 3x",
        _D2 + "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl",
        41.0,
        mask_ap=37.2,
    ),
    PublishedWeights(
        "r101_fpn",
        "Detectron2",
        "Mask R-CNN R101-FPN 3x",
        _D2 + "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x/138205316/model_final_a3ec72.pkl",
        42.9,
        mask_ap=38.6,
    ),
    PublishedWeights(
        "x101_32x8d_fpn",
        "Detectron2",
        "Mask R-CNN X101-32x8d-FPN 3x",
        _D2 + "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x/139653917/model_final_2d9806.pkl",
        44.3,
        mask_ap=39.5,
    ),
    PublishedWeights(
        "keypoint_r50_fpn",
        "Detectron2",
        "Keypoint R-CNN R50-FPN 1x",
        _D2 + "COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x/137261548/model_final_04e291.pkl",
        53.6,
        keypoint_ap=64.0,
    ),
    PublishedWeights(
        "keypoint_r50_fpn",
        "Detectron2",
        "Keypoint R-CNN R50-FPN 3x",
        _D2 + "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x/137849621/model_final_a6e10b.pkl",
        55.4,
        keypoint_ap=65.5,
    ),
    PublishedWeights(
        "keypoint_r101_fpn",
        "Detectron2",
        "Keypoint R-CNN R101-FPN 3x",
        _D2 + "COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x/138363331/model_final_997cc7.pkl",
        56.4,
        keypoint_ap=66.1,
    ),
    PublishedWeights(
        "keypoint_x101_32x8d_fpn",
        "Detectron2",
        "Keypoint R-CNN X101-32x8d-FPN 3x",
        _D2 + "COCO-Keypoints/keypoint_rcnn_X_101_32x8d_FPN_3x/139686956/model_final_5ad38f.pkl",
        57.3,
        keypoint_ap=66.0,
    ),
)


def for_model(name: str) -> list[PublishedWeights]:
    """The published files that load into maskzoo model ``name``."""
    return [p for p in PUBLISHED if p.model == name]


def recognise(path: str | os.PathLike) -> PublishedWeights | None:
    """The published file a path names (by its file name, as downloaded), or None."""
    base = os.path.basename(os.fspath(path))
    return next((p for p in PUBLISHED if p.file_name == base), None)
