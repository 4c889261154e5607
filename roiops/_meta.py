"""Fake (meta) kernels: output shapes and dtypes of every roiops op, for torch.compile and torch.export.

Each one checks what the native kernel would check with torch._check, so a traced program fails at
trace time with the same message as at run time.
"""

import torch


@torch.library.register_fake("roiops::box_iou")
def _box_iou_fake(boxes1, boxes2):
    torch._check(boxes1.dim() == 2 and boxes1.size(1) == 4, lambda: "box_iou: boxes1 must be [N, 4]")
    torch._check(boxes2.dim() == 2 and boxes2.size(1) == 4, lambda: "box_iou: boxes2 must be [M, 4]")
    torch._check(boxes1.dtype == boxes2.dtype, lambda: "box_iou: boxes1 and boxes2 dtypes differ")
    return boxes1.new_empty((boxes1.size(0), boxes2.size(0)))
