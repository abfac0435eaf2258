"""Segment your own pictures with any fsslib method: ``python -m fsslib.predict`` and :func:`segment`.

    python -m fsslib.predict --method pfenet --ckpt zoo --query photo.jpg --support cat.jpg --support-mask cat.png --out DIR
    python -m fsslib.predict --method maskclip --query scene.png --class-name "striped star" --out DIR
    python -m fsslib.predict --method maskclip --preset paper --query photo.jpg --class-name cat --out DIR

The first two run on the toy tier, whose text tower knows the toy world's words only; the third reads CLIP's
weights, fetched once with ``python -m fsslib.fetch weights --method maskclip`` (docs/your_data.md).

The supports are given in whichever mode the method reads (:func:`fsslib.methods.support_inputs`): class
names (``--class-name``, one per way), support images (``--support``, K per way, the ways' in the order of
their names) and their masks (``--support-mask``, one per support image: a single-channel PNG label image,
nonzero = object, 255 = ignore; a mask of 0 and 255 only is read as black and white, 255 = object; a JPEG mask,
or one holding the values its compression noise or smoothed edges leave, is refused). Supports the method does
not read, a checkpoint for a training-free method, a class name given twice (names compare without case and
spacing) and pictures holding NaN or infinite values are refused. Pictures and masks are read as a viewer shows
them (EXIF orientation applied). Each query is segmented at the model's input size
(the tier's resize rule, as in evaluation) and its prediction resized back to the query's own size as shown;
``DIR`` gets, per query, a class-index mask ``<stem>_mask.png`` (0 = background, n = way n) and an overlay
``<stem>_overlay.png``, each written atomically: runs writing the same names into one folder leave whole files,
each the last run's (the mask and the overlay of one query may come from different runs). Every argument, option
and file is checked, and whether ``DIR`` can be created, before any model is built (it is created once a prediction
is written). A checkpoint that cannot serve the request (a training-free method's, another shot count's) is refused
once it is read.

A class name outside the benchmark's classes is appended to the class list that text-reading methods encode
(``Config.extra_classes``); the toy tier's text towers know the toy world's words only and refuse others. A model
trained on a dataset folder is given its benchmark as in training (``--benchmark folder:PATH``, with
``--novel-classes`` when the folder has no ``folds.json``); BAM's family then reads the folder's base learner.
From Python: ``model, cfg = load(...)``, then ``segment(model, query, supports)``, the pictures as PIL images, numpy
arrays or tensors, uint8 or float in [0, 1] (:func:`as_picture`).
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from fsslib.config import Config, make_config, options_help, parse_option
from fsslib.data.benchmarks import benchmark_of, class_list, id_or_name, split_list
from fsslib.data.episodes import IGNORE, RESIZE_RULES, EpisodeInputs, resize_pad
from fsslib.data.folder import class_key
from fsslib.data.images import SAVE_MASK, label_problem, lossy_format, nonfinite_pixels, rgb_array, upright
from fsslib.device import autocast, resolve_device
from fsslib.errors import (CheckpointError, CorruptImageError, DatasetNotFoundError, EmptySupportMaskError,
                           EpisodeShapeError, FsslibError, InvalidMaskError, check_output_folder)
from fsslib.methods import METHODS, builds_backbone, check_shots, method_options_type, method_variants, support_inputs
from fsslib.methods.base import FewShotSegmenter
from fsslib.methods.options import BaseLearnerOptions
from fsslib.paths import atomic_path, save_figure, shown_path
from fsslib.viz import WAY_COLOURS, plot_prediction
from fsslib.zoo import names_zoo

MAX_WAYS = len(WAY_COLOURS)  # ways segmented at once: a PASCAL-5i fold's classes, the overlay's colours
FLAGS = {"images": "support IMG", "masks": "support-mask MASK", "names": "class-name NAME"}  # each part's flag


@dataclass
class Supports:
    """The supports of one N-way K-shot episode, in the parts a method reads: ``class_names`` (N, distinct),
    ``images`` (N lists of K pictures, any sizes: (3, h, w) tensors in [0, 1], or what :func:`as_picture` reads)
    and ``masks`` (N lists of K masks of their image's size: (h, w) tensors, 1 = object, 0 = background, 255 =
    ignore, or what :func:`as_mask` reads). Parts the method does not read stay empty."""

    class_names: list[str]
    images: list[list[torch.Tensor]] = field(default_factory=list)
    masks: list[list[torch.Tensor]] = field(default_factory=list)

    @property
    def ways(self) -> int:
        return len(self.class_names)

    @property
    def shots(self) -> int:
        return len(self.images[0]) if self.images else 1


def configure(method: str, class_names: list[str], preset: str = "toy", ckpt: str | None = None, shots: int = 1,
              **overrides) -> Config:
    """The configuration of ``method`` with ``class_names`` in its class list (options and fold checked, nothing
    built)."""
    cfg = make_config(method=method, preset=preset, ckpt=ckpt, shots=shots, ways=max(1, len(class_names)),
                      extra_classes=name_list(class_names), **overrides)
    benchmark_of(cfg).fold_classes(cfg.fold)  # a fold the benchmark does not have is refused here, with its folds
    return cfg


def build(cfg: Config) -> FewShotSegmenter:
    """The model of ``cfg`` (from :func:`configure`), trained ones with their checkpoint; a checkpoint given to a
    training-free method is refused, not ignored."""
    from fsslib.engine import load_model

    model = load_model(cfg, resolve_device(cfg.device))
    if cfg.ckpt is not None and not model.trainable:
        raise CheckpointError(f"{cfg.method} is training-free: it loads no checkpoint, so --ckpt {cfg.ckpt} would be "
                              "ignored.", "drop --ckpt (ckpt=None from Python).")
    if model.reads_image_labels:
        raise FsslibError(f"This {cfg.method} model reads the classes in each query's label (a comparison setting of "
                          "its evaluation), which a picture of yours does not come with.",
                          "use the method's few-shot setting (for PI-CLIP: vtp_prompts='episode', the default).")
    model.fsslib_config = cfg  # what segment() resizes by
    return model


def load(method: str, class_names: list[str], preset: str = "toy", ckpt: str | None = None, shots: int = 1,
         **overrides) -> tuple[FewShotSegmenter, Config]:
    """The model of ``method`` (trained ones from ``ckpt``: a path or ``"zoo"``) with ``class_names`` in its class
    list, and its configuration (for :func:`segment`)."""
    cfg = configure(method, class_names, preset=preset, ckpt=ckpt, shots=shots, **overrides)
    return build(cfg), cfg


def name_list(names: list[str]) -> list[str]:
    """``names`` as a list of names with their spaces trimmed; one string (whose letters would each be a class), a
    name without a letter or digit, and names that are one class (:func:`~fsslib.data.folder.class_key`: the same
    but for case and spacing) are refused."""
    if isinstance(names, str):
        raise EpisodeShapeError(f"The class names are one string, {names!r}: each letter would be a class.",
                                f"pass a list of names, e.g. [{names!r}].")
    names = list(names)
    unnamed = [name for name in names if not isinstance(name, str) or not any(c.isalnum() for c in name)]
    if unnamed:
        raise EpisodeShapeError(f"Class name(s) {unnamed} hold no letter or digit: they name nothing.",
                                "give each way a class name, e.g. --class-name cat (class_names=['cat'] from Python).")
    keys = [class_key(name) for name in names]
    repeated = sorted({name.strip() for name, key in zip(names, keys) if keys.count(key) > 1})
    if repeated:
        raise EpisodeShapeError(f"Class name(s) {repeated} are given more than once (names compare without case and "
                                "spacing): each way is one class.", "give each class name once; more pictures of a "
                                "class are more shots (K --support per --class-name).")
    return [name.strip() for name in names]


def class_ids(cfg: Config, names: list[str]) -> list[int]:
    """The ids (1-based) of ``names`` in the class list of ``cfg``'s model (its benchmark's, then the extra names),
    names compared as :func:`~fsslib.data.folder.class_key` compares them."""
    benchmark = benchmark_of(cfg)
    ids = {class_key(name): index + 1 for index, name in enumerate(class_list(benchmark, cfg.extra_classes))}
    ids.update({class_key(name): index + 1 for index, name in enumerate(benchmark.class_names)})  # its own spelling
    missing = [name for name in names if class_key(name) not in ids]
    if missing:
        raise FsslibError(f"Class name(s) {missing} are not in the model's class list.",
                          "build the model with them: predict.load(method, class_names=...) or extra_classes=[...].")
    return [ids[class_key(name)] for name in names]


@torch.no_grad()
def segment(model: FewShotSegmenter, query: Picture, supports: Supports,
            cfg: Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment one query of any size given ``supports``.

    The query and the support pictures may be PIL images (read as a viewer shows them), numpy arrays (H, W, 3)
    or (H, W), or tensors (3, H, W), each uint8 (0..255) or float in [0, 1]; masks PIL images, arrays or tensors
    (H, W), read by the rule of mask files (:func:`read_mask`). Returns the prediction (H, W) long (0 =
    background, n = way n) and the class probabilities (1 + N, H, W), both at the query's own size. The model
    reads :class:`EpisodeInputs` only, as in evaluation. ``cfg``: the configuration the model was built with (its
    input size, resize rule and class list); a model from :func:`load` carries it.
    """
    cfg = cfg if cfg is not None else getattr(model, "fsslib_config", None)
    if cfg is None:
        raise FsslibError("segment() needs the model's configuration (its input size, resize rule and class list).",
                          "load the model with fsslib.predict.load, or pass cfg=the Config it was built with.")
    query = as_picture(query, "the query")
    supports = as_supports(supports)
    check_supports(cfg, supports)
    check_shots(cfg.method, cfg.variant, cfg.shots, supports.shots, f"This {cfg.method} model")
    images, masks = support_tensors(supports, cfg)
    model.eval()
    device = next((p.device for p in model.parameters()), resolve_device(cfg.device))
    size = cfg.image_size
    height, width = query.shape[-2:]
    query_input, _ = RESIZE_RULES[cfg.resize](query, torch.zeros(height, width), size)  # (3, S, S)
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


def check_supports(cfg: Config, supports: Supports, named: bool = True) -> None:
    """Raise a clear error unless ``supports`` (of :func:`as_supports`) brings what the method reads and nothing
    it would ignore, consistently: a class name per way (:func:`name_list` makes them distinct), K images per way, a
    mask per image of its size.
    ``named``: the class names are the user's (the command line names an unnamed way "object" itself)."""
    reads = support_inputs(cfg.method, cfg.variant, cfg.options)
    given = [part for part, present in (("names", named and bool(supports.class_names)), ("images", bool(supports.images)),
                                        ("masks", bool(supports.masks))) if present]
    missing = [part for part in reads if part not in given and part != "names"]
    if missing or not supports.class_names:
        raise FsslibError(
            f"{cfg.method}{setting(cfg)} reads the supports' {' + '.join(reads) or 'nothing'}; given: "
            f"{' + '.join(given) or 'nothing'}.",
            f"give {', '.join(f'--{FLAGS[part]}' for part in reads) or 'only --query and a --class-name per way'} "
            "(a class name names each way in the output even where the method does not read it).")
    unread = [part for part in given if part not in reads and part != "names"]
    if unread:
        variants = [v for v in method_variants(cfg.method) if set(unread) <= set(support_inputs(cfg.method, v))]
        raise FsslibError(f"{cfg.method}{setting(cfg)} does not read the supports' {' + '.join(unread)}: they would "
                          "be ignored.", f"drop {' and '.join('--' + FLAGS[part].split()[0] for part in unread)}"
                          + (f", or use --variant {variants[0]}, which reads them." if variants else "."))
    if supports.images and len(supports.images) != supports.ways:
        raise EpisodeShapeError(f"{len(supports.images)} ways of support images for {supports.ways} class name(s).",
                                "give the same number of support images for every class name, in the names' order.")
    if supports.masks and len(supports.masks) != len(supports.images):
        raise EpisodeShapeError(f"Masks for {len(supports.masks)} way(s), images for {len(supports.images)}.",
                                "give one list of masks per way, one mask per support image.")
    for way, (images, masks) in enumerate(zip(supports.images, supports.masks or [[]] * supports.ways), start=1):
        if "masks" in reads and len(masks) != len(images):
            raise EpisodeShapeError(f"Way {way} has {len(images)} support image(s) but {len(masks)} mask(s).",
                                    "give one --support-mask after each --support.")
        for image, mask in zip(images, masks):
            if tuple(mask.shape) != tuple(image.shape[-2:]):
                raise InvalidMaskError(f"A support mask of way {way} is {tuple(mask.shape)} but its image is "
                                       f"{tuple(image.shape[-2:])} (as shown, EXIF orientation applied).",
                                       "give each support image a mask of its own size as shown.")
    if len({len(images) for images in supports.images}) > 1:
        raise EpisodeShapeError("The ways have different numbers of support images.",
                                "give every way the same number of shots K.")


def setting(cfg: Config) -> str:
    """`` (variant V)`` / `` (prompts=P)``: what, beside the method, decides what the supports bring."""
    prompts = cfg.options.get("prompts")
    return (f" (variant {cfg.variant})" if cfg.variant else "") + (f" (prompts={prompts})" if prompts else "")


def support_tensors(supports: Supports, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, 3, S, S) support images and (N, K, S, S) masks at the model's size (resized as the evaluation's
    supports); a part the method does not read is filled with a neutral value (grey images, whole-image masks).
    A mask without an object, or whose object vanishes at the model's size, is refused, naming which."""
    ways, shots, size = supports.ways, supports.shots, cfg.image_size
    resize = resize_pad if cfg.resize == "short_side" else RESIZE_RULES[cfg.resize]
    images = torch.full((ways, shots, 3, size, size), 0.5)
    masks = torch.ones(ways, shots, size, size, dtype=torch.long)
    for way, way_images in enumerate(supports.images):
        for shot, image in enumerate(way_images):
            mask = supports.masks[way][shot] if supports.masks else torch.ones(image.shape[-2:], dtype=torch.long)
            where, shown = f"support mask {shot + 1} of way {way + 1}", f"{mask.shape[1]} x {mask.shape[0]}"
            if not (mask == 1).any():
                ignore = " and ignore (255)" if (mask == IGNORE).any() else ""
                raise EmptySupportMaskError(f"The {where} ({shown}) marks no object pixel: it is background (0){ignore} "
                                            "everywhere.", "mark the object: 1 (or any value up to 254) on 0, or white "
                                            "(255) on black in a black-and-white mask; 255 beside other values means ignore.")
            images[way, shot], masks[way, shot] = resize(image, mask.float(), size)
            if not (masks[way, shot] == 1).any():
                scale = size / max(mask.shape)
                rows, columns = (mask == 1).nonzero().T
                extent = f"{int(columns.max() - columns.min()) + 1} x {int(rows.max() - rows.min()) + 1}"
                raise EmptySupportMaskError(
                    f"The object of the {where} ({int((mask == 1).sum())} pixel(s) within {extent} of its {shown}) "
                    f"vanishes at the model's input size ({size} x {size}: the picture is scaled by {scale:.3g}).",
                    "crop the support image and its mask around the object, or mark a larger object: it needs about "
                    f"{math.ceil(1 / scale)} x {math.ceil(1 / scale)} pixels or more at this size.")
    return images, masks


# --------------------------------------------------------------------------- what a user holds


Picture = Union[torch.Tensor, np.ndarray, Image.Image]  # a picture or mask as a user holds it
ROUNDING = 1e-3  # how far outside [0, 1] a float picture may stray by rounding (e.g. after interpolation)
INVERTED_SHARE = 0.9  # a black-and-white mask whose object covers more of the picture and of its border: inverted?


def as_picture(picture: Picture, what: str) -> torch.Tensor:
    """(3, H, W) float in [0, 1] of a PIL image (as a viewer shows it), a numpy array (H, W, 3) or (H, W) or a
    tensor (3, H, W), uint8 (0..255) or float in [0, 1] (16-bit arrays: 0..65535); anything else is refused."""
    if isinstance(picture, Image.Image):
        bad = nonfinite_pixels(picture)
        if bad:
            raise_nonfinite(bad, picture.width * picture.height, what)
        return torch.from_numpy(rgb_array(picture).copy()).permute(2, 0, 1).float().div(255)
    if isinstance(picture, np.ndarray):
        if picture.ndim not in (2, 3) or (picture.ndim == 3 and picture.shape[2] != 3):
            raise EpisodeShapeError(f"{what.capitalize()} is an array of shape {picture.shape}, not (H, W, 3) or (H, W).",
                                    "pass the RGB picture, e.g. np.asarray(PIL.Image.open(path).convert('RGB')).")
        channels_last = picture if picture.ndim == 3 else np.repeat(picture[..., None], 3, axis=2)
        if picture.dtype == np.uint16:
            channels_last = channels_last.astype(np.float32) / 65535
        picture = torch.from_numpy(np.ascontiguousarray(channels_last)).permute(2, 0, 1)
    if not isinstance(picture, torch.Tensor):
        raise EpisodeShapeError(f"{what.capitalize()} is a {type(picture).__name__}, not a picture.",
                                "pass a PIL image, a numpy array or a tensor, e.g. predict.read_image('photo.jpg').")
    picture = picture.detach().cpu()
    if picture.dim() != 3 or picture.shape[0] != 3:
        raise EpisodeShapeError(f"{what.capitalize()} has shape {tuple(picture.shape)}, not (3, H, W).",
                                "pass RGB tensors in [0, 1] as read_image returns them (channels first: "
                                "picture.permute(2, 0, 1) turns an (H, W, 3) one).")
    if not picture.shape[1] or not picture.shape[2]:
        raise EpisodeShapeError(f"{what.capitalize()} has no pixels (shape {tuple(picture.shape)}).",
                                "pass a picture of at least 1 x 1 pixels, e.g. predict.read_image('photo.jpg').")
    if picture.dtype == torch.uint8:
        return picture.float().div(255)
    if not picture.is_floating_point():
        raise EpisodeShapeError(f"{what.capitalize()} holds {picture.dtype} values: neither uint8 (0..255) nor floats "
                                "in [0, 1].", "pass picture.to(torch.uint8) for values 0..255, or floats in [0, 1].")
    check_finite(picture, what)
    low, high = float(picture.min()), float(picture.max())
    if low < -ROUNDING or high > 1 + ROUNDING:
        raise EpisodeShapeError(
            f"{what.capitalize()} holds values from {low:.3g} to {high:.3g}, outside [0, 1] ("
            f"{'values 0..255 as floats?' if high > 1 else 'normalised with a mean and std?'}).",
            "pass the picture as uint8 (picture.to(torch.uint8)) or as floats in [0, 1] (picture / 255); fsslib "
            "normalises it itself.")
    return picture.float().clamp(0, 1)


def check_finite(values: torch.Tensor, what: str) -> None:
    """Raise unless every value of the float picture ``values`` is a number (no NaN, no infinity)."""
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise_nonfinite(bad, values.numel(), what)


def raise_nonfinite(bad: int, total: int, what: str) -> None:
    raise EpisodeShapeError(f"{what.capitalize()} holds {bad} NaN or infinite value(s) of {total}: the model cannot "
                            "read them.", "replace them first (torch.nan_to_num(picture, nan=0.0, posinf=1.0, "
                            "neginf=0.0)), or save the picture as an 8-bit PNG or JPEG.")


def as_mask(mask: Picture, what: str) -> torch.Tensor:
    """(H, W) long, 1 = object, 0 = background, 255 = ignore, of a mask as a user holds it (a PIL image as a viewer
    shows it, a numpy array or a tensor; single-channel, or grey in RGB): nonzero = object, 255 = ignore, and a mask
    of 0 and 255 only is black and white (255 = object). A lossy file or noise-like values are refused."""
    lossy = None
    if isinstance(mask, Image.Image):
        lossy, mask = lossy_format(mask), np.asarray(upright(mask))
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise EpisodeShapeError(f"{what.capitalize()} is a {type(mask).__name__}, not a mask.",
                                "pass a PIL image, a numpy array or a tensor (H, W), e.g. predict.read_mask('mask.png').")
    if mask.ndim == 3:
        channels = mask[..., :3] if mask.shape[2] >= 3 else mask[..., :1]  # grey + alpha: the grey
        if not (channels == channels[..., :1]).all():
            raise InvalidMaskError(f"{what.capitalize()} is a colour image.",
                                   "save masks as single-channel PNGs: nonzero = object, 255 = ignore (from a "
                                   "drawing in colour on black: `python -c \"from PIL import Image; "
                                   "Image.open('m.png').convert('L').point(lambda v: int(v > 0)).save('m.png')\"`).")
        mask = channels[..., 0]
    if mask.ndim != 2:
        raise EpisodeShapeError(f"{what.capitalize()} has shape {mask.shape}, not (H, W).", "pass single-channel masks.")
    values = np.unique(mask)
    if values.size and (values.min() < 0 or not np.array_equal(values, np.round(values))):
        raise InvalidMaskError(f"{what.capitalize()} holds values {values[:5].tolist()}...: not labels (0, 1, ..., 255).",
                               "threshold a soft mask into labels first, e.g. (mask > 0.5).astype('uint8').")
    problem = label_problem(values, lossy)
    if problem:
        raise InvalidMaskError(f"{what.capitalize()} {problem}: it is not a label image.", SAVE_MASK)
    labels = mask.astype(np.int64)
    if set(values.tolist()) <= {0, IGNORE}:  # black and white: white is the object
        white = labels == IGNORE
        border = np.concatenate([white[0], white[-1], white[:, 0], white[:, -1]])
        if white.mean() > INVERTED_SHARE and border.mean() > INVERTED_SHARE:
            warnings.warn(f"{what.capitalize()} marks {white.mean():.0%} of the picture as the object, its whole border "
                          "included: white is the object in a black-and-white mask. If the object is drawn black on "
                          "white, invert the mask (255 - mask).", stacklevel=2)
        return torch.from_numpy(white.astype(np.int64))
    binary = (labels != 0).astype(np.int64)
    binary[labels == IGNORE] = IGNORE
    return torch.from_numpy(binary)


def as_supports(supports: Supports) -> Supports:
    """``supports`` with every picture and mask as :func:`as_picture` and :func:`as_mask` read them; names, images
    and masks nested otherwise than a list of names and N lists of K are refused."""
    if not isinstance(supports, Supports):
        raise EpisodeShapeError(f"The supports are a {type(supports).__name__}, not predict.Supports.",
                                "pass predict.Supports(class_names, images, masks), e.g. Supports(['cat'], [[image]], "
                                "[[mask]]) for one way of one shot.")
    for part in ("images", "masks"):
        if not all(isinstance(way, (list, tuple)) for way in getattr(supports, part)):
            raise EpisodeShapeError(f"The support {part} are not a list per way.",
                                    f"pass N lists of K {part}, e.g. Supports(['cat'], [[image]], [[mask]]) for one way "
                                    "of one shot.")
    return Supports(name_list(supports.class_names),
                    [[as_picture(image, f"support image {shot + 1} of way {way + 1}") for shot, image in enumerate(images)]
                     for way, images in enumerate(supports.images)],
                    [[as_mask(mask, f"support mask {shot + 1} of way {way + 1}") for shot, mask in enumerate(masks)]
                     for way, masks in enumerate(supports.masks)])


# --------------------------------------------------------------------------- files


def read_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) in [0, 1] from any image file PIL reads, as a viewer shows it (EXIF orientation applied; RGB,
    grayscale, RGBA composited on white, palette, 16-bit)."""
    with _open(path) as handle:
        return as_picture(handle, f"image {path}")


def read_mask(path: str | Path) -> torch.Tensor:
    """(H, W) long: 1 where the single-channel mask is nonzero, 255 where it is 255 (ignore), else 0; 8- or
    16-bit, palette indices as values, grey + alpha read from the grey, as a viewer shows it. A mask of 0 and 255
    only is a black-and-white mask: 255 is then the object. An RGB mask must be grey (its channels equal); a JPEG
    (lossy) mask, or one holding the values compression noise or smoothed edges leave, is refused."""
    with _open(path) as handle:
        return as_mask(handle, f"mask {path}")


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
    """``<stem>_mask.png`` (single-channel class indices) and ``<stem>_overlay.png`` under ``out``, each written
    atomically (:func:`fsslib.paths.atomic_path`): runs writing the same names leave whole files, the last run's."""
    import matplotlib.pyplot as plt

    mask_path, overlay_path = out / f"{stem}_mask.png", out / f"{stem}_overlay.png"
    with atomic_path(mask_path) as temporary:
        Image.fromarray(prediction.numpy().astype(np.uint8)).save(temporary)
    figure = plot_prediction(query, prediction, class_names, title)
    save_figure(figure, overlay_path)
    plt.close(figure)
    return mask_path, overlay_path


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fsslib.predict", description=__doc__, epilog=options_help(argv),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, choices=list(METHODS))
    parser.add_argument("--variant", default="", help="a named variant of the method (listed below, with its options)")
    parser.add_argument("--query", action="append", required=True, metavar="IMG", help="a query image (repeatable)")
    parser.add_argument("--class-name", action="append", default=[], metavar="NAME", help="one per way (repeatable)")
    parser.add_argument("--support", action="append", default=[], metavar="IMG",
                        help="a support image (repeatable: K per way, the ways in the order of --class-name)")
    parser.add_argument("--support-mask", action="append", default=[], metavar="MASK",
                        help="the mask of the preceding --support: a single-channel PNG, nonzero = object, 255 = "
                        "ignore; a mask of only 0 and 255 is black and white, 255 = object")
    parser.add_argument("--out", required=True, type=Path, help="folder for the masks and overlays")
    parser.add_argument("--preset", default="toy", choices=("toy", "paper"),
                        help="toy: the shipped toy models; paper: the papers' CLIP and backbones (docs/paper_tier.md)")
    parser.add_argument("--ckpt", default=None, help="trained methods: a checkpoint path, or zoo (the shipped toy model)")
    parser.add_argument("--fold", type=int, default=None,
                        help="which fold's zoo model, with --ckpt zoo (its novel classes were unseen; default 0)")
    parser.add_argument("--benchmark", default=None,
                        help="the benchmark --ckpt was trained on, e.g. folder:PATH for a dataset folder (as in train; "
                             "BAM's family then reads that folder's base learner); default: the toy world")
    parser.add_argument("--novel-classes", type=lambda text: split_list(text, id_or_name), default=None,
                        metavar="A,B,...", help="with --benchmark folder:PATH without folds.json: fold 0's novel "
                        "classes, as in train (ids or names of classes.txt)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N")
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
        print(f"{shown_path(query)}: mask {shown_path(mask)}, overlay {shown_path(overlay)}")
    return 0


def run(args: argparse.Namespace) -> dict[str, tuple[Path, Path]]:
    """Check the arguments and options, read and check every file, create the output folder, then build the
    model, segment every query and write its outputs."""
    names = name_list(args.class_name or [])
    if not names:  # a name per way labels the output; without names, supports define one way
        names = ["object"] if args.support else []
    if not names:
        raise FsslibError("No class name and no support image: nothing says what to segment.",
                          "give --class-name NAME, or --support IMG (--support-mask MASK), or both.")
    ways = len(names)
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
    shots = max(1, len(args.support) // ways)
    kind = method_options_type(args.method)
    options = dict(parse_option(item, kind) for item in args.options) if args.options else None
    cfg = configure(args.method, names, preset=args.preset, ckpt=args.ckpt, shots=shots, variant=args.variant,
                    fold=args.fold, device=args.device, options=options, backbone_weights=args.backbone_weights,
                    benchmark=args.benchmark, novel_classes=args.novel_classes)
    reads = support_inputs(cfg.method, cfg.variant, cfg.options)
    if "names" in reads and not args.class_name:
        raise FsslibError(f"{args.method} reads the class name of each way.", "give --class-name NAME for each way.")
    if args.fold is not None and not names_zoo(args.ckpt) and not issubclass(kind, BaseLearnerOptions):
        print(f"warning: --fold {args.fold} picks which zoo model --ckpt zoo loads (and, for the BAM family, the "
              "fold's frozen base learner); without them it changes nothing.", file=sys.stderr)
    if args.backbone_weights is not None and not builds_backbone(args.method):
        print(f"warning: {args.method} builds no ResNet backbone: --backbone-weights changes nothing.", file=sys.stderr)
    queries = [read_image(path) for path in args.query]  # every file is read and checked before any model is built
    images = [read_image(path) for path in args.support]
    masks = [read_mask(path) for path in args.support_mask]
    supports = Supports(class_names=names,
                        images=[images[way * shots:(way + 1) * shots] for way in range(ways)] if images else [],
                        masks=[masks[way * shots:(way + 1) * shots] for way in range(ways)] if masks else [])
    check_supports(cfg, supports, named=bool(args.class_name))
    support_tensors(supports, cfg)  # each mask's object survives the model's input size
    check_output_folder(args.out, example="predictions")  # made once a prediction is written: a failed run leaves none
    model = build(cfg)
    written = {}
    for path, query in zip(args.query, queries):
        prediction, _ = segment(model, query, supports)
        args.out.mkdir(parents=True, exist_ok=True)  # once there is something to write
        title = f"{cfg.method} ({cfg.preset} tier) · {', '.join(names)} · supports: {' + '.join(reads) or 'none'}"
        written[path] = write_outputs(args.out, Path(path).stem, query, prediction, names, title)
    return written


if __name__ == "__main__":
    sys.exit(main())
