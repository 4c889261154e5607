"""COCO evaluation: box, mask and keypoint AP with pycocotools, on one process or sharded over ranks.

The metrics are COCO's own (``pycocotools.cocoeval.COCOeval``): AP averaged over IoU (or OKS)
thresholds 0.50:0.05:0.95, AP50, AP75, and AP for small/medium/large objects (keypoints have no
"small"). We only convert predictions to COCO results and read ``COCOeval.stats``; the numbers are
pycocotools' numbers.

Predictions follow the models' eval-mode output: per image a dict with ``boxes`` ``Tensor[N, 4]``
(x1, y1, x2, y2 in the original image's pixels), ``labels`` ``Tensor[N]`` (contiguous 1..C),
``scores`` ``Tensor[N]``, optionally ``masks`` ``Tensor[N, 1, H, W]`` probabilities (binarised at
0.5) and ``keypoints`` ``Tensor[N, K, 3]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from maskzoo.engine import distributed as distributed_utils
from maskzoo.files import write_atomic

__all__ = [
    "STAT_NAMES",
    "prediction_to_coco_results",
    "coco_evaluate",
    "evaluate",
    "format_table",
    "keypoint_sigmas_of",
    "encode_mask",
]

STAT_NAMES = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    # COCOeval.summarize for keypoints: AP, AP50, AP75, APm, APl (no small objects).
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl"),
}
_STAT_INDEX = {
    "bbox": (0, 1, 2, 3, 4, 5),
    "segm": (0, 1, 2, 3, 4, 5),
    "keypoints": (0, 1, 2, 3, 4),
}


def encode_mask(mask: np.ndarray) -> dict:
    """A binary ``mask`` (``ndarray[H, W]``, any dtype, nonzero = inside) as COCO's compressed RLE,
    ``{"size": [H, W], "counts": str}`` (JSON-ready)."""
    # pycocotools is an optional dependency (the maskzoo extra): imported when masks are encoded.
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def prediction_to_coco_results(
    prediction: dict, image_id: int, category_ids: list[int], mask_threshold: float = 0.5
) -> dict[str, list[dict]]:
    """One image's prediction -> COCO result entries per IoU type ("bbox", "segm", "keypoints").

    ``category_ids[l - 1]`` is the COCO category id of contiguous label ``l``.
    """
    boxes = prediction["boxes"].detach().float().cpu()
    scores = prediction["scores"].detach().float().cpu().tolist()
    labels = prediction["labels"].detach().cpu().tolist()
    if any(not 1 <= lab <= len(category_ids) for lab in labels):
        raise ValueError(f"prediction labels {labels} out of range 1..{len(category_ids)}")
    cats = [category_ids[lab - 1] for lab in labels]
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    out: dict[str, list[dict]] = {"bbox": []}
    for box, score, cat in zip(xywh, scores, cats):
        out["bbox"].append(
            {
                "image_id": image_id,
                "category_id": cat,
                "bbox": [round(v, 3) for v in box],
                "score": round(score, 5),
            }
        )
    if "masks" in prediction:
        masks = prediction["masks"].detach().cpu()
        if masks.dim() == 4:
            masks = masks[:, 0]
        binary = (masks >= mask_threshold).numpy()
        out["segm"] = [
            {"image_id": image_id, "category_id": cat, "segmentation": encode_mask(m), "score": round(s, 5)}
            for m, s, cat in zip(binary, scores, cats)
        ]
    if "keypoints" in prediction:
        kps = prediction["keypoints"].detach().float().cpu().clone()
        kps[..., 2] = 1.0  # COCO ignores predicted visibility; 1 marks the point as predicted
        out["keypoints"] = [
            {
                "image_id": image_id,
                "category_id": cat,
                "score": round(s, 5),
                "keypoints": [round(v, 2) for v in k.reshape(-1).tolist()],
            }
            for k, s, cat in zip(kps, scores, cats)
        ]
    return out


def keypoint_sigmas_of(coco_gt) -> np.ndarray | None:
    """The OKS sigmas for ``coco_gt``'s keypoints: a category's ``keypoint_sigmas`` field (maskzoo's
    shapes set writes one), COCO's person sigmas for 17 keypoints, else 0.05 each with a warning."""
    cats = [c for c in coco_gt.loadCats(coco_gt.getCatIds()) if c.get("keypoints")]
    if not cats:
        return None
    for c in cats:
        if c.get("keypoint_sigmas"):
            return np.asarray(c["keypoint_sigmas"], dtype=np.float64)
    k = len(cats[0]["keypoints"])
    if k == 17:
        return None  # COCOeval's default person sigmas
    warnings.warn(
        f"no keypoint_sigmas for {k} keypoints in the annotations; using 0.05 for each",
        UserWarning,
        stacklevel=2,
    )
    return np.full(k, 0.05)


def coco_evaluate(
    coco_gt,
    results: dict[str, list[dict]],
    iou_types=None,
    *,
    verbose: bool = False,
    kpt_sigmas=None,
    image_ids=None,
) -> dict[str, dict[str, float]]:
    """Run COCOeval on ``results`` (IoU type -> list of COCO result dicts) against ``coco_gt``.

    ``coco_gt``: a ``pycocotools.coco.COCO`` or the path of its annotation file. ``iou_types``:
    subset of "bbox", "segm", "keypoints" (default: those present in ``results``). ``image_ids``:
    restrict to those images (default: all images of ``coco_gt``). Returns
    ``{iou_type: {"AP": ..., "AP50": ..., ...}}`` with the values of ``COCOeval.stats`` (in [0, 1];
    -1 where COCO has no ground truth in that area range). No result for a type gives AP 0.
    """
    # Optional dependency, imported on use (see encode_mask).
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not isinstance(coco_gt, COCO):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(str(coco_gt))
    iou_types = list(results) if iou_types is None else list(iou_types)
    metrics = {}
    for iou_type in iou_types:
        if iou_type not in STAT_NAMES:
            raise ValueError(f"iou_type must be one of {sorted(STAT_NAMES)}, got {iou_type!r}")
        dets = results.get(iou_type, [])
        if not dets:
            metrics[iou_type] = {name: 0.0 for name in STAT_NAMES[iou_type]}
            continue
        sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with sink:
            coco_dt = coco_gt.loadRes([dict(d) for d in dets])  # loadRes adds fields in place
            ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            if image_ids is not None:
                ev.params.imgIds = sorted(image_ids)
            if iou_type == "keypoints":
                sigmas = keypoint_sigmas_of(coco_gt) if kpt_sigmas is None else np.asarray(kpt_sigmas)
                if sigmas is not None:
                    ev.params.kpt_oks_sigmas = sigmas
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics[iou_type] = {
            name: float(ev.stats[i]) for name, i in zip(STAT_NAMES[iou_type], _STAT_INDEX[iou_type])
        }
    return metrics


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A fixed-width table: one row per IoU type, AP values in percent."""
    columns = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    lines = [f"{'':<10}" + "".join(f"{c:>8}" for c in columns)]
    for iou_type, stats in metrics.items():
        cells = []
        for c in columns:
            v = stats.get(c)
            cells.append(f"{'-':>8}" if v is None or v < 0 else f"{100 * v:8.1f}")
        lines.append(f"{iou_type:<10}" + "".join(cells))
    return "\n".join(lines)


@torch.inference_mode()
def _predict_shard(model, dataset, indices, device, batch_size, category_ids, progress):
    results: dict[str, list[dict]] = {}
    bar = None
    if progress:
        # tqdm is an optional dependency (the maskzoo extra): imported only for a progress bar.
        from tqdm import tqdm

        bar = tqdm(total=len(indices), desc="eval", unit="img", dynamic_ncols=True)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        items = [dataset[i] for i in chunk]
        images = [img.to(device) for img, _ in items]
        outputs = model(images)
        for (_, target), out in zip(items, outputs):
            per_type = prediction_to_coco_results(out, target["image_id"], category_ids)
            for k, v in per_type.items():
                results.setdefault(k, []).extend(v)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return results


def evaluate(
    model,
    dataset,
    *,
    device=None,
    out_dir=None,
    batch_size: int = 1,
    iou_types=None,
    progress: bool = True,
    verbose: bool = False,
) -> dict[str, dict[str, float]] | None:
    """Predict on every image of ``dataset`` (a :class:`~maskzoo.data.coco.CocoDataset` in eval mode)
    and score the predictions with COCOeval.

    Under torchrun each rank predicts images ``rank, rank + P, ...``; the results are gathered on
    rank 0, which evaluates, writes ``out_dir/coco_results_{type}.json`` (COCO results format) and
    ``out_dir/metrics.json``, and returns the metrics (other ranks return None).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    indices = distributed_utils.shard_indices(len(dataset))
    shard = _predict_shard(
        model,
        dataset,
        indices,
        device,
        batch_size,
        dataset.category_ids,
        progress and distributed_utils.is_main_process(),
    )
    model.train(was_training)
    gathered = distributed_utils.gather_to_main(shard)
    if gathered is None:
        return None
    results: dict[str, list[dict]] = {}
    for part in gathered:
        for k, v in part.items():
            results.setdefault(k, []).extend(v)
    if iou_types is None:
        iou_types = ["bbox"] + [t for t in ("segm", "keypoints") if t in results]
    image_ids = [dataset.image_ids[i] for i in range(len(dataset))]
    metrics = coco_evaluate(dataset.annotation_file, results, iou_types, verbose=verbose, image_ids=image_ids)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for iou_type in iou_types:
            write_atomic(out_dir / f"coco_results_{iou_type}.json", json.dumps(results.get(iou_type, [])))
        write_atomic(out_dir / "metrics.json", json.dumps(metrics))
    return metrics
