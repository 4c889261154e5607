"""Position-sensitive RoIAlign and RoIPool against torchvision.ops on R-FCN shapes (same process).

R-FCN's head: one 800 x 1216 image, score maps at stride 16 ([1, 490, 50, 76]: 10 output channels
(9 classes and background, the classification branch) times 7 x 7 bins), 300 proposals,
spatial_scale 1/16, sampling_ratio 2 for ps_roi_align. Forward and forward+backward; NCHW and
channels_last input to roiops. torchvision always gets the NCHW input.
"""

import pytest
import torch
import torchvision
from bench_roi_align import LAYOUTS, channels_last, image_boxes, timed_call

import roiops

IMAGE_HW = (800, 1216)
STRIDE = 16
OUT = 7
CHANNELS = 10 * OUT * OUT
NUM_ROIS = 300
DIRECTIONS = ["fwd", "fwd+bwd"]


@pytest.fixture(scope="module")
def data() -> dict:
    g = torch.Generator().manual_seed(0)
    h, w = IMAGE_HW
    x = torch.randn(1, CHANNELS, h // STRIDE, w // STRIDE, generator=g)
    boxes = image_boxes(NUM_ROIS, IMAGE_HW, g)
    rois = torch.cat([torch.zeros(NUM_ROIS, 1), boxes], dim=1)
    return {"maps": {"NCHW": x, "channels_last": channels_last(x)}, "rois": rois}


OPS = {
    ("ps_roi_align", "roiops"): lambda x, rois: roiops.ps_roi_align(x, rois, OUT, 1 / STRIDE, 2),
    ("ps_roi_align", "torchvision"): lambda x, rois: torchvision.ops.ps_roi_align(
        x, rois, OUT, 1 / STRIDE, 2
    ),
    ("ps_roi_pool", "roiops"): lambda x, rois: roiops.ps_roi_pool(x, rois, OUT, 1 / STRIDE),
    ("ps_roi_pool", "torchvision"): lambda x, rois: torchvision.ops.ps_roi_pool(x, rois, OUT, 1 / STRIDE),
}


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("op", ["ps_roi_align", "ps_roi_pool"])
def test_ps_roi(benchmark, data, op, direction, layout, impl):
    benchmark.group = f"{op} {direction} R-FCN {NUM_ROIS} RoIs {OUT}x{OUT} {CHANNELS} channels {layout}"
    fn, rois = OPS[(op, impl)], data["rois"]
    benchmark(
        timed_call(direction, lambda x: fn(x, rois), data["maps"][layout if impl == "roiops" else "NCHW"])
    )
