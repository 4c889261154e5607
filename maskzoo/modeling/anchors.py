"""Anchors of the RPN (Faster R-CNN section 3.1; one size per level for FPN).

A level with sizes S and aspect ratios R (h / w) has |S| * |R| cell anchors, ratio-major:
for r in R, for s in S: w = s / sqrt(r), h = s * sqrt(r), centred on (0, 0) and rounded to whole
pixels. They are tiled at every feature-map location (x * stride, y * stride), row-major, cell
anchors innermost: anchor index = (y * W + x) * A + a, the layout the RPN head's outputs are
flattened into. The stride of a level is the padded batch size divided by the map size (floor).
Anchors are in the box precision of the feature maps' dtype (float32 under autocast, see
:mod:`maskzoo.modeling.precision`).
"""

from __future__ import annotations

import torch
from torch import nn

from maskzoo.modeling.precision import box_dtype


def cell_anchors(
    sizes, aspect_ratios, dtype=torch.float32, device=None, rounded: bool = True
) -> torch.Tensor:
    """Tensor[len(aspect_ratios) * len(sizes), 4] (x1, y1, x2, y2) around (0, 0), in whole pixels
    (``rounded``, torchvision) or exact (Detectron2: w = sqrt(s^2 / r), h = r * w in float64, then
    cast; the same numbers as Detectron2's Python-float computation)."""
    if not rounded:
        s = torch.as_tensor(sizes, dtype=torch.float64)
        r = torch.as_tensor(aspect_ratios, dtype=torch.float64)
        ws = torch.sqrt(s[None, :] ** 2 / r[:, None])
        hs = r[:, None] * ws
        ws, hs = ws.reshape(-1), hs.reshape(-1)
        return torch.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], dim=1).to(dtype=dtype, device=device)
    scales = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """forward(batch Tensor[N, 3, H, W], feature maps) -> Tensor[sum_l H_l * W_l * A_l, 4].

    The anchors are the same for every image of a batch (they depend on the padded size only).
    """

    def __init__(
        self,
        sizes: tuple[tuple[int, ...], ...],
        aspect_ratios: tuple[float, ...],
        strides: tuple[int, ...] = (),
        rounded: bool = True,
    ):
        super().__init__()
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(aspect_ratios)
        # () = stride from the padded batch size over the map size; else one fixed stride per level.
        self.strides = tuple(strides)
        self.rounded = rounded
        self._cache: dict = {}

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(self.aspect_ratios) for s in self.sizes]

    def forward(self, batch: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.sizes):
            raise ValueError(f"{len(features)} feature maps but anchor sizes for {len(self.sizes)} levels")
        image_h, image_w = batch.shape[-2:]
        grids = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features)
        dtype = box_dtype(features[0].dtype)
        key = (image_h, image_w, grids, dtype, features[0].device)
        # Under torch.compile the anchors are computed in the graph: a lookup in the cache would
        # be guarded on the dict's keys and recompile the RPN for every new image size.
        compiling = torch.compiler.is_compiling()
        anchors = None if compiling else self._cache.get(key)
        if anchors is None:
            strides = (
                [(s, s) for s in self.strides]
                if self.strides
                else [(image_h // h, image_w // w) for h, w in grids]
            )
            anchors = torch.cat(
                [
                    self.grid_anchors(sizes, grid, stride, dtype, features[0].device)
                    for sizes, grid, stride in zip(self.sizes, grids, strides)
                ]
            )
            if not compiling:
                self._cache = {key: anchors}  # keep only the latest: sizes vary from batch to batch
        return anchors

    def grid_anchors(self, sizes, grid, stride, dtype, device) -> torch.Tensor:
        base = cell_anchors(sizes, self.aspect_ratios, dtype, device, rounded=self.rounded)
        shifts_x = torch.arange(grid[1], dtype=torch.int32, device=device) * stride[1]
        shifts_y = torch.arange(grid[0], dtype=torch.int32, device=device) * stride[0]
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shifts = torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)) * 2, dim=1).to(dtype)
        return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)
