"""Autograd formulas of the differentiable roiops ops (torch.library.register_autograd).

Every op a backward calls is itself a registered op with a fake kernel, so gradients trace under
torch.compile and torch.export too.
"""

import torch

# ---- RoI pooling ------------------------------------------------------------------------------
# roi_align is linear in its input, so its backward (roi_align_backward) is linear in the incoming
# gradient and is itself the adjoint of roi_align: the double backward is roi_align again. The box
# gradient (roi_align_backward_rois) has its own native second-order op; third order is refused.


def _channels_last(t) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _roi_align_setup(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.params = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    ctx.input_shape = tuple(input.shape)
    ctx.channels_last = _channels_last(input)
    # The input is kept only when the box gradient will need it.
    ctx.save_for_backward(rois, input if rois.requires_grad else None)


def _roi_align_grad(ctx, grad):
    rois, input = ctx.saved_tensors
    spatial_scale, ph, pw, sampling_ratio, aligned = ctx.params
    n, c, h, w = ctx.input_shape
    grad_input = grad_rois = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.roiops.roi_align_backward(
            grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned, ctx.channels_last
        )
    if ctx.needs_input_grad[1]:
        grad_rois = torch.ops.roiops.roi_align_backward_rois(
            grad, input, rois, spatial_scale, ph, pw, sampling_ratio, aligned
        )
    return grad_input, grad_rois, None, None, None, None, None


torch.library.register_autograd("roiops::roi_align", _roi_align_grad, setup_context=_roi_align_setup)


def _roi_align_backward_setup(ctx, inputs, output):
    grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned, channels_last = inputs
    ctx.params = (spatial_scale, ph, pw, sampling_ratio, aligned)
    ctx.save_for_backward(grad if rois.requires_grad else None, rois)


def _roi_align_backward_grad(ctx, grad_grad_input):
    grad, rois = ctx.saved_tensors
    spatial_scale, ph, pw, sampling_ratio, aligned = ctx.params
    d_grad = d_rois = None
    if ctx.needs_input_grad[0]:
        d_grad = torch.ops.roiops.roi_align(
            grad_grad_input, rois, spatial_scale, ph, pw, sampling_ratio, aligned
        )
    if ctx.needs_input_grad[1]:
        # d/d(rois) of <grad_grad_input, backward(grad, rois)> = d/d(rois) <roi_align(grad_grad_input), grad>.
        d_rois = torch.ops.roiops.roi_align_backward_rois(
            grad, grad_grad_input, rois, spatial_scale, ph, pw, sampling_ratio, aligned
        )
    return (d_grad, d_rois) + (None,) * 10


torch.library.register_autograd(
    "roiops::roi_align_backward", _roi_align_backward_grad, setup_context=_roi_align_backward_setup
)


# The box gradient's own derivatives: one op (roi_align_backward_rois_backward) serves both the
# single-map and the pyramid form; a single map is a pyramid of one level.


def _backward_rois_setup(ctx, features, rois, params, grad):
    ctx.params = params
    ctx.save_for_backward(grad, rois, *features)


def _backward_rois_grad(ctx, grad_grad_rois, features_grad: bool):
    grad, rois, *features = ctx.saved_tensors
    scales, ph, pw, sampling_ratio, aligned, canonical_scale, canonical_level = ctx.params
    d_grad, d_features, d_rois = torch.ops.roiops.roi_align_backward_rois_backward(
        grad, features, rois, grad_grad_rois, scales, ph, pw, sampling_ratio, aligned, canonical_scale,
        canonical_level, features_grad,
    )
    return d_grad, (list(d_features) if features_grad else [None] * len(features)), d_rois


def _roi_align_backward_rois_setup(ctx, inputs, output):
    grad, input, rois, spatial_scale, ph, pw, sampling_ratio, aligned = inputs
    # canonical_* do not matter for one map (every RoI is on it).
    params = ([spatial_scale], ph, pw, sampling_ratio, aligned, 224.0, 4)
    _backward_rois_setup(ctx, [input], rois, params, grad)


def _roi_align_backward_rois_grad(ctx, grad_grad_rois):
    d_grad, d_features, d_rois = _backward_rois_grad(ctx, grad_grad_rois, ctx.needs_input_grad[1])
    return (d_grad, d_features[0], d_rois) + (None,) * 5


torch.library.register_autograd(
    "roiops::roi_align_backward_rois",
    _roi_align_backward_rois_grad,
    setup_context=_roi_align_backward_rois_setup,
)


def _multi_scale_backward_rois_setup(ctx, inputs, output):
    grad, features, rois, scales, ph, pw, sampling_ratio, aligned, canonical_scale, canonical_level = inputs
    _backward_rois_setup(
        ctx, features, rois, (scales, ph, pw, sampling_ratio, aligned, canonical_scale, canonical_level), grad
    )


def _multi_scale_backward_rois_grad(ctx, grad_grad_rois):
    # needs_input_grad holds one flag per map for the Tensor[] argument.
    d_grad, d_features, d_rois = _backward_rois_grad(ctx, grad_grad_rois, any(ctx.needs_input_grad[1]))
    return (d_grad, d_features, d_rois) + (None,) * 7


torch.library.register_autograd(
    "roiops::multi_scale_roi_align_backward_rois",
    _multi_scale_backward_rois_grad,
    setup_context=_multi_scale_backward_rois_setup,
)


def _third_order_setup(ctx, inputs, output):
    pass


def _third_order(ctx, *grads):
    raise NotImplementedError(
        "roiops: derivatives of RoIAlign's box gradient are second order only; a third derivative with "
        "respect to the box coordinates is not implemented"
    )


torch.library.register_autograd(
    "roiops::roi_align_backward_rois_backward", _third_order, setup_context=_third_order_setup
)


def _roi_pool_setup(ctx, inputs, output):
    input, rois, spatial_scale, ph, pw = inputs
    ctx.input_shape = tuple(input.shape)
    ctx.channels_last = _channels_last(input)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(rois, output[1])


def _roi_pool_grad(ctx, grad, _grad_argmax):
    rois, argmax = ctx.saved_tensors
    n, c, h, w = ctx.input_shape
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.roiops.roi_pool_backward(grad, rois, argmax, n, c, h, w, ctx.channels_last)
    # RoIPool's output does not move with the (rounded) box coordinates: no box gradient.
    return grad_input, None, None, None, None


torch.library.register_autograd("roiops::roi_pool", _roi_pool_grad, setup_context=_roi_pool_setup)


def _roi_pool_backward_setup(ctx, inputs, output):
    grad, rois, argmax, n, c, h, w, channels_last = inputs
    ctx.save_for_backward(rois, argmax)


def _roi_pool_backward_grad(ctx, grad_grad_input):
    # roi_pool_backward scatters grad to the argmax pixels; its adjoint gathers from them.
    rois, argmax = ctx.saved_tensors
    n, c, h, w = grad_grad_input.shape
    batch = rois[:, 0].to(torch.int64).view(-1, 1, 1, 1)
    channel = torch.arange(c, device=argmax.device).view(1, -1, 1, 1)
    flat = (batch * c + channel) * (h * w) + argmax.clamp(min=0)
    gathered = torch.take(grad_grad_input.contiguous(), flat)
    d_grad = torch.where(argmax >= 0, gathered, torch.zeros_like(gathered))
    return (d_grad,) + (None,) * 7


torch.library.register_autograd(
    "roiops::roi_pool_backward", _roi_pool_backward_grad, setup_context=_roi_pool_backward_setup
)


# ---- position-sensitive RoI pooling ------------------------------------------------------------
# ps_roi_align and ps_roi_pool are linear in the input, so each backward op is the adjoint of its
# forward, and the backward of the backward (with respect to grad) is the forward again. Neither
# gives a box gradient (torchvision's neither): ps_roi_pool's bins are rounded; for ps_roi_align it
# is left out.


def _ps_roi_setup(ctx, inputs, output):
    input, rois, *params = inputs
    ctx.params = tuple(params)
    ctx.input_shape = tuple(input.shape)
    ctx.channels_last = _channels_last(input)
    ctx.save_for_backward(rois)


def _ps_roi_align_grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, sampling_ratio = ctx.params
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.roiops.ps_roi_align_backward(
            grad, rois, spatial_scale, ph, pw, sampling_ratio, *ctx.input_shape, ctx.channels_last
        )
    return grad_input, None, None, None, None, None


def _ps_roi_pool_grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw = ctx.params
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.roiops.ps_roi_pool_backward(
            grad, rois, spatial_scale, ph, pw, *ctx.input_shape, ctx.channels_last
        )
    return grad_input, None, None, None, None


torch.library.register_autograd("roiops::ps_roi_align", _ps_roi_align_grad, setup_context=_ps_roi_setup)
torch.library.register_autograd("roiops::ps_roi_pool", _ps_roi_pool_grad, setup_context=_ps_roi_setup)


def _ps_roi_backward_setup(ctx, inputs, output):
    grad, rois, *params = inputs
    ctx.params = tuple(params)
    ctx.save_for_backward(rois)


def _ps_roi_align_backward_grad(ctx, grad_grad_input):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, sampling_ratio = ctx.params[:4]
    d_grad = None
    if ctx.needs_input_grad[0]:
        d_grad = torch.ops.roiops.ps_roi_align(grad_grad_input, rois, spatial_scale, ph, pw, sampling_ratio)
    return (d_grad,) + (None,) * 10


def _ps_roi_pool_backward_grad(ctx, grad_grad_input):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw = ctx.params[:3]
    d_grad = None
    if ctx.needs_input_grad[0]:
        d_grad = torch.ops.roiops.ps_roi_pool(grad_grad_input, rois, spatial_scale, ph, pw)
    return (d_grad,) + (None,) * 9


torch.library.register_autograd(
    "roiops::ps_roi_align_backward", _ps_roi_align_backward_grad, setup_context=_ps_roi_backward_setup
)
torch.library.register_autograd(
    "roiops::ps_roi_pool_backward", _ps_roi_pool_backward_grad, setup_context=_ps_roi_backward_setup
)


def _multi_scale_setup(ctx, inputs, output):
    features, rois, scales, ph, pw, sampling_ratio, aligned, canonical_scale, canonical_level = inputs
    ctx.params = (scales, ph, pw, sampling_ratio, aligned, canonical_scale, canonical_level)
    ctx.shapes = (features[0].shape[0], features[0].shape[1], [f.shape[2] for f in features],
                  [f.shape[3] for f in features])
    ctx.channels_last = _channels_last(features[0])
    ctx.num_features = len(features)
    ctx.save_for_backward(rois, *(features if rois.requires_grad else ()))


def _multi_scale_grad(ctx, grad):
    rois, *features = ctx.saved_tensors
    scales, ph, pw, sampling_ratio, aligned, canonical_scale, canonical_level = ctx.params
    n, c, heights, widths = ctx.shapes
    grad_features = [None] * ctx.num_features  # the Tensor[] input wants one entry per map
    grad_rois = None
    if any(ctx.needs_input_grad[0]):  # one flag per map
        grad_features = torch.ops.roiops.multi_scale_roi_align_backward(
            grad, rois, scales, ph, pw, n, c, heights, widths, sampling_ratio, aligned, canonical_scale,
            canonical_level, ctx.channels_last,
        )
    if ctx.needs_input_grad[1]:
        grad_rois = torch.ops.roiops.multi_scale_roi_align_backward_rois(
            grad, features, rois, scales, ph, pw, sampling_ratio, aligned, canonical_scale, canonical_level
        )
    return grad_features, grad_rois, None, None, None, None, None, None, None


torch.library.register_autograd(
    "roiops::multi_scale_roi_align", _multi_scale_grad, setup_context=_multi_scale_setup
)


def _multi_scale_backward_setup(ctx, inputs, output):
    grad, rois, scales, ph, pw, n, c, heights, widths, sampling_ratio, aligned, cs, cl, channels_last = inputs
    ctx.params = (scales, ph, pw, sampling_ratio, aligned, cs, cl)
    ctx.save_for_backward(grad if rois.requires_grad else None, rois)


def _multi_scale_backward_grad(ctx, grad_grad_features):
    grad, rois = ctx.saved_tensors
    scales, ph, pw, sampling_ratio, aligned, cs, cl = ctx.params
    d_grad = d_rois = None
    if ctx.needs_input_grad[0]:
        d_grad = torch.ops.roiops.multi_scale_roi_align(
            list(grad_grad_features), rois, scales, ph, pw, sampling_ratio, aligned, cs, cl
        )
    if ctx.needs_input_grad[1]:
        d_rois = torch.ops.roiops.multi_scale_roi_align_backward_rois(
            grad, list(grad_grad_features), rois, scales, ph, pw, sampling_ratio, aligned, cs, cl
        )
    return (d_grad, d_rois) + (None,) * 12


torch.library.register_autograd(
    "roiops::multi_scale_roi_align_backward",
    _multi_scale_backward_grad,
    setup_context=_multi_scale_backward_setup,
)


# ---- box coding -------------------------------------------------------------------------------
# The backward formulas are element-wise PyTorch ops on the saved inputs (the codes are cheap to
# recompute), so they are differentiable again and trace like any PyTorch code. For a box with
# corners (lo, hi) along an axis, size = hi - lo and centre = (lo + hi) / 2, so
# d/d lo = d/d centre / 2 - d/d size and d/d hi = d/d centre / 2 + d/d size.


def _corner_grads(grad_centre, grad_size):
    return torch.cat((0.5 * grad_centre - grad_size, 0.5 * grad_centre + grad_size), dim=-1)


def _box_encode_setup(ctx, inputs, output):
    reference_boxes, proposals, weights = inputs
    ctx.weights = weights
    ctx.save_for_backward(reference_boxes, proposals)


def _box_encode_grad(ctx, grad):
    gt, p = ctx.saved_tensors
    w = grad.new_tensor(ctx.weights)
    p_size, g_size = p[:, 2:] - p[:, :2], gt[:, 2:] - gt[:, :2]
    p_ctr, g_ctr = p[:, :2] + 0.5 * p_size, gt[:, :2] + 0.5 * g_size
    grad_xy, grad_wh = grad[:, :2], grad[:, 2:]
    # (dx, dy) = w_xy (g_ctr - p_ctr) / p_size;  (dw, dh) = w_wh (log g_size - log p_size).
    d_ctr = grad_xy * w[:2] / p_size  # d/d g_ctr = -d/d p_ctr
    d_g_size = grad_wh * w[2:] / g_size
    d_p_size = -(d_ctr * (g_ctr - p_ctr) + grad_wh * w[2:]) / p_size
    grad_gt = _corner_grads(d_ctr, d_g_size) if ctx.needs_input_grad[0] else None
    grad_p = _corner_grads(-d_ctr, d_p_size) if ctx.needs_input_grad[1] else None
    return grad_gt, grad_p, None


torch.library.register_autograd("roiops::box_encode", _box_encode_grad, setup_context=_box_encode_setup)


def _box_decode_setup(ctx, inputs, output):
    rel_codes, boxes, weights, bbox_xform_clip, image_size = inputs
    ctx.params = (weights, bbox_xform_clip, image_size)
    ctx.save_for_backward(rel_codes, boxes)


def _box_decode_grad(ctx, grad):
    codes, boxes = ctx.saved_tensors
    weights, clip, image_size = ctx.params
    n, per_box = codes.shape
    w = codes.new_tensor(weights)
    size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]  # [N, 1, 2]
    centre = boxes[:, :2][:, None, :] + 0.5 * size
    c = codes.reshape(n, per_box // 4, 2, 2)  # [N, C, (xy | wh), 2]
    d_xy = c[:, :, 0] / w[:2]
    t = c[:, :, 1] / w[2:]
    scale = t.clamp(max=clip).exp()
    half = 0.5 * scale * size
    g = grad.reshape(n, per_box // 4, 2, 2)
    grad_lo, grad_hi = g[:, :, 0], g[:, :, 1]
    if image_size is not None:
        # clamp passes the gradient where the coordinate is inside [0, limit], bounds included.
        limit = codes.new_tensor([float(image_size[1]), float(image_size[0])])  # (width, height)
        pred_ctr = d_xy * size + centre
        lo, hi = pred_ctr - half, pred_ctr + half
        grad_lo = torch.where((lo >= 0) & (lo <= limit), grad_lo, 0.0)
        grad_hi = torch.where((hi >= 0) & (hi <= limit), grad_hi, 0.0)
    grad_ctr = grad_lo + grad_hi  # [N, C, 2]
    grad_half = grad_hi - grad_lo
    grad_codes = grad_boxes = None
    if ctx.needs_input_grad[0]:
        # The clamp at bbox_xform_clip passes the gradient where t <= clip.
        grad_t = torch.where(t <= clip, grad_half * half, 0.0) / w[2:]
        grad_codes = torch.stack((grad_ctr * size / w[:2], grad_t), dim=2).reshape(n, per_box)
    if ctx.needs_input_grad[1]:
        grad_size = (grad_ctr * d_xy + grad_half * 0.5 * scale).sum(1)  # [N, 2]
        grad_boxes = _corner_grads(grad_ctr.sum(1), grad_size)
    return grad_codes, grad_boxes, None, None, None


torch.library.register_autograd("roiops::box_decode", _box_decode_grad, setup_context=_box_decode_setup)


# ---- RoIAlignRotated ----------------------------------------------------------------------------
# Linear in the input, as roi_align: the backward is its adjoint and the double backward is
# roi_align_rotated again. No gradient with respect to the rois.


def _roi_align_rotated_setup(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.params = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    ctx.input_shape = tuple(input.shape)
    ctx.channels_last = _channels_last(input)
    ctx.save_for_backward(rois)


def _roi_align_rotated_grad(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, sampling_ratio, aligned = ctx.params
    n, c, h, w = ctx.input_shape
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = torch.ops.roiops.roi_align_rotated_backward(
            grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned, ctx.channels_last
        )
    return grad_input, None, None, None, None, None, None


torch.library.register_autograd(
    "roiops::roi_align_rotated", _roi_align_rotated_grad, setup_context=_roi_align_rotated_setup
)


def _roi_align_rotated_backward_setup(ctx, inputs, output):
    grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned, channels_last = inputs
    ctx.params = (spatial_scale, ph, pw, sampling_ratio, aligned)
    ctx.save_for_backward(rois)


def _roi_align_rotated_backward_grad(ctx, grad_grad_input):
    (rois,) = ctx.saved_tensors
    spatial_scale, ph, pw, sampling_ratio, aligned = ctx.params
    d_grad = None
    if ctx.needs_input_grad[0]:
        d_grad = torch.ops.roiops.roi_align_rotated(
            grad_grad_input, rois, spatial_scale, ph, pw, sampling_ratio, aligned
        )
    return (d_grad,) + (None,) * 11


torch.library.register_autograd(
    "roiops::roi_align_rotated_backward", _roi_align_rotated_backward_grad,
    setup_context=_roi_align_rotated_backward_setup,
)
