"""NMS against torchvision.ops: nms of clustered boxes (1k to 100k, IoU 0.7 and 0.5) and batched_nms
with 80 classes (torchvision's faster of its two strategies: per-class loop or coordinate offset)."""

import torch
import torchvision
from _common import Row, median_ms, parse_args, report, run_threads
from torchvision.ops.boxes import _batched_nms_coordinate_trick, _batched_nms_vanilla

import roiops


def clustered_boxes(n: int, g: torch.Generator, image: float = 1000.0):
    """Detector-like boxes: n // 20 objects, each with ~20 jittered proposals around it."""
    clusters = max(1, n // 20)
    centres = torch.rand(clusters, 2, generator=g) * image
    sizes = torch.rand(clusters, 2, generator=g) * 120 + 8
    which = torch.randint(0, clusters, (n,), generator=g)
    ctr = centres[which] + torch.randn(n, 2, generator=g) * sizes[which] * 0.15
    wh = sizes[which] * (1 + 0.2 * torch.randn(n, 2, generator=g)).clamp(min=0.3)
    return torch.cat([ctr - wh / 2, ctr + wh / 2], 1), torch.rand(n, generator=g)


def main() -> None:
    args = parse_args(__doc__)
    g = torch.Generator().manual_seed(0)
    sizes = [1000, 5000] if args.quick else [1000, 5000, 20000, 100000]
    cases = {n: clustered_boxes(n, g) for n in sizes}
    n_batched = 2000 if args.quick else 20000
    b_boxes, b_scores = clustered_boxes(n_batched, g)
    b_idxs = torch.randint(0, 80, (n_batched,), generator=g)

    def body(t: int) -> list[Row]:
        rows = []
        for threshold in (0.7, 0.5):
            for n, (boxes, scores) in cases.items():
                # torchvision's quadratic kernel takes seconds at 100k: time fewer runs of it.
                budget = min(args.min_run_time, 0.05) if n >= 100000 else args.min_run_time
                args_ = (boxes, scores, threshold)
                ours = median_ms(lambda a=args_: roiops.nms(*a), args.min_run_time)
                theirs = median_ms(lambda a=args_: torchvision.ops.nms(*a), budget)
                rows.append(Row(f"nms {n} clustered, IoU {threshold}", t, ours, theirs))
        ours = median_ms(lambda: roiops.batched_nms(b_boxes, b_scores, b_idxs, 0.5), args.min_run_time)
        loop = median_ms(lambda: _batched_nms_vanilla(b_boxes, b_scores, b_idxs, 0.5), args.min_run_time)
        trick = median_ms(lambda: _batched_nms_coordinate_trick(b_boxes, b_scores, b_idxs, 0.5),
                          args.min_run_time)
        rows.append(Row(f"batched_nms {n_batched}, 80 classes (tv: best of 2)", t, ours, min(loop, trick)))
        return rows

    report("nms", run_threads(args.threads, body), args)


if __name__ == "__main__":
    main()
