"""Method registry: one module per method, each exposing ``build(cfg)``, ``OPTIONS`` (the typed
options it accepts, a :class:`~fsslib.methods.options.MethodOptions` dataclass) and, optionally, ``PRESETS``,
``VARIANTS``, ``SUPPORT_INPUTS`` (what the method reads of the supports; ``VARIANT_SUPPORT_INPUTS``, or
``support_inputs_of(options)``; default: images and masks), ``SUPPORT_ANNOTATION`` (what a user annotates;
``VARIANT_ANNOTATIONS`` for variants that differ; default: pixel masks), ``shots_fixed_by_training(options)``,
``frozen_files(cfg)`` and ``BACKBONE = False`` (no ResNet backbone).

``PRESETS`` maps a tier (``"toy"`` / ``"paper"``) to config values that the method needs
beyond the tier's defaults; ``VARIANTS`` maps a variant name (e.g. an ablation row) to
method options (``cfg.options``) and, for a control of the data rule, config fields (e.g.
``{"augment": "pfenet"}``), which override the preset's.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fsslib.errors import EpisodeShapeError, unknown

if TYPE_CHECKING:
    from fsslib.methods.base import FewShotSegmenter, MethodConfig
    from fsslib.methods.options import MethodOptions

METHODS: dict[str, str] = {
    "all-foreground": "fsslib.methods.trivial",
    "prototype": "fsslib.methods.prototype",
    "maskclip": "fsslib.methods.maskclip",
    "pfenet": "fsslib.methods.pfenet",
    "piclip": "fsslib.methods.piclip",
    "piclip-bam": "fsslib.methods.piclip.bam",
    "piclip-hdmnet": "fsslib.methods.piclip.hdmnet",
    "lfss": "fsslib.methods.lfss",
    "qgnet": "fsslib.methods.qgnet",
    "bam": "fsslib.methods.bam",
    "hdmnet": "fsslib.methods.hdmnet",
    "clip-dinoiser": "fsslib.methods.clip_dinoiser",
    "clip-dinoiser-support": "fsslib.methods.clip_dinoiser.support",
}


def method_module(name: str) -> ModuleType:
    if name not in METHODS:
        raise unknown("method", name, sorted(METHODS))
    return importlib.import_module(METHODS[name])


def method_presets(name: str) -> dict[str, dict[str, Any]]:
    return getattr(method_module(name), "PRESETS", {})


def method_options_type(name: str) -> type[MethodOptions]:
    """The dataclass of the options a method accepts (its ``OPTIONS``)."""
    return method_module(name).OPTIONS


def method_options(name: str) -> dict[str, Any]:
    """The options a method accepts, with their defaults."""
    return method_options_type(name)().to_dict()


def method_variants(name: str) -> dict[str, dict[str, Any]]:
    return getattr(method_module(name), "VARIANTS", {})


def support_annotation(name: str, variant: str = "") -> str:
    """What the method reads of a support at test time (e.g. "pixel masks", "class names"): a results column."""
    module = method_module(name)
    return getattr(module, "VARIANT_ANNOTATIONS", {}).get(variant, getattr(module, "SUPPORT_ANNOTATION", "pixel masks"))


def support_inputs(name: str, variant: str = "", options: dict[str, Any] | None = None) -> tuple[str, ...]:
    """What the method reads of the supports at test time, among support ``images``, their pixel ``masks`` and the
    class ``names`` (module ``SUPPORT_INPUTS``, ``VARIANT_SUPPORT_INPUTS`` for variants that differ; default:
    images with masks; a module whose inputs follow an option, e.g. CLIP-DINOiser's ``prompts``, has a rule
    ``support_inputs_of(options)``, given the defaults, the variant's options and ``options``). :mod:`fsslib.predict`
    asks the user for these and refuses a mode the method cannot read, and supports it would not read."""
    module = method_module(name)
    rule = getattr(module, "support_inputs_of", None)
    if rule:
        return rule({**method_options(name), **method_variants(name).get(variant, {}), **(options or {})})
    return getattr(module, "VARIANT_SUPPORT_INPUTS", {}).get(variant, getattr(module, "SUPPORT_INPUTS", ("images", "masks")))


def builds_backbone(name: str) -> bool:
    """Whether the method builds a ResNet backbone (module ``BACKBONE``, default True), which ``backbone_weights``
    fills; :mod:`fsslib.predict` warns that the weights are ignored by a method without one."""
    return getattr(method_module(name), "BACKBONE", True)


def shots_fixed_by_training(name: str, variant: str = "") -> bool:
    """Whether the method's weights depend on the number of support shots (e.g. PI-CLIP's VVP, one prior
    channel per shot), so that a model trained on K-shot episodes is evaluated at K shots only."""
    module = method_module(name)
    rule = getattr(module, "shots_fixed_by_training", None)
    return bool(rule and rule({**method_options(name), **method_variants(name).get(variant, {})}))


def check_shots(method: str, variant: str, trained: int, shots: int, model: str) -> None:
    """Refuse ``shots`` support(s) per class for ``model`` (e.g. "Checkpoint PATH"), trained on ``trained``-shot
    episodes, where the method's weights fit their training shots only (:func:`shots_fixed_by_training`): the one
    check of evaluation, the command lines and :func:`fsslib.predict.segment`."""
    if shots != trained and shots_fixed_by_training(method, variant):
        raise EpisodeShapeError(
            f"{model} was trained on {trained}-shot episodes, and {method} builds its layers for the number of shots "
            f"(e.g. its K-shot weighting has K inputs): it cannot read {shots} support(s) per class.",
            f"give {trained} support image(s) per class (--shots {trained} to evaluate; {trained} --support per "
            f"--class-name to predict), or use a model trained on {shots}-shot episodes (--ckpt zoo:{shots}shot where "
            f"the zoo holds one; train one with --shots {shots}; from Python predict.load(..., shots={shots}) with it).")


def frozen_files(cfg: MethodConfig) -> dict[str, str]:
    """The weight files of frozen models a configuration's method reads besides its backbone and CLIP (module
    ``frozen_files(cfg)``, e.g. QGNet's prior extractor, BAM's base learner of the fold), by role: a zoo model's
    provenance names them."""
    rule = getattr(method_module(cfg.method), "frozen_files", None)
    return rule(cfg) if rule else {}


def build_method(cfg: MethodConfig) -> FewShotSegmenter:
    """Instantiate the segmenter named by ``cfg.method``."""
    return method_module(cfg.method).build(cfg)
