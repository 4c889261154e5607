"""The CUDA kernels against torchvision's CUDA kernels, same process, same GPU, at the issues' shapes:
RoIAlign box head (features [2, 256, 200, 304], 1024 RoIs, 7x7, sampling_ratio 2, aligned) and mask
head (100 RoIs, 14x14), forward and backward, NCHW and channels_last; the 4-level FPN pooler with
1000 RoIs; roi_pool; nms of clustered boxes; batched_nms (80 classes); mask pasting.

Skips (exit 0) on a machine without a GPU or without roiops' CUDA kernels.
torch.utils.benchmark synchronizes the device around each measurement.
"""

import sys
from functools import partial

import torch
import torchvision
from _common import Row, median_ms, parse_args, report

import roiops

DEVICE = torch.device("cuda")


def features(shape, channels_last, g):
    x = torch.randn(shape, generator=g).to(DEVICE)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def rois_for(k, batch, height, width, scale, g):
    xy = torch.rand(k, 2, generator=g) * torch.tensor([width, height]) / scale
    wh = torch.rand(k, 2, generator=g) * torch.tensor([width, height]) / scale / 4 + 4
    b = torch.randint(0, batch, (k, 1), generator=g).float()
    return torch.cat([b, xy, xy + wh], dim=1).to(DEVICE)


def clustered_boxes(n, g):
    # Boxes jittered around n / 20 centres, the way a detector's proposals cluster on objects.
    centres = torch.rand(max(n // 20, 1), 2, generator=g) * 1000
    pick = torch.randint(0, centres.size(0), (n,), generator=g)
    xy = centres[pick] + torch.randn(n, 2, generator=g) * 8
    wh = torch.rand(n, 2, generator=g) * 60 + 20
    scores = torch.rand(n, generator=g)
    return torch.cat([xy, xy + wh], dim=1).to(DEVICE), scores.to(DEVICE)


def measure(name, ours, theirs, args) -> Row:
    """One row: medians of ours() and theirs() (None: no torchvision counterpart)."""
    theirs_ms = None if theirs is None else median_ms(theirs, args.min_run_time)
    return Row(name, torch.get_num_threads(), median_ms(ours, args.min_run_time), theirs_ms)


def align_forward(op, x, rois, out):
    return op(x, rois, out, 0.25, 2, True)


def align_backward(op, x, rois, out, grad, deterministic=False):
    torch.use_deterministic_algorithms(deterministic)
    try:
        return torch.autograd.grad(op(x, rois, out, 0.25, 2, True), x, grad)
    finally:
        torch.use_deterministic_algorithms(False)


def roi_align_rows(args, g):
    rows = []
    ours_op, theirs_op = roiops.roi_align, torchvision.ops.roi_align
    for name, k, out in (("box head", 1024, 7), ("mask head", 100, 14)):
        for channels_last in (False, True):
            x = features((2, 256, 100, 152) if args.quick else (2, 256, 200, 304), channels_last, g)
            rois = rois_for(k, 2, x.size(2), x.size(3), 0.25, g)
            fmt = "channels_last" if channels_last else "NCHW"
            rows.append(measure(f"roi_align {name} fwd {fmt}", partial(align_forward, ours_op, x, rois, out),
                                partial(align_forward, theirs_op, x, rois, out), args))
            xg = x.detach().requires_grad_()
            grad = torch.randn(k, 256, out, out, generator=g).to(DEVICE)
            if channels_last:
                grad = grad.contiguous(memory_format=torch.channels_last)
            rows.append(measure(f"roi_align {name} fwd+bwd {fmt}",
                                partial(align_backward, ours_op, xg, rois, out, grad),
                                partial(align_backward, theirs_op, xg, rois, out, grad), args))
            rows.append(measure(f"roi_align {name} fwd+bwd {fmt} deterministic",
                                partial(align_backward, ours_op, xg, rois, out, grad, True), None, args))
    return rows


def pooler_backward(pooler, x, boxes, image_shapes):
    return torch.autograd.grad(pooler(x, boxes, image_shapes).sum(), list(x.values()))


def fpn_rows(args, g):
    sizes = [(200, 304), (100, 152), (50, 76), (25, 38)]
    x = {f"p{i}": torch.randn(2, 256, h, w, generator=g).to(DEVICE) for i, (h, w) in enumerate(sizes)}
    image_shapes = [(800, 1216), (800, 1216)]
    boxes = [rois_for(500, 1, 800, 1216, 1.0, g)[:, 1:] for _ in range(2)]
    ours = roiops.MultiScaleRoIAlign(list(x), 7, 2, aligned=False)
    theirs = torchvision.ops.MultiScaleRoIAlign(list(x), 7, 2)
    xg = {k: v.detach().requires_grad_() for k, v in x.items()}
    return [
        measure("MultiScaleRoIAlign 4 levels, 1000 RoIs fwd", partial(ours, x, boxes, image_shapes),
                partial(theirs, x, boxes, image_shapes), args),
        measure("MultiScaleRoIAlign 4 levels, 1000 RoIs fwd+bwd",
                partial(pooler_backward, ours, xg, boxes, image_shapes),
                partial(pooler_backward, theirs, xg, boxes, image_shapes), args),
    ]


def roi_pool_rows(args, g):
    x = features((2, 256, 200, 304), False, g)
    rois = rois_for(1024, 2, 200, 304, 0.25, g)
    return [measure("roi_pool box head fwd", partial(roiops.roi_pool, x, rois, 7, 0.25),
                    partial(torchvision.ops.roi_pool, x, rois, 7, 0.25), args)]


def nms_rows(args, g):
    rows = []
    for n in (1000, 5000, 20000) if args.quick else (1000, 5000, 20000, 100000):
        boxes, scores = clustered_boxes(n, g)
        for thr in (0.7, 0.5):
            rows.append(measure(f"nms {n} clustered boxes, IoU {thr}",
                                partial(roiops.nms, boxes, scores, thr),
                                partial(torchvision.ops.nms, boxes, scores, thr), args))
    boxes, scores = clustered_boxes(20000, g)
    idxs = torch.randint(0, 80, (20000,), generator=g).to(DEVICE)
    rows.append(measure("batched_nms 20000 boxes, 80 classes",
                        partial(roiops.batched_nms, boxes, scores, idxs, 0.5),
                        partial(torchvision.ops.batched_nms, boxes, scores, idxs, 0.5), args))
    return rows


def paste_rows(args, g):
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    masks = torch.rand(100, 1, 28, 28, generator=g).to(DEVICE)
    xy = torch.rand(100, 2, generator=g) * torch.tensor([1000.0, 600.0])
    boxes = torch.cat([xy, xy + torch.rand(100, 2, generator=g) * 200 + 10], dim=1).to(DEVICE)
    return [measure("paste_masks 100 x 28x28 into 800x1216 (bool)",
                    partial(roiops.paste_masks, masks, boxes, (800, 1216), threshold=0.5),
                    lambda: paste_masks_in_image(masks, boxes, (800, 1216)) > 0.5, args)]


def main() -> None:
    args = parse_args(__doc__)
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device; skipped (GPU figures are pending a session with a GPU)")
        return
    if not roiops._extension.has_cuda_kernels():
        sys.exit("bench_cuda: roiops._C was built without the CUDA kernels; rebuild with ROIOPS_WITH_CUDA=1")
    g = torch.Generator().manual_seed(0)
    rows = roi_align_rows(args, g) + fpn_rows(args, g) + roi_pool_rows(args, g) + nms_rows(args, g)
    rows += paste_rows(args, g)
    print(f"GPU: {torch.cuda.get_device_name()}, torchvision {torchvision.__version__}")
    report("cuda", rows, args)


if __name__ == "__main__":
    main()
