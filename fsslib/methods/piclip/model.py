"""PI-CLIP(PFENet): PFENet whose prior source is PI-CLIP's CLIP priors [VVP, refined VTP].

The frozen CLIP ViT sees the query and the supports (at the episode's input size, or
``clip_image_size``; positional embeddings are resized, so ViT-B/16 at 473 x 473 gives
29 x 29 tokens as the official code). Per episode:

* VVP (Eqs. 5-8) from the patch tokens of ``vvp_blocks`` (official: blocks 12 and 11 of
  ViT-B/16, in that order; any ViT: the last two), one channel per block and shot: the K shots
  are concatenated, not averaged (Sec. 4.1).
  ``vvp_mask_support_image``: the official code blanks the support image outside its mask
  before CLIP, then masks the tokens (Eq. 5 masks only the tokens); the default follows the code.
* VTP (Eqs. 1-4) by softmax-GradCAM of "a photo of {c}." against "a photo without {c}.". The GradCAM starts
  from the query's recorded block output, so the query passes through CLIP once.
* PIR (Eqs. 9-11) with the head-averaged attention of the last ``pir_blocks`` blocks (8; all
  blocks of smaller ViTs), CLS removed; box mask from the VTP. Refines the VTP only by
  default (Table 4); ``refine`` picks which priors are refined.

The decoder's prior channels follow the official code's ``query_merge`` input: the VTP twice
(``vtp_channels``), then the VVP (per block, then per shot), all multiplied by ``prior_scale``
(10), so the priors enter the decoder as strongly as the official code's ``img_cam * 10`` and
``clip_similarity * 10``. The paper names neither the copies nor the scale.

The priors are resized (bilinear) to the FEM's feature size: :class:`ClipPriors` is a
:class:`~fsslib.blocks.priors.PriorSource` handed to :class:`~fsslib.methods.pfenet.PFENet`,
whose features, prototype, FEM and losses are unchanged (``fsslib.methods.piclip.build``). The CLIP model
is frozen and not part of the state dict (checkpoints hold PFENet's weights only);
``.to(device)`` moves it.

Checked against vangjin/PI-CLIP, ``model/PI_CLIP.py``, ``model/get_cam.py`` and ``util/`` (``tests/test_piclip.py``
assembles the official ``[img_cam * 10, clip_similarity * 10]`` channels from the priors by hand).
The official code computes the VTP on the original image (``x_cv2``, before the resize and padding
to 473) and resizes it to the feature map, so at the paper tier its VTP is not aligned with a padded
query; fsslib computes it on the query as the network sees it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fsslib.blocks.masks import blank_outside_masks
from fsslib.blocks.priors import PriorSource
from fsslib.clip import PICLIP_NON_TARGET_TEMPLATE, PICLIP_TARGET_TEMPLATE, ClipBundle, block_taps, prompt_embeddings
from fsslib.clip.gradcam import gradcam_start_block
from fsslib.data.episodes import OneWayInputs
from fsslib.errors import unknown
from fsslib.methods.piclip.priors import (
    BOX_THRESHOLD,
    PIR_BLOCKS,
    PriorInputError,
    box_mask,
    refine_prior,
    refinement_matrix,
    visual_text_prior,
    visual_visual_prior,
    vtp_prompt_table,
)
from fsslib.models.backbones import MultiLevelBackbone

PRIOR_KINDS = ("vvp", "vtp")
VTP_ACTIVATIONS = ("last_block_output", "last_block_ln_1")
# "episode": the paper's two prompts of the episode class; "present_classes": the official code's
# prompts of every class in the query's label, which reads ground truth at test time
VTP_PROMPT_SETS = ("episode", "present_classes")


class ClipPriors(PriorSource):
    """PI-CLIP's prior source: ``priors`` and ``refine`` select the ablation rows of Tables 3-4."""

    def __init__(
        self,
        bundle: ClipBundle,
        class_names: Sequence[str],
        shots: int,
        priors: Sequence[str] = PRIOR_KINDS,
        refine: Sequence[str] = ("vtp",),
        vvp_blocks: Sequence[int] = (-1, -2),
        pir_blocks: int = PIR_BLOCKS,
        vtp_temperature: float | None = None,
        vtp_activation: str = "last_block_output",
        box_threshold: float = BOX_THRESHOLD,
        pir_squarings: int = 0,
        clip_image_size: int | None = None,
        vvp_mask_support_image: bool = True,
        vtp_prompts: str = "episode",
        vtp_channels: int = 2,
        prior_scale: float = 10.0,
        vvp_min_max: bool = True,
    ) -> None:
        for name, values in (("prior", priors), ("refined prior", refine)):
            for value in values:
                if value not in PRIOR_KINDS:
                    raise unknown(f"PI-CLIP {name}", value, PRIOR_KINDS)
        if not priors:
            raise unknown("PI-CLIP prior set", "()", ["('vvp', 'vtp')", "('vtp',)", "('vvp',)"])
        if vtp_prompts not in VTP_PROMPT_SETS:
            raise unknown("VTP prompt set", vtp_prompts, VTP_PROMPT_SETS)
        if vtp_activation not in VTP_ACTIVATIONS:
            raise unknown("VTP GradCAM activation", vtp_activation, VTP_ACTIVATIONS)
        chosen = tuple(p for p in PRIOR_KINDS if p in priors)
        vvp_indices = [int(b) % bundle.num_blocks for b in vvp_blocks]
        super().__init__()
        self.channels = ("vtp" in chosen) * vtp_channels + (len(vvp_indices) * shots if "vvp" in chosen else 0)
        self.vtp_channels, self.prior_scale = vtp_channels, float(prior_scale)
        self.priors, self.refine, self.vvp_blocks, self.shots = chosen, tuple(refine), vvp_indices, shots
        self.pir_blocks = list(range(bundle.num_blocks))[-min(pir_blocks, bundle.num_blocks):]  # Eq. 9: last l blocks
        self.hold_frozen("clip", bundle.model)
        self.bundle = bundle
        self.class_names = list(class_names)  # as CLIP prompts spell them, row = class id - 1
        empty = torch.zeros(len(self.class_names), bundle.embed_dim)
        self.register_buffer("target_text", empty.clone(), persistent=False)  # (n_classes, D), filled on demand
        self.register_buffer("non_target_text", empty.clone(), persistent=False)  # (n_classes, D)
        self.encoded_rows: set[int] = set()  # the tables' filled rows, kept on the host: nothing is read from the GPU
        self.vtp_temperature = bundle.logit_temperature if vtp_temperature is None else float(vtp_temperature)
        self.vtp_activation = vtp_activation
        self.box_threshold, self.pir_squarings = box_threshold, pir_squarings
        self.clip_image_size = clip_image_size
        self.vvp_mask_support_image = vvp_mask_support_image
        self.vtp_prompts = vtp_prompts
        self.vvp_min_max = vvp_min_max

    def encode_class_prompts(self, rows: Sequence[int]) -> None:
        """Fill the VTP text tables for class ``rows`` not encoded yet ("a photo of / without {c}.").

        Each class is encoded alone, its two prompts in one call: a row's embedding then never depends on which
        classes arrived with it, so a resumed run, which meets the classes in other groups, equals an uninterrupted
        one bit for bit."""
        for row in sorted({int(r) for r in rows} - self.encoded_rows):
            name = self.class_names[row]
            prompts = [PICLIP_TARGET_TEMPLATE.format(name), PICLIP_NON_TARGET_TEMPLATE.format(name)]
            self.target_text[row], self.non_target_text[row] = prompt_embeddings(self.bundle, prompts)  # (2, D)
            self.encoded_rows.add(row)

    def _clip_input(self, images: torch.Tensor) -> torch.Tensor:
        if self.clip_image_size is None or images.shape[-1] == images.shape[-2] == self.clip_image_size:
            return images
        size = (self.clip_image_size, self.clip_image_size)
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False).clamp(0, 1)

    def _mask_images(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Official code's ``s_x * mask``: pixels outside the support mask become CLIP's mean colour (0 after normalising)."""
        return blank_outside_masks(images, masks, self.bundle.mean)

    def clip_priors(self, batch: OneWayInputs, present_indices: Sequence[Sequence[int]] | None = None
                    ) -> dict[str, torch.Tensor]:
        """Every CLIP prior of the batch at the CLIP token grid (h, w), all in [0, 1] (the raw VVP, without
        ``vvp_min_max``, is a cosine: at most 1):

        ``vvp`` (B, n_blocks, K, h, w), ``vtp`` (B, h, w), ``vtp_refined`` (B, h, w),
        ``vvp_refined`` (B, n_blocks, K, h, w) (only when refining the VVP), ``box`` (B, h, w).
        ``present_indices`` switches the VTP to the official code's label-reading prompts
        (see :func:`~fsslib.methods.piclip.priors.vtp_prompt_table`).
        """
        batch_size, shots = batch.support_images.shape[:2]
        query_images = self._clip_input(batch.query_images)  # (B, 3, S, S)
        support_images = self._clip_input(batch.support_images.flatten(0, 1))  # (B*K, 3, S, S)
        if self.vvp_mask_support_image:
            support_images = self._mask_images(support_images, batch.support_masks.flatten(0, 1))
        with torch.no_grad():
            query_taps = block_taps(self.bundle, query_images, sorted(set(self.vvp_blocks + self.pir_blocks)),
                                    with_attention=True, drop_cls=True)
            support_taps = block_taps(self.bundle, support_images, self.vvp_blocks, with_attention=False)
            vvp = torch.stack([
                visual_visual_prior(query_taps.token_map(block),
                                    support_taps.token_map(block).unflatten(0, (batch_size, shots)),
                                    batch.support_masks, self.vvp_min_max)
                for block in self.vvp_blocks], dim=1)  # (B, n_blocks, K, h, w)
        class_rows = batch.class_ids.to(self.target_text.device) - 1  # (B,)
        # the one read from the device of a PI-CLIP step: which classes' prompts to encode (host copies of the class
        # ids would spare it)
        self.encode_class_prompts(class_rows.tolist() + [r for rows in present_indices or [] for r in rows])
        prompts, valid = vtp_prompt_table(self.target_text, self.non_target_text, class_rows, present_indices)
        # GradCAM starts from the last block's output (or its input, for the official layer), which the query's taps
        # hold with the default VVP blocks (-1, -2): the tower then runs once for the query, not twice
        start = gradcam_start_block(self.bundle, self.vtp_activation)
        vtp = visual_text_prior(self.bundle, query_images, prompts, valid, temperature=self.vtp_temperature,
                                activation=self.vtp_activation,
                                taps=query_taps if start in query_taps.tokens else None)  # (B, h, w)
        with torch.no_grad():
            refinement = refinement_matrix(query_taps.mean_attention(self.pir_blocks).float(), self.pir_squarings)
            boxes = box_mask(vtp, self.box_threshold)  # (B, h, w)
            priors = {"vvp": vvp, "vtp": vtp, "box": boxes, "vtp_refined": refine_prior(vtp, refinement, boxes)}
            if "vvp" in self.refine:
                priors["vvp_refined"] = refine_prior(vvp.flatten(1, 2), refinement, boxes).view_as(vvp)  # every channel
        return priors

    @property
    def reads_image_labels(self) -> bool:
        """Whether the VTP prompts every class in the query's label (the official code's), read from the inputs."""
        return self.vtp_prompts == "present_classes"

    def forward(self, batch: OneWayInputs, query_levels: dict[str, torch.Tensor],
                support_levels: dict[str, torch.Tensor], backbone: MultiLevelBackbone) -> torch.Tensor:
        """``prior_scale`` x [VTP (``vtp_channels`` copies), VVP (n_blocks * K)] in place of PFENet's prior,
        at the FEM size (B, P, h, w): the official ``query_merge`` input's order and scale."""
        if batch.support_images.shape[1] != self.shots:
            raise PriorInputError(
                f"This PI-CLIP model concatenates {self.shots} VVP shot(s) but the batch has "
                f"{batch.support_images.shape[1]} support images per episode.",
                f"build the model with make_config(..., shots={batch.support_images.shape[1]}) or feed {self.shots}-shot episodes.",
            )
        present = None
        if self.reads_image_labels:  # the official code's VTP: reads the query's image-level labels
            present = [[c - 1 for c in classes] for classes in batch.query_classes]
        priors = self.clip_priors(batch, present)
        channels = []
        if "vtp" in self.priors:
            vtp = priors["vtp_refined" if "vtp" in self.refine else "vtp"]  # (B, h, w)
            channels.append(vtp.unsqueeze(1).expand(-1, self.vtp_channels, -1, -1))
        if "vvp" in self.priors:
            vvp = priors["vvp_refined" if "vvp" in self.refine else "vvp"]  # (B, n_blocks, K, h, w)
            channels.append(vvp.flatten(1, 2))
        prior = torch.cat(channels, dim=1)  # (B, P, h, w)
        size = query_levels["layer3"].shape[-2:]
        return self.prior_scale * F.interpolate(prior, size=size, mode="bilinear", align_corners=True)
