"""Rotated-box ops against Detectron2's CPU kernels: box_iou_rotated 1k x 1k, nms_rotated of 5k and
20k clustered boxes, batched_nms_rotated, and RoIAlignRotated at box-head shapes (1024 RoIs,
256 channels, 7x7, sampling 2, a 2 x 200 x 304 map), forward and forward + backward.

The ``detectron2`` cases need Detectron2 importable (built from source; CPU is enough) and are
skipped without it, so ``make bench`` times roiops alone. With Detectron2 installed next to roiops:

    python -m pytest benchmarks/bench_rotated.py --benchmark-only --threads 2 --benchmark-json=rot.json
    python benchmarks/ratios.py rot.json      # roiops vs detectron2, median ratio per case
"""

import pytest
import torch

import roiops

try:
    from detectron2.layers import ROIAlignRotated as D2ROIAlignRotated
    from detectron2.layers import batched_nms_rotated as d2_batched_nms_rotated
    from detectron2.layers import nms_rotated as d2_nms_rotated
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated as d2_pairwise_iou_rotated
except ImportError:  # the roiops cases still run
    D2ROIAlignRotated = None

IMPLS = [
    "roiops",
    pytest.param(
        "detectron2",
        marks=pytest.mark.skipif(D2ROIAlignRotated is None, reason="Detectron2 is not installed"),
    ),
]


def random_rotated_boxes(n: int, g: torch.Generator, extent: float = 1000.0) -> torch.Tensor:
    """Boxes spread over an extent x extent image, sides 10-150 pixels, any angle."""
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * 140 + 10
    return torch.cat([xy, wh, torch.rand(n, 1, generator=g) * 360 - 180], 1)


def clustered_rotated_boxes(n: int, g: torch.Generator, image: float = 1000.0):
    """Detector-like rotated boxes: n // 20 objects with ~20 jittered proposals each, and scores."""
    clusters = max(1, n // 20)
    centres = torch.rand(clusters, 2, generator=g) * image
    sizes = torch.rand(clusters, 2, generator=g) * 120 + 8
    angles = torch.rand(clusters, 1, generator=g) * 360 - 180
    which = torch.randint(0, clusters, (n,), generator=g)
    ctr = centres[which] + torch.randn(n, 2, generator=g) * sizes[which] * 0.15
    wh = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    angle = angles[which] + torch.randn(n, 1, generator=g) * 8
    return torch.cat([ctr, wh, angle], 1), torch.rand(n, generator=g)


@pytest.fixture(scope="module")
def data() -> dict:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 256, 200, 304, generator=g)
    # 512 RoIs per image over the 800 x 1216 image (spatial_scale 1/4), sides 16-400 pixels.
    k = 1024
    rois = torch.cat(
        [
            (torch.arange(k) // 512).float()[:, None],
            torch.rand(k, 1, generator=g) * 1216,
            torch.rand(k, 1, generator=g) * 800,
            torch.rand(k, 2, generator=g) * 384 + 16,
            torch.rand(k, 1, generator=g) * 360 - 180,
        ],
        1,
    )
    return {
        "iou": (random_rotated_boxes(1000, g), random_rotated_boxes(1000, g)),
        "iou_dense": (random_rotated_boxes(1000, g, extent=100), random_rotated_boxes(1000, g, extent=100)),
        "nms": {n: clustered_rotated_boxes(n, g) for n in (5000, 20000)},
        "batched": (*clustered_rotated_boxes(20000, g), torch.randint(0, 80, (20000,), generator=g)),
        "feats": feats,
        "rois": rois,
    }


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("spread", ["iou", "iou_dense"])
def test_box_iou_rotated(benchmark, data, spread, impl):
    where = "over a 1000 px image" if spread == "iou" else "all within 100 px"
    benchmark.group = f"box_iou_rotated 1k x 1k, {where}"
    op = roiops.box_iou_rotated if impl == "roiops" else d2_pairwise_iou_rotated
    benchmark(op, *data[spread])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [5000, 20000])
def test_nms_rotated(benchmark, data, n, impl):
    benchmark.group = f"nms_rotated {n} clustered, IoU 0.5"
    op = roiops.nms_rotated if impl == "roiops" else d2_nms_rotated
    if impl == "detectron2" and n >= 20000:
        benchmark.pedantic(op, (*data["nms"][n], 0.5), rounds=1)  # quadratic: one timed call
    else:
        benchmark(op, *data["nms"][n], 0.5)


@pytest.mark.parametrize("impl", IMPLS)
def test_batched_nms_rotated(benchmark, data, impl):
    benchmark.group = "batched_nms_rotated 20000 clustered, 80 classes, IoU 0.5"
    if impl == "roiops":
        benchmark(roiops.batched_nms_rotated, *data["batched"], 0.5)
    else:  # Detectron2 offsets the categories apart and runs its quadratic nms: one timed call
        benchmark.pedantic(d2_batched_nms_rotated, (*data["batched"], 0.5), rounds=1)


def _timed(benchmark, impl, fn, *args):
    if impl == "roiops":
        benchmark(fn, *args)
    else:  # Detectron2's single-threaded kernels take seconds per call here: three timed calls
        benchmark.pedantic(fn, args, rounds=3)


def _roi_align_rotated(impl):
    if impl == "roiops":
        return roiops.RoIAlignRotated(7, 0.25, 2, aligned=True)
    return D2ROIAlignRotated((7, 7), 0.25, 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_roi_align_rotated_forward(benchmark, data, impl):
    benchmark.group = "roi_align_rotated fwd box head 1024 RoIs 256 ch 7x7 s2"
    module = _roi_align_rotated(impl)
    with torch.no_grad():
        _timed(benchmark, impl, module, data["feats"], data["rois"])


@pytest.mark.parametrize("impl", IMPLS)
def test_roi_align_rotated_forward_backward(benchmark, data, impl):
    benchmark.group = "roi_align_rotated fwd+bwd box head 1024 RoIs 256 ch 7x7 s2"
    module = _roi_align_rotated(impl)
    feats = data["feats"].clone().requires_grad_()
    grad = torch.ones(data["rois"].size(0), 256, 7, 7)

    def step():
        feats.grad = None
        module(feats, data["rois"]).backward(grad)

    _timed(benchmark, impl, step)


@pytest.mark.parametrize("impl", IMPLS)
def test_roi_align_rotated_channels_last(benchmark, data, impl):
    # roiops reads the channels_last map in place; Detectron2's kernel gets the NCHW map it needs.
    benchmark.group = "roi_align_rotated fwd box head channels_last"
    feats = data["feats"]
    if impl == "roiops":
        feats = feats.contiguous(memory_format=torch.channels_last)
    module = _roi_align_rotated(impl)
    with torch.no_grad():
        benchmark(module, feats, data["rois"])
