"""BAM's first stage (``train_base.py``): a PSPNet base learner trained on one fold's base classes, backbone included.

Per step: a batch of augmented training views (:mod:`~fsslib.pretrain.base_learner.data`), logits upsampled to the
labels (bilinear, aligned corners), cross-entropy ignoring 255. SGD with momentum, a poly schedule over the whole
run, and, as the official ``index_split: 0``, the backbone at the base learning rate and the head (pyramid pooling,
embedding, classifier) at ``head_lr_multiplier`` (10) times it. BatchNorm trains, as the official stage 1.

Every ``1 / evals_per_epoch`` epoch the base-class mIoU on held-out images is appended to the curve (the toy
world's ``val`` split; PASCAL's and COCO's ``val``, the official validation). The written weights are the best
point's (the official ``best.pth``); the JSON keeps the curve, the plateau verdict of ``docs/protocol.md``
(:func:`fsslib.metrics.plateau_verdicts`) and the final base-class mIoU of the float16 file.

``precision="bf16"`` runs the training steps under bf16 autocast in channels-last layout, as the QGNet prior
extractor's pretraining (a third less CPU time on a CPU with AVX-512 BF16, ``benchmarks/toy_step_costs.py``);
the loss, the optimiser and the held-out scores stay in float32. The default is ``fp32``.

At the end of every epoch the whole state (learner, optimiser, schedule, torch's random generator, curve, best
point, times) goes to ``out.partial.pt``; ``resume=True`` (``--resume``) continues from it to the same weights and
curve as an uninterrupted run (on the same CPU and thread count), and the file goes when the run ends. The views
need no saved state: view ``index`` of epoch ``epoch`` is a pure function of (seed, epoch, index). The JSON's
``trained_on`` says which CPU trained which epochs (a run resumed on another machine has two spans).

Presets (:data:`TIER_SETTINGS`): ``paper`` is ``config/pascal/pascal_split0_resnet50_base.yaml`` -- 417 x 417
crops, scale 0.5-2.0, rotation +-10 degrees, batch 12 (3 on each of 4 GPUs), lr 2.5e-4, 100 epochs, on PSPNet's
deep-stem ResNet-50; ``toy`` keeps the optimiser's shape (SGD, poly, the head at ten times the backbone's rate)
on the toy world, from the shipped toy ResNet, with PFENet's scale range 0.9-1.1 (the official 0.5-2.0 reached
38.5 base mIoU on fold 0 after 10 epochs where 0.9-1.1 reached 52.2) and a budget of 24 epochs read off the
validation curve (``docs/methods/piclip.md``, "BAM").
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fsslib.blocks.base_learner import BaseLearner
from fsslib.data.benchmarks import Benchmark, benchmark_spec, get_benchmark, id_or_name, split_list
from fsslib.data.episodes import NOVEL_RULES, Source
from fsslib.device import resolve_device
from fsslib.errors import CheckpointError, DatasetNotFoundError, FsslibError, unknown
from fsslib.methods.base import segmentation_loss
from fsslib.metrics import plateau_verdicts
from fsslib.models.backbones import BACKBONES, build_backbone
from fsslib.models.files import read_weights
from fsslib.pretrain.base_learner.data import BaseTrainingImages, HeldOutImages, training_names
from fsslib.pretrain.base_learner.files import CLI, FILE_KIND, load_base_learner, require_base_classes, save_base_learner
from fsslib.pretrain.saving import RunRecord, file_sha256, save_checkpoint, write_metadata
from fsslib.pretrain.schedules import poly
from fsslib.provenance import trained_on

TIERS = ("toy", "paper")


@dataclass
class BaseLearnerSettings:
    """One base-learner run (defaults: the toy tier's recipe; :data:`TIER_SETTINGS` holds the paper tier's)."""

    fold: int = field(default=0, metadata={"help": "the fold whose base classes are learnt"})
    tier: str = field(default="toy", metadata={"help": f"the preset: {', '.join(TIERS)}"})
    benchmark: str = field(default="toy", metadata={"help": "toy, pascal, coco or folder:PATH (a dataset folder)"})
    novel_classes: str = field(default="", metadata={
        "help": "a dataset folder without folds.json: its novel classes, ids or names of classes.txt (e.g. 3,4); "
                "the base learner learns the others"})
    backbone: str = field(default="toy-resnet", metadata={"help": f"the backbone fine-tuned: {', '.join(BACKBONES)}"})
    backbone_weights: str = field(default="", metadata={"help": "its initial weights: '' = its pretrained ones, or a file"})
    hidden: int = field(default=64, metadata={"help": "channels of the head's 3x3 embedding (PSPNet: 512)"})
    epochs: int = field(default=24, metadata={"help": "passes over the training images"})
    batch_size: int = field(default=16, metadata={"help": "images per step"})
    lr: float = field(default=0.01, metadata={"help": "SGD learning rate of the backbone"})
    head_lr_multiplier: float = field(default=10.0, metadata={"help": "the head's learning rate over the backbone's"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay"})
    poly_power: float = field(default=0.9, metadata={"help": "power of the poly schedule"})
    crop: int = field(default=64, metadata={"help": "training crop and evaluation size"})
    scale_min: float = field(default=0.9, metadata={"help": "smallest random scale"})
    scale_max: float = field(default=1.1, metadata={"help": "largest random scale"})
    max_angle: float = field(default=10.0, metadata={"help": "largest random rotation (degrees; half the images)"})
    novel_rule: str = field(default="pfenet", metadata={
        "help": "pfenet: every training image, novel pixels background (the official BaseData); "
                "bam: drop images holding a novel class"})
    train_images: int = field(default=0, metadata={"help": "training images used (0: all; fewer for smoke tests)"})
    evals_per_epoch: int = field(default=2, metadata={"help": "points of the validation curve per epoch"})
    eval_images: int = field(default=0, metadata={"help": "held-out images per curve point (0: all)"})
    eval_batch_size: int = field(default=50, metadata={"help": "held-out images per forward pass"})
    seed: int = field(default=0, metadata={"help": "initialisation, order and augmentation"})
    data_root: str = field(default="", metadata={"help": "the benchmark's folder ('' = $FSSLIB_DATA's)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when there is one), cpu, cuda"})
    workers: int = field(default=0, metadata={"help": "data-loading processes"})
    precision: str = field(default="fp32", metadata={
        "help": "'fp32', or 'bf16': training steps under bf16 autocast in channels-last layout (a third less CPU time "
                "on a CPU with AVX-512 BF16); the loss, the optimiser and the held-out scores in float32"})


PRECISIONS = ("fp32", "bf16")

TIER_SETTINGS: dict[str, dict] = {
    "toy": {},
    # config/pascal/pascal_split0_resnet50_base.yaml; batch_size 3 per GPU on 4 GPUs (train_base.sh)
    "paper": dict(tier="paper", benchmark="pascal", backbone="resnet50-deepstem", hidden=512, epochs=100,
                  batch_size=12, lr=2.5e-4, crop=417, scale_min=0.5, scale_max=2.0, evals_per_epoch=1,
                  eval_batch_size=8, workers=8),
}


def tier_settings(tier: str = "toy", **overrides) -> BaseLearnerSettings:
    """The settings of ``tier`` (:data:`TIER_SETTINGS`) with ``overrides``."""
    if tier not in TIER_SETTINGS:
        raise unknown("base-learner tier", tier, TIERS)
    return BaseLearnerSettings(**{**TIER_SETTINGS[tier], "tier": tier, **overrides})


@torch.no_grad()
def base_class_iou(learner: BaseLearner, images: HeldOutImages, device: torch.device, batch_size: int) -> dict:
    """The official base-class scores on ``images``: per base class, IoU = intersection / union summed over all
    images (ignore pixels left out), and ``miou``, their mean over the base classes, in percent."""
    learner.eval()
    classes = 1 + learner.base_classes
    confusion = torch.zeros(classes, classes, dtype=torch.long)  # (target, predicted)
    for views, labels in DataLoader(images, batch_size=batch_size):
        logits = learner(views.to(device)).float()  # (N, 1 + C, h, w)
        predicted = torch.nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                                                    align_corners=True).argmax(dim=1).cpu()  # (N, H, W)
        valid = labels != 255
        confusion += torch.bincount(labels[valid] * classes + predicted[valid], minlength=classes ** 2).view(classes, classes)
    intersection = confusion.diag().double()
    union = confusion.sum(0).double() + confusion.sum(1).double() - intersection
    iou = (intersection / (union + 1e-10))[1:] * 100  # base classes 1..C (background is not scored)
    return {"n_images": len(images), "miou": float(iou.mean()), "per_class_iou": [round(float(v), 2) for v in iou]}


def held_out_splits(benchmark: Benchmark) -> list[str]:
    """The splits a base learner is scored on: the curve's (the held-out ``val`` of the toy world, else the
    official validation images), then the toy world's ``test`` too."""
    return list(dict.fromkeys(split for split in (benchmark.select_split or benchmark.test_split, benchmark.test_split)))


def evaluate_checkpoint(checkpoint: str | Path, data_root: str = "", eval_batch_size: int = 50,
                        device: str = "auto", limit: int | None = None) -> dict:
    """The base-class IoUs of a base-learner file on each of :func:`held_out_splits` (the first ``limit`` images of
    each; all by default), at its training crop size."""
    payload = read_weights(checkpoint, "The base learner", f"train one with `{CLI} --fold F`.")
    if not isinstance(payload, dict) or payload.get("kind") != FILE_KIND:
        raise CheckpointError(f"{checkpoint} is not a base learner written by `{CLI}`.", f"train one with `{CLI} --fold F`.")
    benchmark = get_benchmark(payload["benchmark"], novel_classes=payload.get("novel_classes", ()))
    learner = load_base_learner(checkpoint, payload["backbone"], payload["benchmark"], payload["fold"],
                                payload["base_classes"], f"train it again with `{CLI} --fold {payload['fold']}`.")
    target = resolve_device(device)
    learner.to(target)
    return {split: base_class_iou(learner, HeldOutImages(Source(benchmark, split, data_root or None),
                                                         payload["base_classes"], payload["crop"], limit),
                                  target, eval_batch_size)
            for split in held_out_splits(benchmark)}


def partial_path(out: Path) -> Path:
    """Where a run in progress keeps its state at the end of every epoch (``x.pt`` -> ``x.partial.pt``)."""
    return out.with_suffix(".partial.pt")


def train_base_learner(out: str | Path, settings: BaseLearnerSettings, progress: bool = True,
                       command: str | None = None, resume: bool = False) -> dict:
    """Train the base learner of ``settings.fold``; write ``out`` and ``out.json``; return the metadata.
    ``resume``: continue from ``out.partial.pt`` when there is one (the module docstring says what it holds)."""
    if settings.novel_rule not in NOVEL_RULES:
        raise unknown("novel-class rule", settings.novel_rule, NOVEL_RULES)
    if settings.precision not in PRECISIONS:
        raise unknown("base-learner precision", settings.precision, PRECISIONS)
    bf16 = settings.precision == "bf16"
    layout = torch.channels_last if bf16 else torch.contiguous_format
    out = Path(out)
    partial, state = partial_path(out), None
    if resume and partial.is_file():  # read first: a mismatch is told before the data are loaded
        state = read_weights(partial, "The interrupted run's state", "delete it to start the run again.")
        if state["settings"] != asdict(settings):
            changed = sorted(k for k, v in asdict(settings).items() if state["settings"].get(k) != v)
            raise FsslibError(f"{partial} was written with other settings ({', '.join(changed)}).",
                              "resume with the settings it was started with, or delete it to start again.")
    record = RunRecord(command or f"{CLI} --fold {settings.fold} --tier {settings.tier} --out {out}", settings.seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(settings.seed)
    device = resolve_device(settings.device)
    benchmark = get_benchmark(settings.benchmark, novel_classes=split_list(settings.novel_classes, id_or_name))
    base_classes = benchmark.base_classes(settings.fold)
    spec = benchmark_spec(settings.benchmark)
    require_base_classes(base_classes, spec, settings.fold)
    novel_classes = benchmark.fold_classes(settings.fold) if settings.novel_classes else []  # recorded, as given
    root, toy = settings.data_root or None, benchmark.name == "toy"
    source = Source(benchmark, benchmark.train_split, root, cache=toy)
    names = training_names(source, benchmark.fold_classes(settings.fold), settings.novel_rule)
    names = names[:settings.train_images] if settings.train_images else names
    images = BaseTrainingImages(source, names, base_classes, settings.crop, (settings.scale_min, settings.scale_max),
                                settings.max_angle, settings.seed)
    held_out = HeldOutImages(Source(benchmark, held_out_splits(benchmark)[0], root, cache=toy), base_classes,
                             settings.crop, settings.eval_images or None)
    learner = BaseLearner(build_backbone(settings.backbone, settings.backbone_weights or None), len(base_classes),
                          hidden=settings.hidden).to(device=device, memory_format=layout)
    head = [p for name, p in learner.named_parameters() if not name.startswith("backbone.")]
    optimizer = torch.optim.SGD([{"params": learner.backbone.parameters()},
                                 {"params": head, "lr": settings.lr * settings.head_lr_multiplier}],
                                lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    steps_per_epoch = len(images) // settings.batch_size  # drop_last, as the official loader
    if not steps_per_epoch:
        raise DatasetNotFoundError(f"{len(images)} training image(s) of {spec} make no batch of {settings.batch_size}.",
                                   f"pass --batch-size {max(1, len(images))} or less, or add training images.")
    total = settings.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: poly(step / total, settings.poly_power))
    every = max(1, steps_per_epoch // settings.evals_per_epoch)
    prepare_seconds = time.perf_counter() - start

    curve, losses, best, validation_seconds, step = [], [], None, 0.0, 0
    first_epoch, earlier_train_seconds, earlier_cpu_seconds = 0, 0.0, 0.0  # a resumed run: its earlier part
    spans: list[dict] = []  # which CPU trained which epochs (fsslib.provenance.trained_on)
    if state is not None:
        learner.load_state_dict(state["learner"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        curve, best, step, first_epoch = state["curve"], state["best"], state["step"], state["epoch"]
        losses = state["losses"]  # the steps since the last curve point
        validation_seconds, earlier_train_seconds = state["validation_seconds"], state["train_seconds"]
        earlier_cpu_seconds = state["cpu_seconds"]
        spans = state.get("trained_on", [])  # none in a state written before runs recorded them
    bar = tqdm(total=total, initial=step, desc=f"base learner fold {settings.fold}", disable=not progress)
    for epoch in range(first_epoch, settings.epochs):
        images.set_epoch(epoch)
        loader = DataLoader(images, batch_size=settings.batch_size, drop_last=True, num_workers=settings.workers)
        learner.train()
        for views, labels in loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = learner(views.to(device, memory_format=layout))
            loss = segmentation_loss(logits.float(), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
            step += 1
            bar.update()
            if step % every == 0 or step == total:
                validation_start = time.perf_counter()
                scores = base_class_iou(learner, held_out, device, settings.eval_batch_size)
                curve.append({"step": step, "epoch": round(step / steps_per_epoch, 3), "val_miou": scores["miou"],
                              "train_loss": float(torch.stack(losses).mean())})
                losses.clear()
                if best is None or scores["miou"] > best["val_miou"]:
                    best = {"step": step, "val_miou": scores["miou"],
                            "state": copy.deepcopy({k: v.cpu() for k, v in learner.state_dict().items()})}
                learner.train()
                validation_seconds += time.perf_counter() - validation_start
        spans = trained_on(spans, epoch + 1)
        if epoch + 1 < settings.epochs:  # the state after this epoch, for --resume
            save_checkpoint(partial, {
                "settings": asdict(settings), "epoch": epoch + 1, "step": step, "learner": learner.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "torch_rng": torch.get_rng_state(), "curve": curve, "best": best, "losses": losses, "trained_on": spans,
                "validation_seconds": validation_seconds,
                "train_seconds": earlier_train_seconds + time.perf_counter() - start - prepare_seconds,
                "cpu_seconds": earlier_cpu_seconds + time.process_time() - cpu_start})
    bar.close()
    train_seconds = earlier_train_seconds + time.perf_counter() - start - prepare_seconds
    cpu_seconds = earlier_cpu_seconds + time.process_time() - cpu_start

    learner.load_state_dict(best["state"])
    save_base_learner(out, learner.cpu(), settings.backbone, spec, settings.fold, base_classes, settings.crop,
                      novel_classes)
    gain, error, verdict = plateau_verdicts({"base learner": curve}).get(
        "base learner", (None, None, "too few points to judge (fewer than 4)"))
    metadata = {
        **record.stamp(device=str(device)),
        "model": f"BaseLearner(backbone={settings.backbone}, base_classes={len(base_classes)}, hidden={settings.hidden}, "
                 "bins=(1, 2, 3, 6)): PSPNet, backbone fine-tuned",
        "task": f"segment the {len(base_classes)} base classes of {benchmark.name} fold {settings.fold} "
                "(novel classes are background)",
        "settings": asdict(settings),
        "base_classes": base_classes,
        "training_images": {"count": len(names), "split": benchmark.train_split, "novel_rule": settings.novel_rule},
        "curve_split": held_out.source.split,
        "curve": curve,
        "best": {"step": best["step"], "epoch": round(best["step"] / steps_per_epoch, 3), "val_miou": best["val_miou"]},
        "plateau": {"last_quarter_gain": gain, "standard_error": error, "verdict": verdict,
                    "rule": "docs/protocol.md: flat under 1 point, or within 2 standard errors of the curve's noise"},
        "wall_time_s": {"prepare": round(prepare_seconds, 1), "train": round(train_seconds, 1),
                        "of_which_validation": round(validation_seconds, 1)},
        "cpu_time_s": round(cpu_seconds, 1),
        "resumed_at_epoch": first_epoch or None,
        "trained_on": spans,
        "checkpoint": {"file": out.name, "bytes": out.stat().st_size, "sha256": file_sha256(out), "dtype": "float16"},
        "held_out": evaluate_checkpoint(out, settings.data_root, settings.eval_batch_size, settings.device,
                                        settings.eval_images or None),
    }
    write_metadata(out, metadata)
    partial.unlink(missing_ok=True)
    return metadata
