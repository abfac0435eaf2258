"""Toy CLIP: small open_clip models trained by fsslib on the toy world.

The papers stand on a frozen pretrained CLIP; this machine-independent stand-in is
an ``open_clip.CLIP`` with a word-level text tower and either a toy ViT (a small conv
stem replaces the patch embedding; class token, positional embedding, ``resblocks``,
``ln_post`` and ``proj`` are open_clip's own) or a toy ModifiedResNet (attention
pooling, small widths, feature stride 8 instead of 32).

Training recipe (``train_toy_clip``):

* a pre-rendered pool of toy scenes (5% empty, many single-object scenes, random
  crops captioned with only the objects mostly inside them), each captioned afresh
  every time it is drawn, from templates that cover the 85 MaskCLIP templates, the
  PI-CLIP prompts ("a photo of {c}." / "a photo without {c}."), spatial words and
  negatives ("... without a dotted star.");
* loss = CLIP contrastive loss (captions naming the same set of classes count as
  positives of each other)
  + a dense multiple-instance loss: the MaskCLIP dense features (the value path of
  the last block / of the attention pool) are classified against the class prompts
  and the empty-scene prompt; a class the caption names must win on k positions,
  k = half its area in feature cells (how large the object is, as in "a large star"),
  the probability must stay on named classes and background everywhere, and the
  background must win on the top third of positions
  + the same loss inside random windows of the feature grid, each labelled as a crop
  caption would be (the classes with >= 60% of their pixels inside are named, those
  with <= 15% are not, in between is ignored; a window with no object is background):
  the dense form of captioning random crops, which rewards locality
  + a negation loss: the image embedding must prefer "a photo of {c}." over
  "a photo without {c}." exactly when the caption names ``c``.
The masks enter only as what a captioner of crops would know: per feature cell, how
many pixels of each label it holds (``patch_label_counts``); no per-pixel target is used.

The shipped checkpoints are made by ``RECIPES``: one training call for the RN, three
stages for the ViT (from scratch at area fraction 0.5, then on from the previous stage
at 0.8 and at 1.0, each with a fresh warm-up and cosine at a lower learning rate).

CLI::

    python -m fsslib.clip.toy recipe vit                 # every stage of a shipped checkpoint, in order
    python -m fsslib.clip.toy recipe vit --start 3       # only the last stage, from the shipped stage 2
    python -m fsslib.clip.toy train --arch rn --steps 20000 --batch-size 32 --out fsslib/checkpoints/toy_clip_rn.pt
    python -m fsslib.clip.toy train --arch vit --init CKPT --area-fraction 0.8 ...   # continue training CKPT
    python -m fsslib.clip.toy evaluate fsslib/checkpoints/toy_clip_vit.pt
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import AttentionPool2d
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from fsslib.data.layout import IGNORE
from fsslib.data.toyworld import CLASS_NAMES, FILLS, SHAPES, ToyObject, render_scene
from fsslib.errors import CheckpointError, FsslibError, unknown
from fsslib.paths import CHECKPOINT_DIR
from fsslib.provenance import git_commit, hardware

# ----------------------------------------------------------------------------- prompts

SCENE_TEMPLATES: tuple[str, ...] = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)
MASKCLIP_TEMPLATES: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES) + SCENE_TEMPLATES
ZERO_SHOT_TEMPLATE = "a photo of a {}."
PI_CLIP_TARGET = "a photo of {}."
PI_CLIP_NON_TARGET = "a photo without {}."
EMPTY_PROMPT = "a photo of an empty scene."
SPATIAL_WORDS: tuple[str, ...] = ("on the left", "on the right", "at the top", "at the bottom", "in the middle")
CAPTION_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "photo", "without", "and", "with", "there", "is", "are", "in", "scene", "this",
    "empty", "no", "objects", "object", "picture", "image", "next", "to", "one", "two", "three", "shape",
    "shapes", "on", "left", "right", "at", "top", "bottom", "middle", "crop", "part",
)
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
EVAL_SEED = 20_240_601  # evaluation scenes: rng([EVAL_SEED, set, index]); training: rng([seed, 1, index])

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words and single punctuation marks: 'A close-up.' -> a close - up ."""
    return _WORD.findall(text.lower())


def toy_vocabulary() -> list[str]:
    """Every word of the captions, class names, MaskCLIP templates and PI-CLIP prompts."""
    texts = [*MASKCLIP_TEMPLATES, PI_CLIP_TARGET, PI_CLIP_NON_TARGET, EMPTY_PROMPT, *SPATIAL_WORDS,
             *CAPTION_WORDS, *SHAPES, *FILLS, ", ."]
    words: list[str] = []
    for text in texts:
        for word in split_words(text.replace("{}", " ")):
            if word not in words:
                words.append(word)
    return words


class WordTokenizer:
    """Word-level tokenizer: id 0 = pad, 1 = UNK, 2 = SOT, vocabulary, EOT = highest id.

    EOT having the highest id makes open_clip's argmax text pooling pick it.
    """

    def __init__(self, vocab: list[str], context_length: int) -> None:
        self.vocab = list(vocab)
        self.context_length = context_length
        self.pad_id, self.unk_id, self.sot_id = 0, 1, 2
        self.word_to_id = {word: 3 + i for i, word in enumerate(self.vocab)}
        self.eot_id = 3 + len(self.vocab)
        self.vocab_size = self.eot_id + 1

    def encode(self, text: str) -> list[int]:
        """Token ids of one text with SOT/EOT, truncated to the context length."""
        ids = [self.word_to_id.get(word, self.unk_id) for word in split_words(text)]
        return [self.sot_id, *ids[: self.context_length - 2], self.eot_id]

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Words of the ids between SOT and EOT, joined by spaces ('<unk>' for UNK)."""
        words = []
        for token in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if token == self.eot_id:
                break
            if token >= 3:
                words.append(self.vocab[token - 3])
            elif token == self.unk_id:
                words.append("<unk>")
        return " ".join(words)

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        tokens = torch.zeros(len(texts), self.context_length, dtype=torch.long)  # (N, L)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            tokens[row, : len(ids)] = torch.tensor(ids)
        return tokens


# ----------------------------------------------------------------------------- models


class ConvStem(nn.Sequential):
    """Stride-8 conv stem: an optional stride-1 3x3 conv (``lead_channels`` > 0), three
    stride-2 3x3 conv + BN + GELU layers, then a 1x1 conv to ``width``."""

    def __init__(self, width: int, channels: tuple[int, ...] = (16, 32, 64), lead_channels: int = 16) -> None:
        layers: list[nn.Module] = [nn.Conv2d(3, lead_channels, 3, padding=1)] if lead_channels else []
        in_channels = lead_channels or 3
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.GELU()]
            in_channels = out_channels
        layers.append(nn.Conv2d(in_channels, width, 1))
        super().__init__(*layers)


def default_model_cfg(arch: str, image_size: int = 64, vocab_size: int | None = None,
                      context_length: int = 32) -> dict:
    """The shipped toy architecture for ``arch`` in {'vit', 'rn'} as an open_clip model cfg."""
    vocab_size = vocab_size if vocab_size is not None else len(toy_vocabulary()) + 4
    text_cfg = {"context_length": context_length, "vocab_size": vocab_size, "width": 64, "heads": 2, "layers": 2}
    if arch == "vit":
        vision_cfg = {"image_size": image_size, "patch_size": 8, "width": 64, "layers": 3, "head_width": 32,
                      "pool_type": "avg"}
    elif arch == "rn":
        vision_cfg = {"image_size": image_size, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32}
    else:
        raise unknown("toy CLIP architecture", arch, ["vit", "rn"])
    toy = {"arch": arch, "feature_stride": 8, "init_logit_scale": math.log(50.0)}
    if arch == "vit":
        toy.update(stem_channels=[16, 32, 64], stem_lead_channels=16)
    return {"embed_dim": 64, "vision_cfg": vision_cfg, "text_cfg": text_cfg, "toy": toy}


def build_toy_clip(model_cfg: dict) -> open_clip.CLIP:
    """An ``open_clip.CLIP`` from a toy model cfg (see ``default_model_cfg``).

    ViT: the patch-embedding conv ``visual.conv1`` becomes a stride-``patch_size`` conv
    stem; everything else is open_clip's VisionTransformer. ResNet: layer3/layer4 keep
    stride 1 so the feature stride is 8, and the attention pool's positional embedding
    fits that grid.
    """
    toy = model_cfg["toy"]
    model = open_clip.CLIP(embed_dim=model_cfg["embed_dim"], vision_cfg=model_cfg["vision_cfg"],
                           text_cfg=model_cfg["text_cfg"], init_logit_scale=toy["init_logit_scale"])
    vision = model_cfg["vision_cfg"]
    visual = model.visual
    if toy["arch"] == "vit":
        if vision["patch_size"] != 8:
            raise CheckpointError(f"The toy ViT stem has stride 8, not patch_size {vision['patch_size']}.",
                                  "use patch_size 8 in vision_cfg.")
        visual.conv1 = ConvStem(vision["width"], tuple(toy["stem_channels"]), toy["stem_lead_channels"])
    elif toy["arch"] == "rn":
        width, layers = vision["width"], vision["layers"]
        visual._inplanes = width * 8  # channels after layer2
        visual.layer3 = visual._make_layer(width * 4, layers[2], stride=1)
        visual.layer4 = visual._make_layer(width * 8, layers[3], stride=1)
        grid = vision["image_size"] // toy["feature_stride"]
        visual.attnpool = AttentionPool2d(grid, width * 32, width * 32 // vision["head_width"],
                                          model_cfg["embed_dim"])
        visual.init_parameters()
    else:
        raise unknown("toy CLIP architecture", toy["arch"], ["vit", "rn"])
    return model


@dataclass
class ToyClipBundle:
    """A loaded toy CLIP: the model, its tokenizer and its image preprocessing."""

    model: open_clip.CLIP
    tokenizer: WordTokenizer
    model_cfg: dict
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def arch(self) -> str:
        return self.model_cfg["toy"]["arch"]

    def preprocess(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images (B, H, W, 3) -> normalised float tensor (B, 3, S, S)."""
        x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, D)."""
        return self.model.encode_text(self.tokenizer(texts), normalize=True)

    @torch.no_grad()
    def class_embeddings(self, names: list[str], templates: tuple[str, ...] = (ZERO_SHOT_TEMPLATE,)) -> torch.Tensor:
        """Template-ensembled class embeddings (C, D): mean of normalised, normalised again."""
        per_template = torch.stack([self.encode_prompts([t.format(n) for n in names]) for t in templates])
        return F.normalize(per_template.mean(0), dim=-1)


def save_toy_clip(path: str | Path, model: open_clip.CLIP, model_cfg: dict, tokenizer: WordTokenizer,
                  image_size: int) -> Path:
    """Write the checkpoint dict (fp16 floating-point weights) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    checkpoint = {"model_cfg": model_cfg, "state_dict": state, "vocab": tokenizer.vocab,
                  "context_length": tokenizer.context_length, "image_size": image_size,
                  "mean": list(MEAN), "std": list(STD)}
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return path


def load_toy_clip(path: str | Path) -> ToyClipBundle:
    """Load a toy CLIP checkpoint written by ``save_toy_clip`` (eval mode, fp32)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No toy CLIP checkpoint at {path}.",
                              "train one with `python -m fsslib.clip.toy train --arch vit --out PATH`.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    missing = {"model_cfg", "state_dict", "vocab", "context_length", "image_size", "mean", "std"} - set(checkpoint)
    if missing:
        raise CheckpointError(f"{path} is not a toy CLIP checkpoint (missing {sorted(missing)}).",
                              "pass a file written by `python -m fsslib.clip.toy train`.")
    model = build_toy_clip(checkpoint["model_cfg"])
    state = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state)
    model.eval()
    tokenizer = WordTokenizer(checkpoint["vocab"], checkpoint["context_length"])
    return ToyClipBundle(model, tokenizer, checkpoint["model_cfg"], checkpoint["image_size"],
                         tuple(checkpoint["mean"]), tuple(checkpoint["std"]))


# ----------------------------------------------------------------------------- dense features


def _vit_trunk(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Tokens entering the last block (B, 1 + N, W)."""
    x = visual._embeds(images)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    return x


def _vit_value_path(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP last block on trunk tokens (B, 1 + N, W) -> dense embeddings (B, N, D)."""
    block = visual.transformer.resblocks[-1]
    width = x.shape[-1]
    v = F.linear(block.ln_1(x), block.attn.in_proj_weight[2 * width:], block.attn.in_proj_bias[2 * width:])
    x = x + block.ls_1(block.attn.out_proj(v))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return visual.ln_post(x[:, 1:]) @ visual.proj


def _rn_value_path(visual: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """MaskCLIP ResNet head: layer4 features (B, C, h, w) -> v-proj -> c-proj (B, h*w, D)."""
    tokens = features.flatten(2).transpose(1, 2)  # (B, h*w, C)
    return visual.attnpool.c_proj(visual.attnpool.v_proj(tokens))


def _rn_trunk(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """layer4 features (B, C, h, w)."""
    x = visual.stem(images)
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))


def image_and_dense_embeddings(model: open_clip.CLIP, arch: str,
                               images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global image embedding (B, D) and MaskCLIP dense embeddings (B, N, D), one shared trunk."""
    visual = model.visual
    if arch == "vit":
        x = _vit_trunk(visual, images)
        pooled, _ = visual._pool(visual.transformer.resblocks[-1](x))
        return pooled @ visual.proj, _vit_value_path(visual, x)
    features = _rn_trunk(visual, images)
    return visual.attnpool(features), _rn_value_path(visual, features)


def _private_maskclip_features(bundle: ToyClipBundle, pixels: torch.Tensor) -> torch.Tensor:
    """MaskCLIP dense features (B, D, h, w) of normalised pixels (B, 3, S, S)."""
    _, dense = image_and_dense_embeddings(bundle.model, bundle.arch, pixels)  # (B, N, D)
    side = int(round(math.sqrt(dense.shape[1])))
    return dense.transpose(1, 2).reshape(dense.shape[0], -1, side, side)


def maskclip_dense(bundle: ToyClipBundle, images: np.ndarray) -> torch.Tensor:
    """L2-normalised MaskCLIP features (B, D, h, w) of uint8 images (B, H, W, 3).

    Uses the shared ``fsslib.clip.dense.maskclip_features`` when it is importable,
    else the private equivalent above.
    """
    pixels = bundle.preprocess(images)
    try:
        from fsslib.clip.dense import maskclip_features
        from fsslib.clip.loading import bundle_from_model
    except ImportError:
        return F.normalize(_private_maskclip_features(bundle, pixels), dim=1)
    shared = bundle_from_model(bundle.model, bundle.tokenizer, mean=bundle.mean, std=bundle.std,
                               name=f"toy-{bundle.arch}")
    std, mean = torch.tensor(bundle.std).view(1, 3, 1, 1), torch.tensor(bundle.mean).view(1, 3, 1, 1)
    return F.normalize(maskclip_features(shared, (pixels * std + mean).clamp(0, 1)), dim=1)


# ----------------------------------------------------------------------------- captioned data


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _listed(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _where(obj: ToyObject, size: int) -> str:
    y, x = obj.centre
    if abs(x - size / 2) >= abs(y - size / 2):
        return "on the left" if x < size * 0.4 else "on the right" if x > size * 0.6 else "in the middle"
    return "at the top" if y < size * 0.4 else "at the bottom" if y > size * 0.6 else "in the middle"


def caption_scene(class_ids: list[int], positions: list[str], rng: random.Random) -> str:
    """A random caption of a scene holding ``class_ids`` (with spatial words ``positions``)."""
    if not class_ids:
        return rng.choice([EMPTY_PROMPT, "an empty scene.", "a photo of an empty scene.", "no objects."])
    names = [CLASS_NAMES[c - 1] for c in class_ids]
    order = list(range(len(names)))
    rng.shuffle(order)
    absent = rng.choice([n for n in CLASS_NAMES if n not in names])
    roll = rng.random()
    if len(names) == 1 and roll < 0.45:
        return rng.choice(MASKCLIP_TEMPLATES).format(names[0])
    if len(names) == 1 and roll < 0.55:
        return rng.choice([PI_CLIP_TARGET, "{}."]).format(names[0])
    listed = _listed([_article(names[i]) for i in order])
    if roll < 0.65:
        return rng.choice(["a photo of {}.", "{}.", "there is {} in the scene.", "a picture of {}."]).format(listed)
    if roll < 0.8:
        spatial = _listed([f"{_article(names[i])} {positions[i]}" for i in order])
        return rng.choice(["a photo of {}.", "{}."]).format(spatial)
    if roll < 0.95:
        return rng.choice(["a photo of {} without {}.", "{} without {}.", "a photo of {} and no {}."]).format(
            listed, _article(absent))
    return f"a photo of {listed}, without {_article(absent)}."


@dataclass
class ScenePool:
    """Pre-rendered training scenes: images, the class ids each caption may name, and how
    many pixels of each label every feature-grid cell holds (what crop captions are made of)."""

    images: np.ndarray  # (N, S, S, 3) uint8
    class_ids: list[list[int]]
    positions: list[list[str]]
    label_counts: np.ndarray  # (N, g, g, C + 2) uint8: background, classes 1..C, ignored


def patch_label_counts(mask: np.ndarray, stride: int = 8) -> np.ndarray:
    """Pixels per label in each stride x stride cell of a mask (S, S) -> (S/stride, S/stride, C + 2).

    Channel 0 is background, 1..C the classes, C + 1 the ignored pixels (value 255).
    """
    grid = mask.shape[0] // stride
    labels = np.where(mask == IGNORE, len(CLASS_NAMES) + 1, mask).astype(np.int64)
    one_hot = np.eye(len(CLASS_NAMES) + 2, dtype=np.uint8)[labels]  # (S, S, C + 2)
    return one_hot.reshape(grid, stride, grid, stride, -1).sum((1, 3), dtype=np.uint8)


def _crop(image: np.ndarray, mask: np.ndarray, objects: list[ToyObject], rng: np.random.Generator,
          size: int) -> tuple[np.ndarray, np.ndarray, list[ToyObject]] | None:
    """A random crop (resized back to ``size``), its mask and the objects mostly (>= 60%) inside it.

    Returns None when an object is cut ambiguously (15-60% inside). Pixels of objects
    left mostly outside (<= 15% inside) are marked ignored in the crop's mask.
    """
    side = int(rng.integers(int(size * 0.6), int(size * 0.9)))
    y0, x0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    inside_objects = []
    window = mask[y0:y0 + side, x0:x0 + side].copy()
    for obj in objects:
        fraction = (window == obj.class_id).sum() / max(1, (mask == obj.class_id).sum())
        if 0.15 < fraction < 0.6:
            return None
        if fraction >= 0.6:
            y, x = obj.centre
            moved = ToyObject(obj.class_id, ((y - y0) * size / side, (x - x0) * size / side), obj.radius)
            inside_objects.append(moved)
    kept = [o.class_id for o in inside_objects]
    window[(window > 0) & ~np.isin(window, kept)] = IGNORE
    crop = Image.fromarray(image[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
    crop_mask = Image.fromarray(window).resize((size, size), Image.NEAREST)
    return np.asarray(crop), np.asarray(crop_mask), inside_objects


def render_pool(count: int, seed: int, size: int = 64, crop_fraction: float = 0.15,
                empty_fraction: float = 0.05, progress: bool = True) -> ScenePool:
    """Render ``count`` training scenes from rng([seed, 1, index]) (deterministic)."""
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    label_counts = np.zeros((count, size // 8, size // 8, len(CLASS_NAMES) + 2), dtype=np.uint8)
    class_ids: list[list[int]] = []
    positions: list[list[str]] = []
    for index in tqdm(range(count), desc="render pool", disable=not progress, mininterval=5):
        rng = np.random.default_rng([seed, 1, index])
        roll = rng.random()
        n_objects = 0 if roll < empty_fraction else int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        scene = render_scene(rng, size, class_ids=[int(c) for c in rng.integers(1, 21, size=n_objects)])
        image, mask, objects = scene.image, scene.mask, scene.objects
        if objects and rng.random() < crop_fraction:
            for _ in range(5):
                cropped = _crop(scene.image, scene.mask, scene.objects, rng, size)
                if cropped is not None:
                    image, mask, objects = cropped
                    break
        images[index] = image
        label_counts[index] = patch_label_counts(mask)
        class_ids.append([o.class_id for o in objects])
        positions.append([_where(o, size) for o in objects])
    return ScenePool(images, class_ids, positions, label_counts)


def cached_pool(count: int, seed: int, size: int, folder: str | Path | None) -> ScenePool:
    """``render_pool`` through an optional on-disk cache (a .npz + .json per pool)."""
    if folder is None:
        return render_pool(count, seed, size)
    stem = Path(folder) / f"toy_pool_v2_seed{seed}_n{count}_s{size}"
    if stem.with_suffix(".npz").is_file() and stem.with_suffix(".json").is_file():
        labels = json.loads(stem.with_suffix(".json").read_text())
        arrays = np.load(stem.with_suffix(".npz"))
        return ScenePool(arrays["images"], labels["class_ids"], labels["positions"], arrays["label_counts"])
    pool = render_pool(count, seed, size)
    stem.parent.mkdir(parents=True, exist_ok=True)
    np.savez(stem.with_suffix(".npz"), images=pool.images, label_counts=pool.label_counts)
    stem.with_suffix(".json").write_text(json.dumps({"class_ids": pool.class_ids, "positions": pool.positions}))
    return pool


def render_eval_set(kind: str, count: int, size: int = 64) -> tuple[np.ndarray, list[np.ndarray], list[list[int]]]:
    """Held-out scenes from rng([EVAL_SEED, set, index]): 'single' (class ``index % 20 + 1``) or 'multi'.

    Returns images (N, S, S, 3) uint8, masks [(S, S) uint8] and the class ids present.
    """
    set_id = {"single": 0, "multi": 1}[kind]
    images, masks, present = np.zeros((count, size, size, 3), dtype=np.uint8), [], []
    for index in range(count):
        rng = np.random.default_rng([EVAL_SEED, set_id, index])
        scene = render_scene(rng, size, class_ids=[index % 20 + 1] if kind == "single" else None)
        images[index] = scene.image
        masks.append(scene.mask)
        present.append(sorted({o.class_id for o in scene.objects}))
    return images, masks, present


# ----------------------------------------------------------------------------- losses


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, keys: list[tuple[int, ...]],
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss; pairs whose captions name the same classes are all positives."""
    logits = logit_scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T  # (B, B)
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    group = torch.tensor([index[k] for k in keys])
    targets = (group[:, None] == group[None, :]).float()
    targets = targets / targets.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def _cell_areas(label_counts: torch.Tensor) -> torch.Tensor:
    """Label counts (..., N, C + 2) -> each class's area in grid cells (..., C)."""
    cell_pixels = label_counts.sum(-1).amax(-1, keepdim=True)  # (..., 1): pixels per cell
    return label_counts[..., 1:-1].sum(-2) / cell_pixels


def _top_k_mean(probs: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mean of each column's k largest entries: probs (..., N, C), k (..., C) >= 1 -> (..., C)."""
    ranked = probs.sort(dim=-2, descending=True).values  # (..., N, C)
    rank = torch.arange(probs.shape[-2], device=probs.device)[:, None]  # (N, 1)
    return (ranked * (rank < k[..., None, :])).sum(-2) / k


def _patch_probabilities(dense: torch.Tensor, prompt_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Softmax over the prompts (C + 1, D) of each dense embedding's scaled cosines: (B, N, D) -> (B, N, C + 1)."""
    return (logit_scale * F.normalize(dense, dim=-1) @ F.normalize(prompt_emb, dim=-1).T).softmax(-1)


def _bce_to(scores: torch.Tensor, target: float) -> torch.Tensor:
    scores = scores.clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(scores, torch.full_like(scores, target))


def dense_mil_loss(dense: torch.Tensor, prompt_emb: torch.Tensor, label_counts: torch.Tensor,
                   logit_scale: torch.Tensor, area_fraction: float = 0.5) -> torch.Tensor:
    """Caption-level multiple-instance loss on dense embeddings (B, N, D) vs prompts (C + 1, D), background last.

    ``label_counts`` (B, g, g, C + 2) from ``patch_label_counts`` tells which classes the
    caption names and how large they are (in grid cells). A named class must win on its
    top-k positions, k = ``area_fraction`` x its area (at least 1); at every position the
    probability must stay on the named classes and the background; the background must
    win on the top third of the positions.
    """
    counts = label_counts.flatten(1, 2).float()  # (B, N, C + 2)
    probs = _patch_probabilities(dense, prompt_emb, logit_scale)  # (B, N, C + 1)
    area = _cell_areas(counts)  # (B, C)
    named = area > 0
    positive = _top_k_mean(probs[..., :-1], (area_fraction * area).ceil().clamp(min=1))  # (B, C)
    allowed = torch.cat([named, torch.ones_like(named[:, :1])], 1)  # (B, C + 1)
    allowed_mass = (probs * allowed[:, None, :]).sum(-1)  # (B, N)
    background = probs[..., -1].topk(max(1, dense.shape[1] // 3), dim=1).values.mean(1)  # (B,)
    loss = -allowed_mass.clamp(min=1e-6).log().mean() + _bce_to(background, 1.0)
    return loss + _bce_to(positive[named], 1.0) if named.any() else loss


def random_windows(batch: int, windows: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Membership (B, W, grid * grid) of ``windows`` random rectangles per image, sides 2..grid - 2 cells."""
    sides = torch.randint(2, grid - 1, (2, batch, windows), generator=generator)  # (2, B, W): heights, widths
    starts = (torch.rand(2, batch, windows, generator=generator) * (grid - sides + 1)).long()  # (2, B, W)
    cells = torch.arange(grid)
    inside = (cells >= starts[..., None]) & (cells < (starts + sides)[..., None])  # (2, B, W, grid)
    return (inside[0][..., :, None] & inside[1][..., None, :]).flatten(2)  # (B, W, grid * grid)


def region_mil_loss(dense: torch.Tensor, prompt_emb: torch.Tensor, label_counts: torch.Tensor,
                    logit_scale: torch.Tensor, generator: torch.Generator, windows: int = 4,
                    area_fraction: float = 0.5, named_fraction: float = 0.6,
                    unnamed_fraction: float = 0.15) -> torch.Tensor:
    """Crop captions on the dense map: the multiple-instance loss inside random windows.

    The dense analogue of captioning random crops (so locality is rewarded): for each
    window of the feature grid, a class its crop caption would name (>= 60% of the
    object inside) must win on k of the window's positions (``area_fraction`` x its area
    inside, at least 1), a class of the image it would not name (<= 15% inside) must win
    nowhere in it, and a window without object pixels must be background everywhere.
    ``dense`` (B, N, D), ``prompt_emb`` (C + 1, D) with background last, ``label_counts``
    (B, g, g, C + 2) from ``patch_label_counts``.
    """
    batch, positions, _ = dense.shape
    grid = int(round(math.sqrt(positions)))
    probs = _patch_probabilities(dense, prompt_emb, logit_scale)  # (B, N, C + 1)
    members = random_windows(batch, windows, grid, generator).to(dense.device)  # (B, W, N)
    counts = label_counts.flatten(1, 2).float()  # (B, N, C + 2)
    windowed = counts[:, None] * members[..., None]  # (B, W, N, C + 2)
    area_inside, area = _cell_areas(windowed), _cell_areas(counts)[:, None]  # (B, W, C), (B, 1, C)
    fraction = area_inside / area.clamp(min=1e-6)
    named = (area > 0) & (fraction >= named_fraction)
    unnamed = (area > 0) & (fraction <= unnamed_fraction)
    class_probs = probs[:, None, :, :-1]  # (B, 1, N, C)
    outside = ~members[..., None]  # (B, W, N, 1)
    k = (area_fraction * area_inside).ceil().clamp(min=1)  # (B, W, C)
    positive = _top_k_mean(class_probs.masked_fill(outside, 0.0), k)  # (B, W, C)
    negative = class_probs.masked_fill(outside, 0.0).amax(2)  # (B, W, C)
    loss = dense.sum() * 0
    if named.any():
        loss = loss + _bce_to(positive[named], 1.0)
    if unnamed.any():
        loss = loss + _bce_to(negative[unnamed], 0.0)
    empty = windowed[..., 1:].sum((-2, -1)) == 0  # (B, W): no object (or ignored) pixel inside
    if empty.any():
        background = (probs[:, None, :, -1] * members).sum(-1) / members.sum(-1)  # (B, W) mean inside
        loss = loss + _bce_to(background[empty], 1.0)
    return loss


def negation_loss(image_emb: torch.Tensor, target_emb: torch.Tensor, non_target_emb: torch.Tensor,
                  present: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """2-way loss over ('a photo of {c}.', 'a photo without {c}.') for every class; label = presence."""
    image = F.normalize(image_emb, dim=-1)
    of = logit_scale * image @ F.normalize(target_emb, dim=-1).T  # (B, C)
    without = logit_scale * image @ F.normalize(non_target_emb, dim=-1).T  # (B, C)
    return F.binary_cross_entropy_with_logits(of - without, present)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def zero_shot_accuracy(bundle: ToyClipBundle, images: np.ndarray, labels: list[int],
                       templates: tuple[str, ...] = (ZERO_SHOT_TEMPLATE,), batch: int = 250) -> float:
    """20-way accuracy of the cosine classifier with ``templates`` (labels 1..20)."""
    classes = bundle.class_embeddings(list(CLASS_NAMES), templates)  # (C, D)
    correct = 0
    for start in range(0, len(images), batch):
        emb = bundle.model.encode_image(bundle.preprocess(images[start:start + batch]), normalize=True)
        predicted = (emb @ classes.T).argmax(1) + 1
        correct += int((predicted == torch.tensor(labels[start:start + batch])).sum())
    return correct / len(images)


def _region_iou(score_maps: torch.Tensor, masks: list[np.ndarray], present: list[list[int]],
                select: str) -> tuple[float, float, float, float]:
    """Accumulated IoU, precision and recall of the predicted regions, and the all-foreground IoU.

    ``score_maps`` (B, K, S, S): 'argmax' -> class c region = argmax == c - 1;
    'threshold' -> K = 20 per-class maps in [0, 1], region = map > 0.5.
    """
    inter = predicted = truths = 0
    for b, classes in enumerate(present):
        mask = torch.from_numpy(masks[b].astype(np.int64))
        winner = score_maps[b].argmax(0) if select == "argmax" else None
        for c in classes:
            truth = mask == c
            pred = winner == c - 1 if select == "argmax" else score_maps[b, c - 1] > 0.5
            inter += int((pred & truth).sum())
            predicted += int(pred.sum())
            truths += int(truth.sum())
    reference = truths / (len([c for cl in present for c in cl]) * masks[0].size)
    union = predicted + truths - inter
    return inter / max(union, 1), inter / max(predicted, 1), inter / max(truths, 1), reference


@torch.no_grad()
def maskclip_iou(bundle: ToyClipBundle, images: np.ndarray, masks: list[np.ndarray], present: list[list[int]],
                 templates: tuple[str, ...] = (ZERO_SHOT_TEMPLATE,), refine: bool = False,
                 batch: int = 100) -> tuple[float, float, float, float]:
    """MaskCLIP foreground IoU (argmax over 20 classes + empty-scene prompt), its precision and
    recall, and the all-foreground IoU.

    ``refine``: MaskCLIP's prompt denoising (0.5) and key smoothing (1.0) from
    ``fsslib.clip.dense.segment_with_text``, at the model's own temperature.
    """
    prompts = torch.cat([bundle.class_embeddings(list(CLASS_NAMES), templates),
                         bundle.encode_prompts([EMPTY_PROMPT])])  # (C + 1, D)
    size = masks[0].shape[-1]
    maps = []
    for start in range(0, len(images), batch):
        if refine:
            from fsslib.clip.dense import segment_with_text
            from fsslib.clip.loading import bundle_from_model

            shared = bundle_from_model(bundle.model, bundle.tokenizer, mean=bundle.mean, std=bundle.std,
                                       name=f"toy-{bundle.arch}")
            pixels = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float() / 255.0
            temperature = float(1.0 / bundle.model.logit_scale.exp())
            scores = segment_with_text(shared, pixels, prompts, prompt_denoising=0.5, key_smoothing=1.0,
                                       temperature=temperature)  # (B, C + 1, h, w)
        else:
            dense = maskclip_dense(bundle, images[start:start + batch])  # (B, D, h, w)
            scores = torch.einsum("bdhw,kd->bkhw", dense, prompts)
        maps.append(F.interpolate(scores, size=(size, size), mode="bilinear", align_corners=False))
    return _region_iou(torch.cat(maps), masks, present, "argmax")


def vtp_gradcam_iou(bundle: ToyClipBundle, images: np.ndarray, masks: list[np.ndarray],
                    present: list[list[int]], tau: float = 0.01, batch: int = 50) -> tuple[float, float, float, float]:
    """PI-CLIP VTP GradCAM IoU, precision, recall and the all-foreground reference.

    Target score = softmax over ('a photo of {c}.', 'a photo without {c}.') / tau of the
    cosine with the mean-patch-token image embedding; GradCAM w.r.t. the last block's
    patch tokens (ViT) or layer4 (ResNet, attention-pooled embedding), ReLU, min-max, > 0.5.
    """
    visual = bundle.model.visual
    of = bundle.encode_prompts([PI_CLIP_TARGET.format(n) for n in CLASS_NAMES])  # (C, D)
    without = bundle.encode_prompts([PI_CLIP_NON_TARGET.format(n) for n in CLASS_NAMES])  # (C, D)
    size = masks[0].shape[-1]
    cams = []
    for start in range(0, len(images), batch):
        x = bundle.preprocess(images[start:start + batch])
        with torch.no_grad():
            features = _vit_trunk(visual, x) if bundle.arch == "vit" else _rn_trunk(visual, x)
        features = features.detach()
        if bundle.arch == "vit":
            activations = visual.transformer.resblocks[-1](features).detach().requires_grad_(True)  # (B, 1+N, W)
            pooled, _ = visual._pool(activations)  # mean over patch tokens (pool_type 'avg')
            emb = pooled @ visual.proj
            tokens = activations[:, 1:]
        else:
            activations = features.requires_grad_(True)  # (B, C, h, w)
            emb = visual.attnpool(activations)
            tokens = activations.flatten(2).transpose(1, 2)
        emb = F.normalize(emb, dim=-1)
        logits = torch.stack([emb @ of.T, emb @ without.T], -1) / tau  # (B, C, 2)
        target = logits.softmax(-1)[..., 0]  # (B, C)
        per_class = []
        for c in range(len(CLASS_NAMES)):
            (grad,) = torch.autograd.grad(target[:, c].sum(), activations, retain_graph=True)
            grad_tokens = grad[:, 1:] if bundle.arch == "vit" else grad.flatten(2).transpose(1, 2)  # (B, N, W)
            weights = grad_tokens.mean(1, keepdim=True)  # (B, 1, W)
            cam = F.relu((weights * tokens).sum(-1)).detach()  # (B, N)
            per_class.append(cam)
        side = int(round(math.sqrt(tokens.shape[1])))
        cam = torch.stack(per_class, 1).reshape(len(x), len(CLASS_NAMES), side, side)
        cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)
        low = cam.amin((2, 3), keepdim=True)
        high = cam.amax((2, 3), keepdim=True)
        cams.append((cam - low) / (high - low + 1e-8))
    return _region_iou(torch.cat(cams), masks, present, "threshold")


@torch.no_grad()
def negation_cosine(bundle: ToyClipBundle) -> float:
    """Mean over classes of cos(emb('a photo of {c}.'), emb('a photo without {c}.'))."""
    of = bundle.encode_prompts([PI_CLIP_TARGET.format(n) for n in CLASS_NAMES])
    without = bundle.encode_prompts([PI_CLIP_NON_TARGET.format(n) for n in CLASS_NAMES])
    return float((of * without).sum(-1).mean())


def acceptance_metrics(bundle: ToyClipBundle, n_single: int = 1000, n_multi: int = 500) -> dict:
    """The toy CLIP acceptance metrics on held-out scenes (EVAL_SEED, disjoint from training)."""
    bundle.model.eval()
    single, _, single_present = render_eval_set("single", n_single)
    multi, masks, present = render_eval_set("multi", n_multi)
    labels = [p[0] for p in single_present]
    iou, precision, recall, all_fg = maskclip_iou(bundle, multi, masks, present)
    iou_ensemble = maskclip_iou(bundle, multi, masks, present, MASKCLIP_TEMPLATES)[0]
    gradcam = vtp_gradcam_iou(bundle, multi, masks, present)[0]
    try:
        refined = maskclip_iou(bundle, multi, masks, present, refine=True)[0]
    except ImportError:
        refined = None
    return {
        "zero_shot_acc": zero_shot_accuracy(bundle, single, labels),
        "zero_shot_acc_85_templates": zero_shot_accuracy(bundle, single, labels, MASKCLIP_TEMPLATES),
        "maskclip_fg_iou": iou,
        "maskclip_fg_precision": precision,
        "maskclip_fg_recall": recall,
        "maskclip_fg_iou_85_templates": iou_ensemble,
        "maskclip_fg_iou_denoise_keysmooth": refined,
        "all_foreground_iou": all_fg,
        "cos_of_without": negation_cosine(bundle),
        "vtp_gradcam_iou": gradcam,
        "eval_images": {"zero_shot_single_object": n_single, "dense_multi_object": n_multi, "seed": EVAL_SEED},
    }


# ----------------------------------------------------------------------------- training


def train_toy_clip(
    arch: str,
    out: str | Path,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    pool_size: int = 16_000,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    dense_weight: float = 1.0,
    negation_weight: float = 0.5,
    area_fraction: float = 0.5,
    region_weight: float = 1.0,
    model_cfg: dict | None = None,
    evaluate: bool = True,
    command: str | None = None,
    threads: int = 1,
    save_every_minutes: float = 3.0,
    pool_cache: str | Path | None = None,
    init: str | Path | None = None,
    recipe: dict | None = None,
) -> dict:
    """Train a toy CLIP for ``steps`` optimiser steps (exactly reproducible given ``seed``) or
    for ``minutes`` of wall time, save it to ``out`` (+ ``.json``), return the metadata.

    The learning rate follows a warm-up and a cosine over the chosen budget.
    ``pool_cache``: a folder where the rendered scene pool is kept between runs.
    ``init``: a toy CLIP checkpoint to continue from (its architecture replaces ``model_cfg``).
    ``recipe``: where this run sits in a ``train_recipe`` (stored in the metadata).
    """
    if (steps is None) == (minutes is None):
        raise ValueError("train_toy_clip needs exactly one budget: steps=... or minutes=...")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    start, commit = time.time(), git_commit()  # the code that trains, before anything is written
    vocab = toy_vocabulary()
    start_from = load_toy_clip(init) if init is not None else None
    if start_from is not None and (start_from.arch != arch or start_from.tokenizer.vocab != vocab):
        raise CheckpointError(f"{init} is a toy CLIP {start_from.arch} with another vocabulary or architecture.",
                              f"continue from a checkpoint written by `python -m fsslib.clip.toy train --arch {arch}`.")
    model_cfg = start_from.model_cfg if start_from is not None else model_cfg or default_model_cfg(
        arch, vocab_size=len(vocab) + 4)
    tokenizer = WordTokenizer(vocab, model_cfg["text_cfg"]["context_length"])
    image_size = model_cfg["vision_cfg"]["image_size"]
    model = start_from.model if start_from is not None else build_toy_clip(model_cfg)
    pool = cached_pool(pool_size, seed, image_size, pool_cache)
    caption_rng, batch_rng = random.Random(seed), np.random.default_rng([seed, 2])
    window_generator = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    class_prompts = tokenizer([ZERO_SHOT_TEMPLATE.format(n) for n in CLASS_NAMES] + [EMPTY_PROMPT])  # (C+1, L)
    pi_prompts = tokenizer([PI_CLIP_TARGET.format(n) for n in CLASS_NAMES]
                           + [PI_CLIP_NON_TARGET.format(n) for n in CLASS_NAMES])  # (2C, L)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    budget = minutes * 60.0 - (time.time() - start) if minutes is not None else None
    train_start, last_save, step, warmup = time.time(), time.time(), 0, 200
    progress = tqdm(desc=f"train toy CLIP ({arch})", total=steps if budget is None else int(budget),
                    unit="step" if budget is None else "s", mininterval=10)
    history: list[dict] = []
    model.train()
    while True:
        elapsed = time.time() - train_start
        fraction = step / steps if budget is None else elapsed / budget
        if fraction >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * fraction))
        index = batch_rng.integers(0, len(pool.images), size=batch_size)
        images = (torch.from_numpy(pool.images[index]).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        captions = [caption_scene(pool.class_ids[i], pool.positions[i], caption_rng) for i in index]
        keys = [tuple(sorted(set(pool.class_ids[i]))) for i in index]
        label_counts = torch.from_numpy(pool.label_counts[index])  # (B, g, g, C + 2)
        present = (label_counts[..., 1:-1].flatten(1, 2).sum(1) > 0).float()  # (B, C)
        image_emb, dense = image_and_dense_embeddings(model, arch, images)
        text = model.encode_text(torch.cat([tokenizer(captions), class_prompts, pi_prompts]))
        caption_emb, prompt_emb = text[:batch_size], text[batch_size:batch_size + len(class_prompts)]
        of_emb, without_emb = text[batch_size + len(class_prompts):].chunk(2)
        scale = model.logit_scale.exp().clamp(max=100)
        losses = {"clip": contrastive_loss(image_emb, caption_emb, keys, scale),
                  "dense": dense_mil_loss(dense, prompt_emb, label_counts, scale, area_fraction),
                  "region": region_mil_loss(dense, prompt_emb, label_counts, scale, window_generator,
                                            area_fraction=area_fraction),
                  "negation": negation_loss(image_emb, of_emb, without_emb, present, scale)}
        loss = (losses["clip"] + dense_weight * losses["dense"] + region_weight * losses["region"]
                + negation_weight * losses["negation"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0 or step == 1:
            record = {"step": step, "seconds": round(elapsed, 1), **{k: round(v.item(), 4) for k, v in losses.items()}}
            history.append(record)
            progress.set_postfix(step=step, **{k: record[k] for k in losses})
            progress.update((step if budget is None else int(elapsed)) - progress.n)
        if time.time() - last_save > save_every_minutes * 60:
            save_toy_clip(out, model, model_cfg, tokenizer, image_size)
            last_save = time.time()
    progress.close()
    model.eval()
    path = save_toy_clip(out, model, model_cfg, tokenizer, image_size)
    metadata = {
        "command": command or " ".join([Path(sys.executable).name, *sys.argv]),
        "recipe": recipe,
        "arch": arch, "seed": seed, "init": _shown(Path(init)) if init is not None else None, "git_commit": commit,
        "wall_time_minutes": round((time.time() - start) / 60, 2), "train_steps": step,
        "batch_size": batch_size, "pool_size": pool_size, "lr": lr, "weight_decay": weight_decay,
        "dense_weight": dense_weight, "negation_weight": negation_weight, "area_fraction": area_fraction,
        "region_weight": region_weight,
        "hardware": hardware(open_clip=open_clip.__version__), "model_cfg": model_cfg, "loss_history": history[-20:],
    }
    if evaluate:
        metadata["metrics"] = acceptance_metrics(load_toy_clip(path))
    path.with_suffix(".json").write_text(json.dumps(metadata, indent=1))
    return metadata


# ----------------------------------------------------------------------------- recipes of the shipped checkpoints


@dataclass(frozen=True)
class Stage:
    """One ``train_toy_clip`` call of a recipe; ``init`` names the previous stage's file."""

    out: str
    steps: int
    lr: float = 2e-3
    area_fraction: float = 0.5
    init: str | None = None
    batch_size: int = 32
    pool_size: int = 16_000
    seed: int = 0


RECIPES: dict[str, tuple[Stage, ...]] = {
    "rn": (Stage("toy_clip_rn.pt", steps=20_000),),
    "vit": (
        Stage("toy_clip_vit_stage1.pt", steps=30_000),
        Stage("toy_clip_vit_stage2.pt", steps=6_000, lr=5e-4, area_fraction=0.8, init="toy_clip_vit_stage1.pt"),
        Stage("toy_clip_vit.pt", steps=3_000, lr=5e-4, area_fraction=1.0, init="toy_clip_vit_stage2.pt"),
    ),
}


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (as a user would type it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def stage_command(arch: str, stage: Stage, out_dir: Path) -> str:
    """The ``train`` command that runs ``stage`` alone (recorded in the stage's metadata)."""
    parts = ["python -m fsslib.clip.toy train", f"--arch {arch}"]
    if stage.init is not None:
        parts.append(f"--init {_shown(out_dir / stage.init)}")
    parts += [f"--steps {stage.steps}", f"--lr {stage.lr:g}", f"--area-fraction {stage.area_fraction:g}",
              f"--batch-size {stage.batch_size}", f"--pool-size {stage.pool_size}", f"--seed {stage.seed}",
              f"--out {_shown(out_dir / stage.out)}"]
    return " ".join(parts)


def train_recipe(arch: str, out_dir: str | Path = CHECKPOINT_DIR, start: int = 1,
                 stages: tuple[Stage, ...] | None = None, model_cfg: dict | None = None,
                 pool_cache: str | Path | None = None, evaluate: bool = True) -> list[dict]:
    """Run the stages of ``RECIPES[arch]`` (or ``stages``) from stage ``start`` (1-based) into
    ``out_dir``; an earlier stage's checkpoint must already be there. Returns each stage's metadata.

    The scene pool is rendered once and shared by the stages (in ``pool_cache``, else a
    temporary folder); it is a pure function of the seed, so this changes no weight.
    """
    stages = stages if stages is not None else RECIPES.get(arch)
    if stages is None:
        raise unknown("toy CLIP recipe", arch, sorted(RECIPES))
    if not 1 <= start <= len(stages):
        raise FsslibError(f"The {arch} recipe has stages 1 to {len(stages)}; there is no stage {start}.",
                          f"pass --start between 1 and {len(stages)}.")
    out_dir = Path(out_dir)
    first_init = stages[start - 1].init
    if first_init is not None and not (out_dir / first_init).is_file():
        raise CheckpointError(f"Stage {start} of the {arch} recipe continues from {out_dir / first_init}, "
                              "which does not exist.", f"run the recipe from an earlier stage (--start {start - 1}).")
    recipe_command = f"python -m fsslib.clip.toy recipe {arch}"
    with tempfile.TemporaryDirectory() as scratch:
        results = []
        for number, stage in enumerate(stages[start - 1:], start):
            metadata = train_toy_clip(
                arch, out_dir / stage.out, steps=stage.steps, seed=stage.seed, pool_size=stage.pool_size,
                batch_size=stage.batch_size, lr=stage.lr, area_fraction=stage.area_fraction,
                model_cfg=model_cfg if stage.init is None else None, evaluate=evaluate,
                command=stage_command(arch, stage, out_dir), pool_cache=pool_cache or scratch,
                init=out_dir / stage.init if stage.init is not None else None,
                recipe={"command": recipe_command, "stage": number, "stages": len(stages)},
            )
            results.append(metadata)
    return results


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsslib.clip.toy", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a toy CLIP and write CKPT + CKPT.json")
    train.add_argument("--arch", choices=["vit", "rn"], required=True)
    budget = train.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimiser steps (exactly reproducible)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget instead of --steps")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--pool-size", type=int, default=16_000)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=2e-3)
    train.add_argument("--dense-weight", type=float, default=1.0)
    train.add_argument("--negation-weight", type=float, default=0.5)
    train.add_argument("--region-weight", type=float, default=1.0)
    train.add_argument("--area-fraction", type=float, default=0.5)
    train.add_argument("--pool-cache", type=Path, default=None, help="folder to keep the rendered scene pool in")
    train.add_argument("--init", type=Path, default=None, help="continue training this toy CLIP checkpoint")
    recipe = commands.add_parser("recipe", help="re-train a shipped checkpoint, every stage in order")
    recipe.add_argument("arch", choices=sorted(RECIPES))
    recipe.add_argument("--start", type=int, default=1, help="first stage to run (earlier ones must exist)")
    recipe.add_argument("--out-dir", type=Path, default=CHECKPOINT_DIR, help="default: the shipped checkpoints")
    recipe.add_argument("--pool-cache", type=Path, default=None, help="folder to keep the rendered scene pool in")
    evaluate = commands.add_parser("evaluate", help="recompute the acceptance metrics of a checkpoint")
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument("--write", action="store_true", help="store them in the checkpoint's .json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "train":
        command = "python -m fsslib.clip.toy " + " ".join(sys.argv[1:] if argv is None else argv)
        metadata = train_toy_clip(args.arch, args.out, args.steps, args.minutes, args.seed, args.pool_size,
                                  args.batch_size, args.lr, dense_weight=args.dense_weight,
                                  negation_weight=args.negation_weight, region_weight=args.region_weight,
                                  area_fraction=args.area_fraction, command=command, pool_cache=args.pool_cache,
                                  init=args.init)
        print(json.dumps(metadata.get("metrics", {}), indent=1))
    elif args.command == "recipe":
        try:
            stages = train_recipe(args.arch, args.out_dir, args.start, pool_cache=args.pool_cache)
        except FsslibError as error:
            parser.exit(2, f"error: {error}\n")
        print(json.dumps(stages[-1].get("metrics", {}), indent=1))
    else:
        metrics = acceptance_metrics(load_toy_clip(args.checkpoint))
        print(json.dumps(metrics, indent=1))
        if args.write:
            meta_path = args.checkpoint.with_suffix(".json")
            metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            metadata["metrics"] = metrics
            meta_path.write_text(json.dumps(metadata, indent=1))


if __name__ == "__main__":
    main()
