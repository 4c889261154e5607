"""A small stand-in detector and a training entry point for the engine tests (run in subprocesses).

The stand-in has the models' interface (train mode: images + targets -> dict of scalar losses) and
averages its losses over images, so one process with batch 2B computes the same gradient as two
processes with batch B each. ``--dropout`` makes its losses depend on the global random state (as
RoI sampling does), which exact resume must restore.

    python standin_train.py DATA_JSON IMAGE_DIR OUT [--iters N] [--batch B] [--resume] [--dropout P]
                            [--kill-at K]

``--kill-at K`` installs a training hook that SIGKILLs the process right after iteration K, as an
out-of-memory killer or a pre-empted machine would (the exact-resume test).
"""

import argparse
import os
import signal

import torch
import torch.nn.functional as F


class StandInDetector(torch.nn.Module):
    def __init__(self, num_classes: int = 4, dropout: float = 0.0, nan_at_call: int | None = None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.box = torch.nn.Linear(8, 4)
        self.cls = torch.nn.Linear(8, num_classes)
        self.dropout = dropout
        self.nan_at_call = nan_at_call
        self.calls = 0

    def forward(self, images, targets=None):
        self.calls += 1
        box_losses, cls_losses = [], []
        for image, target in zip(images, targets):
            feature = self.conv(image[None]).relu().mean((2, 3))
            feature = F.dropout(feature, self.dropout, self.training)
            size = image.shape[-1]
            box_losses.append(F.smooth_l1_loss(self.box(feature)[0], target["boxes"].mean(0) / size))
            logits = self.cls(feature).expand(len(target["labels"]), -1)
            cls_losses.append(F.cross_entropy(logits, target["labels"]))
        losses = {"loss_box": torch.stack(box_losses).mean(), "loss_cls": torch.stack(cls_losses).mean()}
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            losses["loss_box"] = losses["loss_box"] * float("nan")
        return losses


def _kill_after(kill_at: int):
    def hook(iteration: int) -> None:
        if iteration == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main(argv=None):
    from maskzoo.data.coco import CocoDataset
    from maskzoo.data.shapes import KEYPOINT_FLIP_PAIRS
    from maskzoo.data.transforms import default_train_transforms
    from maskzoo.engine import distributed
    from maskzoo.engine.train import TrainConfig, train

    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("images")
    p.add_argument("out")
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--period", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at", type=int, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    info = distributed.init_distributed("cpu")
    dataset = CocoDataset(args.data, args.images, transforms=default_train_transforms(KEYPOINT_FLIP_PAIRS))
    torch.manual_seed(0)
    model = StandInDetector(dataset.num_classes, dropout=args.dropout)
    cfg = TrainConfig(
        iters=args.iters,
        batch_size=args.batch,
        lr=0.05,
        warmup_iters=2,
        steps=(4,),
        checkpoint_period=args.period,
        seed=1,
    )
    hooks = [] if args.kill_at is None else [_kill_after(args.kill_at)]
    train(model, dataset, cfg, args.out, resume=args.resume, device=info.device, progress=False, hooks=hooks)
    distributed.cleanup()


if __name__ == "__main__":
    main()
