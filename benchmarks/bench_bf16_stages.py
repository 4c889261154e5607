"""Which stages of r50_fpn cost bf16 its agreement with float32: one stage (or a mix) at a time.

bench_deploy's model and measure (torchvision's maskrcnn_resnet50_fpn with random weights,
realistic frozen batch norms and peaked class scores, loaded into maskzoo and fused; of the float32
top 100, how many bf16 finds with box IoU > 0.9 and the same label), on 800 x 1216 ``torch.rand``
images with the seeds given. In each configuration only the named submodules run in bfloat16:
their input is cast to bfloat16 and their output back to float32, so every other layer computes
exactly what it computes in the float32 model. The two precision policies of
``fuse_for_inference`` are measured as they are built. Accuracy only: the casts at the stage
boundaries make the configurations' times meaningless (bench_deploy times the policies).

    python benchmarks/bench_bf16_stages.py [--seeds 0 1 2] [--only res4 fpn ...]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_deploy import matched  # noqa: E402
from bench_models import torchvision_model  # noqa: E402

MASK = ("roi_heads.mask_head", "roi_heads.mask_predictor.deconv")
CONFIGS = {
    "stem": ("backbone.body.stem",),
    "res2": ("backbone.body.res2",),
    "res3": ("backbone.body.res3",),
    "res4": ("backbone.body.res4",),
    "res5": ("backbone.body.res5",),
    "backbone trunk": ("backbone.body",),
    "fpn": ("backbone.fpn",),
    "rpn 3x3 conv": ("rpn.head.conv",),
    "box fc1": ("roi_heads.box_head.fc1",),
    "box fc2": ("roi_heads.box_head.fc2",),
    "mask head": MASK,
    "mask head + res2": MASK + ("backbone.body.res2",),
    "mask head + fc1 + res2": MASK + ("roi_heads.box_head.fc1", "backbone.body.res2"),
    "mask head + fc1 + fc2": MASK + ("roi_heads.box_head.fc1", "roi_heads.box_head.fc2"),
}


def _to_float32(out):
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, dict):
        return type(out)((k, _to_float32(v)) for k, v in out.items())
    return type(out)(_to_float32(v) for v in out)


class InBFloat16(nn.Module):
    """``module`` in bfloat16 between float32 neighbours: a tensor or list of tensors in, float32
    out (a tensor, list or dict of them, as the module returns)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.to(torch.bfloat16)

    def forward(self, x):
        x = [t.bfloat16() for t in x] if isinstance(x, list) else x.bfloat16()
        return _to_float32(self.module(x))


def in_bfloat16(fused: nn.Module, paths: tuple[str, ...]) -> nn.Module:
    """A copy of the fused float32 model with the submodules at ``paths`` in bfloat16."""
    model = copy.deepcopy(fused)
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        setattr(parent, name, InBFloat16(getattr(parent, name)))
    return model.to(memory_format=torch.channels_last)


def main() -> None:
    import maskzoo
    from maskzoo.modeling.fuse import fuse_for_inference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="these configurations only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tv = torchvision_model(box_score_thresh=0.0, box_detections_per_img=100).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "maskrcnn_resnet50_fpn.pth")
        torch.save(tv.state_dict(), path)
        plain = maskzoo.build("r50_fpn", checkpoint=path, box_score_thresh=0.0, box_detections_per_img=100)
    fused = fuse_for_inference(copy.deepcopy(plain.eval()))
    models = {
        f"policy {policy!r}": lambda p=policy: fuse_for_inference(
            copy.deepcopy(plain), dtype=torch.bfloat16, policy=p
        )
        for policy in ("network", "heads")
    }
    for name in args.only or CONFIGS:
        models[name] = lambda paths=CONFIGS[name]: in_bfloat16(fused, paths)
    images = [torch.rand(3, 800, 1216, generator=torch.Generator().manual_seed(s)) for s in args.seeds]
    print(f"of the float32 top 100, found in bf16 (box IoU > 0.9, same label); image seeds {args.seeds}:")
    with torch.inference_mode():
        references = [fused([image])[0] for image in images]
        for name, make in models.items():
            model = make()
            counts = [matched(ref, model([image])[0]) for ref, image in zip(references, images)]
            print(f"{name:26s} {' '.join(f'{c:4d}' for c in counts)}   mean {sum(counts) / len(counts):5.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
