"""Mask pasting against torchvision's paste_masks_in_image: 100 masks of 28x28 into an 800x1216 image.

Time (medians, same process) and peak memory: each side runs once in a fresh subprocess and
reports the growth of its peak resident set (VmHWM) over the call. roiops returns the
thresholded bool masks; torchvision returns float probabilities (thresholding them costs extra,
included in its time as `> 0.5`).
"""

import subprocess
import sys

import torch
from _common import Row, median_ms, parse_args, report, run_threads
from torchvision.models.detection.roi_heads import paste_masks_in_image

import roiops

HEIGHT, WIDTH = 800, 1216


def make_inputs(n: int):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(n, 28, 28, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([WIDTH * 0.8, HEIGHT * 0.8])
    wh = torch.rand(n, 2, generator=g) * 300 + 20
    return masks, torch.cat([xy, xy + wh], 1)


def ours(masks, boxes):
    return roiops.paste_masks(masks, boxes, (HEIGHT, WIDTH), threshold=0.5)


def theirs(masks, boxes):
    return paste_masks_in_image(masks[:, None], boxes, (HEIGHT, WIDTH))[:, 0] > 0.5


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Unlike ru_maxrss it belongs to the address space,
    so a child started after a large parent does not inherit the parent's peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def peak_growth_mib(which: str, n: int) -> float:
    """Runs one call in a fresh process; its peak RSS growth over the call, in MiB."""
    code = (
        "import sys; sys.path.insert(0, '.'); import bench_masks as b;"
        f"m, x = b.make_inputs({n}); b.ours(m[:2], x[:2]); b.theirs(m[:2], x[:2]);"
        "r0 = b.peak_rss_kib();"
        f"out = b.{which}(m, x);"
        "print((b.peak_rss_kib() - r0) / 1024)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args(__doc__)
    n = 20 if args.quick else 100
    masks, boxes = make_inputs(n)
    assert torch.equal(ours(masks, boxes), theirs(masks, boxes))

    def body(t: int) -> list[Row]:
        a = median_ms(lambda: ours(masks, boxes), args.min_run_time)
        b = median_ms(lambda: theirs(masks, boxes), args.min_run_time)
        return [Row(f"paste_masks {n} x 28x28 -> {HEIGHT}x{WIDTH}", t, a, b)]

    rows = run_threads(args.threads, body)
    report("masks", rows, args)
    mine, tv = peak_growth_mib("ours", n), peak_growth_mib("theirs", n)
    print(f"peak memory growth of one call: roiops {mine:.0f} MiB, torchvision {tv:.0f} MiB "
          f"(output alone: {n * HEIGHT * WIDTH / 2**20:.0f} MiB bool, "
          f"{4 * n * HEIGHT * WIDTH / 2**20:.0f} MiB float)")


if __name__ == "__main__":
    main()
