"""Loading CLIP models into a :class:`ClipBundle`, never touching the network.

A bundle is everything the dense, text and GradCAM code needs: the frozen model, its
tokenizer, the image statistics it was trained with, its native input size and its
kind (``"vit"`` or ``"rn"``) with the patch size / output stride.

Where weights come from (:func:`load_clip`):

* ``load_clip("ViT-B-16")`` -- any open_clip model name, random weights (tests, timings).
* ``load_clip("ViT-B-16", pretrained="openai")`` -- the tag's weights, looked up in
  ``$FSSLIB_WEIGHTS/<name>_<tag>.{safetensors,bin,pt,pth}``, then in the Hugging Face
  cache (``$HF_HUB_CACHE`` or ``$HF_HOME/hub``), then in ``~/.cache/clip``. fsslib
  never downloads: when nothing is found it raises :class:`~fsslib.errors.CheckpointError`
  with the one-liner that fetches the file on a connected machine.
* ``load_clip("ViT-B-16", pretrained="openai", checkpoint=PATH)`` -- that file, with the
  tag's settings (QuickGELU, mean/std).
* ``load_clip(PATH)`` or ``load_clip("toy-vit")`` / ``load_clip("toy-rn")`` -- a
  self-describing fsslib checkpoint: a dict with ``model_cfg`` (open_clip config: embed_dim,
  vision_cfg, text_cfg), ``state_dict``, ``context_length``, ``image_size``, ``mean``,
  ``std`` and optionally ``vocab`` (a word-level vocabulary for
  :class:`fsslib.clip.toy.WordTokenizer`; without it open_clip's BPE tokenizer is used).
  It loads with ``torch.load(weights_only=True)``: plain containers of str, int, float and tensors.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.modified_resnet import ModifiedResNet
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from fsslib import paths
from fsslib.clip.toy import WordTokenizer, build_toy_clip
from fsslib.errors import CheckpointError, FsslibError, UnknownNameError, unknown
from fsslib.models.files import read_weights

TOY_CHECKPOINT_FILES = {"toy-vit": "toy_clip_vit.pt", "toy-rn": "toy_clip_rn.pt"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
CHECKPOINT_KEYS = ("model_cfg", "state_dict", "context_length", "image_size", "mean", "std")

Tokenizer = Callable[[list[str]], Tensor]  # list of N strings -> LongTensor (N, L)


class ClipInputError(FsslibError, ValueError):
    """Images, embeddings or options handed to the CLIP layer do not fit the model."""


@dataclass(frozen=True, eq=False)
class ClipBundle:
    """A frozen CLIP model with what it takes to feed it.

    ``patch_size`` is the ViT patch size, or the ResNet output stride (32 for CLIP's
    ResNets, 8 for toy-rn): the dense feature grid of an ``H x W`` image is about
    ``H // patch_size x W // patch_size``. ``model_cfg`` is the config the model was built
    from: an fsslib checkpoint's own, open_clip's for a model name (the pretrained tag may
    add QuickGELU), None when :func:`bundle_from_model` was given none.
    """

    model: nn.Module
    tokenizer: Tokenizer
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    kind: Literal["vit", "rn"]
    patch_size: int
    name: str
    pretrained: str | None = None
    model_cfg: dict[str, Any] | None = None

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embed_dim(self) -> int:
        """Dimension D of CLIP's joint image-text space."""
        return int(self.model.text_projection.shape[-1])

    @property
    def logit_temperature(self) -> float:
        """1 / the model's learned logit scale (0.01 for pretrained CLIP; other for toy or random weights)."""
        return float(1.0 / self.model.logit_scale.exp())

    @property
    def num_blocks(self) -> int:
        """Number of transformer blocks (ViT) or residual stages (ResNet: 4)."""
        return len(self.visual.transformer.resblocks) if self.kind == "vit" else 4

    def __repr__(self) -> str:
        weights = self.pretrained or "random weights"
        if Path(weights).is_relative_to(paths.PACKAGE_DIR):  # a shipped file: named as in the repository
            weights = Path(weights).relative_to(paths.PACKAGE_DIR.parent).as_posix()
        return (
            f"ClipBundle({self.name!r}, {weights}, kind={self.kind!r}, image_size={self.image_size}, "
            f"patch_size={self.patch_size}, embed_dim={self.embed_dim}, device={self.device})"
        )


def attention_pool_grid(visual: ModifiedResNet) -> int:
    """Side of the square feature grid the attention pool's positional embedding was trained for."""
    return round((visual.attnpool.positional_embedding.shape[0] - 1) ** 0.5)


def bundle_from_model(
    model: nn.Module,
    tokenizer: Tokenizer,
    *,
    mean: tuple[float, ...] = OPENAI_DATASET_MEAN,
    std: tuple[float, ...] = OPENAI_DATASET_STD,
    name: str = "custom",
    pretrained: str | None = None,
    model_cfg: dict[str, Any] | None = None,
) -> ClipBundle:
    """Wrap an open_clip ``CLIP`` model (set to eval and frozen in place) into a bundle."""
    visual = getattr(model, "visual", None)
    if isinstance(visual, VisionTransformer):
        kind: Literal["vit", "rn"] = "vit"
        patch_size = int(visual.patch_size[0])
        image_size = int(visual.image_size[0])
    elif isinstance(visual, ModifiedResNet):
        kind, image_size = "rn", int(visual.image_size)
        patch_size = image_size // attention_pool_grid(visual)  # 32 for CLIP's ResNets, 8 for toy-rn
    else:
        raise ClipInputError(
            f"Model {name!r} has an image tower of type {type(visual).__name__}; fsslib's CLIP layer "
            "needs open_clip's VisionTransformer or ModifiedResNet.",
            "use an OpenAI-style CLIP architecture such as ViT-B-16, ViT-B-32 or RN50 (not timm/HF towers).",
        )
    model.eval()
    model.requires_grad_(False)
    return ClipBundle(
        model=model,
        tokenizer=tokenizer,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        image_size=image_size,
        kind=kind,
        patch_size=patch_size,
        name=name,
        pretrained=pretrained,
        model_cfg=model_cfg,
    )


def load_clip(
    name: str,
    pretrained: str | None = None,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> ClipBundle:
    """Load a CLIP model by open_clip name, fsslib checkpoint path, or ``"toy-vit"``/``"toy-rn"``.

    ``pretrained=None`` (and no ``checkpoint``) gives random weights. Nothing is ever
    downloaded; missing weights raise :class:`~fsslib.errors.CheckpointError` saying how
    to fetch them once on a connected machine. With ``checkpoint=PATH`` for an open_clip
    name, also pass the tag the file comes from (e.g. ``pretrained="openai"``): the tag
    decides QuickGELU and the image mean/std, which the weights file does not record.
    """
    if name in TOY_CHECKPOINT_FILES:
        path = Path(checkpoint) if checkpoint is not None else paths.CHECKPOINT_DIR / TOY_CHECKPOINT_FILES[name]
        return _load_fsslib_checkpoint(path, name, device, missing_fix=_toy_missing_fix(name))
    if _looks_like_path(name):
        return _load_fsslib_checkpoint(Path(name).expanduser(), Path(name).stem, device, missing_fix=None)
    return _load_open_clip(name, pretrained, checkpoint, device)


def _looks_like_path(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or os.sep in name or name.startswith("~")


def _toy_missing_fix(name: str) -> str:
    arch = name.removeprefix("toy-")
    target = paths.CHECKPOINT_DIR / TOY_CHECKPOINT_FILES[name]
    return (
        f"the toy CLIP checkpoints ship inside the fsslib package ({paths.CHECKPOINT_DIR}): reinstall fsslib "
        f"from its repository, or re-make it with `python -m fsslib.pretrain toy-clip recipe {arch} --out-dir "
        f"{target.parent}` (see fsslib/checkpoints/README.md), or pass checkpoint=PATH."
    )


def _load_fsslib_checkpoint(
    path: Path, name: str, device: str | torch.device, missing_fix: str | None
) -> ClipBundle:
    content = read_weights(
        path, "CLIP checkpoint",
        missing_fix or "check the path, or load an open_clip model by name, e.g. load_clip('ViT-B-16', 'openai').",
        "re-copy the file; fsslib CLIP checkpoints are torch.save'd dicts.")
    missing_keys = [key for key in CHECKPOINT_KEYS if not (isinstance(content, dict) and key in content)]
    if missing_keys:
        raise CheckpointError(
            f"{path} is not a self-describing fsslib CLIP checkpoint (missing {', '.join(missing_keys)}).",
            "if it holds only open_clip weights, name the architecture: "
            f"load_clip('ViT-B-16', pretrained='openai', checkpoint={str(path)!r}).",
        )
    model_cfg = dict(content["model_cfg"])
    context_length = int(content["context_length"])
    if content.get("vocab") is not None:
        model = build_toy_clip(model_cfg)
        tokenizer: Tokenizer = WordTokenizer(list(content["vocab"]), context_length)
    else:
        model = open_clip.CLIP(**model_cfg)
        tokenizer = SimpleTokenizer(context_length=context_length)
    try:
        model.load_state_dict(content["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"The weights in {path} do not fit its model_cfg: {error}",
            "re-save the checkpoint with the model_cfg the weights were trained with.",
        ) from error
    bundle = bundle_from_model(
        model.to(device), tokenizer, mean=tuple(content["mean"]), std=tuple(content["std"]), name=name,
        pretrained=str(path), model_cfg=model_cfg,
    )
    if bundle.image_size != int(content["image_size"]):
        raise CheckpointError(
            f"{path} says image_size={content['image_size']} but its model_cfg builds {bundle.image_size}.",
            "re-save the checkpoint with a consistent image_size.",
        )
    return bundle


def _load_open_clip(
    name: str, pretrained: str | None, checkpoint: str | Path | None, device: str | torch.device
) -> ClipBundle:
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise UnknownNameError(
            f"Unknown CLIP model {name!r}: not an open_clip model name, not toy-vit/toy-rn, and not a checkpoint path.",
            "use an open_clip name such as 'ViT-B-16' or 'RN50' (all: open_clip.list_models()), 'toy-vit', "
            "'toy-rn', or the path of an fsslib CLIP checkpoint (ending in .pt).",
        )
    vision_cfg, text_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if vision_cfg.get("timm_model_name") or text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name"):
        raise ClipInputError(
            f"open_clip model {name!r} uses a timm or Hugging Face tower; fsslib's CLIP layer needs "
            "open_clip's own VisionTransformer / ModifiedResNet and BPE tokenizer.",
            "use an OpenAI-style architecture such as ViT-B-16, ViT-B-32 or RN50.",
        )
    tag_cfg: dict[str, Any] = {}
    if pretrained is not None:
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if not tag_cfg:
            raise unknown(f"pretrained tag for {name}", pretrained, open_clip.list_pretrained_tags_by_model(name))
    if checkpoint is not None:
        weights_file: Path | None = Path(checkpoint).expanduser()
        if not weights_file.is_file():
            raise CheckpointError(
                f"Checkpoint file {weights_file} does not exist.",
                "check the path (it should be the open_clip weights file, e.g. open_clip_model.safetensors).",
            )
    elif pretrained is not None:
        weights_file = find_cached_weights(name, pretrained)
        if weights_file is None:
            raise _missing_weights_error(name, pretrained)
    else:
        weights_file = None
    try:
        model = open_clip.create_model(
            name,
            pretrained=str(weights_file) if weights_file is not None else None,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            device=device,
        )
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"Could not load weights {weights_file} into open_clip model {name!r}: {error}",
            "check that the file holds this architecture's weights (pass the matching name and pretrained tag).",
        ) from error
    return bundle_from_model(
        model,
        open_clip.get_tokenizer(name),
        mean=tuple(tag_cfg.get("mean", OPENAI_DATASET_MEAN)),
        std=tuple(tag_cfg.get("std", OPENAI_DATASET_STD)),
        name=name,
        pretrained=pretrained or (str(weights_file) if weights_file is not None else None),
        model_cfg=model_cfg,
    )


def huggingface_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def _hf_source(tag_cfg: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The (repo id, candidate file names) open_clip would download for a tag, if it uses the hub."""
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        return None
    repo_id, filename = hub.rstrip("/"), ""
    if not hub.endswith("/"):
        repo_id, filename = os.path.split(hub)
    filename = filename or HF_WEIGHTS_NAME
    candidates = [filename]
    if filename == HF_WEIGHTS_NAME:
        candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        candidates.insert(0, filename[:-4] + ".safetensors")
    return repo_id, candidates


def _find_in_hub_cache(repo_id: str, filenames: list[str]) -> Path | None:
    repo_dir = huggingface_hub_cache() / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    main_ref = repo_dir / "refs" / "main"
    revisions = [main_ref.read_text().strip()] if main_ref.is_file() else []
    revisions += sorted(p.name for p in snapshots.iterdir() if p.name not in revisions)
    for filename in filenames:
        for revision in revisions:
            candidate = snapshots / revision / filename
            if candidate.is_file():
                return candidate
    return None


def weights_file_stem(name: str, pretrained: str) -> str:
    """File name (without suffix) under ``$FSSLIB_WEIGHTS`` for an open_clip name and tag."""
    return f"{name}_{pretrained}"


def find_cached_weights(name: str, pretrained: str) -> Path | None:
    """Locate already-downloaded weights for ``(name, pretrained)``; never touches the network."""
    for suffix in WEIGHT_SUFFIXES:
        candidate = paths.weights_root() / f"{weights_file_stem(name, pretrained)}{suffix}"
        if candidate.is_file():
            return candidate
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if tag_cfg.get("file"):
        return Path(tag_cfg["file"]) if Path(tag_cfg["file"]).is_file() else None
    hf_source = _hf_source(tag_cfg)
    if hf_source is not None:
        found = _find_in_hub_cache(*hf_source)
        if found is not None:
            return found
    if tag_cfg.get("url"):
        candidate = Path("~/.cache/clip").expanduser() / os.path.basename(tag_cfg["url"])
        if candidate.is_file():
            return candidate
    return None


def _missing_weights_error(name: str, pretrained: str) -> CheckpointError:
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    hf_source = _hf_source(tag_cfg)
    stem = paths.weights_root() / weights_file_stem(name, pretrained)
    if hf_source is not None:
        repo_id, filenames = hf_source
        wanted = f"{' or '.join(filenames)} of Hugging Face repo {repo_id!r} under {huggingface_hub_cache()}"
    else:
        wanted = f"{os.path.basename(tag_cfg.get('url', ''))} under {Path('~/.cache/clip').expanduser()}"
    one_liner = (
        "python -c \"import open_clip; print(open_clip.download_pretrained("
        f"open_clip.get_pretrained_cfg('{name}', '{pretrained}')))\""
    )
    return CheckpointError(
        f"No local weights for open_clip model {name!r} with pretrained={pretrained!r}: looked for "
        f"{stem}{{{','.join(WEIGHT_SUFFIXES)}}} and for {wanted}. Nothing but `python -m fsslib.fetch` downloads.",
        f"on a connected machine run once:  python -m fsslib.fetch weights {name}/{pretrained}  (checked, into the "
        f"places above). Offline: {one_liner} downloads the weights elsewhere and prints the file's path; copy that "
        f"file here as {stem}<same suffix> (or copy the whole Hugging Face cache), or pass load_clip({name!r}, "
        f"pretrained={pretrained!r}, checkpoint=PATH) (methods: --options clip_checkpoint=PATH); instructions: "
        f"{paths.WEIGHTS_DOC}.",
    )
