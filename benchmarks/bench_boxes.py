"""Box ops against torchvision.ops: box_iou of 2k x 20k boxes; BoxCoder encode / decode of 200k boxes
(decode with 1 class and with 91 classes) against torchvision's BoxCoder."""

import torch
import torchvision
from _common import Row, median_ms, parse_args, report, run_threads
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

import roiops


def random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 1000
    wh = torch.rand(n, 2, generator=g) * 200 + 1
    return torch.cat([xy, xy + wh], dim=1)


def main() -> None:
    args = parse_args(__doc__)
    g = torch.Generator().manual_seed(0)
    n, m = (200, 2000) if args.quick else (2000, 20000)
    a, b = random_boxes(n, g), random_boxes(m, g)

    k = 20000 if args.quick else 200000
    gt, proposals = random_boxes(k, g), random_boxes(k, g)
    codes1 = torch.randn(k, 4, generator=g)
    codes91 = torch.randn(k // 10, 4 * 91, generator=g)
    coder, tv_coder = roiops.BoxCoder(), TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0))
    coding_cases = [
        (f"BoxCoder.encode {k}", lambda: coder.encode(gt, proposals),
         lambda: tv_coder.encode_single(gt, proposals)),
        (f"BoxCoder.decode {k} x 1 class", lambda: coder.decode(codes1, proposals),
         lambda: tv_coder.decode(codes1, [proposals])),
        (f"BoxCoder.decode {k // 10} x 91 classes", lambda: coder.decode(codes91, proposals[: k // 10]),
         lambda: tv_coder.decode(codes91, [proposals[: k // 10]])),
    ]

    def body(t: int) -> list[Row]:
        ours = median_ms(lambda: roiops.box_iou(a, b), args.min_run_time)
        theirs = median_ms(lambda: torchvision.ops.box_iou(a, b), args.min_run_time)
        rows = [Row(f"box_iou {n} x {m}", t, ours, theirs)]
        # ---- box coding (issue 4) ----
        for name, fn_ours, fn_theirs in coding_cases:
            mine, tv = median_ms(fn_ours, args.min_run_time), median_ms(fn_theirs, args.min_run_time)
            rows.append(Row(name, t, mine, tv))
        return rows

    report("boxes", run_threads(args.threads, body), args)


if __name__ == "__main__":
    main()
