"""QGNet's prior extractor on a benchmark's own images (the paper tier): a ResNet-50 pretrained from random weights
by MoCo v2 plus the local patch loss (Sec. IV-A, Eqs. 1, 6, 7), written as a MoCo checkpoint that QGNet's paper
tier loads (its ``prior_extractor`` option).

**The recipe.** What the paper gives (Sec. V-A, Eqs. 1, 6): SGD, InfoNCE, MoCo v2's augmentation (blur, colour
distortion, random crop, flip), every image of the dataset (here: of fsslib's lists of its training and test
splits), 1000 epochs on PASCAL VOC and 200 on COCO, queues of K = M = 65536, SLIC superpixels as the patches
(Table V). What it leaves to MoCo v2 (facebookresearch/moco ``main_moco.py --mlp --moco-t 0.2 --aug-plus --cos``):
batch 256 with learning rate 0.03, weight decay 1e-4, SGD momentum 0.9, key-encoder momentum 0.999, 224-pixel
views, a cosine schedule stepped per epoch, random initialisation. What neither gives, fsslib's choice:

* the learning rate scaled linearly with the batch (0.03 per 256 images, as MoCo's README recommends for other
  batches; ``main_moco.py`` itself takes ``--lr`` as it is);
* BatchNorm: MoCo normalises both encoders over each GPU's 32 images and shuffles the keys across its 8 GPUs; here
  the keys are encoded in 8 shuffled sub-batches (:class:`~fsslib.pretrain.qgnet_prior.moco.GlobalLocalMoCo`),
  and the query encoder normalises over the whole batch;
* the patch views' size (112, half the image views', as the toy tier's 32 against 64), the superpixels' settings
  (skimage's SLIC defaults, 100 segments of compactness 10, on the image as stored; the 256 largest segments
  kept) and the smallest patch picked (1024 pixels).

**A batch item** (:class:`PriorImages`, in the data loader's workers; a pure function of seed, epoch and position):
the image is read, never its label. Its superpixels come from a cache made once before training
(:func:`cache_superpixels`). Two random resized crops of the image, each flipped half the time, are the global
pair. One superpixel, drawn uniformly among those of at least ``min_patch_area`` pixels, is cropped to its
bounding box with the pixels outside it set to its mean colour
(:func:`~fsslib.pretrain.qgnet_prior.patches.patch_crops`, as on the toy tier); two random resized crops of that
are the local pair. The views' colours (jitter, grayscale,
blur) are drawn per step on the training device, batched (:func:`~fsslib.pretrain.views.random_colours`).

**The file.** ``{"arch": "resnet50", "epoch": E, "state_dict": {...}}`` with MoCo v2's key names
(``module.encoder_q.*`` and ``module.encoder_k.*``: torchvision's ResNet-50 names, the MLP head as ``fc.0`` and
``fc.2``; ``module.queue``, ``module.queue_ptr``, and the patch queue ``module.local_queue``), read by
:func:`fsslib.models.backbones.load_moco_resnet50`, by MoCo's ``main_lincls.py --pretrained`` and its detectron2
conversion (both read ``encoder_q``), not by ``main_moco.py --resume`` (no optimiser state; the extra patch queue).
Beside it (``.pth.json``): the command, settings, images, the loss of every epoch, hardware and times.

Its training step at the paper's size is timed on an H200 (``benchmarks/README.md``, "One GPU session, every
script"); no whole run at that size has been made. This module is tested on the CPU at a few pixels.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fsslib.data.benchmarks import get_benchmark
from fsslib.data.episodes import Source, read_rgb
from fsslib.device import resolve_device
from fsslib.errors import DatasetNotFoundError, FsslibError, unknown
from fsslib.models.backbones import MOCO_BACKBONE, TORCHVISION_STEM, ResNet50Backbone, with_prefixes
from fsslib.models.files import read_weights
from fsslib.paths import atomic_path, data_root, weights_root
from fsslib.pretrain.qgnet_prior.moco import LOSS_SETS, GlobalLocalMoCo
from fsslib.pretrain.qgnet_prior.patches import (PATCH_METHODS, patch_crops, sample_segments, segment_table,
                                                 superpixels)
from fsslib.pretrain.qgnet_prior.train import PRECISIONS, device_name
from fsslib.pretrain.saving import RunRecord, file_sha256, save_checkpoint, write_metadata
from fsslib.pretrain.schedules import cosine_between
from fsslib.pretrain.views import AUG_PLUS, random_colours, random_crops

CLI = "python -m fsslib.pretrain qgnet-prior"
BENCHMARKS = ("pascal", "coco")
IMAGE_SETS = ("all", "train")  # all: the train and test splits' images (the paper: every image of the dataset)
PAPER_SUPERPIXELS = {  # skimage's defaults for SLIC; Felzenszwalb's as skimage's example of it
    "slic": {"n_segments": 100, "compactness": 10.0},
    "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 50},
}
PAPER_EPOCHS = {"pascal": 1000, "coco": 200}  # Sec. V-A
# every image of the dataset, as the paper counts PASCAL's (Sec. V-A: 10,582 training, 1,449 validation) and COCO
# 2014's train and val: the benchmarks' budgets. fsslib reads its prepared lists' images (benchmark_images), fewer
# with PASCAL's default train list (PFENet's 5,953 instead of trainaug's 10,582)
PAPER_IMAGES = {"pascal": 12031, "coco": 123287}
MAX_SEGMENTS = 256  # the largest segments kept per image (SLIC's 100 make at most a few more)
REFERENCE_BATCH = 256  # MoCo v2's learning rate is given for 256 images per step
ORDER_STREAM, ITEM_STREAM, COLOUR_STREAM = 0, 1, 2  # np.random.default_rng([seed, stream, ...]): apart from each other
RESULT_FREE = ("workers", "device", "superpixel_cache", "checkpoint_every")  # settings a resumed run may change


@dataclass
class PaperPriorSettings:
    """One pretraining run of QGNet's prior extractor on a benchmark's images (defaults: the recipe above)."""

    benchmark: str = field(default="pascal", metadata={"help": f"whose images: {', '.join(BENCHMARKS)}"})
    images: str = field(default="all", metadata={
        "help": "'all': the training and test splits' images (the paper: every image of the dataset), or 'train'"})
    epochs: int = field(default=0, metadata={"help": "passes over the images (0: the paper's, 1000 PASCAL, 200 COCO)"})
    losses: str = field(default="global_local", metadata={
        "help": f"the contrastive losses: {', '.join(LOSS_SETS)} (Table VI has the first two)"})
    patches: str = field(default="slic", metadata={"help": f"local patches: {', '.join(PATCH_METHODS)}"})
    batch_size: int = field(default=256, metadata={"help": "images per step (MoCo v2: 256)"})
    lr: float = field(default=0.03, metadata={
        "help": f"SGD learning rate per {REFERENCE_BATCH} images (MoCo v2's at batch 256); fsslib scales it linearly "
                "with the batch size, as MoCo's README recommends"})
    weight_decay: float = field(default=1e-4, metadata={"help": "SGD weight decay"})
    momentum: float = field(default=0.999, metadata={"help": "key-encoder momentum m (MoCo)"})
    temperature: float = field(default=0.2, metadata={"help": "InfoNCE temperature (MoCo v2)"})
    queue_size: int = field(default=65536, metadata={"help": "image queue K (Eq. 1, MoCo)"})
    local_queue_size: int = field(default=65536, metadata={"help": "patch queue M (Eq. 6)"})
    key_chunks: int = field(default=8, metadata={
        "help": "shuffled sub-batches the keys are encoded in (MoCo shuffles them over 8 GPUs)"})
    image_size: int = field(default=224, metadata={"help": "size of the image views (MoCo)"})
    patch_size: int = field(default=112, metadata={"help": "size of the patch views (fsslib's choice)"})
    min_patch_area: int = field(default=1024, metadata={
        "help": "smallest superpixel picked as a patch, in pixels of the stored image (the largest when none is)"})
    seed: int = field(default=0, metadata={"help": "initialisation, order and augmentation"})
    precision: str = field(default="bf16", metadata={
        "help": "'bf16': the encoders under bf16 autocast in channels-last layout (the losses in float32), or 'fp32'"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when there is one), cpu, cuda"})
    workers: int = field(default=8, metadata={"help": "data-loading processes (and superpixel processes)"})
    data_root: str = field(default="", metadata={"help": "the benchmark's folder ('' = $FSSLIB_DATA's)"})
    superpixel_cache: str = field(default="", metadata={
        "help": "folder of the superpixels, computed once ('' = $FSSLIB_DATA/qgnet_superpixels)"})
    max_images: int = field(default=0, metadata={"help": "images used (0: all; fewer for smoke tests)"})
    checkpoint_every: int = field(default=10, metadata={"help": "epochs between the states saved for --resume"})


def default_out(benchmark: str) -> Path:
    """Where QGNet's paper grids look for the extractor:
    ``$FSSLIB_WEIGHTS/qgnet_prior_extractor_<benchmark>.pth.tar``."""
    return weights_root() / f"qgnet_prior_extractor_{benchmark}.pth.tar"


def epochs_of(settings: PaperPriorSettings) -> int:
    """The run's epochs: ``settings.epochs``, or the paper's for its benchmark when 0."""
    return settings.epochs or PAPER_EPOCHS[settings.benchmark]


def benchmark_images(settings: PaperPriorSettings) -> tuple[list[tuple[str, Path]], bool]:
    """The (name, path) of every image the run reads, sorted by name, each once, and whether they are read as
    a viewer shows them."""
    if settings.benchmark not in BENCHMARKS:
        raise unknown("benchmark of QGNet's prior pretraining", settings.benchmark, BENCHMARKS)
    if settings.images not in IMAGE_SETS:
        raise unknown("prior-extractor image set", settings.images, IMAGE_SETS)
    benchmark = get_benchmark(settings.benchmark)
    splits = [benchmark.train_split] + ([benchmark.test_split] if settings.images == "all" else [])
    found: dict[str, Path] = {}
    for split in splits:
        source = Source(benchmark, split, settings.data_root or None)
        for name in source.names:
            found.setdefault(name, source.root / source.paths[name][0])
    named = sorted(found.items())
    return named[:settings.max_images] if settings.max_images else named, source.shown


def superpixel_folder(settings: PaperPriorSettings) -> Path:
    """The cache of one dataset folder's superpixels under one patch setting (its name holds a hash of both)."""
    root = Path(settings.data_root).resolve() if settings.data_root else get_benchmark(settings.benchmark).root()
    setting = json.dumps([str(root), settings.patches, PAPER_SUPERPIXELS[settings.patches], MAX_SEGMENTS],
                         sort_keys=True)
    key = hashlib.sha256(setting.encode()).hexdigest()[:12]
    base = Path(settings.superpixel_cache) if settings.superpixel_cache else data_root() / "qgnet_superpixels"
    return base / settings.benchmark / f"{settings.patches}_{key}"


def _cache_one(job: tuple[Path, bool, Path, str, dict]) -> None:
    path, shown, target, method, params = job
    segments, boxes, areas = segment_table(superpixels(read_rgb(path, shown), method, params), MAX_SEGMENTS)
    with atomic_path(target) as temporary:
        np.savez(temporary, segments=segments, boxes=boxes, areas=areas)


def cache_superpixels(images: list[tuple[str, Path]], shown: bool, folder: Path, method: str, workers: int,
                      progress: bool = True) -> int:
    """Compute the superpixels of the images not yet in ``folder`` (one ``<name>.npz`` each: segment ids relabelled
    largest first, boxes, areas; :func:`~fsslib.pretrain.qgnet_prior.patches.segment_table`), in ``workers``
    processes; returns how many were computed. A file is read back only if its segments have its image's size
    (:class:`PriorImages` checks)."""
    jobs = [(path, shown, folder / f"{name}.npz", method, PAPER_SUPERPIXELS[method])
            for name, path in images if not (folder / f"{name}.npz").is_file()]
    bar = tqdm(total=len(jobs), desc=f"superpixels ({method})", disable=not progress or not jobs)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_cache_one, jobs, chunksize=16):
                bar.update()
    else:
        for job in jobs:
            _cache_one(job)
            bar.update()
    bar.close()
    return len(jobs)


def as_bytes(views: torch.Tensor) -> torch.Tensor:
    """Views in [0, 1] as uint8 (a quarter of the bytes through the loader's shared memory)."""
    return views.mul(255).round_().clamp_(0, 255).to(torch.uint8)


class PriorImages(Dataset):
    """Item ``(epoch, position)``: (global pair (2, 3, S, S), local pair (2, 3, P, P)) uint8, the crops and flips of
    the module docstring's batch item for the image at ``position`` of the epoch's shuffled order (the colours come
    later, batched); a pure function of (seed, epoch, position)."""

    def __init__(self, images: list[tuple[str, Path]], shown: bool, folder: Path, settings: PaperPriorSettings) -> None:
        self.images, self.shown, self.folder, self.settings = images, shown, folder, settings
        self.local = "local" in LOSS_SETS[settings.losses]
        self._order: tuple[int, np.ndarray | None] = (-1, None)  # the last epoch's order, kept by each worker

    def __len__(self) -> int:
        return len(self.images)

    def order(self, epoch: int) -> np.ndarray:
        """The images' order in ``epoch``."""
        if self._order[0] != epoch:
            stream = np.random.default_rng([self.settings.seed, ORDER_STREAM, epoch])
            self._order = (epoch, stream.permutation(len(self)))
        return self._order[1]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = key
        name, path = self.images[self.order(epoch)[position]]
        seed = np.random.default_rng([self.settings.seed, ITEM_STREAM, epoch, position]).integers(2**62)
        generator = torch.Generator().manual_seed(int(seed))
        pixels = np.array(read_rgb(path, self.shown))  # (H, W, 3) uint8, writable
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255)  # (1, 3, H, W)
        global_pair = random_crops(image.expand(2, -1, -1, -1), self.settings.image_size, generator)
        if not self.local:
            return as_bytes(global_pair), torch.zeros(2, 3, 0, 0, dtype=torch.uint8)
        cached = self.folder / f"{name}.npz"
        table = np.load(cached)
        if table["segments"].shape != pixels.shape[:2]:
            raise FsslibError(f"The cached superpixels {cached} are {table['segments'].shape}, but image {path} is "
                              f"{pixels.shape[:2]}: they were made from another image.",
                              f"delete {self.folder} (it is made again), or pass --superpixel-cache another folder.")
        chosen = sample_segments(torch.from_numpy(table["areas"])[None], self.settings.min_patch_area, generator)
        boxes = torch.from_numpy(table["boxes"])[None]  # (1, S, 4)
        window, segments, boxes[0, chosen] = box_window(image, torch.from_numpy(table["segments"]), boxes[0, chosen[0]])
        patch = patch_crops(window, segments[None].long(), boxes, chosen, self.settings.patch_size)  # (1, 3, P, P)
        local_pair = random_crops(patch.expand(2, -1, -1, -1), self.settings.patch_size, generator)
        return as_bytes(global_pair), as_bytes(local_pair)


class EpochBatches:
    """The loader's batches from ``first_epoch`` to ``epochs``: each epoch's positions in runs of ``batch_size``, the
    last partial run dropped (MoCo's ``drop_last``). One loader serves the whole run, so its workers start once
    and prefetch across epochs."""

    def __init__(self, n_images: int, batch_size: int, first_epoch: int, epochs: int) -> None:
        self.n_images, self.batch_size, self.first_epoch, self.epochs = n_images, batch_size, first_epoch, epochs

    def __len__(self) -> int:
        return (self.epochs - self.first_epoch) * (self.n_images // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in range(self.first_epoch, self.epochs):
            for start in range(0, self.n_images // self.batch_size * self.batch_size, self.batch_size):
                yield [(epoch, position) for position in range(start, start + self.batch_size)]


def box_window(image: torch.Tensor, segments: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                       torch.Tensor]:
    """The part of an image (1, 3, H, W) and of its segment ids (H, W) around one segment's box (centre x, centre y,
    width, height as fractions), with a pixel of margin for the bilinear crop, and the box as fractions of that
    window: :func:`~fsslib.pretrain.qgnet_prior.patches.patch_crops` samples the same pixels from the window as
    from the whole image, and fills the same segment's mean, for a fraction of the work on a photograph."""
    height, width = segments.shape
    centre_x, centre_y, box_width, box_height = (float(value) for value in box)
    left = max(0, math.floor((centre_x - box_width / 2) * width) - 1)
    right = min(width, math.ceil((centre_x + box_width / 2) * width) + 1)
    top = max(0, math.floor((centre_y - box_height / 2) * height) - 1)
    bottom = min(height, math.ceil((centre_y + box_height / 2) * height) + 1)
    columns, rows = right - left, bottom - top
    inside = torch.tensor([(centre_x * width - left) / columns, (centre_y * height - top) / rows,
                           box_width * width / columns, box_height * height / rows])
    return image[..., top:bottom, left:right], segments[top:bottom, left:right], inside


def moco_state_dict(model: GlobalLocalMoCo) -> dict[str, torch.Tensor]:
    """The model under MoCo v2's key names (module docstring), float32, on the CPU."""
    official = {ours: theirs for theirs, ours in TORCHVISION_STEM.items()} | {"head.": "fc."}  # MoCo v2's MLP head: fc

    def renamed(key: str) -> str:
        return with_prefixes(key.removeprefix("backbone."), official)

    def saved(value: torch.Tensor) -> torch.Tensor:  # contiguous (a bf16 run trains channels-last), its own storage
        return (value.detach().float() if value.is_floating_point() else value.detach()).cpu().contiguous().clone()

    state = {f"module.{role}.{renamed(key)}": saved(value)
             for role, encoder in (("encoder_q", model.query_encoder), ("encoder_k", model.key_encoder))
             for key, value in encoder.state_dict().items()}
    return {**state, "module.queue": saved(model.queue), "module.queue_ptr": saved(model.pointers[:1]),
            "module.local_queue": saved(model.local_queue)}


def check_settings(settings: PaperPriorSettings) -> None:
    """Every name of ``settings`` is known and every count positive (before any image is read; the benchmark and
    image set: :func:`benchmark_images`)."""
    for name in ("batch_size", "min_patch_area", "checkpoint_every", "image_size", "patch_size"):
        if getattr(settings, name) < 1:
            raise FsslibError(f"{name} is {getattr(settings, name)}.", f"pass --{name.replace('_', '-')} 1 or more.")
    if settings.epochs < 0:
        raise FsslibError(f"epochs is {settings.epochs}.", "pass --epochs 0 (the paper's) or more.")
    if settings.losses not in LOSS_SETS:
        raise unknown("QGNet pretraining losses", settings.losses, list(LOSS_SETS))
    if settings.patches not in PATCH_METHODS:
        raise unknown("patch method", settings.patches, PATCH_METHODS)
    if settings.precision not in PRECISIONS:
        raise unknown("prior-extractor precision", settings.precision, PRECISIONS)


def step_views(pairs: torch.Tensor, generator: torch.Generator, device: torch.device,
               layout: torch.memory_format) -> Iterator[torch.Tensor]:
    """The two views (B, 3, S, S) of a loader's (B, 2, 3, S, S) uint8 pairs, coloured on ``device``."""
    for view in pairs.to(device, non_blocking=True).unbind(dim=1):
        yield random_colours(view.float().div(255), generator, AUG_PLUS).contiguous(memory_format=layout)


def pretraining_model(settings: PaperPriorSettings, device: torch.device) -> tuple[GlobalLocalMoCo,
                                                                                 torch.optim.SGD]:
    """MoCo v2 with the patch queue around a ResNet-50 from random weights, on ``device`` (channels-last under
    bf16), and the query encoder's SGD at the batch-scaled learning rate."""
    model = GlobalLocalMoCo(ResNet50Backbone(None, output_stride=32), queue_size=settings.queue_size,
                            local_queue_size=settings.local_queue_size, momentum=settings.momentum,
                            temperature=settings.temperature, key_chunks=settings.key_chunks)
    layout = torch.channels_last if settings.precision == "bf16" else torch.contiguous_format
    model = model.to(device=device, memory_format=layout)
    base_lr = settings.lr * settings.batch_size / REFERENCE_BATCH
    optimizer = torch.optim.SGD(model.query_encoder.parameters(), lr=base_lr, momentum=0.9,
                                weight_decay=settings.weight_decay)
    return model, optimizer


def training_step(model: GlobalLocalMoCo, optimizer: torch.optim.Optimizer, pairs: dict[str, torch.Tensor],
                  losses: tuple[str, ...], colours: torch.Generator, bf16: bool) -> dict[str, torch.Tensor]:
    """One optimiser step on a loader's batch: ``pairs["global"]`` (B, 2, 3, S, S) and ``pairs["local"]`` (B, 2, 3,
    P, P) uint8, coloured on the model's device; returns each loss of ``losses`` (Eq. 1 global, Eq. 6 local), whose
    sum (Eq. 7) was minimised."""
    device = model.queue.device
    layout = torch.channels_last if bf16 else torch.contiguous_format
    model.update_key_encoder()
    terms = {}
    for name in losses:
        queries, keys = step_views(pairs[name], colours, device, layout)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            terms[name] = model.loss(queries, keys, local=name == "local", generator=colours)
    optimizer.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    optimizer.step()
    return terms


def train_paper_prior(out: str | Path, settings: PaperPriorSettings, progress: bool = True, command: str | None = None,
                      resume: bool = False) -> dict:
    """Pretrain QGNet's prior extractor with ``settings``; write ``out`` (a MoCo checkpoint) and ``out``'s
    ``.json``; return the metadata. Every ``checkpoint_every`` epochs the state goes to ``out.partial.pt``;
    ``resume=True`` continues from it to the same weights as an uninterrupted run (on the CPU); the file goes
    when the run ends. An epoch's losses stay on the device until it ends (no wait for the GPU per step)."""
    check_settings(settings)
    out = Path(out)
    partial = out.with_name(out.name + ".partial.pt")
    state = None
    if resume and partial.is_file():
        state = read_weights(partial, "The interrupted run's state", "delete it to start the run again.")
        changed = sorted(key for key, value in asdict(settings).items()
                         if key not in RESULT_FREE and state["settings"].get(key) != value)
        if changed:
            raise FsslibError(f"{partial} was written with other settings ({', '.join(changed)}).",
                              "resume with the settings it was started with, or delete it to start again.")
    elif resume:
        warnings.warn(f"No interrupted run to resume at {partial}: this run starts from its first epoch.", stacklevel=2)
    record = RunRecord(command or f"{CLI} --benchmark {settings.benchmark} --out {out}", settings.seed)
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    device = resolve_device(settings.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes, as MoCo sets it
    bf16 = settings.precision == "bf16"
    images, shown = benchmark_images(settings)
    epochs = epochs_of(settings)
    steps_per_epoch = len(images) // settings.batch_size  # drop_last, as MoCo's loader
    if not steps_per_epoch:
        raise DatasetNotFoundError(f"{len(images)} image(s) of {settings.benchmark} make no batch of "
                                   f"{settings.batch_size}.", f"pass --batch-size {max(1, len(images))} or less.")
    losses_used = LOSS_SETS[settings.losses]
    folder = superpixel_folder(settings)
    computed = cache_superpixels(images, shown, folder, settings.patches, settings.workers, progress) \
        if "local" in losses_used else 0
    dataset = PriorImages(images, shown, folder, settings)
    prepare_seconds = time.perf_counter() - start

    model, optimizer = pretraining_model(settings, device)
    base_lr = optimizer.defaults["lr"]
    curve: list[dict] = []
    first_epoch, earlier_seconds = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        curve, first_epoch, earlier_seconds = state["curve"], state["epoch"], state["seconds"]
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch, disable=not progress,
               desc=f"pretrain QGNet's prior extractor on {settings.benchmark} ({settings.losses})")
    loader = DataLoader(dataset, batch_sampler=EpochBatches(len(dataset), settings.batch_size, first_epoch, epochs),
                        num_workers=settings.workers, pin_memory=device.type == "cuda")
    sums: dict[str, torch.Tensor] = {}
    for step, (global_pairs, local_pairs) in enumerate(loader, start=first_epoch * steps_per_epoch):
        epoch, batch_index = divmod(step, steps_per_epoch)
        if batch_index == 0:
            epoch_start = time.perf_counter()
            lr = base_lr * cosine_between(1.0, 0.0, epoch / epochs)  # MoCo's --cos, set once per epoch
            for group in optimizer.param_groups:
                group["lr"] = lr
            sums = {name: torch.zeros((), device=device) for name in losses_used}  # on the device: no sync per step
        colours = torch.Generator().manual_seed(int(np.random.default_rng([settings.seed, COLOUR_STREAM, step])
                                                    .integers(2**62)))
        terms = training_step(model, optimizer, {"global": global_pairs, "local": local_pairs}, losses_used,
                              colours, bf16)
        for name, value in terms.items():
            sums[name] += value.detach()
        bar.update()
        if batch_index + 1 < steps_per_epoch:
            continue
        curve.append({"epoch": epoch + 1, "lr": lr, "seconds": round(time.perf_counter() - epoch_start, 2),
                      **{name: float(total) / steps_per_epoch for name, total in sums.items()}})
        if epoch + 1 < epochs and (epoch + 1) % settings.checkpoint_every == 0:  # the state for --resume
            save_checkpoint(partial, {
                "settings": asdict(settings), "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "curve": curve,
                "seconds": earlier_seconds + time.perf_counter() - start - prepare_seconds})
    bar.close()
    train_seconds = earlier_seconds + time.perf_counter() - start - prepare_seconds

    save_checkpoint(out, {"arch": MOCO_BACKBONE, "epoch": epochs, "state_dict": moco_state_dict(model)})
    metadata = {
        **record.stamp(device=device_name(device)),
        "model": "torchvision ResNet-50 (output stride 32 while pretrained; QGNet reads it dilated to stride 8): the "
                 "key encoder of MoCo v2 with QGNet's patch queue",
        "task": f"QGNet prior extractor, losses {settings.losses} (Eqs. 1, 6, 7), patches {settings.patches}",
        "settings": asdict(settings),
        "superpixels": {"method": settings.patches, "settings": PAPER_SUPERPIXELS[settings.patches],
                        "folder": str(folder), "computed_by_this_run": computed} if "local" in losses_used else None,
        "training_images": {"count": len(images), "benchmark": settings.benchmark, "images": settings.images},
        "epochs": epochs, "steps_per_epoch": steps_per_epoch, "base_lr": base_lr,
        "curve": curve,  # per epoch: the mean of each loss, the learning rate, the seconds
        "wall_time_s": {"prepare": round(prepare_seconds, 1), "train": round(train_seconds, 1)},
        "resumed_at_epoch": first_epoch or None,
        "checkpoint": {"file": out.name, "bytes": out.stat().st_size, "sha256": file_sha256(out), "dtype": "float32",
                       "format": "facebookresearch/moco main_moco.py's state_dict, plus the patch queue; no "
                                 "optimiser state",
                       "read_by": "QGNet's prior_extractor option; MoCo's main_lincls.py --pretrained"},
    }
    write_metadata(out, metadata)
    partial.unlink(missing_ok=True)
    return metadata

