"""Evaluation with a deterministic stand-in predictor, for the sharded-evaluation test.

python standin_eval.py DATA_JSON IMAGE_DIR OUT     (also under torchrun)
"""

import argparse

import torch


class CentrePredictor(torch.nn.Module):
    """Looks each image up in ``dataset`` and returns its ground truth, shifted by 2 px, plus one
    made-up box: a deterministic predictor with an AP between 0 and 1."""

    def __init__(self, dataset):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.truth = {}
        for i in range(len(dataset)):
            image, target = dataset[i]
            self.truth[image.numpy().tobytes()] = target

    def forward(self, images):
        out = []
        for image in images:
            t = self.truth[image.numpy().tobytes()]
            h, w = image.shape[-2:]
            n = len(t["labels"])
            boxes = torch.cat([t["boxes"] + 2.0, torch.tensor([[5.0, 5.0, 25.0, 25.0]])]).clamp(0, w)
            masks = torch.cat([t["masks"].roll(2, dims=-1), torch.zeros(1, h, w, dtype=torch.uint8)])
            masks[-1, 5:25, 5:25] = 1
            out.append(
                {
                    "boxes": boxes,
                    "labels": torch.cat([t["labels"], torch.tensor([1])]),
                    "scores": torch.linspace(0.9, 0.3, n + 1),
                    "masks": masks[:, None].float(),
                }
            )
        return out


def main(argv=None):
    import json

    from maskzoo.data.coco import CocoDataset
    from maskzoo.engine import distributed
    from maskzoo.engine.evaluate import evaluate

    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("images")
    p.add_argument("out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    distributed.init_distributed("cpu")
    dataset = CocoDataset(args.data, args.images, train=False)
    metrics = evaluate(CentrePredictor(dataset), dataset, device="cpu", out_dir=args.out, progress=False)
    if distributed.is_main_process():
        with open(f"{args.out}/world_size.json", "w") as f:
            json.dump(distributed.get_world_size(), f)
    else:
        assert metrics is None
    distributed.cleanup()


if __name__ == "__main__":
    main()
