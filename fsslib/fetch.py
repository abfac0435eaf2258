"""Fetch what a method or benchmark of the paper tier needs, from the official sources, each file checked.

    python -m fsslib.fetch pascal                  VOC2012 + SBD archives, then `prepare pascal`
    python -m fsslib.fetch coco                    COCO 2014 images and annotations, unzipped, then `prepare coco`
    python -m fsslib.fetch weights --method piclip the weight files PI-CLIP's paper preset reads
    python -m fsslib.fetch weights resnet50 ViT-B-16/openai   weight files by name
    python -m fsslib.fetch --all-for piclip        a method's data and weights (--benchmark coco / all for COCO-20i)
    python -m fsslib.fetch --list                  every name, its file, where it goes and what checks it

Files go where the paper tier reads them: archives to ``$FSSLIB_DATA/downloads`` (then prepared into
``$FSSLIB_DATA``), weight files to ``$FSSLIB_WEIGHTS``, open_clip's weights to the Hugging Face cache
(``$HF_HUB_CACHE``). Nothing else in fsslib downloads; this command is the only one that does.

Every file is checked against a known checksum before it gets its final name: torchvision's md5 for VOC2012
and SBD, TensorFlow Datasets' sha256 for the COCO 2014 zips, the publishers' own where they give one (the hash
in torchvision's weight file name, MoCo's README, the git object id of a file in its official repository, the
sha256 the Hugging Face Hub records for a weights file), otherwise a sha256 recorded here once. A file without
any known checksum is refused unless ``--accept-unverified`` is given (its sha256 is then printed, to record).

A download is streamed into ``<name>.part`` beside its destination and resumed from there with an HTTP Range
request after an interruption (automatically ``--retries`` times, or by running the same command again); a
file gets its final name only once its checksum matched (pooch's verify-then-move; Hugging Face downloads
through huggingface_hub, which resumes and moves the same way). ``--mirror URL`` takes every file from a
folder that serves them under their official names, ``--hf-endpoint URL`` open_clip's weights from a Hugging
Face mirror; the checksums stay the same. When a host cannot be reached or refuses, the message names the
file and the manual route of docs/paper_tier.md.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from fsslib import paths
from fsslib.errors import FsslibError, unknown
from fsslib.paths import write_text

if TYPE_CHECKING:
    from fsslib.config import Config

PROG = "python -m fsslib.fetch"
RETRY_WAIT_S = 2.0  # seconds before the first automatic retry (doubled for each further one)
CHUNK = 1 << 16  # bytes per read: what a broken-off read loses of the .part


class FetchError(FsslibError, OSError):
    """A file could not be fetched: no network, a host that refuses, no direct download, an interrupted transfer."""


class ChecksumError(FetchError, ValueError):
    """A downloaded file does not match its known checksum (it has been removed), or has no checksum to match."""


# ----------------------------------------------------------------------------------------------- checksums

@dataclass(frozen=True)
class Checksum:
    """A published digest of a file. ``value`` shorter than the full digest is a published prefix, compared as
    torch.hub compares the hash in a weight file's name. ``git-blob-sha1`` is git's object id of the file."""

    algorithm: str  # "md5" | "sha256" | "git-blob-sha1"
    value: str
    source: str  # who publishes it

    FULL_LENGTH = {"md5": 32, "sha256": 64, "git-blob-sha1": 40}

    @property
    def is_full(self) -> bool:
        return len(self.value) == self.FULL_LENGTH[self.algorithm]

    @property
    def pooch_hash(self) -> str | None:
        """The ``known_hash`` pooch verifies itself (a full md5 or sha256), else None."""
        return f"{self.algorithm}:{self.value}" if self.is_full and self.algorithm in ("md5", "sha256") else None

    def digest(self, path: Path) -> str:
        return file_digest(path, self.algorithm)

    def matches(self, path: Path) -> bool:
        return self.digest(path).startswith(self.value.lower())

    def describe(self) -> str:
        what = self.algorithm if self.is_full else f"{self.algorithm} prefix"
        return f"{what} {self.value} ({self.source})"


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file: md5 / sha256 by pooch's ``file_hash``, git's blob id by hashlib."""
    if algorithm in ("md5", "sha256"):
        import pooch

        return pooch.file_hash(str(path), alg=algorithm)
    if algorithm != "git-blob-sha1":
        raise ValueError(algorithm)
    digest = hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class RemoteFile:
    """One file and where it comes from. ``url`` None: no direct download is published (a manual step)."""

    name: str  # the file name fsslib reads (and the name a mirror serves it under)
    url: str | None
    checksum: Checksum | None
    manual: str  # where a person gets it by hand
    kind: str  # "data" (to the downloads folder) or "weights" (to $FSSLIB_WEIGHTS)
    subfolder: str = ""  # below $FSSLIB_WEIGHTS
    size: int | None = None  # bytes, where its checksum's source gives it
    use: str = ""  # what reads it, printed after a fetch

    @property
    def doc(self) -> str:
        return paths.DATASETS_DOC if self.kind == "data" else paths.WEIGHTS_DOC


@dataclass(frozen=True)
class HubWeights:
    """open_clip's weights for a model name and pretrained tag, from the Hugging Face Hub into its cache."""

    model: str
    tag: str

    @property
    def name(self) -> str:
        return f"{self.model}/{self.tag}"


@dataclass(frozen=True)
class Dataset:
    name: str
    files: tuple[RemoteFile, ...]


TORCHVISION_VOC = "torchvision.datasets.VOCSegmentation's md5"
TORCHVISION_SBD = "torchvision.datasets.SBDataset's md5"
TFDS_COCO = "TensorFlow Datasets' url_checksums/coco.txt"
COCO_PAGE = "cocodataset.org/#download (2014 Train images, 2014 Val images, 2014 Train/Val annotations)"

DATASETS: dict[str, Dataset] = {
    "pascal": Dataset("pascal", (
        RemoteFile("VOCtrainval_11-May-2012.tar", "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                   Checksum("md5", "6cd6e144f989b92b3379bac3b3de84fd", TORCHVISION_VOC),
                   "the PASCAL VOC 2012 page, host.robots.ox.ac.uk/pascal/VOC/voc2012/", "data"),
        RemoteFile("benchmark.tgz",
                   "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
                   Checksum("md5", "82b4d87ceb2ed10f6038a1cba92111cb", TORCHVISION_SBD),
                   "the Berkeley SBD page, www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/",
                   "data"),
    )),
    "coco": Dataset("coco", (
        RemoteFile("train2014.zip", "http://images.cocodataset.org/zips/train2014.zip",
                   Checksum("sha256", "ede4087e640bddba550e090eae701092534b554b42b05ac33f0300b984b31775", TFDS_COCO),
                   COCO_PAGE, "data", size=13510573713),
        RemoteFile("val2014.zip", "http://images.cocodataset.org/zips/val2014.zip",
                   Checksum("sha256", "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0", TFDS_COCO),
                   COCO_PAGE, "data", size=6645013297),
        RemoteFile("annotations_trainval2014.zip", "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
                   Checksum("sha256", "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009", TFDS_COCO),
                   COCO_PAGE, "data", size=252872794),
    )),
}
COCO_FOLDER = "coco2014"  # below the downloads folder: the unzipped train2014/, val2014/, annotations/ (prepare links them)

DINO_SOURCE = "facebookresearch/dino's README (no checksum published)"
WEIGHTS: dict[str, RemoteFile | HubWeights] = {
    "resnet50": RemoteFile(
        "resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        Checksum("sha256", "0676ba61", "torchvision: the sha256 prefix in the file name, as torch.hub checks it"),
        "torchvision's ResNet50_Weights.IMAGENET1K_V1", "weights", use="--backbone resnet50"),
    "resnet50-deepstem": RemoteFile(
        "resnet50_v2.pth", None, None,
        "the 'ImageNet pretrained backbones' OneDrive folder linked from dvlab-research/PFENet's README (also from "
        "QGNet's; PI-CLIP's README points to chunbolang/BAM's)",
        "weights", use="--backbone resnet50-deepstem (PFENet, PI-CLIP, QGNet)"),
    "ViT-B-16/openai": HubWeights("ViT-B-16", "openai"),
    "RN50/openai": HubWeights("RN50", "openai"),
    "ViT-B-16/laion2b_s34b_b88k": HubWeights("ViT-B-16", "laion2b_s34b_b88k"),
    "clip-dinoiser-heads": RemoteFile(
        "last.pt",
        "https://raw.githubusercontent.com/wysoczanska/clip_dinoiser/a954aae6fb61f5ff18834e50a0c78a2258cd9afb/checkpoints/last.pt",
        Checksum("git-blob-sha1", "0b6c94d9c439ebac7bcb07fe805be3654ea03c7f",
                 "the git object id of checkpoints/last.pt in wysoczanska/clip_dinoiser at a954aae"),
        "checkpoints/last.pt of github.com/wysoczanska/clip_dinoiser", "weights", subfolder="clip_dinoiser",
        use="--options heads=PATH (clip-dinoiser, clip-dinoiser-support)"),
    "dino_vitb16": RemoteFile(
        "dino_vitbase16_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth", None,
        f"the ViT-B/16 'backbone only' link of {DINO_SOURCE}", "weights",
        use="fsslib.models.vit.load_dino('dino_vitb16') (CLIP-DINOiser's teacher)"),
    "dino_vits8": RemoteFile(
        "dino_deitsmall8_300ep_pretrain.pth",
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_300ep_pretrain/dino_deitsmall8_300ep_pretrain.pth", None,
        f"DINO's ViT-S/8 of its utils.py and hubconf ({DINO_SOURCE})", "weights",
        use="fsslib.models.vit.load_dino('dino_vits8') (FOUND's backbone)"),
    "found-decoder": RemoteFile(
        "decoder_weights.pt",
        "https://raw.githubusercontent.com/valeoai/FOUND/1ad22bacf1a6854faff1b5d4be300d54cad6f277/data/weights/decoder_weights.pt",
        Checksum("sha256", "47ff2a4af3dbc6c80cb832cc81f8ed8ae81809e52576d0de5f9c754cf46ef9b5",
                 "recorded here from data/weights/decoder_weights.pt of valeoai/FOUND at 1ad22ba (git blob c1bd70f)"),
        "data/weights/decoder_weights.pt of github.com/valeoai/FOUND", "weights", size=2689,
        use="fsslib.pretrain.toy_found.load_found_release() (CLIP-DINOiser's background teacher)"),
    "moco-v2": RemoteFile(
        "moco_v2_800ep_pretrain.pth.tar",
        "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
        Checksum("md5", "a04e12f8", "facebookresearch/moco's README, the md5 column"),
        "the MoCo v2 800-epoch 'download' link of facebookresearch/moco's README", "weights",
        use="--options prior_extractor=PATH (qgnet: Table VI's 'global only' row, not QGNet's own extractor)"),
}

# What each method's paper preset reads (tests/test_fetch.py checks this against make_config(method, "paper")).
METHOD_WEIGHTS: dict[str, tuple[str, ...]] = {
    "all-foreground": (),
    "prototype": ("resnet50",),
    "maskclip": ("ViT-B-16/openai",),
    "pfenet": ("resnet50-deepstem",),
    "piclip": ("resnet50-deepstem", "ViT-B-16/openai"),
    "lfss": ("resnet50", "RN50/openai"),
    "qgnet": ("resnet50-deepstem",),
    "bam": ("resnet50-deepstem",),  # what its base learner is fine-tuned from
    "hdmnet": ("resnet50-deepstem",),  # BAM's base learner, the same file
    "piclip-bam": ("resnet50-deepstem", "ViT-B-16/openai"),
    "piclip-hdmnet": ("resnet50-deepstem", "ViT-B-16/openai"),
    "clip-dinoiser": ("ViT-B-16/laion2b_s34b_b88k", "clip-dinoiser-heads"),
    "clip-dinoiser-support": ("ViT-B-16/laion2b_s34b_b88k", "clip-dinoiser-heads"),
}
METHOD_NOTES: dict[str, str] = {
    "qgnet": ("QGNet's own prior extractor (MoCo v2 with its local patch loss) is not published: `python -m "
              "fsslib.pretrain qgnet-prior` pretrains one on PASCAL's images (`--benchmark coco`: on "
              "COCO's) and writes it where the paper grids read it; the paper's 1000 epochs are a GPU's work. Or "
              "pass --options prior_extractor=PATH; `weights moco-v2` fetches plain MoCo v2, Table VI's 'global "
              "only' row."),
    "bam": ("BAM reads the base learner of its fold, which fsslib trains from this ResNet-50 (BAM's stage 1): "
            "`python -m fsslib.pretrain base-learner --fold F --tier paper` writes "
            "$FSSLIB_WEIGHTS/base-learner-pascal-foldF.pt, where --method bam looks for it."),
    "hdmnet": "HDMNet reads BAM's base learner of its fold: see bam.",
    "piclip-bam": "PI-CLIP(BAM) reads BAM's base learner of its fold: see bam.",
    "piclip-hdmnet": "PI-CLIP(HDMNet) reads BAM's base learner of its fold: see bam.",
    "clip-dinoiser": "pass the heads as --options heads=$FSSLIB_WEIGHTS/clip_dinoiser/last.pt.",
    "clip-dinoiser-support": "pass the heads as --options heads=$FSSLIB_WEIGHTS/clip_dinoiser/last.pt.",
}


# ----------------------------------------------------------------------------------------------- what a run reads

@dataclass(frozen=True)
class Need:
    """A prepared benchmark or a weight file that a run reads: where fsslib looks, whether it is there, and the
    command that fetches it (or what to do where no command can)."""

    name: str  # a DATASETS or WEIGHTS name, or the option or setting that names the file
    looked_at: tuple[str, ...]
    present: bool
    command: str


FILE_OPTIONS = {  # method options that name a weight file: the WEIGHTS entry whose destination is their usual value,
    # or how to make the file where nothing publishes it
    "heads": "clip-dinoiser-heads",
    "prior_extractor": METHOD_NOTES["qgnet"],
    "clip_checkpoint": "a CLIP weights file of your own (open_clip's are fetched by name: `weights MODEL/TAG`)",
}
PAPER_FILE_OPTIONS = {  # at the paper preset these options must name a file: their default is a toy model
    ("qgnet", "prior_extractor"): METHOD_NOTES["qgnet"],
    ("clip-dinoiser", "heads"): f"`{PROG} weights clip-dinoiser-heads`, then pass --options heads=PATH",
    ("clip-dinoiser-support", "heads"): f"`{PROG} weights clip-dinoiser-heads`, then pass --options heads=PATH",
}
BACKBONE_WEIGHTS = {"resnet50": "resnet50", "resnet50-deepstem": "resnet50-deepstem"}  # Config.backbone -> WEIGHTS


def run_needs(cfg: Config, workdir: Path | None = None) -> list[Need]:
    """What a run of ``cfg`` (a :class:`fsslib.config.Config`) reads from disk at the paper tier, in the places its
    loaders look: the prepared benchmark (``$FSSLIB_DATA`` or ``data_root``), the backbone's weights (unless
    ``backbone_weights="random"``), open_clip's weights (unless ``clip_pretrained`` is None), and the files its
    options name (a relative path read from ``workdir``, the folder the run executes in; the working directory if
    None). Each :class:`Need` says whether it is there and the ``python -m fsslib.fetch`` command (or manual
    step) that gets it. Nothing is downloaded or loaded."""
    from fsslib.data.benchmarks import benchmark_of
    from fsslib.data.layout import MARKER
    from fsslib.methods import builds_backbone, method_options_type
    from fsslib.methods.options import BaseLearnerOptions

    needs = []
    if cfg.benchmark in DATASETS:
        root = Path(cfg.data_root).expanduser() if cfg.data_root else benchmark_of(cfg).root()
        marker = root / MARKER
        needs.append(Need(cfg.benchmark, (str(marker),), marker.is_file(), f"{PROG} {cfg.benchmark}"))
    if builds_backbone(cfg.method) and cfg.backbone in BACKBONE_WEIGHTS and cfg.backbone_weights != "random":
        needs.append(_backbone_need(cfg.backbone, cfg.backbone_weights))
    options = method_options_type(cfg.method).parse(cfg.options)
    clip_file = getattr(options, "clip_checkpoint", None)
    pretrained = getattr(options, "clip_pretrained", None)
    if pretrained and not clip_file:
        needs.append(_hub_need(f"{options.clip}/{pretrained}"))
    for key, usual in FILE_OPTIONS.items():
        value = getattr(options, key, None)
        if value is None and (cfg.method, key) in PAPER_FILE_OPTIONS and cfg.preset == "paper":
            needs.append(Need(f"option {key}", (), False, PAPER_FILE_OPTIONS[(cfg.method, key)]))
        elif isinstance(value, str) and value != "random":  # HDMNet's heads option is a tuple of head counts
            needs.append(_file_need(f"option {key}", _from(workdir, Path(value).expanduser()), usual))
    if isinstance(options, BaseLearnerOptions):  # BAM, HDMNet and PI-CLIP on them read a frozen base learner
        needs.extend(_base_learner_need(_from(workdir, Path(path).expanduser()), cfg)
                     for path in options.base_learner_files(cfg).values())
    return needs


def _from(workdir: Path | None, path: Path) -> Path:
    """``path`` as a run executing in ``workdir`` reads it: an absolute path as it is, a relative one from
    ``workdir`` without its ``..`` steps."""
    return path if path.is_absolute() else Path(os.path.normpath((workdir or Path.cwd()) / path))


def _base_learner_need(path: Path, cfg: Config) -> Need:
    """The frozen base learner of ``cfg``'s fold: nothing publishes it for fsslib, so the command trains it (BAM's
    stage 1; a GPU job at the paper tier, not counted in the plan's GPU-hours)."""
    from fsslib.data.benchmarks import given_novel_classes
    from fsslib.pretrain.base_learner.files import base_learner_path, remake_command

    command = remake_command(cfg.fold, cfg.preset, cfg.benchmark, given_novel_classes(cfg))
    if path != base_learner_path(cfg.benchmark, cfg.fold):
        command += f" --out {path}"
    return Need(f"base learner of fold {cfg.fold}", (str(path),), path.is_file(),
                f"train it (BAM's stage 1, a training job of its own): `{command}`")


def _backbone_need(backbone: str, path: str | None) -> Need:
    """The backbone's weight file: ``path`` (``backbone_weights``), else where its loader looks."""
    from fsslib.models.backbones import DEEP_STEM_FILE, RESNET50_FILE

    name = BACKBONE_WEIGHTS[backbone]
    if path:
        return _file_need("backbone_weights", Path(path).expanduser(), None)
    looked_at = [paths.weights_root() / (RESNET50_FILE if backbone == "resnet50" else DEEP_STEM_FILE)]
    if backbone == "resnet50":
        import torch

        looked_at.append(Path(torch.hub.get_dir()) / "checkpoints" / RESNET50_FILE)
    return Need(name, tuple(map(str, looked_at)), any(p.is_file() for p in looked_at), _command(name))


def _hub_need(name: str) -> Need:
    """open_clip's weights ``MODEL/TAG``: in ``$FSSLIB_WEIGHTS`` or the Hugging Face cache (never downloaded here)."""
    from fsslib.clip.loading import find_cached_weights, huggingface_hub_cache

    model, tag = name.split("/")
    found = find_cached_weights(model, tag)
    looked_at = (str(found),) if found else (str(paths.weights_root()), str(huggingface_hub_cache()))
    return Need(name, looked_at, found is not None, _command(name))


def _file_need(name: str, path: Path, usual: str | None) -> Need:
    """A file a setting names: fetched by ``usual`` when it names a WEIGHTS entry and ``path`` is its destination;
    else made as ``usual`` says (or put there by hand)."""
    entry = WEIGHTS.get(usual) if usual else None
    if isinstance(entry, RemoteFile) and destination(entry, FetchOptions()) == path:
        return Need(usual, (str(path),), path.is_file(), _command(usual))
    how = usual if usual and entry is None else f"put the file there, or change the setting that names it ({name})"
    return Need(name, (str(path),), path.is_file(), how)


def _command(name: str) -> str:
    """The command that fetches the weights ``name``, with the manual step first where there is no direct link."""
    entry = WEIGHTS[name] if name in WEIGHTS else None
    if isinstance(entry, RemoteFile) and entry.url is None:
        return (f"no direct download: get {entry.name} from {entry.manual} into "
                f"{paths.shown_path(paths.weights_root())}, "
                f"then `{PROG} weights {name}` checks it in place")
    return f"{PROG} weights {name}"


# ----------------------------------------------------------------------------------------------- options

@dataclass
class FetchOptions:
    mirror: str | None = None
    hf_endpoint: str | None = None
    accept_unverified: bool = False
    retries: int = 3
    timeout: float = 60.0
    progress: bool = True
    downloads: Path | None = None
    prepare: bool = True
    pascal_train_list: str = "pfenet"
    say: Callable[[str], None] = field(default=print)

    def downloads_folder(self) -> Path:
        return Path(self.downloads).expanduser() if self.downloads else paths.data_root() / "downloads"


def destination(entry: RemoteFile, options: FetchOptions) -> Path:
    """Where ``entry`` goes: the downloads folder (archives) or ``$FSSLIB_WEIGHTS[/subfolder]``."""
    folder = options.downloads_folder() if entry.kind == "data" else paths.weights_root() / entry.subfolder
    return folder / entry.name


def source_url(entry: RemoteFile, options: FetchOptions) -> str | None:
    if options.mirror:
        return f"{options.mirror.rstrip('/')}/{quote(entry.name)}"
    return entry.url


# ----------------------------------------------------------------------------------------------- one file over HTTP

class _Interrupted(Exception):
    """The transfer stopped before the end; the ``.part`` file holds what came."""


class ResumableDownloader:
    """A pooch downloader that streams into ``<target>.part`` and resumes it with an HTTP Range request.

    pooch calls it with a temporary file beside the target, verifies that file's checksum and only then
    moves it to the target's name. This downloader appends to the persistent ``.part`` file (kept when the
    transfer breaks off, so that the next call resumes it), and when the transfer is complete checks what
    pooch cannot (a published hash prefix, a git object id) before moving the ``.part`` onto pooch's file.
    """

    def __init__(self, part: Path, *, checksum: Checksum | None, timeout: float, progress: bool) -> None:
        self.part, self.checksum, self.timeout, self.progress = part, checksum, timeout, progress
        self.started = False  # whether a response came

    def __call__(self, url: str, output_file: str, pooch_instance: object, check_only: bool = False) -> None:
        self._transfer(url, restarted=False)
        if self.checksum is not None and self.checksum.pooch_hash is None and not self.checksum.matches(self.part):
            got = self.checksum.digest(self.part)
            self.part.unlink()
            raise _Mismatch(got)
        os.replace(self.part, output_file)

    def _transfer(self, url: str, restarted: bool) -> None:
        import requests
        from tqdm.auto import tqdm  # a bar in a notebook too

        offset = self.part.stat().st_size if self.part.is_file() else 0
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            if response.status_code == 416 and offset and not restarted:  # the .part is whole, or longer than the file
                total = _content_range_total(response.headers.get("Content-Range", ""))
                if total == offset:
                    return
                self.part.unlink()
                return self._transfer(url, restarted=True)
            response.raise_for_status()
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if offset and (response.status_code != 206 or start != offset):
                offset = 0  # the server sent the whole file: start again
            self.started = True
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            self.part.parent.mkdir(parents=True, exist_ok=True)
            with open(self.part, "ab" if offset else "wb") as out, tqdm(
                    total=total, initial=offset, desc=self.part.name.removesuffix(".part"), unit="B", unit_scale=True,
                    unit_divisor=1024, disable=not self.progress, leave=True) as bar:
                for chunk in response.iter_content(chunk_size=CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        size = self.part.stat().st_size
        if total is not None and size < total:
            raise _Interrupted(f"{size} of {total} bytes")


class _Mismatch(Exception):
    def __init__(self, got: str) -> None:
        super().__init__(got)
        self.got = got


def _content_range_start(header: str) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", header.strip())
    return int(match.group(1)) if match else None


def _content_range_total(header: str) -> int | None:
    match = re.match(r"bytes (?:\*|\d+-\d+)/(\d+)", header.strip())
    return int(match.group(1)) if match else None


def manual_route(entry: RemoteFile, target: Path) -> str:
    where = f" ({entry.url})" if entry.url else ""
    return (f"download {entry.name} by hand from {entry.manual}{where} and put it at {target}; "
            f"instructions: {entry.doc}")


def fetch_file(entry: RemoteFile, options: FetchOptions) -> Path:
    """Download ``entry`` to its destination unless a file that matches its checksum is already there."""
    target = destination(entry, options)
    if target.is_file():
        if entry.checksum is None:  # put there by hand: nothing to check it against
            options.say(f"{entry.name}: already at {target} (no published checksum; its sha256 is "
                        f"{file_digest(target, 'sha256')})")
            return target
        if entry.checksum.matches(target):
            options.say(f"{entry.name}: already at {target}, {entry.checksum.describe()} matches")
            return target
        options.say(f"{entry.name}: {target} does not match its {entry.checksum.describe()}: downloading it again")
        target.unlink()
    url = source_url(entry, options)
    if url is None:
        raise FetchError(f"{entry.name} has no direct download (it is published only as {entry.manual}).",
                         f"{manual_route(entry, target)}; or serve it from a folder and pass --mirror URL "
                         "(with --accept-unverified: no checksum is published).")
    if entry.checksum is None and not options.accept_unverified:
        raise ChecksumError(
            f"{entry.name} has no published checksum, so a download of it cannot be verified.",
            f"re-run with --accept-unverified to take it as served (its sha256 is printed so that you can record it), "
            f"or {manual_route(entry, target)}.")
    part = target.with_name(target.name + ".part")
    attempts = max(0, options.retries) + 1
    for attempt in range(attempts):
        try:
            return _download(entry, url, target, part, options)
        except _Retryable as error:
            if attempt == attempts - 1:
                raise error.final from None
            wait = RETRY_WAIT_S * 2 ** attempt
            options.say(f"{entry.name}: {error.final.problem} Retrying in {wait:g} s "
                        f"({attempts - attempt - 1} tr{'y' if attempts - attempt - 1 == 1 else 'ies'} left).")
            time.sleep(wait)
    raise AssertionError("unreachable")


class _Retryable(Exception):
    def __init__(self, final: FetchError) -> None:
        super().__init__(str(final))
        self.final = final


def _download(entry: RemoteFile, url: str, target: Path, part: Path, options: FetchOptions) -> Path:
    import pooch
    import requests

    pooch.get_logger().setLevel("WARNING")  # fsslib says what happens itself
    downloader = ResumableDownloader(part, checksum=entry.checksum, timeout=options.timeout, progress=options.progress)
    resumed = part.stat().st_size if part.is_file() else 0
    options.say(f"{entry.name}: {'resuming' if resumed else 'downloading'} {url}"
                + (f" from byte {resumed}" if resumed else "") + f" -> {target}")
    host = urlsplit(url).netloc or url
    manual = manual_route(entry, target)
    try:
        pooch.retrieve(url, known_hash=entry.checksum.pooch_hash if entry.checksum else None, fname=target.name,
                       path=target.parent, downloader=downloader, progressbar=False)
    except _Mismatch as error:
        raise _checksum_error(entry, target, error.got, manual) from None
    except (_Interrupted, requests.exceptions.ChunkedEncodingError) as error:
        kept = part.stat().st_size if part.is_file() else 0
        raise _Retryable(FetchError(
            f"The download of {entry.name} from {host} broke off ({error}); {kept} bytes are kept in {part}.",
            f"run the same command again: it resumes from there (or {manual}).")) from None
    except requests.exceptions.HTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise FetchError(f"{host} refused {entry.name} (HTTP {status} for {url}).",
                         f"{manual}; or pass --mirror URL of a folder that serves {entry.name}.") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        kept = part.stat().st_size if part.is_file() else 0
        if downloader.started:  # the transfer had begun: retried, resuming
            raise _Retryable(FetchError(
                f"The connection to {host} was lost during {entry.name} ({type(error).__name__}); {kept} bytes are "
                f"kept in {part}.", f"run the same command again: it resumes from there (or {manual}).")) from None
        raise FetchError(  # no answer at all: not retried
            f"Could not reach {host} for {entry.name} ({type(error).__name__}): this machine is offline, or the "
            "host is down.",
            f"check the connection and run the same command again (a partial download resumes); or {manual}; "
            f"or pass --mirror URL of a folder that serves {entry.name}.") from None
    except requests.exceptions.RequestException as error:  # a malformed URL, too many redirects, ...
        raise FetchError(f"Could not fetch {entry.name} from {url}: {type(error).__name__}: {error}.",
                         f"check the URL (--mirror); or {manual}.") from None
    except ValueError as error:  # pooch's own verification failed: its temporary file is gone
        if "hash" not in str(error).lower():
            raise
        got = re.search(r"got ([0-9a-fA-F]+)", str(error))
        raise _checksum_error(entry, target, got.group(1) if got else "another digest", manual) from None
    except OSError as error:  # the disk: full, read-only, ...
        raise FetchError(f"Could not write {entry.name} to {target.parent}: {error}.",
                         "free space or choose other folders ($FSSLIB_DATA, $FSSLIB_WEIGHTS, --downloads).") from None
    if entry.checksum is None:
        options.say(f"{entry.name}: saved UNVERIFIED (--accept-unverified) at {target}; its sha256 is "
                    f"{file_digest(target, 'sha256')}")
    else:
        options.say(f"{entry.name}: saved at {target}, {entry.checksum.describe()} matches")
    return target


def _checksum_error(entry: RemoteFile, target: Path, got: str, manual: str) -> ChecksumError:
    assert entry.checksum is not None
    return ChecksumError(
        f"The download of {entry.name} does not match its {entry.checksum.describe()}: got {got}. "
        "It has been removed; nothing was saved as " + str(target) + ".",
        f"run the same command again (a transfer may have been corrupted); if it fails again the source or mirror "
        f"serves another file: {manual}.")


# ----------------------------------------------------------------------------------------------- open_clip weights

def fetch_hub_weights(entry: HubWeights, options: FetchOptions) -> Path:
    """open_clip's weights for ``entry`` into the Hugging Face cache, through huggingface_hub (which resumes and
    moves into place itself), then checked against the sha256 the Hub records for the file (its LFS object id,
    the blob's name in the cache; the git object id for a file outside LFS)."""
    import open_clip

    from fsslib.clip.loading import _hf_source, find_cached_weights, huggingface_hub_cache

    tag_cfg = open_clip.get_pretrained_cfg(entry.model, entry.tag)
    source = _hf_source(tag_cfg) if tag_cfg else None
    if source is None:
        raise unknown("open_clip model/tag on the Hugging Face Hub", entry.name, _hub_names())
    repo_id, filenames = source
    found = find_cached_weights(entry.model, entry.tag)
    if found is not None:
        verdict = _hub_blob_matches(found)
        if verdict is not False:
            options.say(f"{entry.name}: already at {found}" + (", the Hub's sha256 matches" if verdict else ""))
            return found
        options.say(f"{entry.name}: {found} does not match the Hub's sha256: downloading it again")
        _remove_cached(found)
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # the Hub answered that the file is not there (not: the Hub could not be asked)
    not_there = getattr(hub_errors, "RemoteEntryNotFoundError", hub_errors.EntryNotFoundError)

    cache = huggingface_hub_cache()
    if is_offline():
        raise FetchError(f"HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, so huggingface_hub will not download "
                         f"{entry.name}.", f"run this command without it, e.g. `HF_HUB_OFFLINE=0 {PROG} weights "
                                           f"{entry.name}`; or {_hub_manual(entry)}.")
    manual = _hub_manual(entry)
    endpoint = options.hf_endpoint or _hub_endpoint()
    _probe(endpoint, f"{repo_id} ({entry.name})", options.timeout,
           f"check the connection and run the same command again; or pass --hf-endpoint URL of a Hub mirror; "
           f"or {manual}.")
    were_disabled = are_progress_bars_disabled()
    (disable_progress_bars if not options.progress else enable_progress_bars)()
    try:
        return _download_from_hub(entry, repo_id, filenames, cache, manual, options, hf_hub_download,
                                  lambda error: isinstance(error, not_there)
                                  and not isinstance(error, hub_errors.LocalEntryNotFoundError))
    finally:
        (disable_progress_bars if were_disabled else enable_progress_bars)()


def _download_from_hub(entry: HubWeights, repo_id: str, filenames: list[str], cache: Path, manual: str,
                       options: FetchOptions, hf_hub_download: Callable[..., str],
                       not_there: Callable[[Exception], bool]) -> Path:
    """The first of ``filenames`` the Hub holds (open_clip's order), downloaded and checked."""
    last: Exception | None = None
    for filename in filenames:
        options.say(f"{entry.name}: downloading {filename} of {repo_id} from "
                    f"{options.hf_endpoint or 'the Hugging Face Hub'} -> {cache}")
        try:
            path = Path(hf_hub_download(repo_id, filename, cache_dir=cache, endpoint=options.hf_endpoint,
                                        etag_timeout=options.timeout))
        except Exception as error:  # huggingface_hub's offline / refused / connection errors come in many types
            if not_there(error):
                last = error  # open_clip's rule: then the next candidate
                continue
            raise FetchError(f"Could not fetch {filename} of {repo_id} ({entry.name}) from "
                             f"{options.hf_endpoint or 'the Hugging Face Hub'}: {type(error).__name__}: "
                             f"{str(error).splitlines()[0][:300] if str(error) else ''}",
                             f"check the connection and run the same command again (a partial download resumes); "
                             f"or pass --hf-endpoint URL of a Hub mirror; or {manual}.") from None
        verdict = _hub_blob_matches(path)
        if verdict is False:
            _remove_cached(path)
            raise ChecksumError(f"{filename} of {repo_id} ({entry.name}) does not match the sha256 the Hub records for "
                                "it; it has been removed from the cache.",
                                f"run the same command again; if it fails again, {manual}.")
        if verdict is None and not options.accept_unverified:
            _remove_cached(path)
            raise ChecksumError(f"{filename} of {repo_id} came without a sha256 from the Hub to check it against; "
                                "it has been removed.", f"re-run with --accept-unverified, or {manual}.")
        checked = "the Hub's sha256 matches" if verdict else "UNVERIFIED (--accept-unverified)"
        options.say(f"{entry.name}: saved at {path}, {checked}")
        return path
    raise FetchError(f"{repo_id} holds none of {', '.join(filenames)} ({entry.name}): {last}",
                     f"{manual}; or pass --hf-endpoint URL of a Hub mirror that holds it.")


def is_offline() -> bool:
    """huggingface_hub's offline switch (read when it was imported)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _probe(endpoint: str, what: str, timeout: float, fix: str) -> None:
    """Fail at once, with a clear message, when ``endpoint`` cannot be reached at all (huggingface_hub would retry
    for about 25 s first). Any HTTP answer passes."""
    import requests

    try:
        requests.head(endpoint, timeout=min(timeout, 15.0), allow_redirects=False)
    except requests.exceptions.RequestException as error:
        host = urlsplit(endpoint).netloc or endpoint
        raise FetchError(f"Could not reach {host} for {what} ({type(error).__name__}): this machine is offline, or "
                         "the host is down.", fix) from None


def _hub_manual(entry: HubWeights) -> str:
    return (f"on a connected machine run `python -c \"import open_clip; print(open_clip.download_pretrained("
            f"open_clip.get_pretrained_cfg('{entry.model}', '{entry.tag}')))\"` and copy the file it prints to "
            f"{paths.shown_path(paths.weights_root())}/{entry.model}_{entry.tag}<same suffix> "
            "(or copy the Hugging Face cache); "
            f"instructions: {paths.WEIGHTS_DOC}")


def _remove_cached(path: Path) -> None:
    """Remove a file of the Hugging Face cache: its blob and the snapshot's link to it."""
    blob = Path(path).resolve()
    Path(path).unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _hub_blob_matches(path: Path) -> bool | None:
    """Whether a file of the Hugging Face cache matches its blob's name (the Hub's sha256 for an LFS file, git's
    object id otherwise); None when the name is neither (a file outside the cache: nothing to check against)."""
    blob = Path(path).resolve()
    if blob.parent.name != "blobs":
        return None
    if re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return file_digest(blob, "sha256") == blob.name
    if re.fullmatch(r"[0-9a-f]{40}", blob.name):
        return file_digest(blob, "git-blob-sha1") == blob.name
    return None


def _hub_names() -> list[str]:
    return [name for name, entry in WEIGHTS.items() if isinstance(entry, HubWeights)]


# ----------------------------------------------------------------------------------------------- datasets

def fetch_dataset(name: str, options: FetchOptions) -> Path:
    """Download a benchmark's archives (checked), unzip COCO's, then prepare it into ``$FSSLIB_DATA``."""
    if name not in DATASETS:
        raise unknown("dataset", name, list(DATASETS))
    unzipped = options.downloads_folder() / COCO_FOLDER if name == "coco" else None
    archives: list[Path] = []
    errors: list[FsslibError] = []
    for entry in DATASETS[name].files:  # every archive is tried, so that one run fetches all it can
        try:
            if unzipped is not None and unzip_stamp(unzipped, entry).is_file():
                options.say(f"{entry.name}: already unzipped whole into {unzipped}")
            else:
                archive = fetch_file(entry, options)
                if unzipped is not None:
                    unzip_once(archive, unzipped, entry, options)
                archives.append(archive)
        except FsslibError as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise FetchError("\n".join(error.problem for error in errors),
                         "\n    ".join(dict.fromkeys(error.fix for error in errors)))
    if not options.prepare:
        options.say(f"{name}: fetched; prepare it with `python -m fsslib.data.prepare {name} ...` (--no-prepare)")
        return options.downloads_folder()
    return prepare(name, [unzipped] if unzipped is not None else archives, options)


def unzip_stamp(folder: Path, entry: RemoteFile) -> Path:
    """The file recording that ``entry`` was unzipped whole into ``folder`` (named after its checksum, so that
    another file of the same name does not count); the zip itself may be deleted afterwards."""
    digest = entry.checksum.value[:16] if entry.checksum else "unverified"
    return folder / f".{entry.name}.{digest}.unzipped"


def unzip_once(archive: Path, folder: Path, entry: RemoteFile, options: FetchOptions) -> None:
    """Unzip ``archive`` into ``folder``: its members go to a hidden folder first, their top-level folders are
    moved into place at the end, then the stamp of :func:`unzip_stamp` is written."""
    options.say(f"{archive.name}: unzipping into {folder}")
    staging = folder / f".unzipping-{archive.stem}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(staging)
    except (zipfile.BadZipFile, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise FetchError(f"Could not unzip {archive}: {error}.",
                         f"delete {archive} and run the same command again, or unzip it by hand into {folder} "
                         f"({paths.DATASETS_DOC}).") from None
    for member in staging.iterdir():
        place = folder / member.name
        if place.is_dir() and not place.is_symlink():
            shutil.rmtree(place)
        elif place.exists() or place.is_symlink():
            place.unlink()
        os.replace(member, place)
    staging.rmdir()
    write_text(unzip_stamp(folder, entry), f"{archive.name} unzipped whole\n")


def prepare(name: str, inputs: list[Path], options: FetchOptions) -> Path:
    """Run ``fsslib.data.prepare`` on fetched archives, unless the benchmark is already prepared from them."""
    from fsslib.data.benchmarks import COCO, PASCAL
    from fsslib.data.layout import MARKER

    root = PASCAL.root() if name == "pascal" else COCO.root()
    marker = root / MARKER
    if marker.is_file():
        import json

        record = json.loads(marker.read_text())
        if name != "pascal" or record.get("train_list") == options.pascal_train_list:
            options.say(f"{name}: already prepared at {root} (delete {marker} to prepare it again)")
            return root
    options.say(f"{name}: preparing into {root}")
    if name == "pascal":
        from fsslib.data.pascal import prepare_pascal

        prepare_pascal(inputs[0], inputs[1], root, train_list=options.pascal_train_list)
    else:
        from fsslib.data.coco import prepare_coco

        prepare_coco(inputs[0], root)
    options.say(f"{name}: prepared at {root}")
    return root


# ----------------------------------------------------------------------------------------------- weights

def fetch_weights(name: str, options: FetchOptions) -> Path:
    entry = resolve_weights(name)
    if isinstance(entry, HubWeights):
        return fetch_hub_weights(entry, options)
    path = fetch_file(entry, options)
    if entry.use:
        options.say(f"{entry.name}: read by {entry.use}")
    return path


def resolve_weights(name: str) -> RemoteFile | HubWeights:
    """A weights name of :data:`WEIGHTS`, or any open_clip ``MODEL/TAG`` whose weights are on the Hub."""
    if name in WEIGHTS:
        return WEIGHTS[name]
    if name.count("/") == 1:
        import open_clip

        model, tag = name.split("/")
        cfg = open_clip.get_pretrained_cfg(model, tag) if open_clip.get_model_config(model) else {}
        if cfg.get("hf_hub"):
            return HubWeights(model, tag)
    raise unknown("weights", name, [*WEIGHTS, "(or any open_clip MODEL/TAG on the Hugging Face Hub)"])


def method_weights(method: str) -> tuple[str, ...]:
    if method not in METHOD_WEIGHTS:
        raise unknown("method", method, list(METHOD_WEIGHTS))
    return METHOD_WEIGHTS[method]


# ----------------------------------------------------------------------------------------------- the command

def plan(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (kind, name) jobs the command line asks for, in order: datasets first, then weights."""
    targets = list(args.targets)
    if args.all_for:
        if targets or args.method:
            raise FsslibError("--all-for fetches a method's data and weights; it takes no other names or --method.",
                              f"run `{PROG} --all-for {args.all_for}` alone.")
        weights = method_weights(args.all_for)
        benchmarks = list(DATASETS) if args.benchmark == "all" else [args.benchmark]
        return [("dataset", name) for name in benchmarks] + [("weights", name) for name in weights]
    if not targets:
        raise FsslibError("Nothing to fetch.", f"name a dataset ({', '.join(DATASETS)}), `weights NAME ...`, "
                                               f"`weights --method METHOD` or `--all-for METHOD`; `{PROG} --list` "
                                               "lists every name.")
    if targets[0] == "weights":
        names = targets[1:]
        if args.method:
            names = [*method_weights(args.method), *names]
        if not names:
            raise FsslibError("`weights` needs names or --method.",
                              f"e.g. `{PROG} weights --method piclip` or `{PROG} weights resnet50`; "
                              f"names: {', '.join(WEIGHTS)}.")
        for name in names:
            resolve_weights(name)  # an unknown name fails before anything downloads
        return [("weights", name) for name in dict.fromkeys(names)]
    if args.method:
        raise FsslibError("--method goes with `weights`.", f"run `{PROG} weights --method {args.method}`, or "
                                                           f"`{PROG} --all-for {args.method}` for its data too.")
    for name in targets:
        if name not in DATASETS:
            raise unknown("dataset", name, [*DATASETS, "weights"])
    return [("dataset", name) for name in dict.fromkeys(targets)]


def catalogue() -> str:
    """The --list text: every name, its file, destination and checksum source."""
    lines = ["Datasets (archives to $FSSLIB_DATA/downloads, then prepared into $FSSLIB_DATA):"]
    for dataset in DATASETS.values():
        for entry in dataset.files:
            size = f", {entry.size / 1e9:.1f} GB" if entry.size else ""
            lines.append(f"  {dataset.name:<28} {entry.name:<36} {entry.checksum.describe() if entry.checksum else '-'}{size}")
    lines.append("Weights (to $FSSLIB_WEIGHTS; open_clip's to the Hugging Face cache):")
    for name, entry in WEIGHTS.items():
        if isinstance(entry, HubWeights):
            lines.append(f"  {name:<28} {'open_clip ' + entry.model + ' ' + entry.tag:<36} the sha256 the Hub records")
        else:
            check = entry.checksum.describe() if entry.checksum else "none published: needs --accept-unverified"
            where = f"{entry.subfolder}/{entry.name}" if entry.subfolder else entry.name
            lines.append(f"  {name:<28} {where:<36} {check}" + ("" if entry.url else "; no direct download"))
    lines.append("Methods (weights --method / --all-for):")
    for method, names in METHOD_WEIGHTS.items():
        lines.append(f"  {method:<28} {', '.join(names) or '(no weights)'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="NAME",
                        help=f"datasets ({', '.join(DATASETS)}), or `weights` followed by weight names "
                             f"({', '.join(WEIGHTS)}, or any open_clip MODEL/TAG on the Hub)")
    parser.add_argument("--method", metavar="METHOD", help=f"with `weights`: the files the method's paper preset reads "
                                                          f"({', '.join(METHOD_WEIGHTS)})")
    parser.add_argument("--all-for", metavar="METHOD", help="a method's benchmark (see --benchmark) and its weights")
    parser.add_argument("--benchmark", choices=(*DATASETS, "all"), default="pascal",
                        help="with --all-for: which benchmark's data (default: pascal, the paper preset's)")
    parser.add_argument("--list", action="store_true", help="list every name, file, destination and checksum source")
    parser.add_argument("--mirror", metavar="URL", help="take every file but open_clip's (--hf-endpoint) from URL/<file "
                                                        "name> instead of its official source (checksums unchanged)")
    parser.add_argument("--hf-endpoint", metavar="URL", help="a Hugging Face Hub mirror for open_clip's weights")
    parser.add_argument("--accept-unverified", action="store_true",
                        help="take files that have no published checksum (DINO's; PSPNet's resnet50_v2.pth from a "
                             "--mirror) and print their sha256")
    parser.add_argument("--retries", type=int, default=3, metavar="N",
                        help="automatic retries, resuming, after a transfer broke off (default 3)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="network timeout per connection and read (default 60)")
    parser.add_argument("--downloads", type=Path, metavar="DIR",
                        help="where dataset archives go (default $FSSLIB_DATA/downloads)")
    parser.add_argument("--no-prepare", dest="prepare", action="store_false",
                        help="download datasets without running `fsslib.data.prepare` on them")
    parser.add_argument("--pascal-train-list", choices=("pfenet", "trainaug"), default="pfenet",
                        help="the PASCAL-5i train list to prepare (default pfenet; see docs/paper_tier.md)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    if args.list:
        print(catalogue())
        return
    if args.retries < 0 or args.timeout <= 0:
        parser.exit(2, "error: --retries must be at least 0 and --timeout above 0.\n"
                       "  How to fix: pass e.g. --retries 3 --timeout 60 (the defaults).\n")
    options = FetchOptions(mirror=args.mirror, hf_endpoint=args.hf_endpoint, accept_unverified=args.accept_unverified,
                           retries=args.retries, timeout=args.timeout, progress=args.progress,
                           downloads=args.downloads, prepare=args.prepare, pascal_train_list=args.pascal_train_list)
    try:
        jobs = plan(args)
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")
    failures = run_jobs(jobs, options)
    if args.all_for and args.all_for in METHOD_NOTES:
        print(f"note ({args.all_for}): {METHOD_NOTES[args.all_for]}")
    elif args.method in METHOD_NOTES:
        print(f"note ({args.method}): {METHOD_NOTES[args.method]}")
    if failures:
        parser.exit(2, f"{len(failures)} of {len(jobs)} not fetched: {', '.join(name for name, _ in failures)} "
                       "(each error above says why and what to do); what was fetched is kept.\n")


def run_jobs(jobs: Iterable[tuple[str, str]], options: FetchOptions) -> list[tuple[str, FsslibError]]:
    """Run every job, printing each error as it happens; the errors of those that failed (the others still run)."""
    failures = []
    for kind, name in jobs:
        try:
            (fetch_dataset if kind == "dataset" else fetch_weights)(name, options)
        except FsslibError as error:
            failures.append((name, error))
            print(f"error: {name}: {error}", file=sys.stderr, flush=True)
    return failures


if __name__ == "__main__":
    main()
