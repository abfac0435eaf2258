"""PI-CLIP(BAM) (``--method piclip-bam``): BAM whose prior is PI-CLIP's CLIP priors
(:mod:`fsslib.methods.piclip.baselines` says how they enter and why); options = BAM's and PI-CLIP's prior options."""
from __future__ import annotations

from dataclasses import dataclass

from fsslib.methods.base import MethodConfig
from fsslib.methods.piclip import SUPPORT_ANNOTATION, SUPPORT_INPUTS, VARIANTS, ClipPriorOptions
from fsslib.methods.piclip.baselines import plug_in_presets, shots_fixed_by_training
from fsslib.methods import bam
from fsslib.methods.bam import BAM, BAMOptions, bam_model


@dataclass(frozen=True)
class PiclipBAMOptions(BAMOptions, ClipPriorOptions):
    method = "piclip-bam"


OPTIONS = PiclipBAMOptions
PRESETS = plug_in_presets(bam.PRESETS)
__all__ = ["OPTIONS", "PRESETS", "PiclipBAMOptions", "SUPPORT_ANNOTATION", "SUPPORT_INPUTS", "VARIANTS", "build",
           "frozen_files", "shots_fixed_by_training"]


def frozen_files(cfg: MethodConfig) -> dict[str, str]:
    """The base learner's file of a configuration (its fold's by default), unless random."""
    return PiclipBAMOptions.parse(cfg.options).base_learner_files(cfg)


def build(cfg: MethodConfig) -> BAM:
    """BAM with PI-CLIP's CLIP priors (times ``prior_scale``) in place of its own prior."""
    options = PiclipBAMOptions.parse(cfg.options)
    return bam_model(cfg, options, prior=options.prior_source(cfg))
