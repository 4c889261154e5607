# ruff: noqa: B023  (the timed lambdas run inside the loop iteration that defines them)
"""RoIAlign, RoIPool and the FPN pooler against torchvision.ops on Mask R-CNN shapes (same process).

Cases: box head (features [2, 256, 200, 304], 1024 RoIs, 7x7, sampling_ratio 2, aligned), mask
head (100 RoIs, 14x14), roi_pool on the box-head shapes, the 4-level FPN pooler with 1000 RoIs
(and roiops' own level loop, to show what the fused call saves); forward and forward+backward;
NCHW and channels_last input. torchvision always gets the NCHW input (its CPU kernel copies
channels_last to NCHW anyway).
"""

import torch
import torchvision
from _common import Row, median_ms, parse_args, report, run_threads

import roiops


def image_boxes(n: int, image_hw: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Proposal-like boxes in image pixels: log-uniform sizes 16 .. 512 px, inside the image."""
    h, w = image_hw
    size = torch.exp(torch.empty(n, 2).uniform_(2.77, 6.24, generator=g))
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - size).clamp(min=1)
    return torch.cat([xy, xy + size], dim=1)


def with_index(boxes: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])


def main() -> None:
    args = parse_args(__doc__)
    g = torch.Generator().manual_seed(0)
    image_hw = (800, 1216)
    c = 64 if args.quick else 256
    n_box, n_mask, n_fpn = (256, 32, 250) if args.quick else (1024, 100, 1000)
    feats = [torch.randn(2, c, image_hw[0] // s, image_hw[1] // s, generator=g) for s in (4, 8, 16, 32)]
    p2 = feats[0]
    p2_cl = p2.contiguous(memory_format=torch.channels_last)
    box_rois = with_index([image_boxes(n_box // 2, image_hw, g) for _ in range(2)])
    mask_rois = with_index([image_boxes(n_mask // 2, image_hw, g) for _ in range(2)])
    fpn_boxes = [image_boxes(n_fpn // 2, image_hw, g) for _ in range(2)]
    names = ["0", "1", "2", "3"]
    fpn_x = dict(zip(names, feats))
    fpn_x_cl = {k: v.contiguous(memory_format=torch.channels_last) for k, v in fpn_x.items()}
    sizes = [image_hw, image_hw]
    ours_fpn = roiops.MultiScaleRoIAlign(names, 7, 2, aligned=False)
    theirs_fpn = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)

    def level_loop(x: dict, boxes: list[torch.Tensor]) -> torch.Tensor:
        # What the fused call replaces: assign levels, then gather / pool / scatter per level.
        rois = with_index(boxes)
        area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
        lvl = torch.floor(4 + torch.log2(torch.sqrt(area) / 224) + 1e-6).clamp(2, 5).long() - 2
        out = rois.new_zeros(len(rois), c, 7, 7)
        for i, (name, scale) in enumerate(zip(names, (1 / 4, 1 / 8, 1 / 16, 1 / 32))):
            idx = torch.where(lvl == i)[0]
            out[idx] = roiops.roi_align(x[name], rois[idx], 7, scale, 2, False)
        return out

    def fwd_bwd(fn, inputs):
        def run():
            for t in inputs:
                t.grad = None
            fn().sum().backward()

        return run

    def grad_inputs(t):
        return t.detach().requires_grad_(True)

    def body(t: int) -> list[Row]:
        rows = []
        mt = args.min_run_time
        for label, rois, out, sr in (("box head", box_rois, 7, 2), ("mask head", mask_rois, 14, 2)):
            shape = f"{label} {len(rois)} RoIs {out}x{out}"
            theirs_f = median_ms(lambda: torchvision.ops.roi_align(p2, rois, out, 0.25, sr, True), mt)
            xt = grad_inputs(p2)
            theirs_b = median_ms(
                fwd_bwd(lambda: torchvision.ops.roi_align(xt, rois, out, 0.25, sr, True), [xt]), mt
            )
            for fmt, x in (("NCHW", p2), ("channels_last", p2_cl)):
                rows.append(
                    Row(
                        f"roi_align fwd {shape} {fmt}",
                        t,
                        median_ms(lambda: roiops.roi_align(x, rois, out, 0.25, sr, True), mt),
                        theirs_f,
                    )
                )
                xo = grad_inputs(x)
                rows.append(
                    Row(
                        f"roi_align fwd+bwd {shape} {fmt}",
                        t,
                        median_ms(fwd_bwd(lambda: roiops.roi_align(xo, rois, out, 0.25, sr, True), [xo]), mt),
                        theirs_b,
                    )
                )
        theirs_p = median_ms(lambda: torchvision.ops.roi_pool(p2, box_rois, 7, 0.25), mt)
        for fmt, x in (("NCHW", p2), ("channels_last", p2_cl)):
            rows.append(
                Row(
                    f"roi_pool fwd {len(box_rois)} RoIs 7x7 {fmt}",
                    t,
                    median_ms(lambda: roiops.roi_pool(x, box_rois, 7, 0.25), mt),
                    theirs_p,
                )
            )
        theirs_m = median_ms(lambda: theirs_fpn(fpn_x, fpn_boxes, sizes), mt)
        tx = {k: grad_inputs(v) for k, v in fpn_x.items()}
        theirs_mb = median_ms(fwd_bwd(lambda: theirs_fpn(tx, fpn_boxes, sizes), list(tx.values())), mt)
        for fmt, x in (("NCHW", fpn_x), ("channels_last", fpn_x_cl)):
            rows.append(
                Row(
                    f"MultiScaleRoIAlign fwd {n_fpn} RoIs 4 levels {fmt}",
                    t,
                    median_ms(lambda: ours_fpn(x, fpn_boxes, sizes), mt),
                    theirs_m,
                )
            )
            ox = {k: grad_inputs(v) for k, v in x.items()}
            rows.append(
                Row(
                    f"MultiScaleRoIAlign fwd+bwd {n_fpn} RoIs {fmt}",
                    t,
                    median_ms(fwd_bwd(lambda: ours_fpn(ox, fpn_boxes, sizes), list(ox.values())), mt),
                    theirs_mb,
                )
            )
            # Same kernels driven level by level from Python: "theirs" column = the level loop.
            rows.append(
                Row(
                    f"  fused vs roiops level loop fwd {fmt}",
                    t,
                    median_ms(lambda: ours_fpn(x, fpn_boxes, sizes), mt),
                    median_ms(lambda: level_loop(x, fpn_boxes), mt),
                )
            )
        return rows

    report("roi_align", run_threads(args.threads, body), args)


if __name__ == "__main__":
    main()
