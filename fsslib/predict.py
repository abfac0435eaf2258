"""Segment your own pictures with any fsslib method: ``python -m fsslib.predict`` and :func:`segment`.

    python -m fsslib.predict --method pfenet --ckpt zoo --query photo.jpg --support cat.jpg --support-mask cat.png --out DIR
    python -m fsslib.predict --method maskclip --query photo.jpg --class-name "red circle" --out DIR

The supports are given in whichever mode the method reads (:func:`fsslib.methods.support_inputs`): class
names (``--class-name``, one per way), support images (``--support``, K per way, the ways' in the order of
their names) and their masks (``--support-mask``, one per support image: a single-channel PNG, nonzero =
object, 255 = ignore; a mask of 0 and 255 only is read as black and white, 255 = object). Each query is
segmented at the model's input size (the tier's resize rule, as in evaluation) and its prediction resized
back to the query's own size; ``DIR`` gets, per query, a class-index mask ``<stem>_mask.png`` (0 =
background, n = way n) and an overlay ``<stem>_overlay.png``.

A class name outside the benchmark's classes is appended to the class list that text-reading methods encode
(``Config.extra_classes``); the toy tier's text towers know the toy world's words only and refuse others.
From Python: ``model, cfg = load(...)``, then ``segment(model, query, supports)``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from fsslib.config import Config, make_config, options_help, parse_option
from fsslib.data.benchmarks import benchmark_of, class_list
from fsslib.data.episodes import IGNORE, RESIZE_RULES, EpisodeInputs, check_support_masks, resize_pad
from fsslib.data.images import rgb_array
from fsslib.device import autocast, resolve_device
from fsslib.errors import CorruptImageError, DatasetNotFoundError, EpisodeShapeError, FsslibError, InvalidMaskError
from fsslib.methods import METHODS, method_options_type, support_inputs
from fsslib.methods.base import FewShotSegmenter
from fsslib.viz import WAY_COLOURS, plot_prediction

MAX_WAYS = len(WAY_COLOURS)  # ways segmented at once: a PASCAL-5i fold's classes, the overlay's colours
FLAGS = {"images": "support IMG", "masks": "support-mask MASK", "names": "class-name NAME"}  # each part's flag


@dataclass
class Supports:
    """The supports of one N-way K-shot episode, in the parts a method reads: ``class_names`` (N), ``images``
    (N lists of K (3, h, w) tensors in [0, 1], any sizes) and ``masks`` (N lists of K (h, w) tensors, 1 =
    object, 0 = background, 255 = ignore; the size of their image). Parts the method does not read may be empty."""

    class_names: list[str]
    images: list[list[torch.Tensor]] = field(default_factory=list)
    masks: list[list[torch.Tensor]] = field(default_factory=list)

    @property
    def ways(self) -> int:
        return len(self.class_names)

    @property
    def shots(self) -> int:
        return len(self.images[0]) if self.images else 1


def load(method: str, class_names: list[str], preset: str = "toy", ckpt: str | None = None, shots: int = 1,
         **overrides) -> tuple[FewShotSegmenter, Config]:
    """The model of ``method`` (trained ones from ``ckpt``: a path or ``"zoo"``) with ``class_names`` in its class
    list, and its configuration (for :func:`segment`)."""
    from fsslib.engine import load_model

    cfg = make_config(method=method, preset=preset, ckpt=ckpt, shots=shots, ways=max(1, len(class_names)),
                      extra_classes=list(class_names), **overrides)
    model = load_model(cfg, resolve_device(cfg.device))
    if model.reads_image_labels:
        raise FsslibError(f"This {method} model reads the classes in each query's label (a comparison setting of "
                          "its evaluation), which a picture of yours does not come with.",
                          "use the method's few-shot setting (for PI-CLIP: vtp_prompts='episode', the default).")
    model.fsslib_config = cfg  # what segment() resizes by
    return model, cfg


def class_ids(cfg: Config, names: list[str]) -> list[int]:
    """The ids (1-based) of ``names`` in the class list of ``cfg``'s model (its benchmark's, then the extra names)."""
    benchmark = benchmark_of(cfg)
    classes = class_list(benchmark, cfg.extra_classes)
    spelled = {name: index + 1 for index, name in enumerate(benchmark.class_names)}  # the benchmark's own spelling
    missing = [name for name in names if name not in classes and name not in spelled]
    if missing:
        raise FsslibError(f"Class name(s) {missing} are not in the model's class list.",
                          "build the model with them: predict.load(method, class_names=...) or extra_classes=[...].")
    return [spelled[name] if name in spelled else classes.index(name) + 1 for name in names]


@torch.no_grad()
def segment(model: FewShotSegmenter, query: torch.Tensor, supports: Supports,
            cfg: Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment one query (3, H, W) in [0, 1] of any size given ``supports``.

    Returns the prediction (H, W) long (0 = background, n = way n) and the class probabilities (1 + N, H, W),
    both at the query's own size. The model reads :class:`EpisodeInputs` only, as in evaluation. ``cfg``: the
    configuration the model was built with (its input size, resize rule and class list); a model from
    :func:`load` carries it.
    """
    cfg = cfg if cfg is not None else getattr(model, "fsslib_config", None)
    if cfg is None:
        raise FsslibError("segment() needs the model's configuration (its input size, resize rule and class list).",
                          "load the model with fsslib.predict.load, or pass cfg=the Config it was built with.")
    check_supports(cfg, query, supports)
    model.eval()
    device = next((p.device for p in model.parameters()), resolve_device(cfg.device))
    size = cfg.image_size
    height, width = query.shape[-2:]
    query_resize = RESIZE_RULES[cfg.resize]
    query_input, _ = query_resize(query.float(), torch.zeros(height, width), size)  # (3, S, S)
    support_resize = resize_pad if cfg.resize == "short_side" else query_resize  # as the evaluation's supports
    images, masks = support_tensors(supports, support_resize, size)
    inputs = EpisodeInputs(support_images=images[None], support_masks=masks[None], query_images=query_input[None],
                           class_ids=torch.tensor([class_ids(cfg, supports.class_names)]),
                           class_names=[list(supports.class_names)])
    with autocast(device, cfg.amp):
        logits = model(inputs.to(device)).float()  # (1, 1 + N, S', S')
    logits = F.interpolate(logits, size=query_input.shape[-2:], mode="bilinear", align_corners=True)
    if cfg.resize == "pad":  # the query fills the top-left corner of the padded square
        scale = size / max(height, width)
        logits = logits[..., :max(1, round(height * scale)), :max(1, round(width * scale))]
    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=True)[0]  # (1 + N, H, W)
    return logits.argmax(0).cpu(), logits.softmax(0).cpu()


def check_supports(cfg: Config, query: torch.Tensor, supports: Supports) -> None:
    """Raise a clear error unless ``supports`` brings what the method reads, consistently, and the query and
    every support image are (3, H, W) and every mask (H, W)."""
    check_pictures(query, supports)
    reads = support_inputs(cfg.method, cfg.variant)
    given = [part for part, present in (("names", bool(supports.class_names)), ("images", bool(supports.images)),
                                        ("masks", bool(supports.masks))) if present]
    missing = [part for part in reads if part not in given and part != "names"]
    if missing or not supports.class_names:
        raise FsslibError(
            f"{cfg.method} reads the supports' {' + '.join(reads) or 'nothing'}; given: {' + '.join(given) or 'nothing'}.",
            f"give {', '.join(f'--{FLAGS[part]}' for part in reads) or 'only --query and a --class-name per way'} "
            "(a class name names each way in the output even where the method does not read it).")
    if supports.images and len(supports.images) != supports.ways:
        raise EpisodeShapeError(f"{len(supports.images)} ways of support images for {supports.ways} class name(s).",
                                "give the same number of support images for every class name, in the names' order.")
    for way, (images, masks) in enumerate(zip(supports.images, supports.masks or [[]] * supports.ways), start=1):
        if "masks" in reads and len(masks) != len(images):
            raise EpisodeShapeError(f"Way {way} has {len(images)} support image(s) but {len(masks)} mask(s).",
                                    "give one --support-mask after each --support.")
        for image, mask in zip(images, masks):
            if tuple(mask.shape) != tuple(image.shape[-2:]):
                raise InvalidMaskError(f"A support mask of way {way} is {tuple(mask.shape)} but its image is "
                                       f"{tuple(image.shape[-2:])}.", "give each support image a mask of its own size.")
    if len({len(images) for images in supports.images}) > 1:
        raise EpisodeShapeError("The ways have different numbers of support images.",
                                "give every way the same number of shots K.")


def check_pictures(query: torch.Tensor, supports: Supports) -> None:
    """Raise a clear error unless the query and every support image are (3, H, W) and every mask (H, W)."""
    pictures = [("the query", query)] + [(f"support image {shot + 1} of way {way + 1}", image)
                                         for way, images in enumerate(supports.images) for shot, image in enumerate(images)]
    for what, picture in pictures:
        if picture.dim() != 3 or picture.shape[0] != 3:
            raise EpisodeShapeError(f"{what.capitalize()} has shape {tuple(picture.shape)}, not (3, H, W).",
                                    "pass RGB tensors in [0, 1] as read_image returns them (channels first).")
    if supports.masks and len(supports.masks) != len(supports.images):
        raise EpisodeShapeError(f"Masks for {len(supports.masks)} way(s), images for {len(supports.images)}.",
                                "give one list of masks per way, one mask per support image.")
    for way, masks in enumerate(supports.masks, start=1):
        if any(mask.dim() != 2 for mask in masks):
            raise EpisodeShapeError(f"A support mask of way {way} is not (H, W).", "pass single-channel masks.")


def support_tensors(supports: Supports, resize, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, 3, S, S) support images and (N, K, S, S) masks at the model's size; a part the method does not read
    is filled with a neutral value (grey images, whole-image masks)."""
    ways, shots = supports.ways, supports.shots
    images = torch.full((ways, shots, 3, size, size), 0.5)
    masks = torch.ones(ways, shots, size, size, dtype=torch.long)
    for way, way_images in enumerate(supports.images):
        for shot, image in enumerate(way_images):
            mask = supports.masks[way][shot] if supports.masks else torch.ones(image.shape[-2:], dtype=torch.long)
            images[way, shot], masks[way, shot] = resize(image.float(), mask.float(), size)
    if supports.masks:
        check_support_masks(masks)
    return images, masks


# --------------------------------------------------------------------------- files


def read_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) in [0, 1] from any image file PIL reads (RGB, grayscale, RGBA composited on white, palette,
    16-bit)."""
    with _open(path) as handle:
        return torch.from_numpy(rgb_array(handle).copy()).permute(2, 0, 1).float().div(255)


def read_mask(path: str | Path) -> torch.Tensor:
    """(H, W) long: 1 where the single-channel mask is nonzero, 255 where it is 255 (ignore), else 0; 8- or
    16-bit, palette indices as values, grey + alpha read from the grey. A mask of 0 and 255 only is a
    black-and-white mask: 255 is then the object. An RGB mask must be grey (its channels equal)."""
    with _open(path) as handle:
        array = np.asarray(handle)
    if array.ndim == 3:
        channels = array[..., :3] if array.shape[2] >= 3 else array[..., :1]  # grey + alpha: the grey
        if not (channels == channels[..., :1]).all():
            raise InvalidMaskError(f"Mask {path} is a colour image.",
                                   "save masks as single-channel PNGs: nonzero = object, 255 = ignore.")
        array = channels[..., 0]
    array = array.astype(np.int64)
    if set(np.unique(array).tolist()) == {0, IGNORE}:  # black and white: white is the object
        return torch.from_numpy((array == IGNORE).astype(np.int64))
    mask = (array != 0).astype(np.int64)
    mask[array == IGNORE] = IGNORE
    return torch.from_numpy(mask)


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"No image file {path}.", "check the path (relative to the current folder).")
    try:
        handle = Image.open(path)
        handle.load()
        return handle
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise CorruptImageError(f"Cannot read {path} as an image: {error}.", "pass a PNG or JPEG file.") from None


def write_outputs(out: Path, stem: str, query: torch.Tensor, prediction: torch.Tensor, class_names: list[str],
                  title: str) -> tuple[Path, Path]:
    """``<stem>_mask.png`` (single-channel class indices) and ``<stem>_overlay.png`` under ``out``."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
    Image.fromarray(prediction.numpy().astype(np.uint8)).save(mask_path)
    figure = plot_prediction(query, prediction, class_names, title)
    figure.savefig(overlay_path, dpi=100)
    plt.close(figure)
    return mask_path, overlay_path


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fsslib.predict", description=__doc__, epilog=options_help(argv),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, choices=list(METHODS))
    parser.add_argument("--variant", default="")
    parser.add_argument("--query", action="append", required=True, metavar="IMG", help="a query image (repeatable)")
    parser.add_argument("--class-name", action="append", default=[], metavar="NAME", help="one per way (repeatable)")
    parser.add_argument("--support", action="append", default=[], metavar="IMG",
                        help="a support image (repeatable: K per way, the ways in the order of --class-name)")
    parser.add_argument("--support-mask", action="append", default=[], metavar="MASK",
                        help="the mask of the preceding --support (nonzero = object, 255 = ignore)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the masks and overlays")
    parser.add_argument("--preset", default="toy", choices=("toy", "paper"))
    parser.add_argument("--ckpt", default=None, help="trained methods: a checkpoint path, or zoo (the shipped toy model)")
    parser.add_argument("--fold", type=int, default=0, help="which fold's zoo model (its novel classes were unseen)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--options", action="append", default=None, metavar="KEY=VALUE", help="method option, as in train")
    parser.add_argument("--backbone-weights", default=None,
                        help="paper tier: a local backbone weight file (PFENet's family: resnet50_v2.pth; "
                             "docs/paper_tier.md, 'Weights')")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        written = run(args)
    except FsslibError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for query, (mask, overlay) in written.items():
        print(f"{query}: mask {mask}, overlay {overlay}")
    return 0


def run(args: argparse.Namespace) -> dict[str, tuple[Path, Path]]:
    """Read the files, build the model, segment every query and write its outputs."""
    names = args.class_name or []
    if not names:  # a name per way labels the output; without names, supports define one way
        names = ["object"] if args.support else []
    if not names:
        raise FsslibError("No class name and no support image: nothing says what to segment.",
                          "give --class-name NAME, or --support IMG (--support-mask MASK), or both.")
    ways = len(names)
    if any(not name.strip() for name in names):
        raise FsslibError("An empty --class-name names nothing.", "give each way a class name, e.g. --class-name cat.")
    if args.out.exists() and not args.out.is_dir():
        raise FsslibError(f"--out {args.out} is a file.", "pass a folder (it is created if missing).")
    stems = [Path(path).stem for path in args.query]
    if len(set(stems)) < len(stems):
        raise FsslibError(f"Queries share a file name {sorted(s for s in set(stems) if stems.count(s) > 1)}: their "
                          "outputs would overwrite each other.", "segment them into different --out folders.")
    if ways > MAX_WAYS:
        raise EpisodeShapeError(f"{ways} ways asked; fsslib segments at most {MAX_WAYS} at a time (a PASCAL-5i fold's "
                                "classes, the overlay's colours).", f"split the class names into groups of {MAX_WAYS}.")
    if args.support and len(args.support) % ways:
        raise EpisodeShapeError(f"{len(args.support)} support image(s) cannot be split evenly over {ways} way(s).",
                                "give K support images per --class-name, in the names' order.")
    if args.support_mask and len(args.support_mask) != len(args.support):
        raise EpisodeShapeError(f"{len(args.support)} support image(s) but {len(args.support_mask)} mask(s).",
                                "give one --support-mask after each --support.")
    reads = support_inputs(args.method, args.variant)
    if "names" in reads and not args.class_name:
        raise FsslibError(f"{args.method} reads the class name of each way.", "give --class-name NAME for each way.")
    shots = max(1, len(args.support) // ways)
    queries = [read_image(path) for path in args.query]  # every file is read before any model is built
    images = [read_image(path) for path in args.support]
    masks = [read_mask(path) for path in args.support_mask]
    supports = Supports(class_names=names,
                        images=[images[way * shots:(way + 1) * shots] for way in range(ways)] if images else [],
                        masks=[masks[way * shots:(way + 1) * shots] for way in range(ways)] if masks else [])
    kind = method_options_type(args.method)
    options = dict(parse_option(item, kind) for item in args.options) if args.options else None
    model, cfg = load(args.method, names, preset=args.preset, ckpt=args.ckpt, shots=shots, variant=args.variant,
                      fold=args.fold, device=args.device, options=options, backbone_weights=args.backbone_weights)
    written = {}
    for path, query in zip(args.query, queries):
        prediction, _ = segment(model, query, supports)
        title = f"{cfg.method} ({cfg.preset} tier) · {', '.join(names)} · supports: {' + '.join(reads) or 'none'}"
        written[path] = write_outputs(args.out, Path(path).stem, query, prediction, names, title)
    return written


if __name__ == "__main__":
    sys.exit(main())
