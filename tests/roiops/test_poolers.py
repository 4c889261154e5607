"""MultiScaleRoIAlign: parity with torchvision's (levels, values, gradients), the FPN level rule,
the single fused native call, gradients, bad input; the CUDA kernels against the CPU kernels and
torchvision's CUDA pooler, and CUDA's deterministic mode."""

import math
from collections import OrderedDict

import pytest
import torch
import torchvision
from hypothesis import given
from hypothesis import strategies as st
from roiops_cases import CUDA, assert_same_memory_format, random_feature, random_image_boxes, to_cuda
from torch.utils._python_dispatch import TorchDispatchMode

import roiops
from roiops._reference import fpn_levels_reference, multi_scale_roi_align_reference
from roiops.poolers import infer_scale

NAMES = ["0", "1", "2", "3"]


class Recorder(TorchDispatchMode):
    """The ops dispatched while it is active, by name."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def pyramid(image_hw, channels=3, seed=0, dtype=torch.float32, n=2, channels_last=False):
    """FPN maps at strides 4, 8, 16, 32 of an image batch padded to image_hw (a 'pool' map last,
    which the pooler must ignore)."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_hw
    x = OrderedDict()
    for i, stride in enumerate([4, 8, 16, 32]):
        f = torch.randn(n, channels, -(-h // stride), -(-w // stride), generator=g, dtype=torch.float64).to(
            dtype
        )
        x[str(i)] = f.contiguous(memory_format=torch.channels_last) if channels_last else f
    x["pool"] = torch.randn(n, channels, 2, 2, generator=g).to(dtype)
    return x


def random_boxes(n, hw, g, min_size=1.0):
    h, w = hw
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h])
    size = torch.exp(torch.rand(n, 2, generator=g, dtype=torch.float64) * 6) * min_size  # 1 .. 400 px
    return torch.cat([xy, (xy + size).minimum(torch.tensor([w, h]))], dim=1)


@given(st.integers(0, 2**16), st.sampled_from([-1, 0, 2]), st.booleans())
def test_matches_torchvision_values_and_gradients(seed, sampling_ratio, channels_last):
    image_hw = (200, 264)
    x = pyramid(image_hw, seed=seed, channels_last=channels_last)
    g = torch.Generator().manual_seed(seed)
    boxes = [random_boxes(30, image_hw, g).float(), random_boxes(17, (180, 250), g).float()]
    image_sizes = [(200, 264), (180, 250)]
    ours_x = {k: v.detach().requires_grad_(True) for k, v in x.items()}
    theirs_x = {k: v.detach().contiguous().requires_grad_(True) for k, v in x.items()}
    ours = roiops.MultiScaleRoIAlign(NAMES, 7, sampling_ratio, aligned=False)(ours_x, boxes, image_sizes)
    theirs = torchvision.ops.MultiScaleRoIAlign(NAMES, 7, sampling_ratio)(theirs_x, boxes, image_sizes)
    # Image-space boxes up to 264 px: float32 sample positions carry ~2e-5 px of rounding in both
    # libraries (both are this far from the float64 result; measured).
    torch.testing.assert_close(ours, theirs, atol=5e-5, rtol=1e-5)
    grad_out = torch.randn(ours.shape, generator=g)
    ours.backward(grad_out)
    theirs.backward(grad_out)
    for name in NAMES:
        # Many RoIs add into one pixel: float32 sums in a different order, hence the rtol.
        torch.testing.assert_close(ours_x[name].grad, theirs_x[name].grad, atol=5e-5, rtol=1e-5)
    assert ours_x["pool"].grad is None


def test_level_assignment_matches_torchvision_on_boundary_sizes():
    # Maps whose value is their level number: a 1x1 bin sampled once inside the box reads the level.
    image_hw = (1024, 1024)
    x = OrderedDict(
        (str(i), torch.full((1, 1, 1024 // s, 1024 // s), float(i))) for i, s in enumerate([4, 8, 16, 32])
    )
    g = torch.Generator().manual_seed(0)
    sizes = torch.cat(
        [
            torch.rand(4000, generator=g) * 900 + 1,
            # sqrt(area) at and next to the level boundaries 112, 224, 448 (and 56).
            torch.tensor([56.0, 112.0, 224.0, 448.0]).repeat_interleave(9)
            * (1 + torch.tensor([-3e-7, -2e-7, -1e-7, -6e-8, 0, 6e-8, 1e-7, 2e-7, 3e-7]).repeat(4)),
        ]
    )
    aspect = torch.exp(torch.rand(sizes.shape[0], generator=g) - 0.5)
    w, h = sizes * aspect, sizes / aspect
    x1 = torch.rand(sizes.shape[0], generator=g) * 50
    y1 = torch.rand(sizes.shape[0], generator=g) * 50
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)
    # The four bilinear weights sum to 1 only up to float32 rounding: round to the level number.
    levels = roiops.MultiScaleRoIAlign(NAMES, 1, 1, aligned=False)(x, [boxes], [image_hw])[:, 0, 0, 0].round()
    mapper = torchvision.ops.poolers.initLevelMapper(2, 5)
    expected = mapper([boxes]).float()
    assert torch.equal(levels, expected)
    torch.testing.assert_close(expected.long(), fpn_levels_reference(boxes, 2, 5))


@pytest.mark.parametrize("aligned", [False, True])
def test_matches_level_loop_reference_in_float64(aligned):
    image_hw = (96, 128)
    x = pyramid(image_hw, channels=2, seed=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    boxes = [random_boxes(12, image_hw, g), random_boxes(9, image_hw, g)]
    rois = torch.cat(
        [
            torch.cat([torch.full((len(b), 1), float(i), dtype=torch.float64), b], 1)
            for i, b in enumerate(boxes)
        ]
    )
    ours = roiops.MultiScaleRoIAlign(NAMES, (5, 4), 2, aligned=aligned)(x, boxes, [image_hw, image_hw])
    features = [x[n] for n in NAMES]
    expected = multi_scale_roi_align_reference(
        features, rois, [1 / 4, 1 / 8, 1 / 16, 1 / 32], (5, 4), 2, aligned
    )
    torch.testing.assert_close(ours, expected, atol=1e-12, rtol=0)


def test_gradcheck_and_gradgradcheck_maps_and_boxes():
    image_hw = (32, 32)
    x = pyramid(image_hw, channels=1, seed=4, dtype=torch.float64, n=1)
    maps = [x[n].detach().requires_grad_(True) for n in NAMES[:3]]
    coords = torch.tensor(
        [[1.3, 2.1, 7.7, 9.2], [0.7, 0.4, 30.1, 28.9], [3.3, 4.1, 19.6, 20.2]],
        dtype=torch.float64,
        requires_grad=True,
    )
    pooler = roiops.MultiScaleRoIAlign(
        ["0", "1", "2"], 2, 2, canonical_scale=16, canonical_level=3, aligned=True
    )

    def fn(coords_, *maps_):
        return pooler(dict(zip(["0", "1", "2"], maps_)), [coords_], [image_hw])

    assert torch.autograd.gradcheck(fn, (coords, *maps))
    assert torch.autograd.gradgradcheck(lambda *m: fn(coords.detach(), *m), tuple(maps), fast_mode=True)
    # Second derivatives through the box gradient, each RoI on its own level.
    assert torch.autograd.gradgradcheck(fn, (coords, *maps))
    assert torch.autograd.gradgradcheck(lambda c: fn(c, *(m.detach() for m in maps)), (coords,))


def test_assignment_and_pooling_are_one_native_call():
    x = pyramid((64, 64), seed=5)
    g = torch.Generator().manual_seed(5)
    boxes = [random_boxes(20, (64, 64), g).float(), random_boxes(20, (64, 64), g).float()]
    with Recorder() as rec:
        roiops.MultiScaleRoIAlign(NAMES, 7, 2, aligned=False)(x, boxes, [(64, 64), (64, 64)])
    assert rec.ops.count("roiops.multi_scale_roi_align") == 1
    assert not [op for op in rec.ops if "roi_align" in op and op != "roiops.multi_scale_roi_align"]
    assert not [op for op in rec.ops if op.startswith("aten.index") or op.startswith("aten.where")]


def test_backward_computes_only_the_gradients_asked_for():
    x = pyramid((64, 64), seed=6)
    g = torch.Generator().manual_seed(6)
    boxes = [random_boxes(10, (64, 64), g).float().requires_grad_(), random_boxes(10, (64, 64), g).float()]
    out = roiops.MultiScaleRoIAlign(NAMES, 7, 2, aligned=False)(x, boxes, [(64, 64), (64, 64)])
    with Recorder() as rec:
        out.sum().backward()
    assert "roiops.multi_scale_roi_align_backward_rois" in rec.ops
    assert "roiops.multi_scale_roi_align_backward" not in rec.ops  # no map needs a gradient
    assert boxes[0].grad is not None


def test_single_level_and_empty_boxes():
    x = pyramid((64, 64), seed=6)
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 40.0]]), torch.zeros(0, 4)]
    one = roiops.MultiScaleRoIAlign(["1"], 3, 2, aligned=True)(x, boxes, [(64, 64), (64, 64)])
    torch.testing.assert_close(one, roiops.roi_align(x["1"], boxes, 3, 1 / 8, 2, True))
    empty = roiops.MultiScaleRoIAlign(NAMES, 3, 2)(x, [torch.zeros(0, 4), torch.zeros(0, 4)], [(64, 64)] * 2)
    assert empty.shape == (0, 3, 3, 3)


def test_bad_input_raises_naming_the_argument():
    x = pyramid((64, 64))
    boxes = [torch.zeros(1, 4), torch.zeros(1, 4)]
    with pytest.raises(ValueError, match="no feature map named"):
        roiops.MultiScaleRoIAlign(["0", "7"], 3, 2)(x, boxes, [(64, 64)] * 2)
    with pytest.raises(ValueError, match="image_shapes"):
        roiops.MultiScaleRoIAlign(NAMES, 3, 2)(x, boxes, [])
    with pytest.raises(TypeError, match="boxes must be a list"):
        roiops.MultiScaleRoIAlign(NAMES, 3, 2)(x, torch.zeros(2, 5), [(64, 64)] * 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] must have last dimension 4"):
        roiops.MultiScaleRoIAlign(NAMES, 3, 2)(x, [torch.zeros(1, 4), torch.zeros(1, 5)], [(64, 64)] * 2)
    with pytest.raises(TypeError, match="boxes must be float32"):
        roiops.MultiScaleRoIAlign(NAMES, 3, 2)(x, [b.int() for b in boxes], [(64, 64)] * 2)
    with pytest.raises(TypeError, match="same dtype"):
        roiops.MultiScaleRoIAlign(NAMES, 3, 2)(x, [boxes[0], boxes[1].double()], [(64, 64)] * 2)
    with pytest.raises(ValueError, match="output_size"):
        roiops.MultiScaleRoIAlign(NAMES, 0, 2)


# ---- the CUDA kernels against the CPU kernels and torchvision's CUDA pooler -----------------------


def fpn_inputs(dtype=torch.float32, channels_last=False, num_boxes=(40, 25), seed=18):
    """Maps p0..p3 of a 2-image batch at strides 4..32 of 256 x 320, boxes per image, image sizes."""
    sizes = [(64, 80), (32, 40), (16, 20), (8, 10)]
    x = {f"p{i}": random_feature((2, 8, h, w), seed + i, dtype, channels_last)
         for i, (h, w) in enumerate(sizes)}
    boxes = []
    for j, k in enumerate(num_boxes):
        b = random_image_boxes(k, seed + 10 + j, dtype, scale=300.0)
        boxes.append(b.clamp(max=320.0))
    return x, boxes, [(256, 320), (250, 300)]


@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("aligned", [False, True])
def test_cuda_forward_and_gradients_match_cpu(channels_last, aligned):
    x, boxes, shapes = fpn_inputs(torch.float64, channels_last)
    pooler = roiops.MultiScaleRoIAlign(list(x), 7, 2, aligned=aligned)

    def run(x, boxes):
        x = {k: v.detach().requires_grad_() for k, v in x.items()}
        out = pooler(x, boxes, shapes)
        weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
        grads = torch.autograd.grad((out * weight).sum(), list(x.values()))
        return out, grads

    expected, expected_grads = run(x, boxes)
    got, got_grads = run({k: v.to(CUDA) for k, v in x.items()}, to_cuda(*boxes))
    assert_same_memory_format(got, expected)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-12, rtol=1e-12)
    for g, e in zip(got_grads, expected_grads):
        assert_same_memory_format(g, e)
        torch.testing.assert_close(g.cpu(), e, atol=1e-12, rtol=1e-12)


@pytest.mark.cuda
def test_cuda_second_derivatives_through_box_gradient_match_cpu():
    x, boxes, shapes = fpn_inputs(torch.float64, True)
    features = list(x.values())
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype), b], 1) for i, b in enumerate(boxes)]
    )
    g = torch.Generator().manual_seed(13)
    grad = torch.randn(rois.shape[0], features[0].shape[1], 7, 7, generator=g, dtype=torch.float64)
    direction = torch.randn(rois.shape[0], 5, generator=g, dtype=torch.float64)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32][: len(features)]
    args = (scales, 7, 7, 2, True, 224.0, 4, True)
    expected = torch.ops.roiops.roi_align_backward_rois_backward(grad, features, rois, direction, *args)
    got = torch.ops.roiops.roi_align_backward_rois_backward(
        grad.to(CUDA), to_cuda(*features), *to_cuda(rois, direction), *args
    )
    torch.testing.assert_close(got[0].cpu(), expected[0], atol=1e-9, rtol=1e-9)
    for a, b in zip(got[1], expected[1]):
        assert_same_memory_format(a, b)
        torch.testing.assert_close(a.cpu(), b, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(got[2].cpu(), expected[2], atol=1e-9, rtol=1e-9)


@pytest.mark.cuda
def test_cuda_matches_torchvision_cuda_or_else_cpu():
    x, boxes, shapes = fpn_inputs()
    pooler = roiops.MultiScaleRoIAlign(list(x), 7, 2, aligned=False)
    on_cpu = pooler(x, boxes, shapes)
    x = {k: v.to(CUDA) for k, v in x.items()}
    boxes = to_cuda(*boxes)
    ours = pooler(x, boxes, shapes).cpu()
    theirs = torchvision.ops.MultiScaleRoIAlign(list(x), 7, 2)(x, boxes, shapes).cpu()
    # As for roi_align: where a sample on the far edge rounds differently, ours is the CPU's value.
    differ = ~torch.isclose(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[differ], on_cpu[differ], atol=1e-5, rtol=1e-5)
    assert int(differ.sum()) <= ours.numel() // 100


@pytest.mark.cuda
def test_cuda_deterministic_backward_repeats_bitwise(deterministic):
    x, boxes, shapes = fpn_inputs(num_boxes=(300, 200))
    x = {k: v.to(CUDA).requires_grad_() for k, v in x.items()}
    boxes = to_cuda(*boxes)
    pooler = roiops.MultiScaleRoIAlign(list(x), 7, 2, aligned=True)

    def grads():
        return torch.autograd.grad(pooler(x, boxes, shapes).square().sum(), list(x.values()))

    first, second = grads(), grads()
    torch.use_deterministic_algorithms(False)
    atomic = grads()
    for a, b, c in zip(first, second, atomic):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-5)


@given(feature=st.integers(1, 5000), image=st.integers(1, 5000))
def test_inferred_scale_is_two_to_the_rounded_log2_of_the_size_ratio(feature, image):
    # The definition in float64 (torchvision's float32 rounding agrees away from half-integers).
    exponent = round(math.log2(feature / image))
    assert infer_scale((feature, 7), (image, 9)) == 2.0**exponent


@pytest.mark.parametrize("feature, image", [(0, 800), (200, 0)])
def test_inferred_scale_of_an_empty_map_or_image_is_a_named_error(feature, image):
    with pytest.raises(ValueError, match="feature map of height"):
        infer_scale((feature, 4), (image, 4))
