"""PI-CLIP(HDMNet) (``--method piclip-hdmnet``), the official code's system: HDMNet guided by PI-CLIP's CLIP priors
(:mod:`fsslib.methods.piclip.baselines` says how they enter); options = HDMNet's and PI-CLIP's prior options."""
from __future__ import annotations

from dataclasses import dataclass

from fsslib.methods.base import MethodConfig
from fsslib.methods.piclip import SUPPORT_ANNOTATION, SUPPORT_INPUTS, VARIANTS, ClipPriorOptions
from fsslib.methods.piclip.baselines import plug_in_presets, shots_fixed_by_training
from fsslib.methods import hdmnet
from fsslib.methods.hdmnet import HDMNet, HDMNetOptions, hdmnet_model


@dataclass(frozen=True)
class PiclipHDMNetOptions(HDMNetOptions, ClipPriorOptions):
    method = "piclip-hdmnet"


OPTIONS = PiclipHDMNetOptions
PRESETS = plug_in_presets(hdmnet.PRESETS)
__all__ = ["OPTIONS", "PRESETS", "PiclipHDMNetOptions", "SUPPORT_ANNOTATION", "SUPPORT_INPUTS", "VARIANTS", "build",
           "frozen_files", "shots_fixed_by_training"]


def frozen_files(cfg: MethodConfig) -> dict[str, str]:
    """The base learner's file of a configuration (its fold's by default), unless random."""
    return PiclipHDMNetOptions.parse(cfg.options).base_learner_files(cfg)


def build(cfg: MethodConfig) -> HDMNet:
    """HDMNet guided by the CLIP priors: unscaled in the transformer, times ``prior_scale`` in ``query_merge``."""
    options = PiclipHDMNetOptions.parse(cfg.options)
    return hdmnet_model(cfg, options, guide=options.prior_source(cfg, prior_scale=1.0), guide_scale=options.prior_scale)
