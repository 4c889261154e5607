"""winograd_conv3x3 against the convolution torchvision's RPN head runs (torch.nn.Conv2d + ReLU,
oneDNN on the CPU), on the RPN head's shapes: 256 -> 256 channels, 3x3, over the five FPN levels of
one 800 x 1216 image (strides 4 to 64), channels_last maps and weights on both sides. The
"torchvision" implementation is that convolution: torchvision's RPNHead calls it.

The wide cases are C4's (Detectron2's R50-C4, maskzoo's r50_c4, whose convolutions are the same
torch.nn.Conv2d, "torch" here): the RPN head's 1024 -> 1024 channels on the stride-16 map of an
800 x 1216 image, and res5's 512 -> 512 in the RoI head over 200 RoIs of 7 x 7; U is 151 MB and
38 MB there, which the products read from memory."""

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


WIDE = {
    "C4 RPN head 1024 -> 1024 at 50x76": (1, 1024, 50, 76),
    "C4 res5 head 512 -> 512, 200 RoIs of 7x7": (200, 512, 7, 7),
}


@pytest.fixture(scope="module")
def wide() -> dict:
    g = torch.Generator().manual_seed(1)
    cases = {}
    for name, (n, c, h, w) in WIDE.items():
        x = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(c, c, 3, padding=1).eval()
        torch.nn.init.normal_(conv.weight, std=0.01)
        conv.to(memory_format=torch.channels_last)
        cases[name] = (x, conv, roiops.WinogradConv3x3.from_conv(conv, relu=True).eval())
    return cases


@pytest.mark.parametrize("impl", ["roiops", "torch"])
@pytest.mark.parametrize("case", list(WIDE))
def test_wide_conv(benchmark, wide, case, impl):
    benchmark.group = f"3x3 conv + ReLU, {case}"
    x, conv, winograd = wide[case]

    @torch.no_grad()
    def run():
        return winograd(x) if impl == "roiops" else torch.relu(conv(x))

    benchmark(run)
