"""winograd_conv3x3 and WinogradConv3x3 against the definition of the convolution: float64
``torch.nn.functional.conv2d`` (an independent oracle: it shares no code with the Winograd
transforms), on tile-aligned and ragged map sizes, with and without bias and ReLU."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

import roiops
from roiops._validation import TypeRuntimeError, ValueRuntimeError

F64 = torch.float64


def _inputs(n, c, k, h, w, seed, dtype=torch.float32, channels_last=False, weight_std=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=F64)
    weight = torch.randn(k, c, 3, 3, generator=g, dtype=F64) * weight_std
    bias = torch.randn(k, generator=g, dtype=F64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(dtype), weight.to(dtype), bias.to(dtype)


def _oracle(x, weight, bias, relu):
    y = F.conv2d(x.to(F64), weight.to(F64), None if bias is None else bias.to(F64), padding=1)
    return torch.relu(y) if relu else y


def _conv(x, weight, bias=None, relu=False):
    return roiops.winograd_conv3x3(x, weight, roiops.winograd_weight(weight), bias, relu)


# (N, C, K, H, W): a single pixel, rows and columns shorter than a tile, ragged edges (H, W not
# multiples of 4), several images, one input or output channel, and R-FCN-like widths.
SHAPES = [
    (1, 1, 1, 1, 1),
    (1, 3, 2, 2, 3),
    (2, 4, 5, 5, 7),
    (1, 8, 3, 4, 4),
    (3, 2, 6, 9, 13),
    (1, 1, 7, 6, 11),
    (1, 16, 1, 10, 10),
    (1, 64, 48, 13, 19),
]
# float32's own matrix products on AVX-512 machines (the `products` fixture below): column panels
# of 32 output channels (K = 40: a partial one), sums over blocks of 64 input channels (C = 200:
# three and a remainder), rows in blocks of 12 tiles; small maps with wide weights (C * K >= 128 *
# 128, fewer than 8 chunks of tiles) take three whole-map passes, the others chunks of tiles (48
# tiles, 96 from 257 channels on: 13 images of 8 x 8 tiles are 8 chunks and a part).
WIDE_SHAPES = [
    (1, 200, 40, 9, 10),
    (1, 160, 130, 30, 30),
    (2, 130, 150, 60, 52),
    (13, 264, 260, 29, 29),
]


@pytest.fixture(params=["own loop", "blas"])
def products(request, monkeypatch):
    """Each way the CPU kernel runs float32's 36 matrix products: its own AVX-512 loop or at::bmm
    (MKL); csrc/cpu/winograd_conv3x3.cpp: products_by_blas picks one by CPU, ROIOPS_WINOGRAD_BLAS
    overrides it. Without AVX-512 both run at::bmm."""
    monkeypatch.setenv("ROIOPS_WINOGRAD_BLAS", "1" if request.param == "blas" else "0")
    return request.param


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_float64_equals_the_direct_convolution(shape, relu):
    x, weight, bias = _inputs(*shape, seed=sum(shape), dtype=F64)
    torch.testing.assert_close(
        _conv(x, weight, bias, relu), _oracle(x, weight, bias, relu), atol=1e-12, rtol=1e-12
    )


@pytest.mark.parametrize("shape", SHAPES + WIDE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_float32_is_within_the_documented_error(shape, products):
    # The transforms' rounding: ~3e-5 of the output's magnitude (roiops/winograd.py); 1e-4 bounds it.
    x, weight, bias = _inputs(*shape, seed=sum(shape) + 1)
    expected = _oracle(x, weight, bias, False)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(_conv(x, weight, bias).to(F64), expected, atol=1e-4 * scale, rtol=0)


def test_float32_error_at_rpn_width_is_below_1e4_of_the_outputs(products):
    # The RPN head's 256 -> 256 channels, weights of std 0.02: outputs of magnitude ~1.
    x, weight, bias = _inputs(1, 256, 256, 13, 19, seed=7, weight_std=0.02)
    expected = _oracle(x, weight, bias, True)
    error = (_conv(x, weight, bias, True).to(F64) - expected).abs().max().item()
    assert error < 1e-4 * expected.abs().max().item()


def test_no_bias_and_relu_are_the_same_pass_as_separate_ops():
    x, weight, bias = _inputs(2, 5, 4, 9, 6, seed=3)
    linear = _conv(x, weight, bias)
    assert torch.equal(_conv(x, weight, bias, relu=True), torch.relu(linear))
    torch.testing.assert_close(
        _conv(x, weight, None).to(F64), _oracle(x, weight, None, False), atol=1e-4, rtol=0
    )


def test_layouts_give_the_same_bits_and_the_output_is_channels_last(products):
    x, weight, bias = _inputs(2, 6, 5, 11, 7, seed=4)
    nchw = _conv(x, weight, bias)
    cl = _conv(x.contiguous(memory_format=torch.channels_last), weight, bias)
    assert torch.equal(nchw, cl)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    view = torch.cat([x, x], dim=3)[..., ::2]  # neither NCHW nor channels_last in memory
    torch.testing.assert_close(
        _conv(view, weight, bias).to(F64), _oracle(view, weight, bias, False), atol=1e-4, rtol=0
    )


THREAD_SHAPES = [(2, 32, 16, 40, 36)] + WIDE_SHAPES[1:]  # chunks of small widths, whole-map passes, chunks


@pytest.mark.parametrize("shape", THREAD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_result_does_not_depend_on_the_thread_count(shape, products):
    x, weight, bias = _inputs(*shape, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _conv(x, weight, bias, True)
        torch.set_num_threads(max(2, threads))
        many = _conv(x, weight, bias, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_nan_propagates_through_relu_and_empty_maps_give_empty_outputs():
    x, weight, bias = _inputs(1, 2, 3, 8, 8, seed=6)
    x[0, 0, 4, 4] = float("nan")
    y = _conv(x, weight, bias, True)
    assert y[0, :, 3:6, 3:6].isnan().all()
    assert not y[0, :, :2, :2].isnan().any()
    for shape in ((0, 2, 8, 8), (1, 2, 0, 5), (1, 2, 5, 0)):
        empty = torch.zeros(shape)
        assert _conv(empty, weight, bias).shape == (shape[0], 3, shape[2], shape[3])
    no_channels = _conv(torch.zeros(1, 0, 3, 4), torch.zeros(3, 0, 3, 3), bias, False)
    assert torch.equal(no_channels, bias.view(1, 3, 1, 1).expand(1, 3, 3, 4))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 9),
    k=st.integers(1, 9),
    h=st.integers(1, 14),
    w=st.integers(1, 14),
    relu=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_the_oracle(n, c, k, h, w, relu, seed):
    x, weight, bias = _inputs(n, c, k, h, w, seed, dtype=F64)
    torch.testing.assert_close(
        _conv(x, weight, bias, relu), _oracle(x, weight, bias, relu), atol=1e-12, rtol=1e-12
    )


def test_winograd_weight_is_g_g_gt_of_each_kernel():
    # Point (i, j) of kernel (k, c): sum_ab G[i, a] w[k, c, a, b] G[j, b], G the F(4, 3) transform.
    g = torch.tensor(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        dtype=F64,
    )
    weight = torch.randn(4, 3, 3, 3, dtype=F64)
    u = roiops.winograd_weight(weight)
    assert u.shape == (36, 3, 4)
    for k, c in ((0, 0), (3, 2), (1, 1)):
        torch.testing.assert_close(u[:, c, k].view(6, 6), g @ weight[k, c] @ g.T)


def test_a_transformed_weight_with_padded_rows_gives_the_same_bits(products):
    # The kernel reads U's rows where they are (no copy for a view with unit column stride).
    x, weight, bias = _inputs(1, 40, 64, 12, 9, seed=8)
    u = roiops.winograd_weight(weight)
    padded = torch.zeros(36, 40, 80)[..., :64].copy_(u)
    assert not padded.is_contiguous()
    expected = roiops.winograd_conv3x3(x, weight, u, bias, True)
    assert torch.equal(roiops.winograd_conv3x3(x, weight, padded, bias, True), expected)


@pytest.mark.parametrize(
    "shape", [(1, 40, 64, 12, 9), (1, 128, 144, 20, 20)], ids=["chunks", "whole-map passes"]
)
@pytest.mark.parametrize("offset", [1, 4, 12], ids=lambda o: f"{4 * o}B")
def test_a_transformed_weight_off_the_cache_lines_gives_the_same_bits(shape, offset, products):
    # An AOTInductor package's constants start 16 or 48 bytes past a 64-byte line (torch 2.14
    # mallocs their block); the kernel reads such a U from an aligned copy.
    x, weight, bias = _inputs(*shape, seed=9)
    u = roiops.winograd_weight(weight)
    storage = torch.empty(u.numel() + 16)
    shifted = storage[offset : offset + u.numel()].view(u.shape).copy_(u)
    assert shifted.data_ptr() % 64 != 0
    expected = roiops.winograd_conv3x3(x, weight, u, bias, True)
    assert torch.equal(roiops.winograd_conv3x3(x, weight, shifted, bias, True), expected)
    assert torch.equal(shifted, u)  # read, not written


# ---- the module ----------------------------------------------------------------------------------


def test_module_equals_its_convolution_and_keeps_its_state_dict():
    conv = torch.nn.Conv2d(8, 6, 3, padding=1)
    module = roiops.WinogradConv3x3.from_conv(conv, relu=True).eval()
    assert set(module.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 8, 13, 10)
    with torch.no_grad():
        torch.testing.assert_close(module(x), torch.relu(conv(x)), atol=1e-5, rtol=0)


def test_module_follows_its_weight_after_loading_and_dtype_changes():
    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    module = roiops.WinogradConv3x3.from_conv(conv)
    other = torch.nn.Conv2d(4, 3, 3, padding=1)
    module.load_state_dict(other.state_dict())
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(module(x), other(x), atol=1e-5, rtol=0)
        module.double()
        torch.testing.assert_close(module(x.double()), other.double()(x.double()), atol=1e-12, rtol=0)
        module.weight.mul_(2)
        module.refresh()
        torch.testing.assert_close(
            module(x.double()), F.conv2d(x.double(), module.weight, module.bias, padding=1)
        )


def test_module_falls_back_to_conv2d_for_gradients_and_other_dtypes():
    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    module = roiops.WinogradConv3x3.from_conv(conv, relu=True)
    x = torch.randn(1, 4, 6, 7, requires_grad=True)
    module(x).sum().backward()
    expected = x.detach().clone().requires_grad_()
    torch.relu(conv(expected)).sum().backward()
    torch.testing.assert_close(x.grad, expected.grad)
    with torch.no_grad():
        half = module.to(torch.bfloat16)(x.detach().bfloat16())
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs",
    [dict(stride=2), dict(padding=0), dict(dilation=2), dict(groups=2), dict(padding_mode="reflect")],
    ids=lambda k: next(iter(k)),
)
def test_module_refuses_other_convolutions(kwargs):
    conv = torch.nn.Conv2d(4, 4, 3, **{"padding": 1, **kwargs})
    with pytest.raises(ValueError, match="conv must be 3x3"):
        roiops.WinogradConv3x3.from_conv(conv)
    with pytest.raises(TypeError, match="conv must be an nn.Conv2d"):
        roiops.WinogradConv3x3.from_conv(torch.nn.Linear(3, 3))


def test_module_exports_and_compiles_with_the_op_in_the_graph():
    module = roiops.WinogradConv3x3.from_conv(torch.nn.Conv2d(5, 4, 3, padding=1), relu=True).eval()
    x = torch.randn(1, 5, 11, 9)
    with torch.no_grad():
        program = torch.export.export(
            module,
            (x,),
            dynamic_shapes={"x": {2: torch.export.Dim("h", min=2), 3: torch.export.Dim("w", min=2)}},
        )
        assert any(n.target is torch.ops.roiops.winograd_conv3x3.default for n in program.graph.nodes)
        y = torch.randn(1, 5, 7, 14)
        torch.testing.assert_close(program.module()(y), module(y))
        torch.testing.assert_close(torch.compile(module, fullgraph=True)(y), module(y))


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_arguments_raise_errors_naming_them():
    x, weight, bias = _inputs(1, 4, 3, 6, 6, seed=8)
    u = roiops.winograd_weight(weight)
    with pytest.raises(ValueRuntimeError, match="input must have 4 dimensions"):
        roiops.winograd_conv3x3(x[0], weight, u, bias)
    with pytest.raises(TypeRuntimeError, match="input must be float32 or float64"):
        roiops.winograd_conv3x3(x.half(), weight.half(), u.half(), bias.half())
    with pytest.raises(ValueRuntimeError, match=r"weight must be \[K, 4, 3, 3\]"):
        roiops.winograd_conv3x3(x, weight[:, :3], u, bias)
    with pytest.raises(ValueRuntimeError, match=r"weight_winograd must be \[36, 4, 3\]"):
        roiops.winograd_conv3x3(x, weight, u[:, :, :2], bias)
    with pytest.raises(ValueRuntimeError, match=r"bias must be \[3\]"):
        roiops.winograd_conv3x3(x, weight, u, bias[:2])
    with pytest.raises(TypeRuntimeError, match="weight_winograd dtype"):
        roiops.winograd_conv3x3(x, weight, u.double(), bias)
    with pytest.raises(TypeError, match="relu must be a bool"):
        roiops.winograd_conv3x3(x, weight, u, bias, relu=1)
    with pytest.raises(ValueRuntimeError, match=r"weight must be \[K, C, 3, 3\]"):
        roiops.winograd_weight(torch.zeros(3, 4, 5, 5))
    # The native checks guard direct torch.ops calls with the same facts.
    with pytest.raises(ValueError, match="weight_winograd must be"):
        torch.ops.roiops.winograd_conv3x3(x, weight, u[:35], bias, False)


@pytest.mark.cuda
def test_cuda_runs_cudnn_with_the_same_result():
    x, weight, bias = _inputs(2, 8, 6, 13, 10, seed=9)
    u = roiops.winograd_weight(weight)
    cuda = roiops.winograd_conv3x3(x.cuda(), weight.cuda(), u.cuda(), bias.cuda(), True)
    torch.testing.assert_close(cuda.cpu().to(F64), _oracle(x, weight, bias, True), atol=1e-3, rtol=1e-3)
