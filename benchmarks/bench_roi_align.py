"""RoIAlign, RoIPool and the FPN pooler against torchvision.ops on Mask R-CNN shapes (same process).

Cases: box head (features [2, 256, 200, 304], 1024 RoIs, 7x7, sampling_ratio 2, aligned), mask
head (100 RoIs, 14x14), roi_pool on the box-head shapes, the 4-level FPN pooler with 1000 RoIs;
forward and forward+backward; NCHW and channels_last input to roiops. torchvision always gets the
NCHW input (its CPU kernel copies channels_last to NCHW anyway). The FPN groups also time
``level_loop``: roiops' own kernel driven level by level from Python, what the fused call saves.
"""

import pytest
import torch
import torchvision

import roiops

IMAGE_HW = (800, 1216)
CHANNELS = 256
HEADS = {"box": (1024, 7), "mask": (100, 14)}  # RoIs, output size
FPN_ROIS = 1000
LEVELS = ["0", "1", "2", "3"]
LEVEL_SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
LAYOUTS = ["NCHW", "channels_last"]
DIRECTIONS = ["fwd", "fwd+bwd"]


def image_boxes(n: int, image_hw: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Proposal-like boxes in image pixels: log-uniform sizes 16 .. 512 px, inside the image."""
    h, w = image_hw
    size = torch.exp(torch.empty(n, 2).uniform_(2.77, 6.24, generator=g))
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - size).clamp(min=1)
    return torch.cat([xy, xy + size], dim=1)


def with_index(boxes: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def data() -> dict:
    g = torch.Generator().manual_seed(0)
    h, w = IMAGE_HW
    feats = [torch.randn(2, CHANNELS, h // s, w // s, generator=g) for s in (4, 8, 16, 32)]
    rois = {head: with_index([image_boxes(n // 2, IMAGE_HW, g) for _ in range(2)])
            for head, (n, _) in HEADS.items()}
    fpn_nchw = dict(zip(LEVELS, feats))
    return {
        "p2": {"NCHW": feats[0], "channels_last": channels_last(feats[0])},
        "rois": rois,
        "fpn": {"NCHW": fpn_nchw, "channels_last": {k: channels_last(v) for k, v in fpn_nchw.items()}},
        "fpn_boxes": [image_boxes(FPN_ROIS // 2, IMAGE_HW, g) for _ in range(2)],
    }


def timed_call(direction: str, fn, inputs: dict[str, torch.Tensor] | torch.Tensor):
    """A call of fn(inputs) for "fwd"; for "fwd+bwd", a call of fn on detached leaves of the inputs
    that also back-propagates the sum of its output into them (their gradients cleared each time)."""
    if direction == "fwd":
        return lambda: fn(inputs)
    if isinstance(inputs, dict):
        leaves = {k: v.detach().requires_grad_(True) for k, v in inputs.items()}
        grads_of = list(leaves.values())
    else:
        leaves = inputs.detach().requires_grad_(True)
        grads_of = [leaves]

    def forward_backward():
        for t in grads_of:
            t.grad = None
        fn(leaves).sum().backward()

    return forward_backward


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("head", list(HEADS))
def test_roi_align(benchmark, data, head, direction, layout, impl):
    n, out = HEADS[head]
    benchmark.group = f"roi_align {direction} {head} head {n} RoIs {out}x{out} {layout}"
    op = roiops.roi_align if impl == "roiops" else torchvision.ops.roi_align
    rois = data["rois"][head]

    def pool(x):
        return op(x, rois, out, spatial_scale=0.25, sampling_ratio=2, aligned=True)

    benchmark(timed_call(direction, pool, data["p2"][layout if impl == "roiops" else "NCHW"]))


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_roi_pool(benchmark, data, layout, impl):
    n, _ = HEADS["box"]
    benchmark.group = f"roi_pool fwd {n} RoIs 7x7 {layout}"
    op = roiops.roi_pool if impl == "roiops" else torchvision.ops.roi_pool
    x = data["p2"][layout if impl == "roiops" else "NCHW"]
    benchmark(op, x, data["rois"]["box"], 7, spatial_scale=0.25)


def level_loop(x: dict[str, torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
    """What the fused pooler replaces: assign FPN levels, then gather / pool / scatter per level."""
    rois = with_index(boxes)
    area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
    lvl = torch.floor(4 + torch.log2(torch.sqrt(area) / 224) + 1e-6).clamp(2, 5).long() - 2
    out = rois.new_zeros(len(rois), CHANNELS, 7, 7)
    for i, (name, scale) in enumerate(zip(LEVELS, LEVEL_SCALES)):
        idx = torch.where(lvl == i)[0]
        out[idx] = roiops.roi_align(x[name], rois[idx], 7, spatial_scale=scale, sampling_ratio=2,
                                    aligned=False)
    return out


def fpn_pooler(impl: str):
    """impl's pooler as a function of (feature dict, per-image boxes)."""
    if impl == "level_loop":
        return level_loop
    if impl == "roiops":
        module = roiops.MultiScaleRoIAlign(LEVELS, 7, 2, aligned=False)
    else:
        module = torchvision.ops.MultiScaleRoIAlign(LEVELS, 7, 2)
    return lambda x, boxes: module(x, boxes, [IMAGE_HW, IMAGE_HW])


@pytest.mark.parametrize("impl", ["roiops", "torchvision", "level_loop"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_multi_scale_roi_align(benchmark, data, direction, layout, impl):
    benchmark.group = f"MultiScaleRoIAlign {direction} {FPN_ROIS} RoIs 4 levels {layout}"
    pooler, boxes = fpn_pooler(impl), data["fpn_boxes"]
    x = data["fpn"][layout if impl != "torchvision" else "NCHW"]
    benchmark(timed_call(direction, lambda maps: pooler(maps, boxes), x))
