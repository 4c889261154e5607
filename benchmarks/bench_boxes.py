"""Box ops against torchvision.ops: box_iou of 2k x 20k boxes."""

import torch
import torchvision

import roiops
from _common import Row, median_ms, parse_args, report, run_threads


def random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 200 + 1
    return torch.cat([xy, xy + wh], dim=1)


def main() -> None:
    args = parse_args(__doc__)
    g = torch.Generator().manual_seed(0)
    n, m = (200, 2000) if args.quick else (2000, 20000)
    a, b = random_boxes(n, g), random_boxes(m, g)

    def body(t: int) -> list[Row]:
        ours = median_ms(lambda: roiops.box_iou(a, b), args.min_run_time)
        theirs = median_ms(lambda: torchvision.ops.box_iou(a, b), args.min_run_time)
        return [Row(f"box_iou {n} x {m}", t, ours, theirs)]

    report("boxes", run_threads(args.threads, body), args)


if __name__ == "__main__":
    main()
