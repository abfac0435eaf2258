"""CLIP-DINOiser as a natively N-way few-shot segmenter, with text or support-image prompts.

The query goes through the frozen CLIP once (MaskCLIP features F and the tapped block's
features X, :func:`fsslib.clip.maskclip_features_and_tap`); F is pooled with the correlation
head's correlations, scored against a vocabulary whose class 0 is the background, the background
rule is applied, and the scores are upsampled to the input (:mod:`.model`). The vocabulary:

* ``prompts="text"`` (CLIP-DINOiser, zero-shot): the background name(s) and *every* class name of
  the benchmark, each ensembled over the 80 ImageNet templates (open-vocabulary setting, as
  ``maskclip``); the supports are not read.
* ``prompts="support"`` (Verriello 2024, Sec. 4.3): the background name(s) and, for each way, the
  L2-normalised CLIP image embedding of each support image (whole image, resized to CLIP's input
  size, no mask), averaged over the K shots and renormalised.
* ``prompts="masked_support"`` (beyond the paper): each support's MaskCLIP features averaged under
  its mask, so the support's background does not leak into the prompt.
* ``prompts="text_support"`` (beyond the paper): the normalised sum of the way's text embedding
  and its support embedding.

Logits (B, 1 + N, H, W): channel n is log P(way n's class); channel 0 is the log of the largest
other vocabulary entry (the background after the rule, or a class not in the episode), so the
argmax assigns a pixel to way n exactly when that class wins over the whole vocabulary.

**Trained adapter** (``adapter=True``; the support-image paper's Sec. 4.2 trains with AdamW at 1e-4, x0.1 every
10 epochs, a cross-entropy weighted by class presence, batch 4 and 50 epochs, without saying what): a residual
1x1 convolution on the pooled features, ``F'' = F' + W F'`` with W zero at the start (so training
starts from the training-free model), trained episodically on the base classes. The loss is the
cross-entropy of the logits above with each class of the batch (background and the ways) weighted
by the inverse of its pixel count, normalised to mean 1 over the classes present: our reading of
"weighted by class presence in each batch".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslib.blocks.sliding import check_window, slide
from fsslib.clip import ClipBundle, class_embeddings, encode_image, maskclip_features, maskclip_features_and_tap
from fsslib.data.episodes import IGNORE, EpisodeBatch, EpisodeInputs, OneWayInputs
from fsslib.errors import FsslibError, unknown
from fsslib.methods.base import FewShotSegmenter, model_inputs
from fsslib.methods.clip_dinoiser.model import (DELTA, GAMMA, DinoiserHeads, apply_background, class_log_scores,
                                                guided_pooling)
from fsslib.methods.options import OptionError

PROMPTS = ("text", "support", "masked_support", "text_support")
LOG_FLOOR = 1e-6  # upsampled scores below it count as log(1e-6): finite logits for the evaluator's cross-entropy
MIN_MASK_AREA = 1e-6  # an empty support mask gives a zero prompt (cosine 0 with everything), not a division by 0


class ClipDinoiserSegmenter(FewShotSegmenter):
    """Training-free CLIP-DINOiser with text or support-image class embeddings; natively N-way."""

    trainable = False

    def __init__(self, bundle: ClipBundle, heads: DinoiserHeads, feature_block: int, prompts: str,
                 class_names: list[str], background_names: list[str], templates: tuple[str, ...],
                 gamma: float | None = GAMMA, delta: float = DELTA, pooling: bool = True, background_head: bool = True,
                 adapter: bool = False, window: int | None = None, stride: int | None = None) -> None:
        super().__init__()
        if prompts not in PROMPTS:
            raise unknown("CLIP-DINOiser prompts", prompts, PROMPTS)
        self.bundle = bundle
        self.hold_frozen("clip", bundle.model)
        self.hold_frozen("heads", heads)
        self.feature_block, self.prompts = feature_block, prompts
        self.class_names, self.background_names = list(class_names), list(background_names)
        self.templates = templates
        self.gamma, self.delta, self.pooling, self.background_head = gamma, delta, pooling, background_head
        self.window, self.stride = window, stride if stride is not None else window
        if window is None and stride is not None:
            raise OptionError(f"Option stride={stride} of CLIP-DINOiser slides a window, but no window is set: the "
                              "query would be read in one window and the stride ignored.",
                              "pass --options window=N with it (the paper: window=448, stride=224), or leave stride "
                              "out")
        if window is not None:
            check_window(window, self.stride)
            if window < bundle.patch_size:
                raise FsslibError(f"Option window={window} of CLIP-DINOiser is smaller than one {bundle.patch_size}-pixel "
                                  f"patch of {bundle.name}: a window that small holds no patch to read.",
                                  f"pass --options window=N with N at least {bundle.patch_size} (the paper: 448, "
                                  "stride=224), or leave window out to read the query in one window.")
        self.trainable = adapter
        self.adapter = nn.Conv2d(bundle.embed_dim, bundle.embed_dim, 1) if adapter else None
        if self.adapter is not None:
            nn.init.zeros_(self.adapter.weight)
            nn.init.zeros_(self.adapter.bias)

    # ------------------------------------------------------------------ prompts

    def text_embeddings(self, names: list[str]) -> torch.Tensor:
        """(n, D) template-ensembled, normalised text embeddings (cached per name list)."""
        return class_embeddings(self.bundle, names, self.templates)

    def support_embeddings(self, support_images: torch.Tensor, support_masks: torch.Tensor) -> torch.Tensor:
        """(B, N, D) normalised prompts of supports (B, N, K, 3, H, W) with masks (B, N, K, H, W)."""
        batch, ways, shots = support_images.shape[:3]
        images = support_images.flatten(0, 2)  # (B*N*K, 3, H, W)
        if self.prompts == "masked_support":
            dense = maskclip_features(self.bundle, images)  # (BNK, D, h, w)
            masks = (support_masks.flatten(0, 2) == 1).float()[:, None]  # (BNK, 1, H, W)
            weights = F.interpolate(masks, size=dense.shape[-2:], mode="area")  # share of mask in each cell
            embeddings = (dense * weights).sum((2, 3)) / weights.sum((2, 3)).clamp(min=MIN_MASK_AREA)  # (BNK, D)
        else:
            size = (self.bundle.image_size, self.bundle.image_size)
            resized = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
            embeddings = encode_image(self.bundle, resized.clamp(0, 1))  # (BNK, D)
        embeddings = F.normalize(embeddings.float(), dim=-1).view(batch, ways, shots, -1).mean(dim=2)
        return F.normalize(embeddings, dim=-1)  # (B, N, D)

    def vocabulary(self, batch: EpisodeInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Class embeddings (B, V, D), background name(s) first, and each way's index into them (B, N)."""
        background = self.text_embeddings(self.background_names)  # (nb, D)
        first = len(self.background_names)
        class_ids = batch.class_ids.to(background.device)  # (B, N)
        if self.prompts == "text":
            classes = self.text_embeddings(self.class_names)  # (C, D)
            vocabulary = torch.cat([background, classes])[None].expand(len(batch), -1, -1)
            return vocabulary, first + class_ids - 1
        ways = self.support_embeddings(batch.support_images, batch.support_masks)  # (B, N, D)
        if self.prompts == "text_support":
            text = self.text_embeddings(self.class_names).to(ways.device)[class_ids - 1]  # (B, N, D)
            ways = F.normalize(ways + text, dim=-1)
        vocabulary = torch.cat([background.to(ways.device)[None].expand(len(batch), -1, -1), ways], dim=1)
        index = first + torch.arange(batch.ways, device=ways.device)
        return vocabulary, index[None].expand(len(batch), -1)

    # ------------------------------------------------------------------ segmentation

    def log_scores(self, query_images: torch.Tensor, vocabulary: torch.Tensor) -> torch.Tensor:
        """(B, 1 + V - nb, h, w) log-probabilities at the feature grid: the background names merged into
        class 0 (their probabilities summed), the background rule applied."""
        dense, tapped = maskclip_features_and_tap(self.bundle, query_images, self.feature_block)
        if self.pooling:
            dense = guided_pooling(dense, self.heads.correlation(tapped), self.gamma)  # (B, D, h, w)
        if self.adapter is not None:
            dense = dense + self.adapter(dense)
        log_scores = class_log_scores(dense, vocabulary)  # (B, V, h, w)
        first = len(self.background_names)
        log_scores = torch.cat([log_scores[:, :first].logsumexp(dim=1, keepdim=True), log_scores[:, first:]], dim=1)
        if self.background_head:
            log_scores = apply_background(log_scores, self.heads.background(tapped), self.delta)
        return log_scores

    def way_logits(self, log_scores: torch.Tensor, way_index: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N, H, W): each way's log-score, and the largest other entry's in channel 0."""
        channel = way_index - len(self.background_names) + 1  # (B, N): the ways' channels after the merge
        index = channel[:, :, None, None].expand(-1, -1, *log_scores.shape[-2:])  # (B, N, H, W)
        others = log_scores.scatter(1, index, float("-inf")).amax(dim=1, keepdim=True)  # (B, 1, H, W)
        return torch.cat([others, log_scores.gather(1, index)], dim=1)

    def scores(self, images: torch.Tensor, vocabulary: torch.Tensor) -> torch.Tensor:
        """(B, 1 + V', H, W) probabilities of one window, upsampled bilinearly to the images' size as the
        official evaluation resizes them."""
        scores = self.log_scores(images, vocabulary).exp()  # (B, 1 + V', h, w)
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, batch: EpisodeInputs) -> torch.Tensor:
        """Logits (B, 1 + N, H, W): the log of the probabilities of one window, or with ``window`` set their
        average over sliding windows (:func:`fsslib.blocks.sliding.slide`, the official evaluation's)."""
        vocabulary, way_index = self.vocabulary(model_inputs(self, batch))  # (B, V, D), (B, N)
        if self.window is None:
            scores = self.scores(batch.query_images, vocabulary)
        else:
            scores = slide(lambda crop: self.scores(crop, vocabulary), batch.query_images, self.window, self.stride)
        return self.way_logits(scores.clamp(min=LOG_FLOOR).log(), way_index)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """Cross-entropy with each class present weighted by the inverse of its pixel count (mean weight 1),
        on the log-scores upsampled as they are (finite gradients everywhere)."""
        vocabulary, way_index = self.vocabulary(batch.inputs())
        log_scores = self.log_scores(batch.query_images, vocabulary)
        log_scores = F.interpolate(log_scores, size=batch.query_images.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.way_logits(log_scores, way_index)  # (B, 1 + N, H, W)
        masks = batch.query_masks
        counts = torch.bincount(masks[masks != IGNORE].flatten(), minlength=logits.shape[1]).float()  # (1 + N,)
        present = counts > 0
        weights = torch.where(present, 1 / counts.clamp(min=1), torch.zeros_like(counts))
        weights = weights * present.sum() / weights.sum()
        return F.cross_entropy(logits.float(), masks, weight=weights.to(logits.device), ignore_index=IGNORE)

    def segment(self, batch: OneWayInputs) -> torch.Tensor:
        """(B, 2, H, W) logits of binary episodes (the same computation with N = 1)."""
        return self.forward(EpisodeInputs(batch.support_images[:, None], batch.support_masks[:, None], batch.query_images,
                                          batch.class_ids[:, None], [[name] for name in batch.class_names]))
