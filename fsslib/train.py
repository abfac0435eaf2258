"""The generic episodic trainer.

    python -m fsslib.train --method prototype --preset toy --fold 0 --shots 1 --out runs/proto
    torchrun --nproc_per_node 2 -m fsslib.train ...        # DDP: one process per GPU (NCCL), or gloo with --device cpu

or ``fsslib.train.run(cfg)``. SGD or AdamW with a poly (or step) schedule, bf16 autocast on CUDA,
a checkpoint every epoch (``last.pt``: model, optimizer, scheduler, RNG state) and the
best one by validation mIoU (``best.pt``); ``--resume`` continues a killed run to the
same final weights on the CPU (on CUDA, nondeterministic kernels make even two
uninterrupted runs differ slightly, so a resumed run matches only as closely). Training
episodes are a pure function of (seed, epoch, index), so resuming needs no data-loader state. Log: ``<out>/log.jsonl``.
The summary's ``trained_on`` says which CPU trained which epochs (a run resumed on another machine has two spans);
its ``hardware`` is the last sitting's.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from fsslib.blocks.frozen import frozen_digests
from fsslib.config import RUN_CONTROL, Config, fields_with_role, make_config, run_command_line, same_setting
from fsslib.data.benchmarks import benchmark_of
from fsslib.data.episodes import EpisodeBatch, EpisodeDataset, augment_episode_batch, collate_episodes
from fsslib.device import autocast, resolve_device
from fsslib.engine import evaluate_model, load_checkpoint, open_source
from fsslib.errors import CheckpointError, DatasetNotFoundError, FsslibError, check_output_folder, unknown
from fsslib.methods import build_method
from fsslib.methods.base import FewShotSegmenter
from fsslib.paths import write_text
from fsslib.pretrain.saving import save_checkpoint
from fsslib.provenance import hardware, trained_on
from fsslib.speed import apply_speed_settings

OPTIMIZERS = ("sgd", "adamw")


class LossModule(nn.Module):
    """Wraps a segmenter so that DDP sees ``loss`` as the forward (and syncs its gradients)."""

    def __init__(self, model: FewShotSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: EpisodeBatch) -> torch.Tensor:
        return self.model.loss(batch)


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the model's parameter groups (:meth:`FewShotSegmenter.parameter_groups`), each at ``cfg.lr``
    times its ``lr_scale``; the schedule scales every group alike. Any other module: one group of its parameters."""
    groups = model.parameter_groups() if isinstance(model, FewShotSegmenter) else [{"params": list(model.parameters())}]
    params = [{"params": group["params"], "lr": cfg.lr * group.get("lr_scale", 1.0)} for group in groups]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise unknown("optimizer", cfg.optimizer, OPTIMIZERS)


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float) -> torch.optim.lr_scheduler.LambdaLR:
    """lr = base_lr * (1 - step / total) ** power (PFENet's poly policy)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total_steps) ** power)


def make_schedule(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The poly schedule over the whole run, or (``lr_step_epochs > 0``) lr x ``lr_step_gamma`` every that many epochs."""
    if cfg.lr_step_epochs > 0:
        period = cfg.lr_step_epochs * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cfg.lr_step_gamma ** (step // period))
    return poly_schedule(optimizer, cfg.epochs * steps_per_epoch, cfg.poly_power)


def rng_state() -> dict:
    """Every RNG's state as tensors and plain containers, so checkpoints load with ``weights_only=True``."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": random.getstate(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Restore the RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_mean(losses: list[torch.Tensor]) -> float:
    """The mean of an epoch's step losses (0-d tensors, kept on the device while training), read in one copy: the
    number that ``np.mean`` of each step's ``loss.item()`` gives (float64, numpy's summation), bit for bit."""
    return float(np.mean(torch.stack(losses).double().cpu().numpy()))


# settings that do not change what a training run computes (run control and test-time evaluation)
RUN_CONTROL_FIELDS = fields_with_role(RUN_CONTROL)


def check_same_run(saved: dict, cfg: Config, path: Path) -> None:
    """Resuming continues the same run: every setting but the run-control ones must match."""
    current, defaults = cfg.to_dict(), Config().to_dict()  # a field newer than the run: its default then
    changed = sorted(k for k in current if k not in RUN_CONTROL_FIELDS
                     and not same_setting(k, saved.get(k, defaults[k]), current[k], cfg.method))
    if changed:
        raise CheckpointError(
            f"{path} was written by a run with other settings: {', '.join(f'{k}={saved.get(k, defaults[k])!r}' for k in changed)}.",
            f"resume with the same settings, or start a fresh run in another --out folder (now: {', '.join(f'{k}={current[k]!r}' for k in changed)}).",
        )


def process_device(device: torch.device, world: int, local_rank: int) -> torch.device:
    """The device of this process: under torchrun on CUDA, GPU ``LOCAL_RANK`` (one GPU per process)."""
    if device.type != "cuda" or world == 1:
        return device
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise FsslibError(f"torchrun started process {local_rank} on this node, but only {visible} CUDA device(s) "
                          "are visible (one GPU per process).",
                          f"start at most {visible} process(es) per node (--nproc_per_node {visible}), "
                          "or train on the CPU with --device cpu.")
    return torch.device("cuda", local_rank)


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device); initialises the process group under torchrun:
    NCCL when the processes train on GPUs, gloo when they train on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = process_device(device, world, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world, device) if world > 1 else (0, 1, device)


def augment_place(setting: str, device: torch.device) -> str:
    """Where training episodes are augmented (``--augment-on``): "auto" is the device on a GPU (the loader's workers
    then only decode and resize) and the loader on the CPU (the same episodes there, and its workers augment in
    parallel); "loader" and "device" as asked."""
    if setting != "auto":
        return setting
    return "device" if device.type == "cuda" else "loader"


def run(cfg: Config | None = None, **overrides) -> dict:
    """Train ``cfg.method`` on the base classes of ``cfg.fold``; returns the training summary.

    Writes ``<out>/last.pt`` every epoch, ``<out>/best.pt`` (best validation mIoU),
    ``<out>/log.jsonl`` and ``<out>/train_summary.json``.
    """
    cfg = cfg or make_config(**overrides)
    if cfg.ckpt is not None:  # training starts from the method's initial weights; a checkpoint would go unread
        raise FsslibError(f"Training does not read --ckpt ({cfg.ckpt}): it starts from the method's initial weights.",
                          f"drop --ckpt to train, continue an interrupted run with --resume --out DIR, or evaluate the "
                          f"checkpoint: python -m fsslib.evaluate --method {cfg.method} --ckpt {cfg.ckpt}")
    benchmark = benchmark_of(cfg)
    if not benchmark.base_classes(cfg.fold):  # a dataset folder may make every class novel: for evaluation only
        classes = f"--novel-classes {','.join(map(str, cfg.novel_classes))}" if cfg.novel_classes else f"--fold {cfg.fold}"
        raise DatasetNotFoundError(f"Every class of {cfg.benchmark} is novel in fold {cfg.fold}, leaving none to train on.",
                                   "keep some classes out of --novel-classes (or out of the fold in folds.json); "
                                   f"evaluating needs none: `python -m fsslib.evaluate --method maskclip --benchmark "
                                   f"{cfg.benchmark} {classes}` (a trained method: --ckpt a model trained on other classes).")
    check_output_folder(cfg.out)
    rank, world, device = _distributed(resolve_device(cfg.device))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    model = build_method(cfg)
    if not model.trainable:
        raise FsslibError(f"Method {cfg.method!r} is training-free.", f"evaluate it directly: `python -m fsslib.evaluate --method {cfg.method}`.")
    frozen = frozen_digests(model)  # checkpoints refuse other frozen weights (fsslib.evaluate.load_model)
    model = model.to(device)
    speed = apply_speed_settings(model, cfg.compile, cfg.channels_last, cfg.fused_attention)  # each off by default
    train_source = open_source(cfg, benchmark.train_split)
    train_set = EpisodeDataset(train_source, cfg.fold, cfg.shots, cfg.image_size, cfg.episodes_per_epoch, cfg.seed,
                               mode="train", novel_rule=cfg.novel_rule, augment=cfg.augment, resize=cfg.resize,
                               augment_on=augment_place(cfg.augment_on, device))
    # Model selection on novel-class episodes of a split held out from the test images (the toy world's val).
    # PASCAL-5i / COCO-20i have none apart from the test images: no selection there, best.pt = the last epoch.
    val_set = None
    if benchmark.select_split is not None:
        val_set = EpisodeDataset(open_source(cfg, benchmark.select_split), cfg.fold, cfg.shots, cfg.image_size,
                                 cfg.val_episodes, cfg.seed + 1000, resize=cfg.resize)
    optimizer = make_optimizer(cfg, model)
    episodes_per_rank = len(train_set) // world  # equal shards, so every rank runs the same number of steps
    steps_per_epoch = math.ceil(episodes_per_rank / cfg.batch_size)
    scheduler = make_schedule(cfg, optimizer, steps_per_epoch)

    start_epoch, best_miou, history, spans = 0, -1.0, [], []  # spans: which CPU trained which epochs
    last_path, best_path = out / "last.pt", out / "best.pt"
    if cfg.resume and last_path.is_file():
        state = load_checkpoint(last_path, cfg.method)
        check_same_run(state["config"], cfg, last_path)
        if state.get("frozen", frozen) != frozen:
            raise CheckpointError(f"{last_path} was trained beside other frozen weights than this model holds.",
                                  "resume with the frozen weights the run started with, or start it again without --resume.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_epoch, best_miou, history = state["epoch"], state["best_miou"], state["history"]
        spans = state.get("trained_on", [])  # none in a checkpoint written before runs recorded them
    else:  # a fresh run: the log starts empty
        (out / "log.jsonl").unlink(missing_ok=True)
    trainer = LossModule(model)
    if world > 1:
        # methods may hold parameters that a given loss does not reach (e.g. unused backbone levels)
        trainer = nn.parallel.DistributedDataParallel(trainer, device_ids=[device.index] if device.type == "cuda" else None,
                                                      find_unused_parameters=True)

    start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        train_set.set_epoch(epoch)
        shard = Subset(train_set, range(rank, episodes_per_rank * world, world))
        loader = DataLoader(shard, batch_size=cfg.batch_size, collate_fn=collate_episodes, num_workers=cfg.num_workers,
                            pin_memory=device.type == "cuda")  # pinned: the copy below need not wait for the GPU
        model.train()
        losses = []  # on the device, read once per epoch: no step waits for the GPU to finish the one before
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or rank > 0, leave=False):
            batch = augment_episode_batch(batch.to(device, non_blocking=True))  # if the loader left it to the device
            with autocast(device, cfg.amp):
                loss = trainer(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
        record = {"epoch": epoch + 1, "train_loss": epoch_mean(losses), "lr": scheduler.get_last_lr()[0],
                  "world_size": world, "elapsed_s": time.perf_counter() - start}
        if rank == 0:
            improved = val_set is None
            if val_set is not None:
                val = evaluate_model(model, val_set, cfg, device, description="validate")
                record.update(val_miou=val["miou"], val_fbiou=val["fbiou"])
                improved = val["miou"] > best_miou
                best_miou = max(best_miou, val["miou"])
            history.append(record)
            spans = trained_on(spans, epoch + 1)
            if improved:
                save_checkpoint(best_path, {"method": cfg.method, "model": model.state_dict(), "epoch": epoch + 1,
                                            "val_miou": record.get("val_miou"), "config": cfg.to_dict(), "frozen": frozen})
            save_checkpoint(last_path, {
                "method": cfg.method, "model": model.state_dict(), "frozen": frozen, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "rng": rng_state(),
                "best_miou": best_miou, "history": history, "trained_on": spans, "config": cfg.to_dict(),
            })
            with (out / "log.jsonl").open("a") as log:  # after last.pt: a resumed run never logs an epoch twice
                log.write(json.dumps(record) + "\n")
    summary = {"method": cfg.method, "tier": cfg.tier, "fold": cfg.fold, "shots": cfg.shots, "seed": cfg.seed,
               "epochs": cfg.epochs, "best_val_miou": best_miou if val_set is not None else None, "checkpoint": str(best_path),
               "train_time_s": time.perf_counter() - start, "world_size": world,
               "hardware": hardware(**({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {})),
               "history": history, "trained_on": spans,
               **({"speed_settings": speed} if speed else {})}
    if rank == 0:
        write_text(out / "train_summary.json", json.dumps(summary, indent=1))
    if world > 1:
        dist.destroy_process_group()
    return summary


def main(argv: list[str] | None = None) -> None:
    summary = run_command_line("python -m fsslib.train", __doc__, run, argv)
    selected = "last epoch" if summary["best_val_miou"] is None else f"best validation mIoU {summary['best_val_miou']:.1f}"
    print(f"trained {summary['method']} fold {summary['fold']} {summary['shots']}-shot ({selected}) -> {summary['checkpoint']}")


if __name__ == "__main__":
    main()
