"""Speed settings of a training run (a GPU's): each leaves what a step computes as it is, up to rounding.

* ``fused_attention`` (:func:`fused_attention`): HDMNet's self-attention (:class:`fsslib.blocks.hierarchical.
  MaskedAttention`, HDMNet and PI-CLIP on HDMNet) through ``torch.nn.functional.scaled_dot_product_attention``.
  Its correlation cross-attention is written out still (a softmax over the queries; it returns its scores).
* ``channels_last`` (:func:`to_channels_last`): every 4-d weight of the model, frozen ones included, in NHWC
  order, so cuDNN's convolutions run without layout transposes; their outputs follow the weights' layout.
* ``compile`` (:func:`compile_regions`): ``torch.compile`` of the model's heavy parts, one region each: the frozen
  backbones (ResNet-50), a base learner's pyramid pooling and embedding, each block of a frozen CLIP's ViT (PI-CLIP's
  priors run it on the query and every support), and the trained decoders and transformers. Regions instead of the
  whole step: the step's Python (episode bookkeeping, PI-CLIP's GradCAM, the
  losses) stays eager, each region compiles once (a few short graphs, not one long one), and a region's weights
  keep their names (``Module.compile``: checkpoints are unchanged). Inductor's cache goes to
  ``$TORCH_HOME/inductor`` (:func:`compile_cache_dir`) unless ``TORCHINDUCTOR_CACHE_DIR`` is set, so the next run
  of the same shapes loads its kernels instead of compiling them. ``compile_regions(model, mode="reduce-overhead")``
  also replays each region's kernels as a CUDA graph (Inductor's CUDA graph trees; on a GPU only, and for fixed
  shapes, as a training step's are): one launch for a region instead of one per kernel. A loop that uses it calls
  ``torch.compiler.cudagraph_mark_step_begin()`` before each step, so that a step's graphs may reuse the last
  step's output buffers. ``benchmarks/gpu_speed.py`` times it as the ``compile_graphs`` row. The trainer does not
  offer it yet. On an H200 the eval forward first failed under it (``gpu_speed.py --check-compiled``): torch
  reported an output made in the backbone as "overwritten by a subsequent run". With each region's outputs copied
  whenever no gradient is recorded (:func:`clones_inference_outputs`), HDMNet's evaluation matched the eager one's;
  that check was one call, so graph replays in evaluation are not checked yet (``benchmarks/README.md``, "One GPU
  session, every script").

The trainer reads them from the configuration (``--compile``, ``--channels-last``, ``--fused-attention``, all off
by default): :func:`apply_speed_settings`. ``benchmarks/gpu_speed.py`` times each one alone and all together.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn

from fsslib.blocks.frozen import held_frozen_models


def fused_attention(model: nn.Module, enabled: bool = True) -> int:
    """Switch every :class:`~fsslib.blocks.hierarchical.MaskedAttention` of ``model`` to (or from) the fused
    self-attention; returns how many there are (0: the setting changes nothing for this method)."""
    from fsslib.blocks.hierarchical import MaskedAttention

    layers = [module for _, module in modules_with_frozen(model) if isinstance(module, MaskedAttention)]
    for layer in layers:
        layer.fused = enabled
    return len(layers)


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` (in place) with its 4-d parameters and buffers, frozen ones included, in channels-last order."""
    return model.to(memory_format=torch.channels_last)


def modules_with_frozen(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module of ``model`` and of the frozen models it holds."""
    yield from model.named_modules()
    for name, frozen in held_frozen_models(model):
        yield from frozen.named_modules(prefix=name)


def compiled_parts(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The regions :func:`compile_regions` compiles: frozen backbones (:class:`~fsslib.models.backbones.
    MultiLevelBackbone`), a frozen base learner's ``ppm`` and ``embed``, the residual blocks of a frozen CLIP's ViT
    (open_clip's ``visual.transformer.resblocks``: blocks of one shape share one compiled graph; the GradCAM and
    attention taps read their submodules, which stay eager), and the trained decoders and transformers (PFENet's
    FEM, BAM's ASPP and residual blocks, HDMNet's transformer) that are the model's direct children. A frozen model
    held under two names is listed once."""
    from fsslib.blocks.base_learner import BaseLearner
    from fsslib.blocks.decoders import AtrousSpatialPyramidPooling, FeatureEnrichmentModule
    from fsslib.blocks.hierarchical import HierarchicalTransformer
    from fsslib.models.backbones import MultiLevelBackbone

    parts: list[tuple[str, nn.Module]] = []
    held: set[int] = set()
    for name, frozen in held_frozen_models(model):
        if id(frozen) in held:
            continue
        held.add(id(frozen))
        if isinstance(frozen, MultiLevelBackbone):
            parts.append((name, frozen))
        elif isinstance(frozen, BaseLearner):
            parts += [(f"{name}.backbone", frozen.backbone), (f"{name}.ppm", frozen.ppm), (f"{name}.embed", frozen.embed)]
        elif (vit := getattr(getattr(frozen, "visual", None), "transformer", None)) is not None:  # open_clip ViT
            parts += [(f"{name}.visual.transformer.resblocks.{index}", block) for index, block in enumerate(vit.resblocks)]
    trained = (FeatureEnrichmentModule, AtrousSpatialPyramidPooling, HierarchicalTransformer)
    for name, child in model.named_children():
        if isinstance(child, trained) or name in ("res1", "res2"):
            parts.append((name, child))
    return parts


def compile_cache_dir() -> Path:
    """Where Inductor keeps compiled kernels between runs: ``TORCHINDUCTOR_CACHE_DIR``, else ``$TORCH_HOME/inductor``
    (set for this process, so that a long run, and the next one, pays for compiling once)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(torch.hub.get_dir()).parent / "inductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile's modes that replay CUDA graphs


def compile_regions(model: nn.Module, **options) -> list[str]:
    """``Module.compile(**options)`` of each region of :func:`compiled_parts` (in place: the module's state dict
    keeps its names); returns the regions' names. Compiling happens at each region's first call. ``options`` are
    ``torch.compile``'s, e.g. ``mode="reduce-overhead"`` (CUDA graphs: each region also
    :func:`clones_inference_outputs`)."""
    compile_cache_dir()
    parts = compiled_parts(model)
    for _, module in parts:
        module.compile(**options)
        if options.get("mode") in GRAPH_MODES:
            clones_inference_outputs(module)
    return [name for name, _ in parts]


def clones_inference_outputs(module: nn.Module) -> nn.Module:
    """``module`` (compiled, in place) returning copies of its outputs when no gradient is recorded.

    Under CUDA graphs, HDMNet's evaluation forward failed on an H200: torch reported an output made in the backbone
    as "overwritten by a subsequent run". The hypothesis this tests, not established: a region called twice without
    recording gradients (the frozen backbone on the support, then on the query) starts a new generation of the graph
    trees, which may reuse the memory of the last one's outputs. The copies are made outside the graph whenever no
    gradient is recorded: in evaluation, and for the frozen regions (backbones, base learners, CLIP blocks) in every
    training step too, one copy of each output."""
    compiled = module._compiled_call_impl
    if compiled is None:
        raise ValueError("clones_inference_outputs wraps a compiled module: call module.compile() first.")

    def call(*args, **kwargs):
        outputs = compiled(*args, **kwargs)
        if torch.is_grad_enabled():
            return outputs
        return torch.utils._pytree.tree_map_only(torch.Tensor, torch.clone, outputs)

    module._compiled_call_impl = call
    return module


def apply_speed_settings(model: nn.Module, compile: bool = False, channels_last: bool = False,
                         fused: bool = False, compile_mode: str = "default") -> dict[str, object]:
    """Apply the speed settings to ``model`` (on its device already); returns what each did, for the run's log.
    ``compile_mode`` is ``torch.compile``'s ``mode`` of the compiled regions (with ``compile`` only)."""
    done: dict[str, object] = {}
    if fused:
        done["fused_attention_layers"] = fused_attention(model)
    if channels_last:
        to_channels_last(model)
        done["channels_last"] = True
    if compile:
        done["compiled"] = compile_regions(model, mode=compile_mode)
    return done
