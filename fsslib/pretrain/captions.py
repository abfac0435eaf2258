"""Captions of toy scenes, drawn afresh each time a scene is drawn (contrastive pretraining).

Templates cover the 85 MaskCLIP templates, PI-CLIP's prompts ("a photo of {c}." / "a
photo without {c}."), object lists, spatial words and negatives ("... without a dotted
star."). Every word is in the toy CLIP's vocabulary (``fsslib.clip.toy.toy_vocabulary``).
"""
from __future__ import annotations

import random

from fsslib.clip.prompts import MASKCLIP_TEMPLATES, PICLIP_TARGET_TEMPLATE
from fsslib.clip.toy import EMPTY_PROMPT
from fsslib.data.toyworld import CLASS_NAMES


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _listed(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


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
        return rng.choice([PICLIP_TARGET_TEMPLATE, "{}."]).format(names[0])
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
