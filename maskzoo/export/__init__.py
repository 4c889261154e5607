"""Deployment: a maskzoo Mask R-CNN as an AOTInductor package or a standard ONNX file.

    import maskzoo, maskzoo.export
    model = maskzoo.build("r50_fpn", checkpoint="model.safetensors").eval()
    maskzoo.export.to_pt2(model, "r50.pt2")      # torch.export + AOTInductor, dynamic H, W
    maskzoo.export.to_onnx(model, "r50.onnx")    # opset 18, standard ops only (roiops.onnx)

Both graphs take one image Tensor[3, H, W] float32 in [0, 1] (any H, W in [min_side, max_side])
and return (boxes Tensor[D, 4] in input pixels, labels Tensor[D] int64, scores Tensor[D],
masks Tensor[D, 1, H, W] probabilities), D data-dependent (0 included): what
``model([image])[0]`` returns. The whole inference runs inside the graph
(:mod:`maskzoo.export.graph`). Load a package without maskzoo:

    import torch, roiops                              # roiops registers the ops the graph calls
    runner = torch._inductor.aoti_load_package("r50.pt2")
    boxes, labels, scores, masks = runner(image)

The model is copied, its frozen batch norms folded (``fuse_for_inference``) and its weights
stored channels_last, except the RoI heads' (NCHW), before export; the caller's model is not
changed.
"""

from __future__ import annotations

import copy
import os

import torch

from maskzoo.export.graph import OUTPUT_NAMES, DeployGraph
from maskzoo.modeling.fuse import fuse_for_inference, is_fused

__all__ = [
    "DeployGraph",
    "OUTPUT_NAMES",
    "export_program",
    "onnx_program",
    "package_program",
    "to_onnx",
    "to_pt2",
]

# Input sides the exported graphs accept (pixels). The resize inside maps any size onto the model's
# scale; the bounds only keep the backbone's feature maps non-empty and the shape analysis finite.
MIN_SIDE = 32
MAX_SIDE = 4096


def _prepared(model: torch.nn.Module) -> DeployGraph:
    if model.training:
        raise ValueError("model must be in eval mode (call model.eval())")
    model = copy.deepcopy(model)
    if not is_fused(model):
        fuse_for_inference(model, channels_last=False)
    # Convolutions over the image run channels_last (oneDNN's fastest CPU layout): with layout
    # optimisation off, Inductor keeps the strides eager propagates from NHWC weights and the NHWC
    # image the graph makes. The RoI heads' weights stay NCHW: their batch is data-dependent, and
    # torch 2.14's AOTInductor computes wrong channels_last convolutions over it on its unpacked
    # convolution path (the mask head's masks differ). The frozen package (package_program) runs them
    # as prepacked oneDNN convolutions instead, which follow their input's layout: NHWC, the pooler's.
    model.to(memory_format=torch.channels_last)
    model.roi_heads.to(memory_format=torch.contiguous_format)
    return DeployGraph(model).eval()


def _example(model: torch.nn.Module, example: torch.Tensor | None) -> torch.Tensor:
    if example is not None:
        return example
    param = next(model.parameters())
    return torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)).to(param.device)


def _dynamic_shapes():
    height = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
    width = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    return {"image": {1: height, 2: width}}


def export_program(
    model: torch.nn.Module, example: torch.Tensor | None = None
) -> torch.export.ExportedProgram:
    """torch.export of the model's inference graph (dynamic height and width, data-dependent
    detection count). example: an image Tensor[3, H, W] to trace with (any size; a random
    96 x 128 image by default)."""
    graph = _prepared(model)
    with torch.no_grad():
        return torch.export.export(
            graph, (_example(model, example),), dynamic_shapes=_dynamic_shapes(), strict=False
        )


def to_pt2(model: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor | None = None) -> str:
    """Exports and compiles the model with AOTInductor into the package ``path`` (.pt2); returns
    the path. Compilation takes minutes on a small CPU."""
    return package_program(export_program(model, example), path)


def package_program(program: torch.export.ExportedProgram, path: str | os.PathLike) -> str:
    """AOTInductor package ``path`` (.pt2) of an exported inference graph; returns the path."""
    # Inductor's layout optimisation (channels_last convolutions chosen by Inductor) is off: in
    # torch 2.14 AOTInductor computes wrong values for channels_last convolutions over a
    # data-dependent batch (the mask head's RoIs: outputs off by up to 4.8 against eager), while
    # torch.compile gets them right. The layouts come from the weights instead (_prepared).
    # Freezing folds the weights into the graph as constants, which lets Inductor prepack them for
    # oneDNN once (at compile time, not per call) and fuse each convolution with the ReLU / residual
    # add after it, and run the box head's linear layers as prepacked oneDNN matmuls. Inductor
    # freezes only a graph compiled without autograd, hence no_grad.
    with torch.no_grad():
        return torch._inductor.aoti_compile_and_package(
            program,
            package_path=os.fspath(path),
            inductor_configs={"layout_optimization": False, "freezing": True},
        )


def to_onnx(model: torch.nn.Module, path: str | os.PathLike, example: torch.Tensor | None = None) -> str:
    """Exports the model's inference graph to a standard ONNX file (opset ``roiops.onnx.OPSET``,
    no custom ops; weights inside the file) with dynamic height and width; returns the path.
    Needs the ``onnx`` and ``onnxscript`` packages."""
    return onnx_program(export_program(model, example), path)


def onnx_program(program: torch.export.ExportedProgram, path: str | os.PathLike) -> str:
    """Standard ONNX file ``path`` of an exported inference graph; returns the path."""
    import roiops.onnx

    roiops.onnx.export(program, (), path, input_names=["image"], output_names=list(OUTPUT_NAMES))
    return os.fspath(path)
