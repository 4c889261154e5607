"""The training loop: SGD with warm-up and step decay, checkpoints that resume exactly, DDP.

Schedule (He et al. 2017, following Detectron): SGD with momentum 0.9 and weight decay 1e-4; the
learning rate rises linearly from ``lr * warmup_factor`` to ``lr`` over ``warmup_iters`` iterations,
then is multiplied by ``gamma`` at each iteration in ``steps``.

Files written to ``out_dir`` (by rank 0 only):

- ``metrics.jsonl``: one JSON object per iteration: ``iteration`` (1-based count of finished
  iterations), ``loss`` (sum of the terms, mean over processes), every loss term, ``lr``,
  ``time`` (seconds of that iteration);
- ``loss_curve.png``: the total loss and each term against the iteration (drawn with Pillow);
- ``checkpoints/checkpoint_NNNNNNN.pt``: everything needed to continue -- model, optimizer,
  scheduler, AMP scaler, iteration and the random states of every process -- every
  ``checkpoint_period`` iterations and at the end; ``checkpoints/last_checkpoint`` names the newest.
  The format is :mod:`maskzoo.checkpoint.training`'s.
- ``model_final.safetensors``: the trained model through :func:`maskzoo.checkpoint.save` (when the model
  was built by name), for ``maskzoo eval``/``predict``.

Exact resume: the batch of iteration ``t`` depends only on (seed, t) (see
:class:`~maskzoo.engine.distributed.IterationSampler`), augmentation draws from a generator seeded per
sample, and the global random states (used by the model's proposal/RoI sampling) are restored from the
checkpoint. A run killed after iteration k and resumed therefore computes on the CPU the same losses
for iterations k+1, k+2, ... as a run that was never interrupted.

Every file is written atomically (:func:`maskzoo.files.write_atomic`), except ``metrics.jsonl``,
which grows a line per iteration and is cut back to the resumed checkpoint's iteration on resume.

``train(..., hooks=[f])`` calls ``f(iteration)`` after each iteration, once its metrics and any
checkpoint are written: a place to stop a run or watch it without changing the loop.

A non-finite loss stops training with ``FloatingPointError`` naming the iteration, before the
optimizer step, so the last checkpoint on disk stays the last good one.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from maskzoo.checkpoint.io import save
from maskzoo.checkpoint.training import (
    latest_checkpoint,
    load_training_checkpoint,
    model_spec_of,
    rng_state,
    set_rng_state,
    write_training_state,
)
from maskzoo.engine import distributed as distributed_utils
from maskzoo.files import write_atomic

__all__ = ["TrainConfig", "train", "lr_factor", "draw_loss_curve"]

# Called with the number of finished iterations after each iteration (see the module docstring).
TrainHook = Callable[[int], object]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a training run (per process where it says so)."""

    iters: int = 90_000  # optimizer steps in total
    batch_size: int = 2  # images per process per iteration (total batch = batch_size * processes)
    lr: float = 0.02  # base learning rate (for a total batch of 16 in the paper)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 1000  # linear warm-up length
    warmup_factor: float = 0.001  # learning rate at iteration 0, relative to lr
    steps: tuple[int, ...] = (60_000, 80_000)  # iterations where the learning rate is multiplied by gamma
    gamma: float = 0.1
    clip_grad_norm: float | None = None  # max L2 norm of all gradients together; None: no clipping
    amp: bool = False  # float16 autocast + gradient scaling (CUDA only; ignored on the CPU)
    checkpoint_period: int = 5000  # iterations between checkpoints (one is always written at the end)
    seed: int = 0  # data order, augmentation, and the global random states
    num_workers: int = 0  # data-loading processes per training process
    find_unused_parameters: bool = False  # DDP option for models with branches some batches skip
    # Store 4-D weights NHWC: oneDNN's CPU and cuDNN's tensor-core convolutions run fastest on it
    # (values unchanged; about 1.5x faster r50_fpn training steps on the CPU, benchmarks/bench_models.py).
    channels_last: bool = True

    def __post_init__(self):
        if self.iters <= 0:
            raise ValueError(f"iters must be positive, got {self.iters}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.checkpoint_period <= 0:
            raise ValueError(f"checkpoint_period must be positive, got {self.checkpoint_period}")
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"steps must be increasing, got {self.steps}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive or None, got {self.clip_grad_norm}")


def lr_factor(iteration: int, cfg: TrainConfig) -> float:
    """Learning rate of (0-based) ``iteration`` relative to ``cfg.lr``: warm-up times step decay."""
    warm = 1.0
    if iteration < cfg.warmup_iters:
        alpha = iteration / cfg.warmup_iters
        warm = cfg.warmup_factor * (1 - alpha) + alpha
    decays = sum(1 for s in cfg.steps if iteration >= s)
    return warm * cfg.gamma**decays


# ----------------------------------------------------------------------------------------------------
# Logging


def draw_loss_curve(records: list[dict], path: str | os.PathLike, size=(800, 480)) -> None:
    """Draw ``loss`` and each ``loss_*`` term of ``records`` against ``iteration`` as a PNG (log y axis).

    ``records``: the dicts of ``metrics.jsonl``; ``size``: (width, height) in pixels.
    """
    # Pillow is an optional dependency (the maskzoo extra): imported when a curve is drawn.
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 150, 20, height - 40
    keys = ["loss"] + sorted({k for r in records for k in r if k.startswith("loss_")})
    colours = [
        (0, 0, 0),
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
    ]
    points = [r for r in records if math.isfinite(r.get("loss", float("nan")))]
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    if len(points) >= 2:
        values = [r[k] for r in points for k in keys if k in r and r[k] > 0 and math.isfinite(r[k])]
        lo, hi = math.log10(min(values)), math.log10(max(values))
        hi = hi if hi > lo else lo + 1
        it0, it1 = points[0]["iteration"], points[-1]["iteration"]
        it1 = it1 if it1 > it0 else it0 + 1

        def xy(it, v):
            x = left + (right - left) * (it - it0) / (it1 - it0)
            y = bottom - (bottom - top) * (math.log10(v) - lo) / (hi - lo)
            return x, y

        # A running mean over ~1% of the run, so the curve is readable with batch noise.
        window = max(1, len(points) // 100)
        for k, colour in zip(keys, colours * 3):
            series = [(r["iteration"], r[k]) for r in points if k in r and r[k] > 0]
            if len(series) < 2:
                continue
            smooth = []
            for i in range(len(series)):
                chunk = series[max(0, i - window + 1) : i + 1]
                smooth.append((series[i][0], sum(v for _, v in chunk) / len(chunk)))
            draw.line([xy(it, v) for it, v in smooth], fill=colour, width=2 if k == "loss" else 1)
            legend_y = top + 16 * keys.index(k)
            draw.line([right + 10, legend_y + 6, right + 30, legend_y + 6], fill=colour, width=2)
            draw.text((right + 35, legend_y), k, fill=colour)
        for frac in (0.0, 0.5, 1.0):
            v = 10 ** (lo + frac * (hi - lo))
            y = bottom - (bottom - top) * frac
            draw.text((5, y - 6), f"{v:.3g}", fill=(0, 0, 0))
        draw.text((left, bottom + 5), str(it0), fill=(0, 0, 0))
        draw.text((right - 40, bottom + 5), str(it1), fill=(0, 0, 0))
    draw.text(((left + right) // 2 - 30, bottom + 20), "iteration", fill=(0, 0, 0))
    write_atomic(path, lambda f: image.save(f, format="PNG"))


def _read_metrics(path: Path, upto: int) -> list[dict]:
    """Records of ``path`` with iteration <= ``upto`` (a killed run may have logged past its checkpoint)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut short when the process was killed
        if record.get("iteration", 0) <= upto:
            out.append(record)
    return out


# ----------------------------------------------------------------------------------------------------
# Data


class _SeededItems(torch.utils.data.Dataset):
    """``items[(index, seed)]`` = ``dataset.get(index, Generator(seed))``: augmentation fixed by the seed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        if hasattr(self.dataset, "get"):
            return self.dataset.get(index, torch.Generator().manual_seed(seed))
        return self.dataset[index]


class _Batches(torch.utils.data.Sampler):
    def __init__(self, sampler: distributed_utils.IterationSampler, start: int, stop: int):
        self.sampler, self.start, self.stop = sampler, start, stop

    def __iter__(self):
        for it in range(self.start, self.stop):
            yield self.sampler.batch(it)

    def __len__(self):
        return self.stop - self.start


def _collate(batch):
    return tuple(zip(*batch))


def _to_device(target: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in target.items()}


# ----------------------------------------------------------------------------------------------------
# The steps of a run


@dataclass(frozen=True)
class _Process:
    """Where this process trains and what it writes."""

    out_dir: Path
    device: torch.device
    rank: int
    world: int  # number of training processes
    model_spec: dict  # stored in every checkpoint (see maskzoo.checkpoint.training)

    @property
    def main(self) -> bool:  # rank 0 writes the files
        return self.rank == 0


@dataclass
class _Optimisation:
    """What one optimiser step needs: the trained parameters, SGD, its schedule, AMP."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    autocast: object  # a context manager: float16 autocast with AMP, else a no-op


def _seed_process(cfg: TrainConfig, rank: int) -> None:
    # Different processes draw different RoI samples, as independent machines would.
    torch.manual_seed(cfg.seed + 7919 * rank)
    random.seed(cfg.seed + 7919 * rank)
    np.random.seed((cfg.seed + 7919 * rank) % 2**32)


def _place_model(model, device: torch.device, cfg: TrainConfig) -> None:
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()


def _optimiser_and_schedule(model, cfg: TrainConfig, device: torch.device) -> _Optimisation:
    """SGD over the trainable parameters, warm-up + step decay (:func:`lr_factor`), AMP on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, cfg))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    autocast = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
    return _Optimisation(params, optimizer, scheduler, scaler, autocast)


def _resume(proc: _Process, model, opt: _Optimisation) -> tuple[int, Path | None]:
    """Restores the newest checkpoint under ``out_dir`` (model, optimiser, schedule, scaler and this
    process's random state); returns (finished iterations, its path), or (0, None) without one."""
    path = latest_checkpoint(proc.out_dir)
    if path is None:
        return 0, None
    state = load_training_checkpoint(path)
    model.load_state_dict(state["model"])
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    opt.scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    if len(rng) != proc.world:
        raise ValueError(
            f"{path} was written by {len(rng)} processes; resuming it exactly "
            f"needs the same number, got {proc.world}"
        )
    set_rng_state(rng[proc.rank])
    return int(state["iteration"]), path


def _parallel(proc: _Process, model, cfg: TrainConfig):
    """``model`` itself on one process, wrapped in DistributedDataParallel on several."""
    if proc.world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model,
        device_ids=[proc.device.index] if proc.device.type == "cuda" else None,
        find_unused_parameters=cfg.find_unused_parameters,
    )


def _loader(proc: _Process, dataset, cfg: TrainConfig, start: int):
    """Batches of iterations ``start .. cfg.iters - 1``, this process's slice of each."""
    sampler = distributed_utils.IterationSampler(
        len(dataset), cfg.batch_size, cfg.seed, proc.rank, proc.world
    )
    return torch.utils.data.DataLoader(
        _SeededItems(dataset),
        batch_sampler=_Batches(sampler, start, cfg.iters),
        collate_fn=_collate,
        num_workers=cfg.num_workers,
        pin_memory=proc.device.type == "cuda",
        # Its own generator: a DataLoader otherwise draws its worker seed from the global stream,
        # which would shift the model's random draws between a fresh and a resumed run.
        generator=torch.Generator().manual_seed(cfg.seed),
    )


class _Log:
    """``metrics.jsonl``, the records behind the loss curve, and the progress bar (rank 0 only)."""

    def __init__(self, proc: _Process, start: int, total: int, progress: bool):
        self.main = proc.main
        self.path = proc.out_dir / "metrics.jsonl"
        self.records = _read_metrics(self.path, start) if self.main else []
        self.file = None
        self.bar = None
        if not self.main:
            return
        # A killed run may have logged iterations past its last checkpoint: cut them off.
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        self.file = open(self.path, "a", encoding="utf-8")
        if progress:
            # tqdm is an optional dependency (the maskzoo extra): imported only for a progress bar.
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True)

    def add(self, record: dict) -> None:
        if not self.main:
            return
        self.records.append(record)
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.bar is not None:
            terms = {k: v for k, v in record.items() if k not in ("iteration", "loss", "lr", "time")}
            self.bar.set_postfix_str(
                " ".join(
                    [f"loss={record['loss']:.3f}"]
                    + [f"{k.removeprefix('loss_')}={v:.3f}" for k, v in terms.items()]
                    + [f"lr={record['lr']:.2g}"]
                ),
                refresh=False,
            )
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()


def _step(
    net, opt: _Optimisation, cfg: TrainConfig, images, targets, iteration: int, last_saved: Path | None
) -> dict[str, float]:
    """One optimiser step; returns the losses averaged over processes.

    Raises FloatingPointError before the step when the loss is not finite."""
    with opt.autocast:
        loss_dict = net(images, targets)
    loss = sum(loss_dict.values())
    reduced = distributed_utils.all_reduce_mean(loss_dict)
    total = sum(reduced.values())
    if not math.isfinite(total):
        bad = ", ".join(f"{k}={v}" for k, v in reduced.items() if not math.isfinite(v))
        raise FloatingPointError(
            f"loss is {total} at iteration {iteration + 1} ({bad}); training stopped. "
            f"Last good checkpoint: {last_saved or 'none written yet'}. Try a lower --lr, "
            f"longer warm-up or --clip-grad."
        )
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    if cfg.clip_grad_norm is not None:
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_(opt.params, cfg.clip_grad_norm)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    return {"loss": total, **reduced}


def _checkpoint(proc: _Process, model, opt: _Optimisation, cfg: TrainConfig, iteration: int) -> Path | None:
    """Writes the training state of ``iteration`` (rank 0; every rank contributes its random state)
    and returns its path (None on other ranks)."""
    rng_all = distributed_utils.gather_to_main(rng_state())
    if rng_all is None:
        return None
    return write_training_state(
        proc.out_dir,
        {
            "model": model.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "scaler": opt.scaler.state_dict(),
            "iteration": iteration,
            "rng": rng_all,
            "train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
            "model_spec": proc.model_spec,
            "world_size": proc.world,
        },
    )


def _loop(
    proc: _Process,
    net,
    model,
    loader,
    opt: _Optimisation,
    cfg: TrainConfig,
    start: int,
    log: _Log,
    last_saved: Path | None,
    hooks: Sequence[TrainHook],
) -> tuple[int, Path | None]:
    """Iterations ``start + 1 .. cfg.iters``; returns (the last one, the newest checkpoint)."""
    iteration = start
    tick = time.perf_counter()
    for images, targets in loader:
        images = [img.to(proc.device, non_blocking=True) for img in images]
        targets = [_to_device(t, proc.device) for t in targets]
        losses = _step(net, opt, cfg, images, targets, iteration, last_saved)
        lr = opt.optimizer.param_groups[0]["lr"]
        opt.scheduler.step()
        iteration += 1
        now = time.perf_counter()
        log.add({"iteration": iteration, **losses, "lr": lr, "time": now - tick})
        tick = now
        if iteration % cfg.checkpoint_period == 0 or iteration == cfg.iters:
            last_saved = _checkpoint(proc, model, opt, cfg, iteration) or last_saved
            if proc.main:
                draw_loss_curve(log.records, proc.out_dir / "loss_curve.png")
        for hook in hooks:
            hook(iteration)
    return iteration, last_saved


def train(
    model,
    dataset,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device=None,
    model_spec: dict | None = None,
    progress: bool = True,
    hooks: Sequence[TrainHook] = (),
) -> dict:
    """Train ``model`` on ``dataset`` for ``cfg.iters`` iterations; returns a summary dict
    (``iteration``, ``checkpoint``, ``resumed_from``, ``final_loss``).

    ``model(images: list[Tensor[3, H, W]], targets: list[dict])`` must return a dict of scalar
    losses in train mode. ``dataset`` yields ``(image, target)`` (a
    :class:`~maskzoo.data.coco.CocoDataset` with training transforms). Under torchrun (process group
    already joined, see :func:`~maskzoo.engine.distributed.init_distributed`) the model is wrapped in
    DistributedDataParallel and each process takes its slice of every global batch.

    ``resume``: continue from the newest checkpoint in ``out_dir`` (from scratch if there is none).
    ``model_spec``: stored in checkpoints so that ``maskzoo eval`` can rebuild the model; by default,
    for a maskzoo model, its config (JSON) and ``model.class_names``. A maskzoo model is also saved
    with :func:`maskzoo.checkpoint.save` to ``out_dir/model_final.safetensors`` at the end.
    ``hooks``: functions called with the number of finished iterations after each iteration.

    Raises ``FloatingPointError`` when the loss stops being finite (nothing is saved then).
    """
    proc = _Process(
        out_dir=Path(out_dir),
        device=torch.device(device) if device is not None else next(model.parameters()).device,
        rank=distributed_utils.get_rank(),
        world=distributed_utils.get_world_size(),
        model_spec=model_spec_of(model) if model_spec is None else model_spec,
    )
    if proc.main:
        proc.out_dir.mkdir(parents=True, exist_ok=True)
    distributed_utils.barrier()

    _seed_process(cfg, proc.rank)
    _place_model(model, proc.device, cfg)
    opt = _optimiser_and_schedule(model, cfg, proc.device)
    start, resumed_from = _resume(proc, model, opt) if resume else (0, None)
    if start >= cfg.iters:
        if proc.main:
            print(f"nothing to do: {resumed_from} is at iteration {start} >= iters {cfg.iters}")
        return {"iteration": start, "checkpoint": str(resumed_from), "resumed_from": str(resumed_from)}
    net = _parallel(proc, model, cfg)
    loader = _loader(proc, dataset, cfg, start)
    log = _Log(proc, start, cfg.iters, progress)
    try:
        iteration, last_saved = _loop(proc, net, model, loader, opt, cfg, start, log, resumed_from, hooks)
    finally:
        log.close()
    if proc.main and getattr(model, "config", None) is not None:
        save(model, proc.out_dir / "model_final.safetensors")
    distributed_utils.barrier()
    return {
        "iteration": iteration,
        "checkpoint": str(last_saved) if last_saved else None,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "final_loss": log.records[-1]["loss"] if log.records else None,
    }
