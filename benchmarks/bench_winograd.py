"""winograd_conv3x3 against the convolution torchvision's RPN head runs (torch.nn.Conv2d + ReLU,
oneDNN on the CPU), on the RPN head's shapes: 256 -> 256 channels, 3x3, over the five FPN levels of
one 800 x 1216 image (strides 4 to 64), channels_last maps and weights on both sides. The
"torchvision" implementation is that convolution: torchvision's RPNHead calls it."""

import pytest
import torch

import roiops

IMAGE_HW = (800, 1216)
STRIDES = (4, 8, 16, 32, 64)
CHANNELS = 256


@pytest.fixture(scope="module")
def data() -> dict:
    g = torch.Generator().manual_seed(0)
    h, w = IMAGE_HW
    levels = [
        torch.randn(1, CHANNELS, -(-h // s), -(-w // s), generator=g).contiguous(
            memory_format=torch.channels_last
        )
        for s in STRIDES
    ]
    conv = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1).eval()
    torch.nn.init.normal_(conv.weight, std=0.01)
    conv.to(memory_format=torch.channels_last)
    return {
        "levels": levels,
        "conv": conv,
        "winograd": roiops.WinogradConv3x3.from_conv(conv, relu=True).eval(),
    }


@pytest.mark.parametrize("impl", ["roiops", "torchvision"])
def test_rpn_head_conv(benchmark, data, impl):
    benchmark.group = (
        f"RPN head 3x3 conv + ReLU {CHANNELS} -> {CHANNELS}, 5 FPN levels of {IMAGE_HW[0]}x{IMAGE_HW[1]}"
    )
    conv, levels = (data["winograd"] if impl == "roiops" else data["conv"]), data["levels"]
    relu = impl != "roiops"

    @torch.no_grad()
    def run():
        return [torch.relu(conv(x)) if relu else conv(x) for x in levels]

    benchmark(run)
