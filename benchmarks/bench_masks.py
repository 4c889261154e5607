"""Mask pasting against torchvision's paste_masks_in_image: 100 masks of 28x28 into an 800x1216 image.

roiops returns the thresholded bool masks; torchvision returns float probabilities (thresholding
them costs extra, included in its time as `> 0.5`). Besides the time, each case records in its
extra_info the peak memory of one call: run once in a fresh process, the growth of that
process's peak resident set (VmHWM) over the call.
"""

import os
import subprocess
import sys

import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

import roiops

HEIGHT, WIDTH = 800, 1216
MASKS = 100
HERE = os.path.dirname(os.path.abspath(__file__))


def make_inputs(n: int):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(n, 28, 28, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([WIDTH * 0.8, HEIGHT * 0.8])
    wh = torch.rand(n, 2, generator=g) * 300 + 20
    return masks, torch.cat([xy, xy + wh], 1)


def paste_roiops(masks, boxes):
    return roiops.paste_masks(masks, boxes, (HEIGHT, WIDTH), threshold=0.5)


def paste_torchvision(masks, boxes):
    return paste_masks_in_image(masks[:, None], boxes, (HEIGHT, WIDTH))[:, 0] > 0.5


PASTE = {"roiops": paste_roiops, "torchvision": paste_torchvision}


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Unlike ru_maxrss it belongs to the address space,
    so a child started after a large parent does not inherit the parent's peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def peak_growth_mib(impl: str, n: int) -> float:
    """Runs one call of PASTE[impl] in a fresh process; its peak RSS growth over the call, in MiB."""
    code = (
        f"import sys; sys.path[:0] = [{HERE!r}, {os.path.dirname(HERE)!r}]; import bench_masks as b;"
        f"m, x = b.make_inputs({n}); [f(m[:2], x[:2]) for f in b.PASTE.values()];"
        "r0 = b.peak_rss_kib();"
        f"out = b.PASTE[{impl!r}](m, x);"
        "print((b.peak_rss_kib() - r0) / 1024)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def inputs():
    masks, boxes = make_inputs(MASKS)
    assert torch.equal(paste_roiops(masks, boxes), paste_torchvision(masks, boxes))
    return masks, boxes


@pytest.mark.parametrize("impl", list(PASTE))
def test_paste_masks(benchmark, inputs, impl):
    benchmark.group = f"paste_masks {MASKS} x 28x28 -> {HEIGHT}x{WIDTH}"
    benchmark(PASTE[impl], *inputs)
    if not benchmark.disabled:
        benchmark.extra_info["peak_memory_growth_mib"] = peak_growth_mib(impl, MASKS)
