"""CLIP text embeddings: ensembled class embeddings, arbitrary prompts (templates: :mod:`fsslib.clip.prompts`).

Class embeddings follow CLIP's prompt ensembling (as MaskCLIP and LFSS use it): every
template is filled with the class name, each prompt embedding is L2-normalised, the
normalised embeddings are averaged over templates, and the mean is L2-normalised again:

    t_c = normalise( (1 / T) * sum_t normalise(f_text(template_t(c))) )

LFSS uses MaskCLIP's 85 templates: CLIP's 80 ImageNet templates plus five scene ones.
"""
from __future__ import annotations

import difflib
import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsslib.clip.loading import ClipBundle, ClipInputError
from fsslib.clip.prompts import MASKCLIP_TEMPLATES

DEFAULT_TEXT_BATCH = 256

_class_embedding_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Tensor]] = weakref.WeakKeyDictionary()


def _check_strings(values: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not all(isinstance(value, str) for value in values) or len(values) == 0:
        raise ClipInputError(
            f"Expected a non-empty list of strings for {what}, got {values!r:.80}.",
            f"pass {what} as a list, e.g. ['cat', 'dog'] (a single string must be wrapped: ['cat']).",
        )
    return tuple(values)


def _closest_words(unknown: Sequence[str], vocabulary: Sequence[str], n: int = 3) -> str:
    """'did you mean ...' for each unknown word: its ``n`` closest vocabulary words (difflib), or a few
    class-name words when none is close."""
    words = sorted(vocabulary)
    hints = []
    for word in unknown:
        close = difflib.get_close_matches(word, words, n=n, cutoff=0.5)
        hints.append(f"for {word!r} did you mean {' / '.join(repr(c) for c in close)}" if close
                     else f"{word!r} is like no word it knows (class names use words like 'striped star')")
    return "; ".join(hints)


def encode_prompts(bundle: ClipBundle, prompts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH) -> Tensor:
    """Raw (unnormalised) text embeddings (n, D) of prompts, ceil(n / batch_size) forward passes."""
    prompts = _check_strings(prompts, "prompts")
    unknown_words = getattr(bundle.tokenizer, "unknown_words", None)  # word-level tokenizers (the toy CLIPs) only
    if unknown_words is not None:
        unknown = sorted({word for prompt in prompts for word in unknown_words(prompt)})
        if unknown:
            raise ClipInputError(
                f"The toy CLIP's text tower does not know the word(s) {unknown}: it would encode each as one "
                "unknown token, and the prompt would mean nothing.",
                f"{_closest_words(unknown, bundle.tokenizer.vocab)}; the whole vocabulary: `python -c \"from "
                f"fsslib.clip import load_clip; print(sorted(load_clip('{bundle.name}').tokenizer.vocab))\"`. "
                "Real words (cat) need --preset paper.")
    chunks = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            tokens = bundle.tokenizer(list(prompts[start : start + batch_size])).to(bundle.device)  # (b, L)
            chunks.append(bundle.model.encode_text(tokens).float())  # (b, D)
    return torch.cat(chunks)


def prompt_embeddings(bundle: ClipBundle, prompts: Sequence[str], batch_size: int = DEFAULT_TEXT_BATCH) -> Tensor:
    """L2-normalised text embeddings (n, D) of arbitrary prompts, e.g. PI-CLIP's
    ``["a photo of cat.", "a photo without cat."]``."""
    return F.normalize(encode_prompts(bundle, prompts, batch_size), dim=-1)


def class_embeddings(
    bundle: ClipBundle,
    class_names: Sequence[str],
    templates: Sequence[str] = MASKCLIP_TEMPLATES,
    batch_size: int = DEFAULT_TEXT_BATCH,
) -> Tensor:
    """Template-ensembled, L2-normalised class embeddings (n_classes, D).

    All ``n_classes * n_templates`` prompts go through the text encoder in batches of
    ``batch_size``. Results are cached per model (weakly: the cache dies with the model),
    device, templates and names; the caller gets a copy.
    """
    names = _check_strings(class_names, "class names")
    if any(not name.strip() for name in names):
        raise ClipInputError(f"A class name is empty: {list(names)!r:.80}.", "type a class name, e.g. 'striped star'.")
    templates = _check_strings(templates, "templates")
    malformed = [template for template in templates if template.count("{}") != 1]
    if malformed:
        raise ClipInputError(
            f"Templates must hold exactly one '{{}}' placeholder for the class name; these do not: {malformed[:3]}.",
            "write templates like 'a photo of a {}.'.",
        )
    key = (str(bundle.device), templates, names)
    per_model = _class_embedding_cache.setdefault(bundle.model, {})
    if key not in per_model:
        prompts = [template.format(name) for name in names for template in templates]
        embeddings = prompt_embeddings(bundle, prompts, batch_size)  # (n * T, D), each normalised
        embeddings = embeddings.reshape(len(names), len(templates), -1).mean(dim=1)  # (n, D)
        per_model[key] = F.normalize(embeddings, dim=-1)
    return per_model[key].clone()


def clear_text_cache() -> None:
    """Forget every cached class embedding."""
    _class_embedding_cache.clear()
