"""NMS against torchvision.ops: nms of clustered boxes (1k to 100k, IoU 0.7 and 0.5) and batched_nms
with 80 classes against both of torchvision's strategies (per-class loop, coordinate offset)."""

import pytest
import torch
import torchvision
from torchvision.ops.boxes import _batched_nms_coordinate_trick, _batched_nms_vanilla

import roiops

SIZES = [1000, 5000, 20000, 100000]
BATCHED_BOXES, CLASSES = 20000, 80


def clustered_boxes(n: int, g: torch.Generator, image: float = 1000.0):
    """Detector-like boxes: n // 20 objects, each with ~20 jittered proposals around it."""
    clusters = max(1, n // 20)
    centres = torch.rand(clusters, 2, generator=g) * image
    sizes = torch.rand(clusters, 2, generator=g) * 120 + 8
    which = torch.randint(0, clusters, (n,), generator=g)
    ctr = centres[which] + torch.randn(n, 2, generator=g) * sizes[which] * 0.15
    wh = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    return torch.cat([ctr - wh / 2, ctr + wh / 2], 1), torch.rand(n, generator=g)


@pytest.fixture(scope="module")
def data() -> dict:
    g = torch.Generator().manual_seed(0)
    cases = {n: clustered_boxes(n, g) for n in SIZES}
    boxes, scores = clustered_boxes(BATCHED_BOXES, g)
    classes = torch.randint(0, CLASSES, (BATCHED_BOXES,), generator=g)
    return {"nms": cases, "batched": (boxes, scores, classes)}


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("iou", [0.7, 0.5])
def test_nms(benchmark, data, iou, n, impl):
    benchmark.group = f"nms {n} clustered, IoU {iou}"
    op = roiops.nms if impl == "roiops" else torchvision.ops.nms
    boxes, scores = data["nms"][n]
    if impl == "torchvision" and n >= 100000:
        # torchvision's quadratic kernel takes tens of seconds here: one timed call, whatever
        # --benchmark-min-rounds says.
        benchmark.pedantic(op, (boxes, scores, iou), rounds=1)
    else:
        benchmark(op, boxes, scores, iou)


BATCHED = {
    "roiops": roiops.batched_nms,
    "torchvision_per_class": _batched_nms_vanilla,
    "torchvision_offset": _batched_nms_coordinate_trick,
}


@pytest.mark.parametrize("impl", list(BATCHED))
def test_batched_nms(benchmark, data, impl):
    benchmark.group = f"batched_nms {BATCHED_BOXES}, {CLASSES} classes"
    benchmark(BATCHED[impl], *data["batched"], 0.5)
