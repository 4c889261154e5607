"""Oracles and inputs shared by the rotated-box tests: an exact float64 IoU of rotated boxes written
independently of the kernels (candidate-point hull, not half-plane clipping), greedy NMS over it,
a plain-PyTorch float64 RoIAlignRotated, and random rotated boxes."""

import math

import torch
from hypothesis import strategies as st


def corners(box) -> list[tuple[float, float]]:
    """The four corners of (x_ctr, y_ctr, w, h, angle in degrees), counter-clockwise on screen
    (Detectron2's convention: local (u, v) -> (cx + u cos + v sin, cy - u sin + v cos))."""
    cx, cy, w, h, a = (float(v) for v in box)
    t = math.radians(a)
    c, s = math.cos(t), math.sin(t)
    return [
        (cx + u * c + v * s, cy - u * s + v * c)
        for u, v in ((w / 2, h / 2), (-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2))
    ]


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _inside(p, poly, eps) -> bool:
    return all(_cross(poly[i], poly[(i + 1) % 4], p) >= -eps for i in range(4))


def _segment_crossing(p1, p2, q1, q2):
    r = (p2[0] - p1[0], p2[1] - p1[1])
    s = (q2[0] - q1[0], q2[1] - q1[1])
    den = r[0] * s[1] - r[1] * s[0]
    if den == 0:
        return None
    qp = (q1[0] - p1[0], q1[1] - p1[1])
    t = (qp[0] * s[1] - qp[1] * s[0]) / den
    u = (qp[0] * r[1] - qp[1] * r[0]) / den
    if 0 <= t <= 1 and 0 <= u <= 1:
        return (p1[0] + t * r[0], p1[1] + t * r[1])
    return None


def intersection_area(box_a, box_b) -> float:
    """Area of the intersection: the convex hull of the corners of each box inside the other and
    the edge crossings, ordered by angle around their mean, by the shoelace formula."""
    pa, pb = corners(box_a), corners(box_b)
    scale = max(abs(v) for p in pa + pb for v in p) + 1.0
    eps = 1e-12 * scale * scale
    pts = [p for p in pa if _inside(p, pb, eps)] + [q for q in pb if _inside(q, pa, eps)]
    for i in range(4):
        for j in range(4):
            x = _segment_crossing(pa[i], pa[(i + 1) % 4], pb[j], pb[(j + 1) % 4])
            if x is not None:
                pts.append(x)
    if len(pts) < 3:
        return 0.0
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    pts.sort(key=lambda p: math.atan2(p[1] - my, p[0] - mx))
    twice = sum(
        pts[i][0] * pts[(i + 1) % len(pts)][1] - pts[(i + 1) % len(pts)][0] * pts[i][1]
        for i in range(len(pts))
    )
    return max(0.0, abs(twice) / 2)


def iou(box_a, box_b) -> float:
    """Exact IoU in float64; 0 when either box has width or height <= 0."""
    # In a frame centred on box_a (exact for float32 inputs: float64 holds their differences), so
    # that boxes far from the origin keep the oracle's precision.
    box_a, box_b = list(map(float, box_a)), list(map(float, box_b))
    ox, oy = box_a[0], box_a[1]
    box_a = [0.0, 0.0, *box_a[2:]]
    box_b = [box_b[0] - ox, box_b[1] - oy, *box_b[2:]]
    area_a = float(box_a[2]) * float(box_a[3])
    area_b = float(box_b[2]) * float(box_b[3])
    if not (box_a[2] > 0 and box_a[3] > 0 and box_b[2] > 0 and box_b[3] > 0):
        return 0.0
    inter = min(intersection_area(box_a, box_b), area_a, area_b)
    return inter / (area_a + area_b - inter)


def iou_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    rows_a, rows_b = a.double().tolist(), b.double().tolist()
    return torch.tensor([[iou(x, y) for y in rows_b] for x in rows_a], dtype=torch.float64).reshape(
        len(rows_a), len(rows_b)
    )


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, idxs=None) -> list[int]:
    """Textbook greedy NMS over the oracle IoU: rank by decreasing score, ties by lower index."""
    n = boxes.size(0)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    rows = boxes.double().tolist()
    kept: list[int] = []
    for i in order:
        if all(
            (idxs is not None and int(idxs[k]) != int(idxs[i])) or not iou(rows[k], rows[i]) > threshold
            for k in kept
        ):
            kept.append(i)
    return kept


def random_rotated_boxes(
    n: int, seed: int, extent: float = 100.0, max_size: float = 40.0, dtype=torch.float32
) -> torch.Tensor:
    """Tensor[n, 5]: centres in [0, extent)^2, sizes in [2, max_size), angles in [-180, 180)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * (max_size - 2) + 2
    a = torch.rand(n, 1, generator=g, dtype=torch.float64) * 360 - 180
    return torch.cat([xy, wh, a], 1).to(dtype)


def clustered_rotated_boxes(n: int, seed: int, clusters: int = 50, extent: float = 1000.0) -> torch.Tensor:
    """Tensor[n, 5] float32: detections clustered around `clusters` objects (jittered centre, size,
    angle), the input NMS sees after a detector head."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(clusters, 2, generator=g) * extent
    size = torch.rand(clusters, 2, generator=g) * 80 + 20
    angle = torch.rand(clusters, 1, generator=g) * 360 - 180
    which = torch.randint(0, clusters, (n,), generator=g)
    xy = centre[which] + torch.randn(n, 2, generator=g) * 4
    wh = size[which] * (1 + 0.1 * torch.randn(n, 2, generator=g)).clamp(min=0.5)
    a = angle[which] + torch.randn(n, 1, generator=g) * 5
    return torch.cat([xy, wh, a], 1)


# One rotated box as drawn by hypothesis: centre, size (0 allowed, else at least 1/64: the float64
# oracle cannot resolve slivers whose area is below the rounding of its coordinates) and any angle.
side = st.one_of(st.just(0.0), st.floats(0.015625, 80, width=32))
rotated_box = st.tuples(
    st.floats(-50, 150, width=32),
    st.floats(-50, 150, width=32),
    side,
    side,
    st.floats(-360, 360, width=32),
)


def roi_align_rotated_reference(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """RoIAlignRotated from its definition (roiops/roi_align_rotated.py's docstring), float64, one
    sample at a time. input [N, C, H, W], rois [K, 6] -> [K, C, PH, PW]."""
    x = input.double()
    _, c, height, width = x.shape
    ph_n, pw_n = output_size
    out = torch.zeros(rois.size(0), c, ph_n, pw_n, dtype=torch.float64)
    offset = 0.5 if aligned else 0.0

    def value(img, y, xx):
        if y < -1 or y > height or xx < -1 or xx > width:
            return torch.zeros(c, dtype=torch.float64)
        y, xx = max(y, 0.0), max(xx, 0.0)
        y0, x0 = int(y), int(xx)
        if y0 >= height - 1:
            y0 = y1 = height - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= width - 1:
            x0 = x1 = width - 1
            xx = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, xx - x0
        return (
            (1 - ly) * (1 - lx) * img[:, y0, x0]
            + (1 - ly) * lx * img[:, y0, x1]
            + ly * (1 - lx) * img[:, y1, x0]
            + ly * lx * img[:, y1, x1]
        )

    for k, (b, cx, cy, w, h, a) in enumerate(rois.double().tolist()):
        img = x[int(b)]
        cx, cy = cx * spatial_scale - offset, cy * spatial_scale - offset
        w, h = w * spatial_scale, h * spatial_scale
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        t = math.radians(a)
        cos, sin = math.cos(t), math.sin(t)
        bin_h, bin_w = h / ph_n, w / pw_n
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(h / ph_n)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(w / pw_n)
        count = max(gh * gw, 1)
        for ph in range(ph_n):
            for pw in range(pw_n):
                acc = torch.zeros(c, dtype=torch.float64)
                for iy in range(gh):
                    yy = -h / 2 + (ph + (iy + 0.5) / gh) * bin_h
                    for ix in range(gw):
                        xx = -w / 2 + (pw + (ix + 0.5) / gw) * bin_w
                        acc += value(img, cy - xx * sin + yy * cos, cx + xx * cos + yy * sin)
                out[k, :, ph, pw] = acc / count
    return out
