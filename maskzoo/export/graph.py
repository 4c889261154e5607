"""The inference forward of a maskzoo model as one traceable graph, for torch.export and ONNX.

:class:`DeployGraph` wraps an eval model (fused or not) and runs the same computation as
``model([image])[0]`` for one image, with every size kept symbolic: the resize, the padding to
``size_divisible``, the anchors, the RPN's top-k, the detection count (data-dependent: NMS) and
the pasted masks' size all follow the input's height and width. It reuses the model's modules
(backbone, RPN head, box and mask heads) and its free functions (``flatten_predictions``,
``RPN.select_proposals``, ``box_inference_op_chain``, ``mask_inference``); only the glue that the
eager model writes with Python ints (image sizes, the anchor cache, the FPN pooler's inferred
scales) is written here with symbolic sizes and scales fixed at construction. One layer runs in
another form with the same sums: the mask predictor's 2x2 stride-2 deconvolution, as a 1x1
convolution and a depth-to-space (:meth:`DeployGraph.mask_logits`), which AOTInductor prepacks.

The proposals and detections are selected by chains of single-output ops (per-level top-k,
decoding, the size and score tests, batched_nms), not by the fused native ops the eager model
calls (roiops.rpn_proposals, roiops.detections_from_box_head): those return lists of tensors with
data-dependent sizes, which torch 2.14's AOTInductor cannot compile. The chains give the fused
ops' results bit for bit (tests/maskzoo/modeling/test_postprocess_op_chains.py).

What is inside the graph: normalisation, resize, padding, backbone + FPN, RPN (head, anchors,
decoding, top-k, NMS), RoI pooling, box head, box decoding, per-class NMS, mask head, the
rescaling of boxes to the input image and mask pasting. Nothing stays in Python at run time.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

import roiops  # noqa: F401  (registers torch.ops.roiops, which the graph calls)
from maskzoo.modeling.box_head import box_inference_op_chain
from maskzoo.modeling.mask_head import mask_inference
from maskzoo.modeling.precision import to_box_precision
from maskzoo.modeling.roi_heads import SingleLevelPooler
from maskzoo.modeling.rpn import flatten_predictions

__all__ = ["DeployGraph", "OUTPUT_NAMES"]

OUTPUT_NAMES = ("boxes", "labels", "scores", "masks")


class _StaticPooler:
    """A maskzoo pooler with its map scales fixed (the eager FPN pooler infers them from the
    sizes on every call, which would turn symbolic sizes into constants)."""

    def __init__(self, pooler, scales: dict[str, float]):
        self.pooler = pooler
        if isinstance(pooler, SingleLevelPooler):
            self.names = [pooler.feature_name]
            self.scales = [float(pooler.spatial_scale)]
        else:
            self.names = list(pooler.featmap_names)
            self.scales = [scales[n] for n in self.names]

    def __call__(self, features: dict[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        dtype = features[self.names[0]].dtype
        maps = [to_box_precision(features[n]) for n in self.names]
        rois = torch.cat([boxes.new_zeros((boxes.shape[0], 1)), boxes], dim=1).to(maps[0].dtype)
        p = self.pooler
        if isinstance(p, SingleLevelPooler):
            out = torch.ops.roiops.roi_align(
                maps[0], rois, self.scales[0], p.output_size, p.output_size, p.sampling_ratio, p.aligned
            )
        else:
            out = torch.ops.roiops.multi_scale_roi_align(
                maps,
                rois,
                self.scales,
                p.output_size[0],
                p.output_size[1],
                p.sampling_ratio,
                p.aligned,
                float(p.canonical_scale),
                p.canonical_level,
            )
        return out.to(dtype)


def _deconv_as_conv(predictor: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weight Tensor[k * k * C', C, 1, 1], bias Tensor[k * k * C']) of the 1x1 convolution that,
    followed by :func:`_depth_to_space`, computes the predictor's ``deconv``: a transposed
    convolution whose k x k kernel equals its stride writes each output pixel from exactly one
    input pixel, out[c', k*i + a, k*j + b] = sum_c x[c, i, j] * W[c, c', a, b] + bias[c'], which is
    output channel (a * k + b) * C' + c' of the 1x1 convolution at (i, j). Sub-pixel-major channels
    make each output pixel's C' channels one contiguous run of the channels_last convolution output,
    so the depth-to-space copies whole runs. (None, None) for a predictor without such a
    deconvolution (it then runs as it is)."""
    deconv = getattr(predictor, "deconv", None)
    if not isinstance(deconv, nn.ConvTranspose2d):
        return None, None
    k = deconv.kernel_size[0]
    plain = (
        deconv.kernel_size == (k, k) == deconv.stride
        and deconv.padding == (0, 0)
        and deconv.output_padding == (0, 0)
        and deconv.dilation == (1, 1)
        and deconv.groups == 1
    )
    if not plain:
        return None, None
    w = deconv.weight.detach()  # [C, C', k, k]
    weight = w.permute(2, 3, 1, 0).reshape(k * k * w.shape[1], w.shape[0], 1, 1).contiguous()
    bias = None if deconv.bias is None else deconv.bias.detach().repeat(k * k)
    return weight, bias


def _depth_to_space(y: torch.Tensor, k: int) -> torch.Tensor:
    """Tensor[K, k * k * C', H, W] with sub-pixel-major channels (a, b, c') -> Tensor[K, C', k*H, k*W]."""
    n, c, h, w = y.shape
    c //= k * k
    return y.view(n, k, k, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * k, w * k)


class DeployGraph(nn.Module):
    """forward(image Tensor[3, H, W] float in [0, 1]) -> (boxes Tensor[D, 4] float32 (x1, y1, x2, y2)
    in input pixels, labels Tensor[D] int64, scores Tensor[D] float32 decreasing, masks
    Tensor[D, 1, H, W] float32 probabilities), as ``model([image])[0]`` returns them.

    Mask R-CNN models (FPN and C4); keypoint heads are not exported (ValueError).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if model.training:
            raise ValueError("model must be in eval mode (call model.eval())")
        heads = model.roi_heads
        if heads.has_keypoint:
            raise ValueError("keypoint models are not exported (only boxes, labels, scores, masks)")
        if not heads.has_mask:
            raise ValueError("the model has no mask head: only Mask R-CNN models are exported")
        self.model = model
        self.transform_config = model.transform.config
        scales = self._map_scales()
        self.box_pooler = _StaticPooler(heads.box_pooler, scales)
        self.mask_pooler = _StaticPooler(heads.mask_pooler, scales)
        weight, bias = _deconv_as_conv(heads.mask_predictor)
        self.register_buffer("mask_upsample_weight", weight, persistent=False)
        self.register_buffer("mask_upsample_bias", bias, persistent=False)

    @torch.no_grad()
    def _map_scales(self) -> dict[str, float]:
        """Map pixels per padded-image pixel of every backbone output, measured once on a blank
        image (powers of two, exact: the padded size is a multiple of every stride)."""
        d = self.transform_config.size_divisible
        side = 2 * d
        param = next(self.model.parameters())
        blank = torch.zeros((1, 3, side, side), dtype=param.dtype, device=param.device)
        features = self.model.backbone(blank)
        return {k: 2.0 ** round(math.log2(v.shape[-2] / side)) for k, v in features.items()}

    def preprocess(self, image: torch.Tensor):
        """Normalise, resize (shorter side min_size[-1], longer <= max_size), pad to
        size_divisible: (Tensor[1, 3, H', W'] channels_last, resized height, resized width)."""
        cfg = self.transform_config
        h, w = image.shape[-2], image.shape[-1]
        mean = torch.tensor(cfg.image_mean, dtype=image.dtype, device=image.device)
        std = torch.tensor(cfg.image_std, dtype=image.dtype, device=image.device)
        x = (image - mean[:, None, None]) / std[:, None, None]
        # The eager Transform's scale (interpolate's scale_factor with recompute_scale_factor=True is
        # interpolate to floor(size * scale)); sym_min / sym_max keep the choice in the graph.
        scale = torch.sym_min(
            float(cfg.min_size[-1]) / torch.sym_min(h, w), float(cfg.max_size) / torch.sym_max(h, w)
        )
        rh, rw = math.floor(h * scale), math.floor(w * scale)
        x = F.interpolate(x[None], size=(rh, rw), mode="bilinear", align_corners=False)
        d = cfg.size_divisible
        ph, pw = (rh + d - 1) // d * d, (rw + d - 1) // d * d
        x = F.pad(x, (0, pw - rw, 0, ph - rh))
        # NHWC, the layout of the exported model's backbone weights: the compiled convolutions
        # follow it (AOTInductor runs without its own layout optimisation, see package_program).
        return x.contiguous(memory_format=torch.channels_last), rh, rw

    def anchors(self, batch: torch.Tensor, levels: list[torch.Tensor]) -> torch.Tensor:
        gen = self.model.rpn.anchor_generator
        dtype = to_box_precision(levels[0][:0]).dtype
        ph, pw = batch.shape[-2], batch.shape[-1]
        return torch.cat(
            [
                gen.grid_anchors(
                    sizes, (f.shape[-2], f.shape[-1]), (ph // f.shape[-2], pw // f.shape[-1]), dtype, f.device
                )
                for sizes, f in zip(gen.sizes, levels)
            ]
        )

    def mask_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The mask predictor on the mask head's output Tensor[K, C, S, S]: its k x k stride-k
        deconvolution as a 1x1 convolution to k * k * C' channels and a depth-to-space (the same
        sums), then ReLU and its logits layer. AOTInductor prepacks and fuses convolutions over the
        data-dependent K, but not transposed ones, which it runs through the unpacked NCHW path."""
        predictor = self.model.roi_heads.mask_predictor
        if self.mask_upsample_weight is None:
            return predictor(x)
        k = predictor.deconv.stride[0]
        y = _depth_to_space(F.conv2d(x, self.mask_upsample_weight, self.mask_upsample_bias), k)
        return predictor.logits(torch.relu(y))

    def forward(self, image: torch.Tensor):
        model = self.model
        h, w = image.shape[-2], image.shape[-1]
        batch, rh, rw = self.preprocess(image)
        features = model.backbone(batch.to(next(model.parameters()).dtype))
        levels = list(features.values())

        rpn = model.rpn
        logits, deltas = rpn.head(levels)
        num_per_level = [lg.shape[1] * lg.shape[2] * lg.shape[3] for lg in logits]
        logits, deltas = flatten_predictions(logits, deltas)
        logits, deltas = to_box_precision(logits), to_box_precision(deltas)
        proposals = rpn.select_proposals(
            self.anchors(batch, levels), logits, deltas, [(rh, rw)], num_per_level, op_chain=True
        )

        heads = model.roi_heads
        x = heads.box_head(self.box_pooler(features, proposals[0]))
        class_logits, box_deltas = heads.box_predictor(x)
        class_logits, box_deltas = to_box_precision(class_logits), to_box_precision(box_deltas)
        ((boxes, scores, labels),) = box_inference_op_chain(
            heads.config.box, heads.box_coder, class_logits, box_deltas, proposals, [(rh, rw)]
        )
        x = self.mask_pooler(features, boxes)
        x = heads.box_head.features(x) if heads.mask_head is None else heads.mask_head(x)
        probs = mask_inference(to_box_precision(self.mask_logits(x)), [labels])[0]

        # Back to input pixels: float32 ratios, as the eager postprocess computes them.
        one = torch.ones((), dtype=torch.float32, device=boxes.device)
        ratio_h, ratio_w = (one * h) / (one * rh), (one * w) / (one * rw)
        boxes = boxes * torch.stack([ratio_w, ratio_h, ratio_w, ratio_h])
        masks = torch.ops.roiops.paste_masks(probs[:, 0], boxes, h, w, None)[:, None]
        return boxes, labels, scores, masks
