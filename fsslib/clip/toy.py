"""The toy CLIP architecture: small open_clip models that stand in for CLIP on the toy world.

An ``open_clip.CLIP`` with a word-level text tower and either a toy ViT (a small conv
stem replaces the patch embedding; class token, positional embedding, ``resblocks``,
``ln_post`` and ``proj`` are open_clip's own) or a toy ModifiedResNet (attention
pooling, small widths, feature stride 8 instead of 32). This module holds what loading
a checkpoint needs: the tokenizer and its vocabulary, the conv stem, the model config
and the builder. ``fsslib.clip.load_clip("toy-vit")`` loads the shipped weights into a
``ClipBundle``; ``fsslib.pretrain.toy_clip`` trains them (``python -m fsslib.pretrain toy-clip``).
"""
from __future__ import annotations

import math
import re

import open_clip
import torch
from open_clip.modified_resnet import AttentionPool2d

from fsslib.clip.prompts import MASKCLIP_TEMPLATES, PICLIP_NON_TARGET_TEMPLATE, PICLIP_TARGET_TEMPLATE
from fsslib.data.toyworld import FILLS, SHAPES
from fsslib.errors import CheckpointError, unknown
from fsslib.models.vit import ConvStem

# ----------------------------------------------------------------------------- prompts and vocabulary

ZERO_SHOT_TEMPLATE = "a photo of a {}."
EMPTY_PROMPT = "a photo of an empty scene."  # the background class of the toy CLIP's dense predictions
SPATIAL_WORDS: tuple[str, ...] = ("on the left", "on the right", "at the top", "at the bottom", "in the middle")
CAPTION_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "photo", "without", "and", "with", "there", "is", "are", "in", "scene", "this",
    "empty", "no", "objects", "object", "picture", "image", "next", "to", "one", "two", "three", "shape",
    "shapes", "on", "left", "right", "at", "top", "bottom", "middle", "crop", "part",
)
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)  # image statistics of the toy CLIP checkpoints
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def split_words(text: str) -> list[str]:
    """Lower-case words and single punctuation marks: 'A close-up.' -> a close - up ."""
    return _WORD.findall(text.lower())


def toy_vocabulary() -> list[str]:
    """Every word of the captions, class names, MaskCLIP templates and PI-CLIP prompts."""
    texts = [*MASKCLIP_TEMPLATES, PICLIP_TARGET_TEMPLATE, PICLIP_NON_TARGET_TEMPLATE, EMPTY_PROMPT, *SPATIAL_WORDS,
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

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` outside the vocabulary (they would be encoded as UNK)."""
        return [word for word in split_words(text) if word not in self.word_to_id]

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
