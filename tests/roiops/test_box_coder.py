"""BoxCoder: the R-CNN (dx, dy, dw, dh) parameterization against its formula, torchvision's BoxCoder
(bit for bit), the element-wise PyTorch formula the native kernels replaced (bit for bit, every
dtype, adversarial values) and the encode/decode round trip. Gradients: test_box_coder_grad.py."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

import roiops
from roiops._reference import box_decode_reference, box_encode_reference


def random_boxes(n: int, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 800
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 300 + 1
    return torch.cat([xy, xy + wh], 1).to(dtype)


# Every weight different: a coder that swaps x and y, or the centre and size weights, fails.
ASYMMETRIC_WEIGHTS = (20.0, 10.0, 7.0, 3.0)


def reference_encode(gt: torch.Tensor, p: torch.Tensor, weights) -> torch.Tensor:
    """The formula of Girshick et al. 2014 (appendix C) with weights, in float64."""
    gt, p = gt.double(), p.double()
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    px, py = p[:, 0] + pw / 2, p[:, 1] + ph / 2
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
    wx, wy, ww, wh = weights
    return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph,
                        ww * torch.log(gw / pw), wh * torch.log(gh / ph)], 1)


@pytest.mark.parametrize("weights", [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), ASYMMETRIC_WEIGHTS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_matches_formula_and_torchvision_bitwise(weights, dtype):
    g = torch.Generator().manual_seed(0)
    gt, p = random_boxes(500, g, dtype), random_boxes(500, g, dtype)
    ours = roiops.BoxCoder(weights).encode(gt, p)
    assert ours.dtype == dtype and ours.shape == (500, 4)
    torch.testing.assert_close(ours.double(), reference_encode(gt, p, weights), atol=1e-4, rtol=1e-5)
    theirs = TorchvisionBoxCoder(weights).encode_single(gt, p)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("num_classes", [1, 3, 91])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_decode_class_specific_layout_matches_torchvision_bitwise(num_classes, dtype):
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(64, g, torch.float32)
    codes = (torch.randn(64, 4 * num_classes, generator=g) * 2).to(dtype)
    codes[::7, 2::4] = 10.0  # beyond bbox_xform_clip * ww: exercises the clamp
    ours, theirs = roiops.BoxCoder(), TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0))
    # decode_single: [N, 4C]; decode: [N, C, 4]; boxes converted to the codes' dtype.
    single = ours.decode_single(codes, boxes)
    assert single.dtype == dtype and single.shape == (64, 4 * num_classes)
    assert torch.equal(single, theirs.decode_single(codes, boxes))
    batched = ours.decode(codes, [boxes[:40], boxes[40:]])
    assert batched.shape == (64, num_classes, 4)
    assert torch.equal(batched, theirs.decode(codes, [boxes[:40], boxes[40:]]))
    assert torch.equal(ours.decode(codes, boxes), batched)


def test_encode_of_lists_splits_per_image_like_torchvision():
    g = torch.Generator().manual_seed(2)
    gts = [random_boxes(n, g) for n in (3, 0, 5)]
    props = [random_boxes(n, g) for n in (3, 0, 5)]
    ours = roiops.BoxCoder((1.0, 1.0, 1.0, 1.0)).encode(gts, props)
    theirs = TorchvisionBoxCoder((1.0, 1.0, 1.0, 1.0)).encode(gts, props)
    assert isinstance(ours, tuple) and [t.shape[0] for t in ours] == [3, 0, 5]
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


positive_boxes = st.lists(
    st.tuples(st.floats(-1000, 1000), st.floats(-1000, 1000), st.floats(0.5, 500), st.floats(0.5, 500)),
    min_size=1, max_size=20,
)


@given(positive_boxes, positive_boxes,
       st.sampled_from([(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), ASYMMETRIC_WEIGHTS]))
def test_decode_inverts_encode(gt_rows, p_rows, weights):
    n = min(len(gt_rows), len(p_rows))
    to_xyxy = lambda rows: torch.tensor(rows[:n], dtype=torch.float64) @ torch.tensor(  # noqa: E731
        [[1.0, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    gt, p = to_xyxy(gt_rows), to_xyxy(p_rows)
    coder = roiops.BoxCoder(weights, bbox_xform_clip=math.inf)
    back = coder.decode(coder.encode(gt, p), p)[:, 0]
    torch.testing.assert_close(back, gt, atol=1e-6, rtol=1e-9)


def test_decode_clamps_growth_at_bbox_xform_clip():
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    huge = torch.tensor([[0.0, 0.0, 1e6, 1e6]])
    out = roiops.BoxCoder().decode_single(huge, box)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_empty_inputs():
    coder = roiops.BoxCoder()
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), [torch.zeros(0, 4)]).shape == (0, 2, 4)
    assert coder.decode_single(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 8)


CODER = roiops.BoxCoder()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: roiops.BoxCoder((1.0, 1.0, 1.0)), ValueError, "weights"),
        (lambda: roiops.BoxCoder((1.0, 1.0, 0.0, 1.0)), ValueError, "weights"),
        (lambda: CODER.encode(torch.zeros(3, 4), torch.zeros(2, 4)), ValueError, "proposals"),
        (lambda: CODER.encode(torch.zeros(3, 5), torch.zeros(3, 4)), ValueError, "reference_boxes"),
        (lambda: CODER.encode([torch.zeros(3, 4)], torch.zeros(3, 4)), TypeError, "proposals"),
        (lambda: CODER.decode(torch.zeros(3, 6), torch.zeros(3, 4)), ValueError, "rel_codes"),
        (lambda: CODER.decode_single(torch.zeros(3, 8), torch.zeros(2, 4)), ValueError, "rel_codes"),
        (lambda: CODER.decode(torch.zeros(3, 4), "boxes"), TypeError, "boxes"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_coder_is_frozen_config():
    coder = roiops.BoxCoder()
    with pytest.raises(AttributeError):
        coder.weights = (1.0, 1.0, 1.0, 1.0)


def test_encode_decode_compile_fullgraph():
    coder = roiops.BoxCoder()

    def f(gt, p, codes):
        return coder.encode(gt, p).sum(1) + coder.decode(codes, p).sum((1, 2))

    g = torch.Generator().manual_seed(3)
    gt, p = random_boxes(10, g), random_boxes(10, g)
    codes = torch.randn(10, 12, generator=g)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(gt, p, codes), f(gt, p, codes))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_with_asymmetric_weights_matches_formula_and_torchvision_bitwise(dtype):
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(300, g, dtype)
    codes = (torch.randn(300, 8, generator=g, dtype=torch.float64) * 3).to(dtype)
    ours = roiops.BoxCoder(ASYMMETRIC_WEIGHTS).decode_single(codes, boxes)
    assert torch.equal(ours, TorchvisionBoxCoder(ASYMMETRIC_WEIGHTS).decode_single(codes, boxes))
    # The formula, inverted by hand: centre += (d / w_xy) * size, size *= exp(d / w_wh).
    b, c = boxes.double(), codes.double().view(300, 2, 4)
    wx, wy, ww, wh = ASYMMETRIC_WEIGHTS
    pw, ph = (b[:, 2] - b[:, 0])[:, None], (b[:, 3] - b[:, 1])[:, None]
    px, py = b[:, 0:1] + pw / 2, b[:, 1:2] + ph / 2
    clip = math.log(1000.0 / 16)
    cx, cy = px + c[..., 0] / wx * pw, py + c[..., 1] / wy * ph
    w = pw * torch.exp((c[..., 2] / ww).clamp(max=clip))
    h = ph * torch.exp((c[..., 3] / wh).clamp(max=clip))
    expected = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).view(300, 8)
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(ours.double(), expected, atol=tol, rtol=1e-5)


# ---- the native kernels against the element-wise formula they replaced -------------------------

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
WEIGHT_SETS = [(10.0, 10.0, 5.0, 5.0), (1.0, 1.0, 1.0, 1.0), ASYMMETRIC_WEIGHTS, (0.1, 3.3, 0.7, 1.9)]


def assert_bitwise(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Same dtype, shape and values, NaN where NaN (the sign of a zero aside)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def adversarial_boxes(n: int, g: torch.Generator, dtype) -> torch.Tensor:
    """Ordinary boxes mixed with empty, inverted, tiny, huge and far-away ones."""
    boxes = random_boxes(n, g, torch.float64)
    k = n // 8
    boxes[:k, 2:] = boxes[:k, :2]  # zero width and height
    boxes[k:2 * k, 2:] = boxes[k:2 * k, :2] - 5  # inverted
    boxes[2 * k:3 * k, 2:] = boxes[2 * k:3 * k, :2] + 1e-3  # tiny
    boxes[3 * k:4 * k] *= 1e4  # huge and far away
    return boxes.to(dtype)


def adversarial_codes(n: int, per_box: int, g: torch.Generator, dtype) -> torch.Tensor:
    """Normal codes, codes past bbox_xform_clip, and a sprinkling of 0, +-inf and NaN."""
    codes = torch.randn(n, per_box, generator=g, dtype=torch.float64) * 3
    codes[::5] *= 40
    flat = codes.view(-1)
    picks = torch.randint(0, flat.numel(), (flat.numel() // 50,), generator=g)
    specials = torch.tensor([0.0, math.inf, -math.inf, math.nan], dtype=torch.float64)
    flat[picks] = specials[torch.randint(0, 4, (picks.numel(),), generator=g)]
    return codes.to(dtype)


@pytest.mark.parametrize("weights", WEIGHT_SETS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_encode_kernel_equals_elementwise_formula_bitwise(dtype, weights):
    g = torch.Generator().manual_seed(10)
    gt, p = adversarial_boxes(20000, g, dtype), adversarial_boxes(20000, g, dtype)
    p = p[torch.randperm(20000, generator=g)]
    assert_bitwise(roiops.BoxCoder(weights).encode_single(gt, p), box_encode_reference(gt, p, weights))


@pytest.mark.parametrize("clip", [math.log(1000.0 / 16), math.inf, 0.5])
@pytest.mark.parametrize("num_classes", [1, 2, 91])
@pytest.mark.parametrize("weights", WEIGHT_SETS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_decode_kernel_equals_elementwise_formula_bitwise(dtype, weights, num_classes, clip):
    g = torch.Generator().manual_seed(11)
    n = 12000 // num_classes  # more than one chunk of box-class pairs per thread
    boxes = adversarial_boxes(n, g, dtype)
    codes = adversarial_codes(n, 4 * num_classes, g, dtype)
    ours = roiops.BoxCoder(weights, bbox_xform_clip=clip).decode_single(codes, boxes)
    assert_bitwise(ours, box_decode_reference(codes, boxes, weights, clip))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_kernels_equal_torchvision_bitwise_in_every_dtype(dtype):
    g = torch.Generator().manual_seed(12)
    gt, p = random_boxes(5000, g, dtype), random_boxes(5000, g, dtype)
    codes = (torch.randn(5000, 8, generator=g) * 2).to(dtype)
    ours, theirs = roiops.BoxCoder(ASYMMETRIC_WEIGHTS), TorchvisionBoxCoder(ASYMMETRIC_WEIGHTS)
    assert_bitwise(ours.encode_single(gt, p), theirs.encode_single(gt, p))
    assert_bitwise(ours.decode_single(codes, p), theirs.decode_single(codes, p))


@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=8, max_size=8 * 12),
       st.sampled_from([torch.float32, torch.float16]))
def test_kernels_equal_formula_on_arbitrary_floats(values, dtype):
    n = len(values) // 8
    t = torch.tensor(values[: 8 * n], dtype=torch.float32).to(dtype).view(n, 8)
    coder = roiops.BoxCoder(ASYMMETRIC_WEIGHTS)
    a, b = t[:, :4], t[:, 4:]
    assert_bitwise(coder.encode_single(a, b), box_encode_reference(a, b, ASYMMETRIC_WEIGHTS))
    expected = box_decode_reference(t, a, ASYMMETRIC_WEIGHTS, coder.bbox_xform_clip)
    assert_bitwise(coder.decode_single(t, a), expected)


def test_non_contiguous_inputs_give_the_contiguous_result():
    g = torch.Generator().manual_seed(13)
    gt, p = random_boxes(600, g), random_boxes(600, g)
    codes = torch.randn(300, 12, generator=g)
    coder = roiops.BoxCoder(ASYMMETRIC_WEIGHTS)
    strided_gt = gt.t().contiguous().t()  # column-major [N, 4]
    assert not strided_gt.is_contiguous()
    assert torch.equal(coder.encode_single(strided_gt, p[::2].repeat(2, 1)),
                       coder.encode_single(gt, p[::2].contiguous().repeat(2, 1)))
    assert torch.equal(coder.encode_single(gt[::2], p[1::2]),
                       coder.encode_single(gt[::2].clone(), p[1::2].clone()))
    wide = torch.randn(300, 24, generator=g)
    assert torch.equal(coder.decode_single(wide[:, ::2], p[::2]),
                       coder.decode_single(wide[:, ::2].contiguous(), p[::2].contiguous()))
    assert torch.equal(coder.decode_single(codes.t().contiguous().t(), p[:300]),
                       coder.decode_single(codes, p[:300]))


@pytest.mark.parametrize("threads", [1, 3])
def test_results_do_not_depend_on_the_thread_count(threads):
    g = torch.Generator().manual_seed(14)
    gt, p = random_boxes(50000, g), random_boxes(50000, g)
    codes91 = torch.randn(1000, 4 * 91, generator=g) * 3
    codes1 = torch.randn(50000, 4, generator=g) * 3
    coder = roiops.BoxCoder()
    before = torch.get_num_threads()

    def run():
        return (coder.encode_single(gt, p), coder.decode_single(codes91, p[:1000]),
                coder.decode_single(codes1, p))

    expected = run()
    try:
        torch.set_num_threads(threads)
        actual = run()
    finally:
        torch.set_num_threads(before)
    for a, e in zip(actual, expected):
        assert_bitwise(a, e)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_decode_with_image_size_equals_decode_then_clip(dtype):
    g = torch.Generator().manual_seed(15)
    boxes = adversarial_boxes(4000, g, dtype)
    codes = adversarial_codes(4000, 8, g, dtype)
    coder = roiops.BoxCoder()
    for size in [(600, 1000), (1217, 803), (0, 0)]:
        decoded = coder.decode_single(codes, boxes).view(-1, 2, 4)
        expected = roiops.clip_boxes_to_image(decoded, size).view(-1, 8)
        assert_bitwise(coder.decode_single(codes, boxes, image_size=size), expected)


def test_encode_of_two_dtypes_promotes_like_torchvision():
    g = torch.Generator().manual_seed(16)
    gt, p = random_boxes(200, g, torch.float16), random_boxes(200, g, torch.float32)
    for a, b in [(gt, p), (p, gt)]:
        ours = roiops.BoxCoder().encode_single(a, b)
        assert ours.dtype == torch.float32
        assert_bitwise(ours, TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(a, b))


def test_decode_of_boxes_without_classes_is_empty():
    out = roiops.BoxCoder().decode_single(torch.zeros(5, 0), torch.zeros(5, 4))
    assert out.shape == (5, 0)
    assert roiops.BoxCoder().decode(torch.zeros(5, 0), torch.zeros(5, 4)).shape == (5, 0, 4)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: torch.ops.roiops.box_encode(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.float64),
                                             [1.0] * 4), TypeError, "dtypes differ"),
        (lambda: torch.ops.roiops.box_encode(torch.zeros(3, 4), torch.zeros(2, 4), [1.0] * 4), ValueError,
         "proposals"),
        (lambda: torch.ops.roiops.box_encode(torch.zeros(3, 4), torch.zeros(3, 4), [1.0] * 3), ValueError,
         "weights"),
        (lambda: torch.ops.roiops.box_decode(torch.zeros(3, 6), torch.zeros(3, 4), [1.0] * 4, 4.0),
         ValueError, "rel_codes"),
        (lambda: torch.ops.roiops.box_decode(torch.zeros(3, 4), torch.zeros(3, 4), [1.0] * 4, 4.0, [5]),
         ValueError, "image_size"),
        (lambda: CODER.decode_single(torch.zeros(3, 4), torch.zeros(3, 4), image_size=(5,)), ValueError,
         "image_size"),
        (lambda: CODER.decode_single(torch.zeros(3, 4), torch.zeros(3, 4, device="meta")), ValueError,
         "same device"),
    ],
)
def test_native_ops_reject_bad_input_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_decode_with_image_size_compiles_fullgraph():
    coder = roiops.BoxCoder()

    def f(codes, boxes):
        return coder.decode_single(codes, boxes, image_size=(480, 640))

    g = torch.Generator().manual_seed(18)
    boxes, codes = random_boxes(10, g), torch.randn(10, 8, generator=g)
    assert torch.equal(torch.compile(f, fullgraph=True)(codes, boxes), f(codes, boxes))


# ---- CUDA (run on a GPU machine) ----------------------------------------------------------------
# torch's CUDA exp / log are not its CPU ones, so the GPU is held to the element-wise formula run on
# the GPU, and to the CPU bit for bit where no exp or log is involved.


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cuda_kernels_equal_the_formula_on_cuda_bitwise(dtype):
    g = torch.Generator().manual_seed(20)
    gt, p = adversarial_boxes(30000, g, dtype).cuda(), adversarial_boxes(30000, g, dtype).cuda()
    codes = adversarial_codes(30000 // 91, 4 * 91, g, dtype).cuda()
    for weights in WEIGHT_SETS:
        coder = roiops.BoxCoder(weights)
        assert_bitwise(coder.encode_single(gt, p), box_encode_reference(gt, p, weights))
        boxes = p[: codes.shape[0]]
        decoded = box_decode_reference(codes, boxes, weights, coder.bbox_xform_clip)
        assert_bitwise(coder.decode_single(codes, boxes), decoded)
        clipped = roiops.clip_boxes_to_image(decoded.view(-1, 91, 4), (600, 800))
        assert_bitwise(coder.decode_single(codes, boxes, image_size=(600, 800)), clipped.view(-1, 4 * 91))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cuda_equals_cpu_bitwise_outside_exp_and_log(dtype):
    g = torch.Generator().manual_seed(21)
    gt, p = random_boxes(20000, g, dtype), random_boxes(20000, g, dtype)
    codes = adversarial_codes(20000, 8, g, dtype)
    codes[:, 2::4] = 0.0  # exp(0) = 1 exactly on both devices
    codes[:, 3::4] = 0.0
    coder = roiops.BoxCoder(ASYMMETRIC_WEIGHTS)
    assert_bitwise(coder.decode_single(codes.cuda(), p.cuda()).cpu(), coder.decode_single(codes, p))
    assert_bitwise(coder.encode_single(gt.cuda(), p.cuda())[:, :2].cpu(), coder.encode_single(gt, p)[:, :2])
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype in (torch.float32, torch.float64) else {}
    torch.testing.assert_close(coder.encode_single(gt.cuda(), p.cuda()).cpu(), coder.encode_single(gt, p),
                               **tol)


@pytest.mark.cuda
def test_cuda_empty_and_non_contiguous():
    coder = roiops.BoxCoder()
    none = torch.zeros(0, 4, device="cuda")
    assert coder.encode_single(none, none).shape == (0, 4)
    assert coder.decode_single(torch.zeros(0, 8, device="cuda"), none).shape == (0, 8)
    g = torch.Generator().manual_seed(22)
    p = random_boxes(100, g).cuda()
    wide = torch.randn(100, 16, generator=g).cuda()
    assert torch.equal(coder.decode_single(wide[:, ::2], p),
                       coder.decode_single(wide[:, ::2].contiguous(), p))
