"""Few-shot episodes: sources, transforms, the episode protocol and batching.

An *N-way K-shot episode* has N classes (the ways; N = 1 by default), K support images per
way with binary masks of that way's class, and one query image whose mask is to be
predicted. Images are float tensors in [0, 1] (each model normalises them its own way:
ImageNet or CLIP statistics); support masks hold 0 = background, 1 = the class, 255 =
ignore; query masks and labels hold 0 = background, n = way n (1..N), 255 = ignore.

Test episodes take HSNet's query rule and are a pure function of
``(benchmark, fold, ways, shots, seed, index)``: query = ``entries[index mod len]`` over the
fixed, sorted (image, class) list of the fold's novel classes, supports (and for N > 1 the
other N - 1 classes) drawn by a generator seeded with ``(seed, fold, shots, index)``
(``N`` appended for N > 1; HSNet seeds one generator per run instead, so its episodes depend on their
order). Training episodes are 1-way and follow PFENet:
base classes only, a class counts in an image only above ``min_class_pixels``, other
classes' pixels (novel ones included) are background; ``novel_rule="bam"`` instead drops
every training image that contains a novel class.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from fsslib.data.benchmarks import Benchmark
from fsslib.data.folder import folder_index
from fsslib.data.images import nonfinite_pixels, rgb_array, upright
from fsslib.data.layout import IGNORE, read_class_index, read_list, require_prepared
from fsslib.data.prepare import ensure_toyworld
from fsslib.errors import CorruptImageError, DatasetNotFoundError, EmptySupportMaskError, EpisodeShapeError, InvalidMaskError, unknown
from fsslib.paths import DATASETS_DOC

IMAGENET_MEAN = (0.485, 0.456, 0.406)
NOVEL_RULES = ("pfenet", "bam")


class Source:
    """Images and class-index labels of one split of a prepared benchmark root."""

    def __init__(self, benchmark: Benchmark, split: str, root: str | Path | None = None, cache: bool = False) -> None:
        self.benchmark = benchmark
        self.split = split
        self.root = Path(root) if root is not None else benchmark.root()
        if benchmark.name == "toy" and root is None:
            ensure_toyworld(self.root)
        if benchmark.name == "folder":  # a dataset folder, checked and indexed in memory (fsslib.data.folder)
            self.paths, self.presence = folder_index(self.root)[2][split]
            self.names = sorted(self.paths)
            self._cache = {} if cache else None
            return
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"Dataset root {self.root} for benchmark {benchmark.name!r} does not exist.",
                f"prepare it with `{benchmark.prepare_command}`, or point FSSLIB_DATA at the folder that holds "
                f"{benchmark.root_name}/ (downloads and steps: {DATASETS_DOC}).",
            )
        hint = f"run `{benchmark.prepare_command}`"
        require_prepared(self.root, benchmark.prepare_command)
        pairs = read_list(self.root, split, hint)
        self.paths = {Path(image).stem: (image, label) for image, label in pairs}
        self.presence = read_class_index(self.root, split, hint)
        self.names = sorted(self.paths)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def images_with(self, class_id: int, min_pixels: int | None = None) -> list[str]:
        """Sorted names of the images where ``class_id`` covers at least ``min_pixels`` pixels."""
        threshold = self.benchmark.min_class_pixels if min_pixels is None else min_pixels
        return [n for n in self.names if self.presence.get(n, {}).get(class_id, 0) >= max(threshold, 1)]

    @property
    def shown(self) -> bool:
        """Whether images are read as a viewer shows them (EXIF orientation): the user's pictures of a dataset
        folder; the prepared benchmarks' are read as stored, the grid their annotations were drawn on (HSNet's PIL
        loading)."""
        return self.benchmark.name == "folder"

    def load_image(self, name: str) -> np.ndarray:
        """The image (H, W, 3) uint8 of ``name`` alone, for what reads no label (self-supervised pretraining)."""
        return read_rgb(self.root / self.paths[name][0], self.shown)

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, label (H, W) uint8), with the label's values checked."""
        if self._cache is not None and name in self._cache:
            return self._cache[name]
        image_rel, label_rel = self.paths[name]
        image = self.load_image(name)
        label = _read(self.root / label_rel, None, self.shown)
        if label.ndim != 2:
            raise InvalidMaskError(
                f"Label {self.root / label_rel} has shape {label.shape}; a class-index mask must be one channel.",
                f"save labels as single-channel class-index PNGs ({self.benchmark.prepare_command} writes them).",
            )
        check_label(label, self.benchmark.n_classes, str(self.root / label_rel))
        if label.shape != image.shape[:2]:
            raise InvalidMaskError(
                f"Label {label_rel} is {label.shape} but image {image_rel} is {image.shape[:2]}.",
                "image and label must have the same height and width; re-run the prepare command.",
            )
        if self._cache is not None:
            self._cache[name] = (image, label)
        return image, label


def read_rgb(path: Path, shown: bool = False) -> np.ndarray:
    """The (H, W, 3) uint8 image at ``path``, as stored or as a viewer shows it (``shown``); a missing or
    undecodable file raises an error that says what to do."""
    return _read(path, "RGB", shown)


def _read(path: Path, mode: str | None, shown: bool) -> np.ndarray:
    """An RGB image (``mode="RGB"``) or a label as stored, or as a viewer shows it (``shown``: EXIF orientation)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"Missing file {path}.", f"re-run the dataset's prepare command ({DATASETS_DOC}).")
    try:
        with Image.open(path) as handle:
            handle = upright(handle) if shown else handle
            bad = nonfinite_pixels(handle) if mode == "RGB" else 0
            if bad:
                raise CorruptImageError(f"Image {path} holds {bad} NaN or infinite value(s): the model cannot read "
                                        "them.", "save the picture as an 8-bit PNG or JPEG, its NaN replaced first.")
            return rgb_array(handle, shown=False) if mode == "RGB" else np.asarray(handle)  # turned above if shown
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise CorruptImageError(
            f"Cannot decode {path}: {error}.", "delete the file and re-create it from the original archive."
        ) from None


def check_label(label: np.ndarray, n_classes: int, where: str = "label") -> None:
    """Raise unless every value is a class id in 0..n_classes or the ignore label 255."""
    values = np.unique(label)
    bad = values[(values > n_classes) & (values != IGNORE)]
    if bad.size:
        raise InvalidMaskError(
            f"{where} holds values {bad.tolist()[:10]}, outside the class ids 0..{n_classes} and the ignore label 255.",
            "masks must be class-index images (not colour PNGs or 0/255 binary masks); "
            "convert palette PNGs with `python -m fsslib.data.prepare`.",
        )


def way_mask(label: np.ndarray | torch.Tensor, class_ids: Sequence[int]) -> torch.Tensor:
    """Mask of N ways: n where ``label == class_ids[n - 1]``, 255 where ignored, else 0 (a binary mask for N = 1)."""
    label = torch.as_tensor(np.asarray(label).astype(np.int64))
    mask = torch.zeros_like(label)
    for way, class_id in enumerate(class_ids, start=1):
        mask[label == class_id] = way
    return torch.where(label == IGNORE, torch.full_like(mask, IGNORE), mask)


def check_support_masks(masks: torch.Tensor) -> None:
    """Raise :class:`EmptySupportMaskError` if any support mask has no foreground pixel."""
    foreground = (masks == 1).flatten(start_dim=masks.dim() - 2).sum(-1)  # (..., ) pixels per mask
    if (foreground == 0).any():
        raise EmptySupportMaskError(
            f"{int((foreground == 0).sum())} support mask(s) have no foreground pixel, so no prototype can be pooled.",
            "give each support image a mask with at least one pixel of the class (value 1).",
        )


# --------------------------------------------------------------------------- transforms


def _to_tensors(image: np.ndarray, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255), label.float()


def resized(image: torch.Tensor, label: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) image bilinearly and (H, W) label by nearest neighbour to (height, width); unchanged at that size."""
    if tuple(label.shape) == (height, width):
        return image, label
    image = F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return image, F.interpolate(label[None, None].float(), size=(height, width), mode="nearest")[0, 0]


def resize_pad(image: torch.Tensor, label: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PFENet's test resize: longer side to ``size``, pad to a square (mean colour, label 255).

    image: (3, H, W) in [0, 1]; label: (H, W). Returns (3, size, size), (size, size) long.
    """
    height, width = label.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    image, label = resized(image, label, new_h, new_w)
    padded_image = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).repeat(1, size, size)
    padded_label = torch.full((size, size), float(IGNORE))
    padded_image[:, :new_h, :new_w] = image
    padded_label[:new_h, :new_w] = label
    return padded_image, padded_label.long()


def resize_squash(image: torch.Tensor, label: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HSNet's resize (LFSS's "resized to 400 x 400"): both sides to ``size``, the aspect ratio not kept.

    image: (3, H, W) in [0, 1]; label: (H, W). Returns (3, size, size), (size, size) long.
    """
    image, label = resized(image, label, size, size)
    return image, label.long()


def resize_short_side(image: torch.Tensor, label: torch.Tensor, size: int, longest: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-DINOiser's test resize (mmseg ``Resize(scale=(2048, size), keep_ratio=True)``): the shorter side
    to ``size``, the aspect ratio kept, the longer side at most ``longest``; no padding.

    image: (3, H, W) in [0, 1]; label: (H, W). Returns (3, h, w), (h, w) long with min(h, w) = ``size``
    (unless the longer side is capped), read by sliding windows (:mod:`fsslib.blocks.sliding`).
    """
    height, width = label.shape
    scale = min(size / min(height, width), longest / max(height, width))
    new_h, new_w = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))  # mmcv's rounding
    image, label = resized(image, label, new_h, new_w)
    return image, label.long()


# "short_side" resizes test queries only: supports, and training queries (which share a batch), are padded squares
RESIZE_RULES = {"pad": resize_pad, "squash": resize_squash, "short_side": resize_short_side}
AUGMENTATIONS = ("pfenet", "none")
AUGMENT_ON = ("loader", "device")  # where training episodes are augmented: in the loader's workers, or in the trainer


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Blur every image (B, C, H, W) with its own Gaussian of ``sigmas`` (B,) pixels, reflect-padded, in one grouped
    convolution. The kernel's radius is ``radius``, else 3 sigmas of the widest (at least 1). With ``radius`` 2 (a
    5 x 5 kernel) it equals torchvision's ``gaussian_blur`` bit for bit (tested), without importing torchvision."""
    radius = max(1, math.ceil(3 * float(sigmas.max()))) if radius is None else radius
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)  # (2r+1,)
    weights = torch.exp(-0.5 * (offsets[None] / sigmas.to(images).clamp(min=1e-6)[:, None]) ** 2)  # (B, 2r+1)
    weights = weights / weights.sum(dim=1, keepdim=True)
    batch, channels, height, width = images.shape
    kernels = (weights[:, :, None] * weights[:, None, :]).repeat_interleave(channels, dim=0)  # (B*C, 2r+1, 2r+1)
    padded = F.pad(images.reshape(1, batch * channels, height, width), [radius] * 4, mode="reflect")
    return F.conv2d(padded, kernels.unsqueeze(1), groups=batch * channels).view(batch, channels, height, width)


def random_augment(
    image: torch.Tensor, label: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """PFENet's training augmentation of one image (3, H, W) and its label (H, W): :func:`random_augment_batch`."""
    images, labels = random_augment_batch(image[None], label[None], rng)
    return images[0], labels[0]


def random_augment_batch(
    images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """PFENet's training augmentation in one affine warp per image: scale 0.9-1.1, rotate +-10 deg, horizontal flip,
    plus Gaussian blur with probability 0.5. Padding: mean colour / 255.

    images (B, 3, H, W) in [0, 1], labels (B, H, W). Each image draws its parameters from ``rng`` in turn (scale,
    angle, flip, blur or not, sigma: :func:`draw_augmentation`), so a batch equals its images augmented one by one
    from the same ``rng``, bit for bit (tested); the warps and blurs run as one batched call each
    (:func:`apply_augmentation`). Returns images (B, 3, H, W), labels (B, H, W) long.
    """
    return apply_augmentation(images, labels, *draw_augmentation(len(images), rng))


def draw_augmentation(count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The parameters of :func:`random_augment_batch` for ``count`` images, drawn from ``rng`` one image at a time:
    each image's affine matrix (``count``, 2, 3) (scale, rotation, flip) and its blur's sigma (``count``,), NaN for
    an image left unblurred."""
    thetas, sigmas = [], []
    for _ in range(count):
        scale = rng.uniform(0.9, 1.1)
        angle = math.radians(rng.uniform(-10, 10))
        flip = -1.0 if rng.random() < 0.5 else 1.0
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        thetas.append([[cos * flip, -sin, 0.0], [sin * flip, cos, 0.0]])
        sigmas.append(float(rng.uniform(0.1, 1.0)) if rng.random() < 0.5 else math.nan)
    return torch.tensor(thetas), torch.tensor(sigmas)


def apply_augmentation(images: torch.Tensor, labels: torch.Tensor, thetas: torch.Tensor, sigmas: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp images (B, 3, H, W) and labels (B, H, W) by their affine matrices ``thetas`` (B, 2, 3), then blur each
    image whose ``sigmas`` (B,) is not NaN with a 5 x 5 Gaussian (:func:`draw_augmentation`), on the images'
    device. Out-of-image pixels take the mean colour and the ignore label. Returns images clamped to [0, 1] and
    labels long."""
    grid = F.affine_grid(thetas.to(images.device), [len(images), 3, *labels.shape[-2:]], align_corners=False)  # (B,H,W,2)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    warped = F.grid_sample(images - mean, grid, mode="bilinear", align_corners=False) + mean
    # nearest sampling of (label + 1) so that out-of-image zeros become the ignore label
    shifted = F.grid_sample(labels[:, None].float() + 1, grid, mode="nearest", align_corners=False)[:, 0]
    warped_labels = torch.where(shifted == 0, torch.full_like(shifted, IGNORE), shifted - 1).long()
    blur = blur_picked if images.device.type == "cpu" else blur_all_keep_picked
    return blur(warped, sigmas.to(images.device)).clamp(0, 1), warped_labels


def blur_picked(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur the images (B, 3, H, W) whose ``sigmas`` (B,) is not NaN with a 5 x 5 Gaussian, the others unchanged:
    only the picked images are blurred (on the CPU; picking them reads the sigmas on the host)."""
    picked = torch.nonzero(~torch.isnan(sigmas)).flatten().tolist()
    if picked:
        images = images.clone()
        images[picked] = gaussian_blur(images[picked], sigmas[picked], radius=2)
    return images


def blur_all_keep_picked(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """:func:`blur_picked` without reading the sigmas on the host, so that a GPU's host never waits for it: every
    image is blurred (NaN sigmas by 1) and the blurred ones are kept where a sigma is given."""
    given = ~torch.isnan(sigmas)
    blurred = gaussian_blur(images, torch.where(given, sigmas, torch.ones_like(sigmas)), radius=2)
    return torch.where(given[:, None, None, None], blurred, images)


def augment_keeping_objects(
    images: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`random_augment_batch` of an episode's images (B, 3, S, S) and way masks (B, S, S); an image whose warp
    leaves no object pixel in view stays as it was, as PFENet's crop retries keep the object."""
    return apply_keeping_objects(images, masks, *draw_augmentation(len(images), rng))


def apply_keeping_objects(images: torch.Tensor, masks: torch.Tensor, thetas: torch.Tensor, sigmas: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apply_augmentation`, except that an image whose warp leaves no object pixel in view stays as it was."""
    augmented, augmented_masks = apply_augmentation(images, masks, thetas, sigmas)
    kept = ((augmented_masks >= 1) & (augmented_masks != IGNORE)).flatten(1).any(dim=1)  # (B,)
    return (torch.where(kept[:, None, None, None], augmented, images),
            torch.where(kept[:, None, None], augmented_masks, masks))


def load_episode_image(
    source: Source, name: str, class_ids: Sequence[int], image_size: int, resize: str = "pad",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load one image with its mask of the ways ``class_ids`` (:func:`way_mask`), resized by the rule
    ``resize`` (:data:`RESIZE_RULES`). Training episodes augment the result (:func:`augment_keeping_objects`).

    Returns image (3, S, S) in [0, 1] ((3, h, w) after ``"short_side"``), its mask and the mask at the
    original resolution the prediction is scored at: padded to a square of its longer side with 255
    after ``"pad"`` (PFENet scores there), as it is after ``"squash"`` and ``"short_side"`` (HSNet and
    mmseg resize the prediction to it).
    """
    image, label = source.load(name)
    mask = way_mask(label, class_ids)
    image_t, mask_t = RESIZE_RULES[resize](*_to_tensors(image, mask), image_size)
    if resize != "pad":
        return image_t, mask_t, mask
    side = max(label.shape)
    original = torch.full((side, side), IGNORE, dtype=torch.long)
    original[: label.shape[0], : label.shape[1]] = mask
    return image_t, mask_t, original


# --------------------------------------------------------------------------- episodes


@dataclass
class Episode:
    """One N-way K-shot episode (N = 1 unless asked); tensors at the model's input size, except ``query_label``.

    Way ``n`` (1..N) is class ``class_ids[n - 1]``: its support masks are binary masks of that
    class, and the query's pixels of that class hold the value ``n``.
    """

    support_images: torch.Tensor  # (N, K, 3, H, W) in [0, 1]
    support_masks: torch.Tensor  # (N, K, H, W) long, {0, 1, 255}: way n's class = 1
    query_image: torch.Tensor  # (3, H, W) in [0, 1]
    query_mask: torch.Tensor  # (H, W) long, {0, 1..N, 255}
    query_label: torch.Tensor  # (L, L) long, {0, 1..N, 255}: original resolution padded to a square with 255
    class_ids: list[int]  # (N,) the class of each way
    class_names: list[str]
    query_name: str = ""
    support_names: list[list[str]] = field(default_factory=list)  # N x K
    query_classes: list[int] = field(default_factory=list)  # every class in the query's label (image-level labels)
    # a training episode augmented where it is read (augment_on="device"): the parameters drawn for its images,
    # the query then the supports in way order (draw_augmentation), applied by augment_episode_batch
    augment_thetas: torch.Tensor | None = None  # (1 + N*K, 2, 3)
    augment_sigmas: torch.Tensor | None = None  # (1 + N*K,), NaN: not blurred

    @property
    def ways(self) -> int:
        return len(self.class_ids)


@dataclass
class OneWayInputs:
    """What a 1-way segmenter reads: B binary episodes without their targets (an N-way batch is flattened into
    B * N of them). ``query_classes`` (the classes in each query's label) is given only to a model that asks for
    image-level labels (:attr:`~fsslib.methods.base.FewShotSegmenter.reads_image_labels`)."""

    support_images: torch.Tensor  # (B, K, 3, H, W)
    support_masks: torch.Tensor  # (B, K, H, W) {0, 1, 255}
    query_images: torch.Tensor  # (B, 3, H, W)
    class_ids: torch.Tensor  # (B,) indices into the method's class list (1-based)
    class_names: list[str]
    query_classes: list[list[int]] | None = None

    def __len__(self) -> int:
        return self.query_images.shape[0]


@dataclass
class EpisodeInputs:
    """What an N-way segmenter reads: the supports with their annotation, the queries and the class names;
    the targets (query masks and labels) stay with the :class:`EpisodeBatch` for the loss and the meter."""

    support_images: torch.Tensor  # (B, N, K, 3, H, W)
    support_masks: torch.Tensor  # (B, N, K, H, W) {0, 1, 255}
    query_images: torch.Tensor  # (B, 3, H, W)
    class_ids: torch.Tensor  # (B, N) indices into the method's class list (1-based)
    class_names: list[list[str]]  # B x N
    query_classes: list[list[int]] | None = None  # image-level labels: only for a model that asks for them

    def __len__(self) -> int:
        return self.query_images.shape[0]

    @property
    def ways(self) -> int:
        return self.class_ids.shape[1]

    def to(self, device: torch.device | str) -> "EpisodeInputs":
        return EpisodeInputs(self.support_images.to(device), self.support_masks.to(device), self.query_images.to(device),
                             self.class_ids.to(device), self.class_names, self.query_classes)

    def one_way(self) -> OneWayInputs:
        """The B x N binary episodes, way-major: row ``b * N + n`` pairs query b with way n + 1's supports."""
        ways = self.ways
        return OneWayInputs(
            support_images=self.support_images.flatten(0, 1),
            support_masks=self.support_masks.flatten(0, 1),
            query_images=self.query_images.repeat_interleave(ways, dim=0),
            class_ids=self.class_ids.flatten(),
            class_names=[name for names in self.class_names for name in names],
            query_classes=None if self.query_classes is None else [c for c in self.query_classes for _ in range(ways)],
        )


@dataclass
class OneWayBatch:
    """B binary episodes with their targets (training losses, notebooks); :meth:`inputs` is what a model reads."""

    support_images: torch.Tensor  # (B, K, 3, H, W)
    support_masks: torch.Tensor  # (B, K, H, W) {0, 1, 255}
    query_images: torch.Tensor  # (B, 3, H, W)
    query_masks: torch.Tensor  # (B, H, W) {0, 1, 255}
    class_ids: torch.Tensor  # (B,)
    class_names: list[str]
    query_classes: list[list[int]] = field(default_factory=list)  # image-level labels: only for label-reading variants

    def __len__(self) -> int:
        return self.query_images.shape[0]

    def inputs(self, image_labels: bool = False) -> OneWayInputs:
        """The episodes without their targets (``image_labels``: with the classes in each query's label)."""
        return OneWayInputs(self.support_images, self.support_masks, self.query_images, self.class_ids,
                            self.class_names, self.query_classes if image_labels else None)


@dataclass
class EpisodeBatch:
    """A batch of N-way K-shot episodes, stacked; ``query_labels`` stay a list (sizes differ on real data)."""

    support_images: torch.Tensor  # (B, N, K, 3, H, W)
    support_masks: torch.Tensor  # (B, N, K, H, W) {0, 1, 255}
    query_images: torch.Tensor  # (B, 3, H, W)
    query_masks: torch.Tensor  # (B, H, W) {0, 1..N, 255}
    query_labels: list[torch.Tensor]  # B x (L_b, L_b) {0, 1..N, 255}
    class_ids: torch.Tensor  # (B, N)
    class_names: list[list[str]]  # B x N
    query_classes: list[list[int]] = field(default_factory=list)  # image-level labels: only for label-reading variants
    augment_thetas: torch.Tensor | None = None  # (B, 1 + N*K, 2, 3): still to augment (augment_episode_batch)
    augment_sigmas: torch.Tensor | None = None  # (B, 1 + N*K)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "EpisodeBatch":
        """The batch on ``device``; ``non_blocking``: copies from pinned memory do not wait for the device
        (the trainer's DataLoader pins its batches on CUDA)."""
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            if isinstance(getattr(self, f.name), torch.Tensor) else getattr(self, f.name)
            for f in fields(self)
        }
        return EpisodeBatch(**moved)

    def pin_memory(self) -> "EpisodeBatch":
        """The batch's tensors in page-locked memory (``DataLoader(pin_memory=True)`` calls this), so that
        ``to(device, non_blocking=True)`` copies them without waiting; the query labels stay as they are."""
        return EpisodeBatch(**{f.name: getattr(self, f.name).pin_memory() if isinstance(getattr(self, f.name), torch.Tensor)
                               else getattr(self, f.name) for f in fields(self)})

    def __len__(self) -> int:
        return self.query_images.shape[0]

    @property
    def ways(self) -> int:
        return self.class_ids.shape[1]

    def inputs(self, image_labels: bool = False) -> EpisodeInputs:
        """What a model reads (:class:`EpisodeInputs`); ``image_labels``: with the classes in each query's label,
        for a model that asks for them."""
        return EpisodeInputs(self.support_images, self.support_masks, self.query_images, self.class_ids,
                             self.class_names, self.query_classes if image_labels else None)

    def one_way(self) -> OneWayBatch:
        """The B x N binary episodes, way-major within each episode: row ``b * N + n`` is way n + 1 of episode b.

        Each row pairs the query with one way's supports; its query mask is 1 where the query
        holds that way (other ways' pixels are background), 255 where ignored.
        """
        ways = self.ways
        way_values = torch.arange(1, ways + 1, device=self.query_masks.device).view(1, ways, 1, 1)  # (1, N, 1, 1)
        masks = self.query_masks.unsqueeze(1)  # (B, 1, H, W)
        binary = torch.where(masks == IGNORE, torch.full_like(masks, IGNORE), (masks == way_values).long())  # (B, N, H, W)
        inputs = self.inputs(image_labels=True).one_way()  # the flattening rule of EpisodeInputs.one_way
        return OneWayBatch(support_images=inputs.support_images, support_masks=inputs.support_masks,
                           query_images=inputs.query_images, query_masks=binary.flatten(0, 1), class_ids=inputs.class_ids,
                           class_names=inputs.class_names, query_classes=inputs.query_classes)


def collate_episodes(episodes: list[Episode]) -> EpisodeBatch:
    """Stack episodes into an :class:`EpisodeBatch` (the DataLoader's ``collate_fn``); all must have the same N and K."""
    shapes = {tuple(e.support_images.shape[:2]) for e in episodes}
    if len(shapes) > 1:
        raise EpisodeShapeError(
            f"Episodes with different (ways, shots) cannot share a batch: {sorted(shapes)}.",
            "batch episodes of one N-way K-shot setting (one EpisodeDataset), or use batch size 1.")
    sizes = {tuple(e.query_image.shape[-2:]) for e in episodes}
    if len(sizes) > 1:
        raise EpisodeShapeError(
            f"Queries of different sizes cannot share a batch: {sorted(sizes)} (resize rule 'short_side' keeps each aspect ratio).",
            "evaluate them one episode at a time (batch size 1), or use the resize rule 'pad' or 'squash'.")
    return EpisodeBatch(
        support_images=torch.stack([e.support_images for e in episodes]),
        support_masks=torch.stack([e.support_masks for e in episodes]),
        query_images=torch.stack([e.query_image for e in episodes]),
        query_masks=torch.stack([e.query_mask for e in episodes]),
        query_labels=[e.query_label for e in episodes],
        class_ids=torch.tensor([e.class_ids for e in episodes]),
        class_names=[e.class_names for e in episodes],
        query_classes=[e.query_classes for e in episodes],
        **({"augment_thetas": torch.stack([e.augment_thetas for e in episodes]),
            "augment_sigmas": torch.stack([e.augment_sigmas for e in episodes])}
           if episodes[0].augment_thetas is not None else {}),
    )


def augment_episode_batch(batch: EpisodeBatch) -> EpisodeBatch:
    """A batch of training episodes read with ``augment_on="device"``, augmented where its tensors are (the GPU, in
    the trainer) with the parameters their loader drew: each episode's images as :func:`augment_keeping_objects`
    would have augmented them in the loader, bit for bit on the CPU (tested). A batch without them is returned as
    it is."""
    if batch.augment_thetas is None:
        return batch
    size, ways, shots = batch.support_images.shape[:3]
    images = torch.cat([batch.query_images[:, None], batch.support_images.flatten(1, 2)], dim=1)  # (B, 1+NK, 3, H, W)
    masks = torch.cat([batch.query_masks[:, None], batch.support_masks.flatten(1, 2)], dim=1)  # (B, 1+NK, H, W)
    images, masks = apply_keeping_objects(images.flatten(0, 1), masks.flatten(0, 1), batch.augment_thetas.flatten(0, 1),
                                          batch.augment_sigmas.flatten(0, 1))
    images, masks = images.view(size, 1 + ways * shots, *images.shape[1:]), masks.view(size, 1 + ways * shots, *masks.shape[1:])
    return replace(batch, query_images=images[:, 0], query_masks=masks[:, 0],
                   support_images=images[:, 1:].reshape(batch.support_images.shape),
                   support_masks=masks[:, 1:].reshape(batch.support_masks.shape), augment_thetas=None, augment_sigmas=None)


def episode_batches(episodes: Dataset, batch_size: int, count: int | None = None) -> Iterator[EpisodeBatch]:
    """The first ``count`` episodes (default: all) of ``episodes`` in order, collated ``batch_size`` at a
    time (the last batch may be smaller): a fixed test set walked in batches, without a DataLoader."""
    count = len(episodes) if count is None else min(count, len(episodes))
    for start in range(0, count, batch_size):
        yield collate_episodes([episodes[index] for index in range(start, min(start + batch_size, count))])


def too_few_images_fix(benchmark: Benchmark, shots: int, mode: str) -> str:
    """How to give every class of an episode a query and ``shots`` other images showing it."""
    if benchmark.name == "folder":
        classes = "novel classes (--novel-classes or folds.json)" if mode == "test" else "base classes"
        fix = (f"add images of those classes to the folder: each needs {shots + 1} (a query and {shots} support(s)) "
               f"showing at least {benchmark.min_class_pixels} pixels of it; or leave them out of the {classes}")
    else:
        fix = "check that the dataset was prepared completely"
    return fix + (", or lower the number of shots." if shots > 1 else ".")


class EpisodeDataset(Dataset):
    """Episodes of one fold: ``mode="test"`` (novel classes, fixed protocol) or ``"train"`` (base classes).

    Args:
        source: the split's images and labels.
        fold, shots: the fold and K.
        image_size: the model's square input size.
        n_episodes: episodes per pass (test: default 1000; train: one epoch).
        seed: episode seed (test protocol) or training seed.
        mode: "test" or "train"; train episodes are augmented (``augment``) and depend on ``epoch``.
        novel_rule: "pfenet" (novel pixels are background) or "bam" (drop images with novel classes).
        ways: N (test episodes only; training episodes are 1-way). Episode ``index`` of an N-way
            test set keeps the 1-way query and class of that index and adds N - 1 other classes of
            the fold, drawn with the episode's generator; the ways are put in a random order.
        augment: training episodes' augmentation, "pfenet" (scale, rotation, flip, blur: PFENet,
            PI-CLIP, QGNet) or "none" (LFSS Sec. 4.1: "no extra data augmentation trick").
        resize: "pad" (PFENet: the longer side to ``image_size``, padded to a square), "squash"
            (HSNet, LFSS: both sides to ``image_size``) or "short_side" (CLIP-DINOiser's evaluation:
            test queries' shorter side to ``image_size``, aspect kept, for sliding windows; supports and
            training queries padded as "pad"). The toy world's images are square, so all three agree there.
        augment_on: where training episodes are augmented (:data:`AUGMENT_ON`): "loader" (here, in the
            DataLoader's workers) or "device" (the parameters are drawn here, from the same generator, and
            :func:`augment_episode_batch` applies them to the batch where the model runs, e.g. on the GPU; on the
            CPU the episodes equal the loader's bit for bit).
    """

    def __init__(
        self,
        source: Source,
        fold: int,
        shots: int,
        image_size: int,
        n_episodes: int = 1000,
        seed: int = 0,
        mode: str = "test",
        novel_rule: str = "pfenet",
        ways: int = 1,
        augment: str = "pfenet",
        resize: str = "pad",
        augment_on: str = "loader",
    ) -> None:
        if mode not in ("test", "train"):
            raise unknown("episode mode", mode, ["test", "train"])
        if augment not in AUGMENTATIONS:
            raise unknown("training augmentation", augment, AUGMENTATIONS)
        if augment_on not in AUGMENT_ON:
            raise unknown("place of the training augmentation (--augment-on)", augment_on, AUGMENT_ON)
        self.augment_on = augment_on
        if resize not in RESIZE_RULES:
            raise unknown("resize rule", resize, list(RESIZE_RULES))
        self.augment, self.resize = augment, resize
        self.query_resize = resize if resize != "short_side" or mode == "test" else "pad"
        self.support_resize = "pad" if resize == "short_side" else resize
        if novel_rule not in NOVEL_RULES:
            raise unknown("novel-class rule", novel_rule, NOVEL_RULES)
        if shots < 1:
            raise unknown("number of shots", shots, ["1", "5", "any K >= 1"])
        benchmark = source.benchmark
        self.classes = benchmark.fold_classes(fold) if mode == "test" else benchmark.base_classes(fold)
        if mode == "train" and ways != 1:
            raise unknown("number of ways for training episodes", ways, ["1 (episodic training is 1-way; --ways applies to evaluation)"])
        if not 1 <= ways <= len(self.classes):
            raise unknown(f"number of ways for fold {fold} ({len(self.classes)} test classes)", ways,
                          [str(n) for n in range(1, len(self.classes) + 1)])
        self.source, self.fold, self.shots, self.image_size, self.ways = source, fold, shots, image_size, ways
        self.n_episodes, self.seed, self.mode = n_episodes, seed, mode
        excluded: set[str] = set()
        if mode == "train" and novel_rule == "bam":
            novel = set(benchmark.fold_classes(fold))
            excluded = {n for n in source.names if novel & set(source.presence.get(n, {}))}
        self.images_of = {c: [n for n in source.images_with(c) if n not in excluded] for c in self.classes}
        # a class is usable only if it has a query and K other support images
        unusable = [c for c, names in self.images_of.items() if len(names) <= shots]
        if mode == "test" and unusable:  # a test fold must score all its classes (mIoU is their mean)
            raise DatasetNotFoundError(
                f"Fold {fold} test class(es) {[benchmark.class_name(c) for c in unusable]} have {shots} or fewer "
                f"images with at least {benchmark.min_class_pixels} pixels of the class in {source.root} "
                f"(split {source.split!r}); an episode needs {shots + 1}: a query and {shots} support(s).",
                too_few_images_fix(benchmark, shots, mode))
        self.images_of = {c: names for c, names in self.images_of.items() if c not in unusable}
        members = {c: set(names) for c, names in self.images_of.items()}
        self.entries = [(n, c) for n in source.names for c in self.classes if n in members.get(c, ())]
        self.set_epoch(0)
        if not self.entries:
            raise DatasetNotFoundError(
                f"No {mode} episode can be built for fold {fold} with {shots} shots from {source.root} "
                f"(split {source.split!r}): no class has more than {shots} images.",
                too_few_images_fix(benchmark, shots, mode),
            )

    def set_epoch(self, epoch: int) -> None:
        """Training episodes and augmentations are a pure function of (seed, epoch, index)."""
        self.epoch = epoch
        self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.entries))

    def __len__(self) -> int:
        return self.n_episodes

    def _entry_and_rng(self, index: int) -> tuple[tuple[str, int], np.random.Generator]:
        if self.mode == "train":
            return self.entries[self._order[index % len(self.entries)]], np.random.default_rng([self.seed, self.epoch, index, 1])
        # 1-way: pure in (seed, fold, shots, index), HSNet's query rule; N-way adds N to the seed
        key = [self.seed, self.fold, self.shots, index] + ([self.ways] if self.ways > 1 else [])
        return self.entries[index % len(self.entries)], np.random.default_rng(key)

    def sample_names(self, index: int) -> tuple[str, list[list[str]], list[int]]:
        """(query name, N x K support names, the N class ids in way order) of episode ``index``."""
        (query, class_id), rng = self._entry_and_rng(index)
        classes = [class_id]
        if self.ways > 1:
            others = [c for c in self.images_of if c != class_id]
            classes += [others[i] for i in rng.choice(len(others), self.ways - 1, replace=False)]
            classes = [classes[i] for i in rng.permutation(self.ways)]
        supports = []
        for way_class in classes:
            candidates = [n for n in self.images_of[way_class] if n != query]
            supports.append([candidates[i] for i in rng.choice(len(candidates), self.shots, replace=False)])
        return query, supports, classes

    def __getitem__(self, index: int) -> Episode:
        if not 0 <= index < self.n_episodes:
            raise IndexError(f"episode {index} of {self.n_episodes}")
        query, supports, classes = self.sample_names(index)
        query_image, query_mask, query_label = load_episode_image(self.source, query, classes, self.image_size,
                                                                  self.query_resize)
        prepared = [[load_episode_image(self.source, n, [c], self.image_size, self.support_resize) for n in names]
                    for c, names in zip(classes, supports)]
        support_images = torch.stack([torch.stack([p[0] for p in way]) for way in prepared])  # (N, K, 3, H, W)
        support_masks = torch.stack([torch.stack([p[1] for p in way]) for way in prepared])  # (N, K, H, W)
        thetas = sigmas = None
        if self.mode == "train" and self.augment == "pfenet":  # the query, then the supports in way order
            thetas, sigmas = draw_augmentation(1 + support_images.shape[0] * support_images.shape[1],
                                               np.random.default_rng([self.seed, self.epoch, index, 2]))
            if self.augment_on == "loader":
                images, masks = apply_keeping_objects(torch.cat([query_image[None], support_images.flatten(0, 1)]),
                                                      torch.cat([query_mask[None], support_masks.flatten(0, 1)]),
                                                      thetas, sigmas)
                query_image, query_mask = images[0], masks[0]
                support_images, support_masks = images[1:].view_as(support_images), masks[1:].view_as(support_masks)
                thetas = sigmas = None
        check_support_masks(support_masks)
        return Episode(
            support_images=support_images,
            support_masks=support_masks,
            query_image=query_image,
            query_mask=query_mask,
            query_label=query_label,
            class_ids=classes,
            class_names=[self.source.benchmark.class_name(c) for c in classes],
            query_name=query,
            support_names=supports,
            query_classes=sorted(self.source.presence.get(query, {})),
            augment_thetas=thetas,
            augment_sigmas=sigmas,
        )
