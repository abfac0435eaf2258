"""The prior extractor's pretraining loop (QGNet Sec. IV-A, Eq. 7; its recipe: Sec. V-A) on unlabelled toy scenes.

Training images: ``pool_size`` toy scenes from ``np.random.default_rng([seed, 94, index])``, a
stream no split uses; no label is read. The paper uses *all* images of the dataset, which
includes the novel classes' images (``images="all"``, the paper's setting: the prior extractor
has seen novel objects, unlabelled). ``images="base"`` keeps only scenes whose objects are all
of the base classes of ``fold`` (the stricter alternative; this reads the scenes' labels to
filter, as a base-only dataset would be assembled). Superpixels come from
:func:`~fsslib.pretrain.qgnet_prior.patches.superpixel_table` (computed once, cached).

Per step: a batch of images, two aug-plus views each (global loss), one random superpixel of
each image cropped to a patch, two aug-plus views of it (local loss); SGD with momentum 0.9,
weight decay 1e-4, cosine schedule (MoCo v2). The checkpoint holds the *key* encoder's backbone
(what the official code loads as the prior extractor) in fp16, in the toy backbone's format.
Every ``eval_every`` steps the key encoder's held-out kNN mAP (on the first 500 held-out scenes of
:mod:`~fsslib.pretrain.qgnet_prior.metrics`) and the mean losses since the last point are appended
to the JSON's ``curve``: the step budget is read off it.

``precision="bf16"`` runs the two encoders under bf16 autocast in channels-last layout (the toy tier's
counterpart of the paper tier's AMP; 1.7x faster per step on a CPU with AVX-512 BF16); the InfoNCE
logits, the queues and the learning curve stay in float32. ``device`` (``"auto"``: CUDA when there is
one) only moves the work: every random draw comes from the same CPU generator, so a run draws the same
scenes, views and patches on either device and resumes on the other.

``scenes="object_centric"`` and ``views="weak"`` are controls, not the paper's recipe:
``benchmarks/qgnet_pretraining_controls.py`` uses them to ask why the toy prior extractors learn
so little about the toy classes (``fsslib/checkpoints/README.md``).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fsslib.data.benchmarks import get_benchmark
from fsslib.device import resolve_device
from fsslib.errors import FsslibError, unknown
from fsslib.models.files import read_weights
from fsslib.models.backbones import ToyResNet
from fsslib.pretrain.views import AUG_PLUS, ViewAugmentation, random_views
from fsslib.pretrain.qgnet_prior.metrics import (HELD_OUT_SEED, HELD_OUT_STREAM, PLATEAU_GAIN, acceptance_metrics,
                                                 knn_map, knn_map_se, last_quarter_gain, pooled_features,
                                                 view_retrieval)
from fsslib.pretrain.qgnet_prior.moco import LOSS_SETS, GlobalLocalMoCo
from fsslib.pretrain.qgnet_prior.patches import (PATCH_METHODS, TOY_SUPERPIXELS, patch_crops, patch_object_share,
                                                 sample_segments, superpixel_table)
from fsslib.pretrain.saving import RunRecord, file_sha256, half_precision, save_checkpoint, write_metadata
from fsslib.pretrain.scenes import object_centric_scene, render_scenes, to_unit_tensor
from fsslib.pretrain.schedules import warmup_cosine
from fsslib.pretrain.toy_resnet.model import N_CLASSES, multi_hot

CLI = "python -m fsslib.pretrain toy-qgnet-prior"
TRAIN_STREAM = 94  # training scenes: default_rng([seed, 94, index])
IMAGE_SETS = ("all", "base")
PRECISIONS = ("fp32", "bf16")
SCENES = ("plain", "object_centric")
TRAIN_STRIDES = (8, 32)
VIEWS = {  # the random views of both losses: MoCo v2's aug-plus, or a weak control
    "aug_plus": AUG_PLUS,
    "weak": ViewAugmentation(crop_scale=(0.8, 1.0), jitter_probability=0.0, grayscale_probability=0.0, blur_probability=0.0),
}


@dataclass
class PriorSettings:
    """One pretraining run of the toy prior extractor (defaults: the recipe of the shipped SLIC extractor, so the
    command without flags makes it again; the other shipped ones change one flag: ``fsslib.methods.qgnet.TOY_PRIORS``)."""

    steps: int = field(default=24000, metadata={"help": "optimiser steps"})
    losses: str = field(default="global_local", metadata={
        "help": f"the contrastive losses: {', '.join(LOSS_SETS)} (Table VI has the first two)"})
    patches: str = field(default="slic", metadata={"help": f"local patches: {', '.join(PATCH_METHODS)}"})
    images: str = field(default="all", metadata={"help": "'all' training scenes (the paper) or only 'base'-class ones"})
    fold: int = field(default=0, metadata={"help": "the fold whose base classes images='base' keeps"})
    seed: int = field(default=0, metadata={"help": "scenes, initialisation and augmentation"})
    batch_size: int = field(default=64, metadata={"help": "images per step"})
    pool_size: int = field(default=8000, metadata={"help": "training scenes"})
    image_size: int = field(default=64, metadata={"help": "size of the image views"})
    patch_size: int = field(default=32, metadata={"help": "size of the patch views"})
    min_patch_area: int = field(default=24, metadata={"help": "smallest superpixel (pixels) picked as a patch"})
    lr: float = field(default=0.0075, metadata={"help": "SGD learning rate (MoCo v2's 0.03 at batch 256, scaled to 64)"})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up before the cosine"})
    momentum: float = field(default=0.99, metadata={"help": "key encoder momentum m (MoCo: 0.999 over ~10^5 steps)"})
    temperature: float = field(default=0.2, metadata={"help": "InfoNCE temperature (MoCo v2)"})
    queue_size: int = field(default=4096, metadata={"help": "image queue K (the paper's Eq. 1 and MoCo: 65536)"})
    local_queue_size: int = field(default=4096, metadata={"help": "patch queue M (the paper's Eq. 6: 65536)"})
    key_chunks: int = field(default=8, metadata={"help": "sub-batches of the key encoder (shuffling BN)"})
    eval_every: int = field(default=250, metadata={"help": "steps between points of the held-out kNN mAP curve"})
    curve_scenes: int = field(default=500, metadata={
        "help": "held-out scenes of the learning curve (kNN mAP, view retrieval) and of the patch object share"})
    scenes: str = field(default="plain", metadata={
        "help": "'plain' toy scenes (the few-shot images, as the paper trains on its dataset's images) or "
                "'object_centric' ones (one object covering about 40%% of the image; a control)"})
    views: str = field(default="aug_plus", metadata={
        "help": "'aug_plus' (MoCo v2) or 'weak' (crops of 80-100%% of the image, no colour change or blur; a control)"})
    precision: str = field(default="bf16", metadata={
        "help": "'fp32', or 'bf16': the encoders under bf16 autocast in channels-last layout (1.7x faster on a CPU "
                "with AVX-512 BF16), the losses and the learning curve in float32"})
    train_stride: int = field(default=8, metadata={
        "help": "output stride the encoders are pretrained at: 8 (dilated, as QGNet uses them) or 32 (strided, as MoCo "
                "trains ResNet-50 before the official code dilates it); the extractor is evaluated and used at 8"})


def training_images(settings: PriorSettings) -> np.ndarray:
    """The unlabelled training scenes (N, H, W, 3) uint8 of ``settings.images``."""
    if settings.images not in IMAGE_SETS:
        raise unknown("prior-extractor image set", settings.images, IMAGE_SETS)
    if settings.scenes not in SCENES:
        raise unknown("prior-extractor training scenes", settings.scenes, SCENES)
    draw = (lambda rng, _: object_centric_scene(rng, settings.image_size)) if settings.scenes == "object_centric" else None
    scenes = render_scenes(settings.pool_size, settings.seed, TRAIN_STREAM, settings.image_size, draw=draw)
    if settings.images == "all":
        return scenes.images
    novel = set(get_benchmark("toy").fold_classes(settings.fold))
    keep = [i for i, classes in enumerate(scenes.present_classes()) if not novel & set(classes)]
    if not keep:
        raise FsslibError("No training scene is free of the novel classes.", "use images='all' or a larger pool_size.")
    return scenes.images[keep]


def as_used(backbone: ToyResNet) -> ToyResNet:
    """The pretrained encoder as QGNet uses it: at output stride 8 (dilated), whatever stride it trains at."""
    if backbone.output_stride == 8:
        return backbone
    used = ToyResNet()
    used.load_state_dict(backbone.state_dict())
    return used


def device_name(device: torch.device) -> str:
    """``"cpu"``, or ``"cuda: <the GPU's name>"``: the hardware a run's JSON records."""
    return f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def partial_path(out: Path) -> Path:
    """Where a run in progress keeps its state at every learning-curve point (``x.pt`` -> ``x.partial.pt``)."""
    return out.with_suffix(".partial.pt")


def train_prior_extractor(out: str | Path, settings: PriorSettings, cache: str | Path | None = None,
                          progress: bool = True, command: str | None = None, workers: int = 2,
                          n_eval_images: int = 1000, resume: bool = False, device: str = "auto") -> dict:
    """Pretrain a toy prior extractor with ``settings``; write ``out`` and ``out.json``; return the metadata.

    At every learning-curve point the whole state (encoders, queues, optimiser, schedule, random generators,
    losses, curve) goes to ``out.partial.pt``; ``resume=True`` continues from it to the same final weights as
    an uninterrupted run (on the CPU), and the file is removed when the run ends. ``device``: where the
    encoders run (``"auto"``, ``"cpu"``, ``"cuda"``); the draws are the same on each.
    """
    if settings.losses not in LOSS_SETS:
        raise unknown("QGNet pretraining losses", settings.losses, list(LOSS_SETS))
    if settings.views not in VIEWS:
        raise unknown("prior-extractor views", settings.views, list(VIEWS))
    # every name is checked before the scenes are rendered (about a minute for 8000)
    if settings.patches not in PATCH_METHODS:
        raise unknown("patch method", settings.patches, PATCH_METHODS)
    if settings.train_stride not in TRAIN_STRIDES:
        raise unknown("prior-extractor pretraining stride", settings.train_stride, [str(s) for s in TRAIN_STRIDES])
    if settings.precision not in PRECISIONS:
        raise unknown("prior-extractor precision", settings.precision, PRECISIONS)
    views = VIEWS[settings.views]
    bf16 = settings.precision == "bf16"
    device = resolve_device(device)
    layout = torch.channels_last if bf16 else torch.contiguous_format
    out = Path(out)
    record = RunRecord(command or f"{CLI} --out {out}", settings.seed)
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    images = training_images(settings)
    losses_used = LOSS_SETS[settings.losses]
    table = superpixel_table(images, settings.patches, TOY_SUPERPIXELS[settings.patches], cache, workers) \
        if "local" in losses_used else None
    prepare_seconds = time.perf_counter() - start

    model = GlobalLocalMoCo(ToyResNet(output_stride=settings.train_stride), queue_size=settings.queue_size, local_queue_size=settings.local_queue_size,
                            momentum=settings.momentum, temperature=settings.temperature, key_chunks=settings.key_chunks)
    model = model.to(device=device, memory_format=layout)
    optimizer = torch.optim.SGD(model.query_encoder.parameters(), lr=settings.lr, momentum=0.9,
                                weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, step / settings.steps, settings.warmup_steps))
    history: dict[str, list[float]] = {name: [] for name in losses_used}
    unread: dict[str, list[torch.Tensor]] = {name: [] for name in losses_used}  # (,) each, since the last curve point
    curve_start = time.perf_counter()
    curve_scenes = render_scenes(settings.curve_scenes, HELD_OUT_SEED, HELD_OUT_STREAM)
    curve_labels = multi_hot(curve_scenes.masks)
    curve: list[dict] = []
    curve_seconds = time.perf_counter() - curve_start  # the learning curve's share of the training time
    first_step, earlier_seconds = 0, 0.0  # a resumed run: the steps and training seconds of its earlier part
    partial = partial_path(out)
    if resume and partial.is_file():
        state = read_weights(partial, "The interrupted run's state", "delete it to start the run again.")
        saved = {**asdict(PriorSettings()), **state["settings"]}  # a setting added since: its default then
        if saved != asdict(settings):
            changed = sorted(k for k, v in asdict(settings).items() if saved.get(k) != v)
            raise FsslibError(f"{partial} was written with other settings ({', '.join(changed)}).",
                              "resume with the settings it was started with, or delete it to start again.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history, curve, first_step, earlier_seconds = state["history"], state["curve"], state["step"], state["seconds"]
    model.train()
    for step in tqdm(range(first_step, settings.steps), desc=f"pretrain prior extractor ({settings.losses}, {settings.patches})",
                     initial=first_step, total=settings.steps, disable=not progress):
        index = torch.randint(len(images), (settings.batch_size,), generator=generator)
        batch = to_unit_tensor(images[index.numpy()]).to(device)  # (B, 3, H, W)
        model.update_key_encoder()
        terms = {}
        if "global" in losses_used:  # Eq. 1
            pair = [random_views(batch, settings.image_size, generator, views).contiguous(memory_format=layout)
                    for _ in range(2)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                terms["global"] = model.loss(*pair, local=False, generator=generator)
        if "local" in losses_used:  # Eq. 6
            chosen = sample_segments(torch.from_numpy(table.areas[index.numpy()]), settings.min_patch_area, generator)
            patches = patch_crops(batch, torch.from_numpy(table.segments[index.numpy()]).to(device).long(),
                                  torch.from_numpy(table.boxes[index.numpy()]), chosen, settings.patch_size)
            pair = [random_views(patches, settings.patch_size, generator, views).contiguous(memory_format=layout)
                    for _ in range(2)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                terms["local"] = model.loss(*pair, local=True, generator=generator)
        loss = sum(terms.values())  # Eq. 7
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        for name, value in terms.items():
            unread[name].append(value.detach())
        if (step + 1) % settings.eval_every == 0 or step + 1 == settings.steps:
            for name, values in unread.items():  # the losses come off the device once per curve point, not per step
                history[name].extend(torch.stack(values).tolist())
                values.clear()
            curve_start = time.perf_counter()
            since = step + 1 - (curve[-1]["step"] if curve else 0)  # steps since the last point
            extractor = as_used(model.key_encoder.backbone)
            curve.append({"step": step + 1, "knn_map": knn_map(pooled_features(extractor, curve_scenes.images), curve_labels),
                          "view_retrieval": view_retrieval(extractor, curve_scenes.images),
                          **{name: float(np.mean(values[-since:])) for name, values in history.items()}})
            model.train()
            curve_seconds += time.perf_counter() - curve_start
            save_checkpoint(partial, {
                "settings": asdict(settings), "step": step + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "history": history,
                "curve": curve, "seconds": earlier_seconds + time.perf_counter() - start - prepare_seconds})
    train_seconds = earlier_seconds + time.perf_counter() - start - prepare_seconds

    extractor = model.key_encoder.backbone.to(device="cpu", memory_format=torch.contiguous_format)
    save_checkpoint(out, {"backbone": half_precision(extractor.state_dict())})
    knn_curve = [[point["step"], point["knn_map"]] for point in curve]
    patch_share = None if table is None else patch_object_share(
        curve_scenes.images, curve_scenes.masks, settings.patches, TOY_SUPERPIXELS[settings.patches],
        settings.min_patch_area, N_CLASSES)["patch_object_share"]
    window = max(1, min(100, settings.steps // 10))
    metadata = {
        **record.stamp(device=device_name(device)),
        "model": f"ToyResNet(widths=(24, 48, 96, 192), output_stride={settings.train_stride}): the key encoder of MoCo v2 "
                 "with QGNet's patch queue; evaluated and used at output stride 8",
        "task": f"QGNet prior extractor, losses {settings.losses} (Eqs. 1, 6, 7), patches {settings.patches}",
        "settings": asdict(settings),
        "superpixels": TOY_SUPERPIXELS[settings.patches] if table is not None else None,
        # how much of the patches is object, on the labelled held-out scenes (benchmarks/qgnet_superpixels.py)
        "patch_object_share": patch_share,
        "knn_map_curve": knn_curve,
        # the learning curve's own flatness, on its 500 scenes; the plateau rule itself is a doubling of the budget,
        # which a separate run adds as "half_the_budget" (docs/methods/qgnet.md)
        "plateau": {"last_quarter_gain": last_quarter_gain(knn_curve),
                    "rule": f"the learning curve's last quarter gains < {PLATEAU_GAIN} (not the doubling)",
                    "curve_flat": last_quarter_gain(knn_curve) < PLATEAU_GAIN,
                    "final_knn_map_se": knn_map_se(pooled_features(extractor, curve_scenes.images), curve_labels)},
        "training_images": {"count": len(images),
                            "scenes": f"np.random.default_rng([{settings.seed}, {TRAIN_STREAM}, index]), index < {settings.pool_size}"},
        "loss": {name: {"first_steps": float(np.mean(values[:window])), "last_steps": float(np.mean(values[-window:]))}
                 for name, values in history.items()},
        "curve": curve,
        "wall_time_s": {"prepare": round(prepare_seconds, 1), "train": round(train_seconds, 1),
                        "of_which_curve": round(curve_seconds, 1)},
        "resumed_at_step": first_step or None,  # wall_time_minutes then counts the last part only
        "checkpoint": {"file": out.name, "bytes": out.stat().st_size, "sha256": file_sha256(out), "dtype": "float16",
                       "keys": ["backbone"]},
        "held_out": acceptance_metrics(out, n_eval_images, min(300, n_eval_images)),  # the fp16 weights as shipped
    }
    write_metadata(out, metadata)
    partial.unlink(missing_ok=True)
    return metadata
