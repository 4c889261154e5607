"""torch.library.opcheck of every op registered in the roiops library (schema, fake kernel, autograd
registration, AOT dispatch), on every device, from one table of sample inputs. The ops are read from
the dispatcher, so an op added to csrc/roiops.cpp without a sample here fails the test."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from roiops_cases import random_feature, random_image_boxes, random_rois, three_rois

import roiops  # (loads the native library, which registers the ops)

FORMATS = {"nchw": False, "channels_last": True}
F64 = torch.float64


@dataclass(frozen=True)
class Sample:
    op: str  # the name in the roiops namespace
    name: str  # the case, in the test id
    args: Callable[[torch.device], tuple]  # builds the arguments on a device
    # opcheck's checks on CUDA where not all of them are run there; None: all.
    cuda_test_utils: tuple[str, ...] | None = None


def leaf(t, device, requires_grad=False):
    """t on device, a leaf that requires grad if asked (the memory format kept)."""
    return t.to(device).detach().requires_grad_(requires_grad)


def sample_rois(device, dtype=torch.float32, requires_grad=False):
    return leaf(three_rois(dtype), device, requires_grad)


def sample_map(device, channels_last, dtype=torch.float32, requires_grad=False, hw=(8, 9), seed=0):
    """Tensor[2, 3, H, W] in the given memory format."""
    return leaf(random_feature((2, 3, *hw), seed, dtype, channels_last), device, requires_grad)


def grad_of(shape, device, dtype=torch.float32, requires_grad=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    return leaf(torch.randn(shape, generator=g, dtype=dtype), device, requires_grad)


def pyramid(device, channels_last, requires_grad=True):
    """Two levels of the FPN pooler: 8 x 9 at scale 1/2, 4 x 5 at 1/4; boxes in image pixels."""
    return [
        sample_map(device, channels_last, requires_grad=requires_grad),
        sample_map(device, channels_last, requires_grad=requires_grad, hw=(4, 5), seed=2),
    ]


def pyramid_rois(device, requires_grad=False):
    rois = three_rois() * torch.tensor([1.0, 8, 8, 8, 8])
    return leaf(rois, device, requires_grad)


def roi_pooling_samples():
    """The RoI pooling ops and their backward ops, in both memory formats."""
    samples = []
    for fmt, cl in FORMATS.items():
        samples += [
            # roi_align: with the input gradient, and with the box gradient at adaptive sampling.
            Sample("roi_align", f"{fmt}-input_grad", lambda d, cl=cl: (
                sample_map(d, cl, F64, True), sample_rois(d, F64), 0.5, 3, 2, 2, True)),
            Sample("roi_align", f"{fmt}-box_grad", lambda d, cl=cl: (
                sample_map(d, cl, F64, True), sample_rois(d, F64, True), 1.0, 2, 2, -1, False)),
            Sample("roi_align_backward", fmt, lambda d, cl=cl: (
                grad_of((3, 3, 3, 2), d, F64), sample_rois(d, F64), 0.5, 3, 2, 2, 3, 8, 9, 2, True, cl)),
            Sample("roi_align_backward_rois", fmt, lambda d, cl=cl: (
                grad_of((3, 3, 3, 2), d, F64), sample_map(d, cl, F64, True), sample_rois(d, F64, True),
                0.5, 3, 2, 2, True)),
            Sample("roi_pool", fmt, lambda d, cl=cl: (sample_map(d, cl, requires_grad=True), sample_rois(d),
                                                      0.5, 3, 2)),
            Sample("roi_pool_backward", fmt, lambda d, cl=cl: (
                grad_of((3, 3, 3, 2), d), sample_rois(d),
                torch.ops.roiops.roi_pool(sample_map(d, cl), sample_rois(d), 0.5, 3, 2)[1],
                2, 3, 8, 9, cl)),
            Sample("multi_scale_roi_align", fmt, lambda d, cl=cl: (
                pyramid(d, cl), pyramid_rois(d), [0.5, 0.25], 2, 2, 2, False, 16.0, 4)),
            Sample("multi_scale_roi_align_backward", fmt, lambda d, cl=cl: (
                grad_of((3, 3, 2, 2), d), pyramid_rois(d), [0.5, 0.25], 2, 2, 2, 3, [8, 4], [9, 5], 2, False,
                16.0, 4, cl)),
            Sample("multi_scale_roi_align_backward_rois", fmt, lambda d, cl=cl: (
                grad_of((3, 3, 2, 2), d), pyramid(d, cl), pyramid_rois(d, True), [0.5, 0.25], 2, 2, 2, False,
                16.0, 4)),
            # Second derivatives through the box gradient, of one map and of the pyramid. Third
            # derivatives are refused, so no argument requires grad here.
            *[
                Sample("roi_align_backward_rois_backward", f"{fmt}-one_map-features_grad_{features_grad}",
                       lambda d, cl=cl, features_grad=features_grad: (
                           grad_of((3, 3, 3, 2), d, F64, False), [sample_map(d, cl, F64)],
                           sample_rois(d, F64), grad_of((3, 5), d, F64, False, seed=3), [0.5], 3, 2, 2, True,
                           224.0, 4, features_grad))
                for features_grad in (False, True)
            ],
            Sample("roi_align_backward_rois_backward", f"{fmt}-pyramid", lambda d, cl=cl: (
                grad_of((3, 3, 2, 2), d, requires_grad=False), pyramid(d, cl, requires_grad=False),
                pyramid_rois(d), grad_of((3, 5), d, requires_grad=False, seed=3), [0.5, 0.25], 2, 2, 2,
                False, 16.0, 4, True)),
        ]
    # Random boxes over a larger map, no argument requiring grad.
    samples += [
        Sample("roi_align", "random_rois", lambda d: (
            leaf(random_feature((2, 3, 9, 11), 32, F64), d),
            leaf(random_rois(6, 2, 10, 33, F64), d), 1.0, 3, 3, 2, True)),
        Sample("roi_pool", "random_rois", lambda d: (
            leaf(random_feature((2, 3, 9, 11), 32, F64), d),
            leaf(random_rois(6, 2, 10, 33, F64), d), 1.0, 3, 3)),
    ]
    return samples


def ps_map(device, channels_last, dtype=F64, requires_grad=False):
    """Tensor[2, 8, 8, 9]: 2 output channels of a 2 x 2 position-sensitive grid."""
    return leaf(random_feature((2, 8, 8, 9), 35, dtype, channels_last), device, requires_grad)


def ps_roi_pooling_samples():
    """The position-sensitive ops (output 2 x 2, 2 channels) and their backward ops."""
    samples = []
    for fmt, cl in FORMATS.items():
        samples += [
            Sample("ps_roi_align", fmt, lambda d, cl=cl: (
                ps_map(d, cl, requires_grad=True), sample_rois(d, F64), 0.5, 2, 2, 2)),
            Sample("ps_roi_align", f"{fmt}-adaptive", lambda d, cl=cl: (
                ps_map(d, cl, requires_grad=True), leaf(random_rois(6, 2, 10, 36, F64), d), 1.0, 2, 2, -1)),
            Sample("ps_roi_pool", fmt, lambda d, cl=cl: (ps_map(d, cl, requires_grad=True),
                                                         leaf(random_rois(6, 2, 10, 37, F64), d), 1.0, 2, 2)),
            Sample("ps_roi_align_backward", fmt, lambda d, cl=cl: (
                grad_of((3, 2, 2, 2), d, F64), sample_rois(d, F64), 0.5, 2, 2, 2, 2, 8, 8, 9, cl)),
            Sample("ps_roi_pool_backward", fmt, lambda d, cl=cl: (
                grad_of((6, 2, 2, 2), d, F64), leaf(random_rois(6, 2, 10, 37, F64), d), 1.0, 2, 2, 2, 8, 8, 9,
                cl)),
        ]
    return samples


def detections(device, n=50, seed=34):
    """Tensor[n, 4] boxes, Tensor[n] distinct scores, Tensor[n] int64 categories in [0, 3)."""
    g = torch.Generator().manual_seed(seed)
    return (leaf(random_image_boxes(n, seed), device), leaf(torch.randperm(n, generator=g) / n, device),
            leaf(torch.randint(0, 3, (n,), generator=g), device))


def mask_inputs(device):
    """Tensor[4, 28, 28] mask probabilities and Tensor[4, 4] boxes across a 30 x 40 image."""
    g = torch.Generator().manual_seed(14)
    masks = torch.rand(4, 28, 28, generator=g)
    xy = torch.rand(4, 2, generator=g) * torch.tensor([40.0, 30.0]) - 5
    boxes = torch.cat([xy, xy + torch.rand(4, 2, generator=g) * 20 + 2], 1)
    return leaf(masks, device), leaf(boxes, device)


# The suppression ops (an output size that depends on the data) have been checked on CUDA for the schema
# and the fake kernel only; the CPU runs every check.
SCHEMA_AND_FAKE = ("test_schema", "test_faketensor")

def rpn_outputs(device, n=2, counts=(30, 12), seed=40):
    """rpn_proposals' inputs: objectness [n, A], deltas [n, A, 4], anchors [A, 4], the level sizes."""
    g = torch.Generator().manual_seed(seed)
    a = sum(counts)
    return (leaf(torch.randn(n, a, generator=g), device),
            leaf(torch.randn(n, a, 4, generator=g) * 0.3, device),
            leaf(random_image_boxes(a, seed), device), list(counts))


def box_head_outputs(device, counts=(12, 9), classes=4, seed=42):
    """detections_from_box_head's inputs: class_logits [K, C], box_deltas [K, 4C], proposals per image."""
    g = torch.Generator().manual_seed(seed)
    k = sum(counts)
    return (leaf(torch.randn(k, classes, generator=g) * 2, device),
            leaf(torch.randn(k, 4 * classes, generator=g), device),
            [leaf(p, device) for p in random_image_boxes(k, seed).split(list(counts))])


SAMPLES = [
    *roi_pooling_samples(),
    *ps_roi_pooling_samples(),
    Sample("nms", "distinct_scores", lambda d: (*detections(d)[:2], 0.5), SCHEMA_AND_FAKE),
    Sample("batched_nms", "three_categories", lambda d: (*detections(d), 0.5), SCHEMA_AND_FAKE),
    Sample("soft_nms", "gaussian", lambda d: (*detections(d)[:2], 0.3, 0.5, 0.01, 1),
           SCHEMA_AND_FAKE),
    Sample("box_iou", "8x6", lambda d: (leaf(random_image_boxes(8, 4), d),
                                        leaf(random_image_boxes(6, 5), d))),
    Sample("box_encode", "asymmetric_weights", lambda d: (
        leaf(random_image_boxes(20, 6), d, True), leaf(random_image_boxes(20, 7), d, True),
        [20.0, 10.0, 7.0, 3.0])),
    Sample("box_encode", "empty", lambda d: (
        leaf(random_image_boxes(0, 6), d), leaf(random_image_boxes(0, 7), d), [10.0, 10.0, 5.0, 5.0])),
    Sample("box_decode", "three_classes", lambda d: (
        grad_of((20, 12), d, seed=8), leaf(random_image_boxes(20, 9), d, True),
        [20.0, 10.0, 7.0, 3.0], 4.0)),
    Sample("box_decode", "clipped_to_image", lambda d: (
        grad_of((20, 12), d, seed=10), leaf(random_image_boxes(20, 11), d), [1.0] * 4, 4.0, [300, 500])),
    Sample("paste_masks", "threshold", lambda d: (*mask_inputs(d), 30, 40, 0.5)),
    Sample("paste_masks", "probabilities", lambda d: (*mask_inputs(d), 30, 40, None)),
    # the pairwise IoU family: generalized, distance, complete
    *(Sample("box_iou_family", f"kind{kind}_8x6", lambda d, kind=kind: (
        leaf(random_image_boxes(8, 4), d), leaf(random_image_boxes(6, 5), d), kind, 1e-7))
      for kind in (1, 2, 3)),
    # detection post-processing (data-dependent output sizes, like the suppression ops)
    Sample("rpn_proposals", "two_images_two_levels", lambda d: (
        *rpn_outputs(d), [200, 210, 150, 180], [1.0] * 4, 4.0, 10, 15, 0.7, 1e-3, 0.0), SCHEMA_AND_FAKE),
    # inference convolution (no autograd)
    *(Sample("winograd_conv3x3", f"{fmt}_bias{bias}_relu{relu}", lambda d, cl=cl, bias=bias, relu=relu: (
        *winograd_inputs(d, cl, bias), relu))
      for fmt, cl in FORMATS.items() for bias, relu in ((True, True), (False, False))),
    Sample("detections_from_box_head", "two_images", lambda d: (
        *box_head_outputs(d), [200, 210, 150, 180], [10.0, 10.0, 5.0, 5.0], 4.0, 0.05, 0.5, 10, 1e-2),
        SCHEMA_AND_FAKE),
]


def winograd_inputs(device, channels_last, bias=True):
    g = torch.Generator().manual_seed(44)
    x = random_feature((2, 3, 7, 9), 45, F64, channels_last)
    weight = torch.randn(5, 3, 3, 3, generator=g, dtype=F64)
    b = torch.randn(5, generator=g, dtype=F64) if bias else None
    args = (x, weight, roiops.winograd_weight(weight), b)
    return tuple(None if t is None else leaf(t, device) for t in args)


def rotated_boxes(n, seed, device, requires_grad=False):
    """Tensor[n, 5] rotated boxes (x_ctr, y_ctr, w, h, angle) over a 40 x 30 image."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat([torch.rand(n, 2, generator=g) * torch.tensor([40.0, 30.0]),
                       torch.rand(n, 2, generator=g) * 12 + 2, torch.rand(n, 1, generator=g) * 360 - 180], 1)
    return leaf(boxes, device, requires_grad)


def rotated_rois(device, dtype=F64):
    """Tensor[4, 6] rotated RoIs on the two images of sample_map (scale 0.5)."""
    rois = torch.tensor([[0, 6, 5, 8, 4, 30], [1, 10, 8, 6, 9, -75], [0, 3, 12, 20, 3, 180],
                         [1, 14, 2, 1, 1, 0]])
    return leaf(rois.to(dtype), device)


def rotated_samples():
    samples = [
        Sample("box_iou_rotated", "8x6", lambda d: (rotated_boxes(8, 40, d), rotated_boxes(6, 41, d), False)),
        Sample("box_iou_rotated", "aligned", lambda d: (
            rotated_boxes(7, 42, d), rotated_boxes(7, 43, d), True)),
        Sample("nms_rotated", "distinct_scores", lambda d: (
            rotated_boxes(50, 44, d), detections(d)[1], 0.3), SCHEMA_AND_FAKE),
        Sample("batched_nms_rotated", "three_categories", lambda d: (
            rotated_boxes(50, 45, d), *detections(d)[1:], 0.3), SCHEMA_AND_FAKE),
    ]
    for fmt, cl in FORMATS.items():
        samples += [
            Sample("roi_align_rotated", f"{fmt}-input_grad", lambda d, cl=cl: (
                sample_map(d, cl, F64, True), rotated_rois(d), 0.5, 3, 2, 2, True)),
            Sample("roi_align_rotated", f"{fmt}-adaptive_unaligned", lambda d, cl=cl: (
                sample_map(d, cl, F64, True), rotated_rois(d), 0.5, 2, 2, -1, False)),
            Sample("roi_align_rotated_backward", fmt, lambda d, cl=cl: (
                grad_of((4, 3, 3, 2), d, F64), rotated_rois(d), 0.5, 3, 2, 2, 3, 8, 9, 2, True, cl)),
        ]
    return samples


SAMPLES += rotated_samples()


def registered_ops() -> list[str]:
    """Every op of the roiops namespace the dispatcher knows, by name."""
    prefix = "roiops::"
    return sorted(n[len(prefix):] for n in torch._C._dispatch_get_all_op_names() if n.startswith(prefix))


def table():
    """A case per sample of each registered op; an op without samples is a case that fails."""
    cases = []
    for op in registered_ops():
        samples = [s for s in SAMPLES if s.op == op]
        cases += [pytest.param(op, s, id=f"{op}-{s.name}") for s in samples]
        if not samples:
            cases.append(pytest.param(op, None, id=f"{op}-missing"))
    return cases


@pytest.mark.parametrize(("op", "sample"), table())
def test_registered_op_passes_opcheck(op, sample, device):
    if sample is None:
        pytest.fail(f"roiops::{op} has no sample in tests/roiops/test_opcheck.py SAMPLES: add one")
    test_utils = sample.cuda_test_utils if device.type == "cuda" else None
    kwargs = {} if test_utils is None else {"test_utils": test_utils}
    torch.library.opcheck(getattr(torch.ops.roiops, op).default, sample.args(device), **kwargs)


def test_every_sample_names_a_registered_op():
    unknown = {s.op for s in SAMPLES} - set(registered_ops())
    assert not unknown, f"samples for ops roiops does not register: {sorted(unknown)}"
