"""LFSS Sec. 3.3, VLP-driven mask distillation (VLMD): pseudo masks from the class name, then refined.

**Mask generator.** MaskCLIP on CLIP's modified ResNet (paper: RN50, OpenAI weights; toy
tier: ``toy-rn``): the attention pool's query and key are dropped and its value and output
projections run as 1x1 convolutions on the last residual block
(:func:`fsslib.clip.maskclip_features`). Each class name is expanded with MaskCLIP's 85
templates, the normalised text embeddings averaged and renormalised
(:func:`fsslib.clip.class_embeddings`); the per-pixel cosine between image features and the
class embeddings "tells the category of each pixel". The cosine maps are upsampled
(bilinear, aligned corners, as MaskCLIP upsamples scores before its argmax) to the backbone's
feature grid, where every later LFSS step works.

The paper never says how a pixel becomes foreground. :func:`binarise_scores` offers
(``pseudo_mask``):

* ``"vocabulary"`` (default): MaskCLIP's own segmentation -- the episode class must win the
  argmax over the vocabulary = every class name of the benchmark plus the background names.
  The paper's Sec. 4.3 ("MaskCLIP tries to annotate every pixel to a category") describes
  this behaviour.
* ``"softmax"``: softmax of the cosines / CLIP's temperature over the episode class and the
  background names only; foreground where the class's probability exceeds ``threshold``.
* ``"threshold"``: the class's cosine map min-max normalised per image (PFENet Eq. 5's
  normalisation); foreground where it is at least ``threshold``.

**Mask refiner** (self-supported, Eqs. 2-5; no learned weights), on frozen backbone features.
It is SSP's self-support matching (Fan et al., ECCV 2022; fanq15/SSP, ``model/SSP_matching.py``,
``SSP_func``), which LFSS does not cite but follows step by step:

* Eq. 2: foreground prototype = masked average pooling of the features under the initial mask.
* Eq. 3: ``P_m^f = alpha P_s^f + (1 - alpha) P_q^f`` (SSP's ``FP * 0.5 + SSFP * 0.5``; K shots:
  ``P_s^f`` = the mean over the shots, as SSP).
* Eq. 4: per-pixel background prototypes by attention over the image's own background
  features, ``P^b = softmax(F F_b^T) F_b`` with ``F_b = F * (1 - M)`` (SSP's ``bg_proto_local``).
* Eq. 5: every pixel goes to the foreground when its cosine to ``P_m^f`` exceeds its cosine
  to its background prototype.

Eq. 4 as printed would let no foreground pixel meet the background it resembles; fsslib follows SSP
(rows from ``F``, columns from ``F_b``): the reasoning is in ``docs/methods/lfss.md``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fsslib.blocks import min_max_normalise, prototype_cosine
from fsslib.blocks.masks import masked_average_pooling
from fsslib.clip import MASKCLIP_TEMPLATES, ClipBundle, class_embeddings, segment_with_text
from fsslib.errors import FsslibError, unknown
from fsslib.blocks.frozen import HoldsFrozen

PSEUDO_MASK_RULES = ("vocabulary", "softmax", "threshold")
BACKGROUND_ATTENTIONS = ("dot", "ssp_cosine")
SSP_COSINE_SCALE = 2.0  # SSP_func: softmax(2 * cos) over the background features


class LfssOptionError(FsslibError, ValueError):
    """An LFSS option whose value cannot work (e.g. a balance factor outside [0, 1])."""


def binarise_scores(cosines: torch.Tensor, class_index: torch.Tensor, n_classes: int, rule: str,
                    threshold: float, temperature: float) -> torch.Tensor:
    """Pseudo masks (N, h, w) bool from MaskCLIP cosines (N, V, h, w) over a vocabulary.

    The vocabulary holds ``n_classes`` class names, then the background names;
    ``class_index`` (N,) is each image's episode class (0-based). ``rule`` is one of
    :data:`PSEUDO_MASK_RULES` (module docstring); ``temperature`` divides the cosines before the
    ``"softmax"`` rule's softmax.
    """
    rows = torch.arange(len(cosines), device=cosines.device)
    class_cosine = cosines[rows, class_index]  # (N, h, w)
    if rule == "vocabulary":
        return cosines.argmax(dim=1) == class_index[:, None, None]
    if rule == "softmax":
        logits = torch.cat([class_cosine.unsqueeze(1), cosines[:, n_classes:]], dim=1) / temperature  # (N, 1+bg, h, w)
        return logits.softmax(dim=1)[:, 0] > threshold
    if rule == "threshold":
        return min_max_normalise(class_cosine) >= threshold
    raise unknown("LFSS pseudo-mask rule", rule, PSEUDO_MASK_RULES)


class PseudoMaskGenerator(HoldsFrozen):
    """VLMD's mask generator: frozen MaskCLIP -> (N, h, w) bool pseudo masks of each image's class."""

    def __init__(self, bundle: ClipBundle, class_names: Sequence[str], background_names: Sequence[str],
                 rule: str = "vocabulary", threshold: float = 0.5, templates: Sequence[str] = MASKCLIP_TEMPLATES) -> None:
        if rule not in PSEUDO_MASK_RULES:
            raise unknown("LFSS pseudo-mask rule", rule, PSEUDO_MASK_RULES)
        if rule == "softmax" and not background_names:
            raise LfssOptionError(
                "The 'softmax' pseudo-mask rule compares the class with background prompts, "
                "but no background names are set.",
                "pass options={'background_names': ['background']} (or MaskCLIP's ['building', 'ground', 'grass', "
                "'tree', 'sky']), or use pseudo_mask='vocabulary' or 'threshold'.")
        if not 0.0 <= threshold <= 1.0:
            raise LfssOptionError(f"pseudo_threshold = {threshold} is outside [0, 1].",
                                  "the softmax probability and the min-max normalised score lie in [0, 1]; use e.g. 0.5.")
        empty = [repr(name) for name in [*class_names, *background_names] if not str(name).strip()]
        if empty:
            raise LfssOptionError(f"Empty class or background name(s) {empty}: MaskCLIP's prompts would name nothing.",
                                  "give every class and every background name as words, e.g. 'dotted star'.")
        super().__init__()
        self.hold_frozen("clip", bundle.model)
        self.bundle = bundle
        self.n_classes = len(class_names)
        self.vocabulary = list(class_names) + list(background_names)
        self.rule, self.threshold, self.templates = rule, threshold, tuple(templates)
        class_embeddings(bundle, self.vocabulary, self.templates)  # a name the text tower cannot encode fails here

    @torch.no_grad()
    def cosines(self, images: torch.Tensor) -> torch.Tensor:
        """MaskCLIP cosines (N, V, h_clip, w_clip) of (N, 3, H, W) images with the vocabulary embeddings (the 85
        templates unless ``templates`` says otherwise)."""
        text = class_embeddings(self.bundle, self.vocabulary, self.templates)  # (V, D)
        return segment_with_text(self.bundle, images, text)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, class_ids: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """(N, h, w) bool pseudo masks of class ``class_ids`` (N,) (1-based) at the feature grid ``size``."""
        cosines = self.cosines(images)  # (N, V, h_clip, w_clip)
        cosines = F.interpolate(cosines, size=tuple(size), mode="bilinear", align_corners=True)  # (N, V, h, w)
        return binarise_scores(cosines, class_ids.to(cosines.device) - 1, self.n_classes, self.rule, self.threshold,
                               self.bundle.logit_temperature)


def mix_foreground_prototypes(support: torch.Tensor, query: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 3: ``P_m^f = alpha * P_s^f + (1 - alpha) * P_q^f``; (B, C) each."""
    return alpha * support + (1 - alpha) * query


def background_attention(features: torch.Tensor, masks: torch.Tensor, attention: str = "dot") -> torch.Tensor:
    """Eq. 4's attention weights (N, hw, hw): row p is pixel p's softmax over the positions j of ``F_b = F * (1 - M)``.

    features: (N, C, h, w); masks: (N, h, w) bool initial foreground; scores are the dot products
    (``attention="dot"``) or 2 x the cosines (``"ssp_cosine"``).
    """
    pixels = features.flatten(2).transpose(1, 2)  # (N, hw, C)
    background = pixels * (~masks).flatten(1).unsqueeze(-1).to(pixels.dtype)  # (N, hw, C): F_b
    if attention == "dot":
        scores = pixels @ background.transpose(1, 2)  # (N, hw, hw)
    elif attention == "ssp_cosine":
        scores = SSP_COSINE_SCALE * F.normalize(pixels, dim=-1) @ F.normalize(background, dim=-1).transpose(1, 2)
    else:
        raise unknown("LFSS refiner attention", attention, BACKGROUND_ATTENTIONS)
    return scores.softmax(dim=-1)


def background_prototypes(features: torch.Tensor, masks: torch.Tensor, attention: str = "dot") -> torch.Tensor:
    """Eq. 4 (see the module docstring): per-pixel background prototypes (N, C, h, w).

    features: (N, C, h, w); masks: (N, h, w) bool initial foreground. Pixel p's prototype is
    ``sum_j softmax_j(s(F_p, F_b,j)) F_b,j`` over all positions j (:func:`background_attention`).
    """
    background = features.flatten(2).transpose(1, 2) * (~masks).flatten(1).unsqueeze(-1).to(features.dtype)  # F_b
    return (background_attention(features, masks, attention) @ background).transpose(1, 2).reshape(features.shape)


def reassign(features: torch.Tensor, foreground_prototype: torch.Tensor, masks: torch.Tensor,
             attention: str = "dot") -> torch.Tensor:
    """Eq. 5: (N, h, w) bool, foreground where cos(F, P_m^f) > cos(F, P^b) pixel by pixel.

    features: (N, C, h, w); foreground_prototype: (N, C) = P_m^f; masks: (N, h, w) bool initial
    masks; ``attention`` as :func:`background_prototypes`.
    """
    foreground = prototype_cosine(features, foreground_prototype.unsqueeze(1))[:, 0]  # (N, h, w)
    background = F.cosine_similarity(features, background_prototypes(features, masks, attention), dim=1)  # (N, h, w)
    return foreground > background


@torch.no_grad()
def refine_masks(query: torch.Tensor, support: torch.Tensor, query_masks: torch.Tensor, support_masks: torch.Tensor,
                 alpha: float, attention: str = "dot") -> tuple[torch.Tensor, torch.Tensor]:
    """The self-supported refiner (Eqs. 2-5) for B episodes: refined (query (B, h, w), support (B, K, h, w)) masks.

    query: (B, C, h, w) and support: (B, K, C, h, w) frozen features; the masks are bool
    initial pseudo masks at that grid. ``P_m^f`` (Eq. 3) of each episode refines its query and
    every one of its supports; background prototypes (Eq. 4, ``attention`` as
    :func:`background_prototypes`) are each image's own.
    """
    batch, shots = support.shape[:2]
    with torch.autocast(query.device.type, enabled=False):  # float32: bf16 would round Eq. 4's unscaled scores
        query, support = query.float(), support.float()
        query_prototype = masked_average_pooling(query, query_masks.long())  # (B, C): Eq. 2
        support_prototype = masked_average_pooling(support.flatten(0, 1), support_masks.flatten(0, 1).long())  # (B*K, C)
        mixed = mix_foreground_prototypes(support_prototype.view(batch, shots, -1).mean(dim=1), query_prototype, alpha)
        features = torch.cat([query.unsqueeze(1), support], dim=1).flatten(0, 1)  # (B*(1+K), C, h, w)
        masks = torch.cat([query_masks.unsqueeze(1), support_masks], dim=1).flatten(0, 1)  # (B*(1+K), h, w)
        refined = reassign(features, mixed.repeat_interleave(1 + shots, dim=0), masks, attention)
    refined = refined.view(batch, 1 + shots, *refined.shape[-2:])
    return refined[:, 0], refined[:, 1:]
