"""PI-CLIP (Wang et al., CVPR 2024) on PFENet: ``build(cfg)``, ``PRESETS``, ``VARIANTS``, ``prior_quality``.

Options: :class:`PiclipOptions` (defaults = the paper's PI-CLIP(PFENet)).

``VARIANTS`` are the ablation rows of Tables 3 and 4, here on PFENet (the paper ran them on HDMNet, as
:mod:`fsslib.methods.piclip.baselines` does; on PFENet the baseline row is ``method="pfenet"``), and ``vvp``, the
VVP alone: a control beyond the tables, whose Table 3 adds the VVP only beside the VTP.
"""
from __future__ import annotations

from fsslib.clip import load_clip
from fsslib.data.benchmarks import benchmark_of, class_list
from dataclasses import dataclass

from fsslib.methods.base import TOY_TRAINING, MethodConfig
from fsslib.methods.options import ClipOptions, DecoderOptions, option, redefault
from fsslib.methods.pfenet import PFENet
from fsslib.methods.piclip.model import VTP_ACTIVATIONS, VTP_PROMPT_SETS, ClipPriors
from fsslib.methods.piclip.priors import BOX_THRESHOLD, PIR_BLOCKS
from fsslib.methods.piclip.quality import prior_mass_by_region, prior_quality
from fsslib.models.backbones import DEEP_STEM, build_backbone



@dataclass(frozen=True)
class ClipPriorOptions(ClipOptions):
    """PI-CLIP's CLIP priors and their refinement: the same options on every baseline (PFENet, BAM, HDMNet)."""

    clip: str = redefault(ClipOptions, "clip", "ViT-B-16")
    clip_pretrained: str | None = redefault(ClipOptions, "clip_pretrained", "openai")
    priors: tuple[str, ...] = option(("vvp", "vtp"), "which CLIP priors replace the baseline's prior (Table 3)", ("vvp", "vtp"))
    refine: tuple[str, ...] = option(("vtp",), "which priors PIR refines (Table 4)", ("vvp", "vtp"))
    vvp_blocks: tuple[int, ...] = option((-1, -2), "the CLIP blocks whose tokens the VVP compares, in channel order "
                                         "(the last, then the one before: the official code's)")
    pir_blocks: int = option(PIR_BLOCKS, "the attention blocks whose maps PIR averages (Eq. 9)", at_least=1)
    vtp_temperature: float | None = option(None, "the VTP's softmax temperature (None: the CLIP's own 1 / logit_scale; "
                                           "0.01 for pretrained CLIP)", above=0)
    vtp_activation: str = option("last_block_output", "the GradCAM layer (last_block_ln_1: the official code's)",
                                 VTP_ACTIVATIONS)
    box_threshold: float = option(BOX_THRESHOLD, "threshold of the PIR box (Eq. 11)", at_least=0, at_most=1)
    pir_squarings: int = option(0, "0: Eq. 10; 1: the official code's extra R @ R", at_least=0)
    clip_image_size: int | None = option(None, "the size CLIP sees (None: the episode's input size)", at_least=1)
    vvp_mask_support_image: bool = option(True, "True: the official code, which blanks the support image outside "
                                          "the mask before CLIP; False: Eq. 5, which masks only the tokens")
    vtp_channels: int = option(2, "copies of the VTP among the decoder's prior channels (the official code's 2)",
                               at_least=1)
    prior_scale: float = option(10.0, "factor on the priors entering the decoder (the official code's 10; 1: unscaled)",
                                above=0)
    vvp_min_max: bool = option(True, "True: Eq. 8 min-max scales each VVP map (the paper); False: the raw cosine, as "
                               "the official code feeds it")
    vtp_prompts: str = option("episode", "episode: the paper's prompts of the episode class; present_classes: the "
                              "official code's prompts of every class in the query's label (reads the query's ground "
                              "truth: for comparison only)", VTP_PROMPT_SETS)

    def prior_source(self, cfg: MethodConfig, prior_scale: float | None = None) -> ClipPriors:
        """The CLIP priors of these options for ``cfg`` (its benchmark's class names, its shots), each map times
        ``prior_scale`` (None: the option's)."""
        names = class_list(benchmark_of(cfg), cfg.extra_classes)
        return ClipPriors(
            load_clip(self.clip, self.clip_pretrained, self.clip_checkpoint), names, shots=cfg.shots,
            priors=list(self.priors), refine=list(self.refine), vvp_blocks=list(self.vvp_blocks),
            pir_blocks=self.pir_blocks, vtp_temperature=self.vtp_temperature, vtp_activation=self.vtp_activation,
            box_threshold=self.box_threshold, pir_squarings=self.pir_squarings, clip_image_size=self.clip_image_size,
            vvp_mask_support_image=self.vvp_mask_support_image, vtp_prompts=self.vtp_prompts,
            vtp_channels=self.vtp_channels, prior_scale=self.prior_scale if prior_scale is None else prior_scale,
            vvp_min_max=self.vvp_min_max)


@dataclass(frozen=True)
class PiclipOptions(DecoderOptions, ClipPriorOptions):
    method = "piclip"
    mask_support_cnn: bool = option(False, "True: blank the support image outside its mask before the ResNet too, as the "
                                    "official code's HDMNet extractor does; False: PFENet's, which masks features")


OPTIONS = PiclipOptions
SUPPORT_ANNOTATION = "pixel masks + class names"  # the VTP prompts name the class
SUPPORT_INPUTS = ("images", "masks", "names")
PRESETS = {
    "toy": dict(**TOY_TRAINING, options={"feature_dim": 64, "clip": "toy-vit", "clip_pretrained": None}),
    # PI-CLIP trains 30 epochs (Sec. 4.1), batch 4 for 1-shot (2 for 5-shot: set batch_size=2), tau = 0.01
    # the official code's rule (it builds on BAM's and HDMNet's code): training images with a novel class are dropped;
    # the paper says only that other settings follow each baseline (Sec. 4.1)
    # the backbone: PFENet's deep-stem ResNet-50 (the official code's initmodel/resnet50_v2.pth); else PiclipOptions' defaults
    "paper": dict(epochs=30, novel_rule="bam", backbone=DEEP_STEM,
                  options={"vtp_temperature": 0.01, "init": "pytorch"}),
}
VARIANTS = {
    "vtp": {"priors": ["vtp"], "refine": ["vtp"]},  # Table 3, baseline + VTP
    "vvp": {"priors": ["vvp"], "refine": []},  # VVP alone: not a row of Tables 3-4, a control
    "no_pir": {"priors": ["vvp", "vtp"], "refine": []},  # Table 4 row 1: P_vv, P_vt
    "pir_vv": {"priors": ["vvp", "vtp"], "refine": ["vvp"]},  # Table 4 row 2
    "pir_vt": {"priors": ["vvp", "vtp"], "refine": ["vtp"]},  # Table 4 row 3 = the default PI-CLIP
    "pir_both": {"priors": ["vvp", "vtp"], "refine": ["vvp", "vtp"]},  # Table 4 row 4
}

__all__ = ["ClipPriorOptions", "ClipPriors", "OPTIONS", "PRESETS", "PiclipOptions", "SUPPORT_ANNOTATION",
           "SUPPORT_INPUTS", "VARIANTS", "build", "prior_mass_by_region", "prior_quality",
           "shots_fixed_by_training"]


def shots_fixed_by_training(options: dict) -> bool:
    """With the VVP, FEM's first layer takes one prior channel per VVP block and support shot (Eq. 8 for each):
    a model trained on K-shot episodes fits K-shot episodes only."""
    return "vvp" in options["priors"]


def build(cfg: MethodConfig) -> PFENet:
    """PFENet with :class:`ClipPriors` as its prior source."""
    options = PiclipOptions.parse(cfg.options)
    return PFENet(build_backbone(cfg.backbone, cfg.backbone_weights), options.prior_source(cfg),
                  feature_dim=options.feature_dim, dropout=options.dropout, he_init=options.init == "he_normal",
                  mask_support_image=options.mask_support_cnn)
