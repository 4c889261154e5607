"""Box ops against torchvision: box_iou and the generalized / distance / complete IoU of 2k x 20k
boxes; BoxCoder encode / decode of 200k boxes
(decode with 1 class and with 91 classes), and the box head's decode of 1000 proposals x 91 classes,
against torchvision's BoxCoder."""

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

import roiops

IOU_SHAPE = (2000, 20000)
CODED = 200000
BOX_HEAD = 1000  # RPN proposals per image at test time (post_nms_top_n_test)
WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 200 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.fixture(scope="module")
def data() -> dict:
    g = torch.Generator().manual_seed(0)
    a, b = (random_boxes(n, g) for n in IOU_SHAPE)
    gt, proposals = random_boxes(CODED, g), random_boxes(CODED, g)
    return {
        "iou": (a, b),
        "gt": gt,
        "proposals": proposals,
        "codes1": torch.randn(CODED, 4, generator=g),
        "codes91": torch.randn(CODED // 10, 4 * 91, generator=g),
        "box_head": torch.randn(BOX_HEAD, 4 * 91, generator=g),
    }


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
def test_box_iou(benchmark, data, impl):
    benchmark.group = f"box_iou {IOU_SHAPE[0]} x {IOU_SHAPE[1]}"
    op = roiops.box_iou if impl == "roiops" else torchvision.ops.box_iou
    benchmark(op, *data["iou"])


PAIRWISE_FAMILY = {
    "generalized_box_iou": (roiops.generalized_box_iou, torchvision.ops.generalized_box_iou),
    "distance_box_iou": (roiops.distance_box_iou, torchvision.ops.distance_box_iou),
    "complete_box_iou": (roiops.complete_box_iou, torchvision.ops.complete_box_iou),
}


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
@pytest.mark.parametrize("case", list(PAIRWISE_FAMILY))
def test_box_iou_family(benchmark, data, case, impl):
    benchmark.group = f"{case} {IOU_SHAPE[0]} x {IOU_SHAPE[1]}"
    ours, theirs = PAIRWISE_FAMILY[case]
    benchmark(ours if impl == "roiops" else theirs, *data["iou"])


# case: (group, roiops call, torchvision call), each call taking (coder, data).
CODING = {
    "encode": (f"BoxCoder.encode {CODED}",
               lambda c, d: c.encode(d["gt"], d["proposals"]),
               lambda c, d: c.encode_single(d["gt"], d["proposals"])),
    "decode1": (f"BoxCoder.decode {CODED} x 1 class",
                lambda c, d: c.decode(d["codes1"], d["proposals"]),
                lambda c, d: c.decode(d["codes1"], [d["proposals"]])),
    "decode91": (f"BoxCoder.decode {CODED // 10} x 91 classes",
                 lambda c, d: c.decode(d["codes91"], d["proposals"][: CODED // 10]),
                 lambda c, d: c.decode(d["codes91"], [d["proposals"][: CODED // 10]])),
    "decode_box_head": (f"BoxCoder.decode {BOX_HEAD} x 91 classes (box head)",
                        lambda c, d: c.decode(d["box_head"], d["proposals"][:BOX_HEAD]),
                        lambda c, d: c.decode(d["box_head"], [d["proposals"][:BOX_HEAD]])),
}


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
@pytest.mark.parametrize("case", list(CODING))
def test_box_coder(benchmark, data, case, impl):
    group, ours, theirs = CODING[case]
    benchmark.group = group
    if impl == "roiops":
        benchmark(ours, roiops.BoxCoder(WEIGHTS), data)
    else:
        benchmark(theirs, TorchvisionBoxCoder(WEIGHTS), data)
