"""PI-CLIP (Wang et al., CVPR 2024) on PFENet: ``build(cfg)``, ``PRESETS``, ``VARIANTS``, ``prior_quality``.

Options (``cfg.options``, defaults = the paper's PI-CLIP(PFENet)):

* ``clip`` / ``clip_pretrained`` / ``clip_checkpoint``: the frozen CLIP (toy: ``toy-vit``;
  paper: ``ViT-B-16`` with OpenAI weights);
* ``priors``: which CLIP priors replace PFENet's (``["vvp", "vtp"]``); ``refine``: which are
  refined by PIR (``["vtp"]``, Table 4);
* ``vvp_blocks`` (last two blocks), ``pir_blocks`` (8), ``vtp_temperature`` (None: the
  CLIP model's own 1 / logit_scale; 0.01 for pretrained CLIP), ``vtp_activation``
  (``"last_block_output"``; ``"last_block_ln_1"`` = official GradCAM layer),
  ``box_threshold`` (0.4), ``pir_squarings`` (0 = Eq. 10; 1 = the official code's extra R @ R),
  ``clip_image_size`` (None: CLIP sees the episode's input size), ``vvp_mask_support_image``
  (False = Eq. 5; True = the official code, which also blanks the support image outside the mask);
  ``vtp_prompts`` ("episode" = the paper's "a photo of / without {c}." of the episode class;
  "present_classes" = the official code's prompts of every class in the query's label, which
  reads the query's ground truth at test time: for comparison only, not a few-shot result);
* PFENet's ``feature_dim`` and ``dropout``.

``VARIANTS`` are the ablation rows of Tables 3 and 4 (the baseline row is ``method="pfenet"``).
"""
from __future__ import annotations

from fsslib.clip import load_clip
from fsslib.data.benchmarks import get_benchmark
from fsslib.methods.base import MethodConfig
from fsslib.methods.pfenet import TOY_TRAINING, PFENet
from fsslib.methods.piclip.model import ClipPriors
from fsslib.methods.piclip.quality import prior_mass_by_region, prior_quality
from fsslib.models.backbones import build_backbone

DEFAULT_OPTIONS = {
    "feature_dim": 256, "dropout": 0.5, "clip": "ViT-B-16", "clip_pretrained": "openai", "clip_checkpoint": None,
    "priors": ["vvp", "vtp"], "refine": ["vtp"], "vvp_blocks": [-2, -1], "pir_blocks": 8, "vtp_temperature": None,
    "vtp_activation": "last_block_output", "box_threshold": 0.4, "pir_squarings": 0, "clip_image_size": None,
    "vvp_mask_support_image": False, "vtp_prompts": "episode",
}
SUPPORT_ANNOTATION = "pixel masks + class names"  # the VTP prompts name the class
PRESETS = {
    "toy": dict(**TOY_TRAINING, options={"feature_dim": 64, "clip": "toy-vit", "clip_pretrained": None}),
    # PI-CLIP trains 30 epochs (Sec. 4.1), batch 4 for 1-shot (2 for 5-shot: set batch_size=2), tau = 0.01
    # PI-CLIP follows BAM's rule: training images that contain a novel class are dropped
    "paper": dict(epochs=30, novel_rule="bam", options={"feature_dim": 256, "clip": "ViT-B-16", "clip_pretrained": "openai",
                                      "vtp_temperature": 0.01}),
}
VARIANTS = {
    "vtp": {"priors": ["vtp"], "refine": ["vtp"]},  # Table 3, baseline + VTP
    "vvp": {"priors": ["vvp"], "refine": []},  # VVP alone
    "no_pir": {"priors": ["vvp", "vtp"], "refine": []},  # Table 4 row 1: P_vv, P_vt
    "pir_vv": {"priors": ["vvp", "vtp"], "refine": ["vvp"]},  # Table 4 row 2
    "pir_vt": {"priors": ["vvp", "vtp"], "refine": ["vtp"]},  # Table 4 row 3 = the default PI-CLIP
    "pir_both": {"priors": ["vvp", "vtp"], "refine": ["vvp", "vtp"]},  # Table 4 row 4
}

__all__ = ["ClipPriors", "PRESETS", "SUPPORT_ANNOTATION", "VARIANTS", "build", "prior_mass_by_region", "prior_quality",
           "shots_fixed_by_training"]


def shots_fixed_by_training(options: dict) -> bool:
    """With the VVP, FEM's first layer takes one prior channel per support shot (Eq. 8 for each shot):
    a model trained on K-shot episodes fits K-shot episodes only."""
    return "vvp" in options["priors"]


def build(cfg: MethodConfig) -> PFENet:
    """PFENet with :class:`ClipPriors` as its prior source."""
    options = {**DEFAULT_OPTIONS, **cfg.options}
    bundle = load_clip(options["clip"], options["clip_pretrained"], options["clip_checkpoint"])
    benchmark = get_benchmark(cfg.benchmark, cfg.coco_folds)
    names = [benchmark.prompt_name(c) for c in range(1, benchmark.n_classes + 1)]
    priors = ClipPriors(
        bundle, names, shots=cfg.shots, priors=options["priors"],
        refine=options["refine"], vvp_blocks=options["vvp_blocks"], pir_blocks=int(options["pir_blocks"]),
        vtp_temperature=options["vtp_temperature"], vtp_activation=options["vtp_activation"],
        box_threshold=float(options["box_threshold"]), pir_squarings=int(options["pir_squarings"]),
        clip_image_size=options["clip_image_size"], vvp_mask_support_image=bool(options["vvp_mask_support_image"]),
        vtp_prompts=options["vtp_prompts"],
    )
    return PFENet(build_backbone(cfg.backbone, cfg.backbone_weights), priors, feature_dim=int(options["feature_dim"]),
                  dropout=float(options["dropout"]))
