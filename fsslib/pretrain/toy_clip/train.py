"""The toy CLIP's training loop (``train_toy_clip``) and its settings.

Each step draws a batch from the pre-rendered captioned pool (``fsslib.pretrain.scenes``),
captions every scene afresh (``fsslib.pretrain.captions``) and minimises (``fsslib.pretrain.losses``)

    contrastive + dense_weight * dense MIL + region_weight * region MIL + negation_weight * negation

with the image embedding and the MaskCLIP dense embeddings of one pass of the image tower
(``fsslib.clip.image_and_dense_embeddings``). AdamW (no weight decay on biases, norms and
embeddings), linear warm-up then a cosine over the budget. A step budget makes the run
exactly reproducible on one torch build; a wall-clock budget does not.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import open_clip
import torch
from tqdm.auto import tqdm

from fsslib.clip.dense import image_and_dense_embeddings
from fsslib.clip.loading import bundle_from_model, load_clip
from fsslib.clip.prompts import PICLIP_NON_TARGET_TEMPLATE, PICLIP_TARGET_TEMPLATE
from fsslib.clip.toy import (
    EMPTY_PROMPT,
    MEAN,
    STD,
    ZERO_SHOT_TEMPLATE,
    WordTokenizer,
    build_toy_clip,
    default_model_cfg,
    toy_vocabulary,
)
from fsslib.data.toyworld import CLASS_NAMES
from fsslib.errors import CheckpointError, FsslibError
from fsslib.paths import shown_path
from fsslib.pretrain.captions import caption_scene
from fsslib.pretrain.losses import contrastive_loss, dense_mil_loss, negation_loss, region_mil_loss
from fsslib.pretrain.saving import RunRecord, half_precision, save_checkpoint, write_metadata
from fsslib.pretrain.scenes import cached_pool, to_unit_tensor
from fsslib.pretrain.schedules import warmup_cosine
from fsslib.pretrain.toy_clip.metrics import acceptance_metrics

CLI = "python -m fsslib.pretrain toy-clip"


class SettingsError(FsslibError, ValueError):
    """Training settings that contradict each other."""


@dataclass(frozen=True)
class TrainSettings:
    """One toy CLIP training run: its budget, data, optimiser and loss weights (each is a CLI flag)."""

    steps: int | None = field(default=None, metadata={"help": "optimiser steps (exactly reproducible)"})
    minutes: float | None = field(default=None, metadata={"help": "wall-clock budget instead of --steps"})
    seed: int = field(default=0, metadata={"help": "seeds the pool, captions, batches, windows and init"})
    pool_size: int = field(default=16_000, metadata={"help": "pre-rendered training scenes"})
    batch_size: int = field(default=64, metadata={"help": "scenes per step"})
    lr: float = field(default=2e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (weight matrices only)"})
    warmup_steps: int = field(default=200, metadata={"help": "linear warm-up before the cosine"})
    dense_weight: float = field(default=1.0, metadata={"help": "weight of the whole-image dense MIL loss"})
    region_weight: float = field(default=1.0, metadata={"help": "weight of the random-window MIL loss"})
    negation_weight: float = field(default=0.5, metadata={"help": "weight of the 'a photo without c' loss"})
    area_fraction: float = field(default=0.5, metadata={"help": "fraction of a named class's area it must win"})

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise SettingsError(f"A toy CLIP run needs exactly one budget, got steps={self.steps} and "
                                f"minutes={self.minutes}.",
                                "pass steps=N (exactly reproducible) or minutes=M (wall clock), not both.")

    def flags(self) -> list[str]:
        """The command-line arguments that give these settings: the budget, then each field off its default."""
        arguments = []
        for setting in fields(self):
            value = getattr(self, setting.name)
            if value is not None and (setting.name in ("steps", "minutes") or value != setting.default):
                arguments += [f"--{setting.name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
        return arguments


def toy_clip_checkpoint(model: open_clip.CLIP, model_cfg: dict, tokenizer: WordTokenizer, image_size: int) -> dict:
    """The self-describing checkpoint dict that ``fsslib.clip.load_clip`` reads (fp16 weights)."""
    return {"model_cfg": model_cfg, "state_dict": half_precision(model.state_dict()), "vocab": tokenizer.vocab,
            "context_length": tokenizer.context_length, "image_size": image_size,
            "mean": list(MEAN), "std": list(STD)}


def _parameter_groups(model: open_clip.CLIP, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only (not on biases, norms or embeddings)."""
    decayed = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    others = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]


def train_toy_clip(
    arch: str,
    out: str | Path,
    settings: TrainSettings,
    *,
    model_cfg: dict | None = None,
    init: str | Path | None = None,
    pool_cache: str | Path | None = None,
    evaluate: bool = True,
    command: str | None = None,
    recipe: dict | None = None,
    threads: int = 1,
    save_every_minutes: float = 3.0,
) -> dict:
    """Train a toy CLIP ``arch`` ('vit' or 'rn') with ``settings``; save it to ``out`` (+ ``.json``) and
    return the metadata.

    ``model_cfg``: the architecture (default ``fsslib.clip.toy.default_model_cfg(arch)``).
    ``init``: a toy CLIP checkpoint to continue from (its architecture replaces ``model_cfg``).
    ``pool_cache``: a folder where the rendered scene pool is kept between runs.
    ``recipe``: where this run sits in a recipe (stored in the metadata). The checkpoint is
    also saved every ``save_every_minutes`` while training.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    record = RunRecord(command or " ".join([Path(sys.executable).name, *sys.argv]), settings.seed)
    vocab = toy_vocabulary()
    if init is not None:
        start_from = load_clip(f"toy-{arch}", checkpoint=init)
        if start_from.kind != arch or getattr(start_from.tokenizer, "vocab", None) != vocab:
            raise CheckpointError(f"{init} is a toy CLIP {start_from.kind} with another vocabulary or architecture.",
                                  f"continue from a checkpoint written by `{CLI} train --arch {arch}`.")
        model, model_cfg = start_from.model, start_from.model_cfg
    else:
        model_cfg = model_cfg or default_model_cfg(arch, vocab_size=len(vocab) + 4)
        model = build_toy_clip(model_cfg)
    tokenizer = WordTokenizer(vocab, model_cfg["text_cfg"]["context_length"])
    image_size = model_cfg["vision_cfg"]["image_size"]
    bundle = bundle_from_model(model, tokenizer, mean=MEAN, std=STD, name=f"toy-{arch}", model_cfg=model_cfg)
    model.requires_grad_(True)  # a bundle freezes its model: training unfreezes it
    pool = cached_pool(settings.pool_size, settings.seed, image_size, pool_cache)
    caption_rng, batch_rng = random.Random(settings.seed), np.random.default_rng([settings.seed, 2])
    window_generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(_parameter_groups(model, settings.weight_decay), lr=settings.lr)
    class_prompts = tokenizer([ZERO_SHOT_TEMPLATE.format(n) for n in CLASS_NAMES] + [EMPTY_PROMPT])  # (C+1, L)
    pi_prompts = tokenizer([PICLIP_TARGET_TEMPLATE.format(n) for n in CLASS_NAMES]
                           + [PICLIP_NON_TARGET_TEMPLATE.format(n) for n in CLASS_NAMES])  # (2C, L)
    batch_size, steps = settings.batch_size, settings.steps
    budget = settings.minutes * 60.0 - (time.time() - record.started) if settings.minutes is not None else None
    train_start, last_save, step = time.time(), time.time(), 0
    progress = tqdm(desc=f"train toy CLIP ({arch})", total=steps if budget is None else int(budget),
                    unit="step" if budget is None else "s", mininterval=10)
    history: list[dict] = []
    model.train()
    while True:
        elapsed = time.time() - train_start
        fraction = step / steps if budget is None else elapsed / budget
        if fraction >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * warmup_cosine(step, fraction, settings.warmup_steps)
        index = batch_rng.integers(0, len(pool.images), size=batch_size)
        captions = [caption_scene(pool.class_ids[i], pool.positions[i], caption_rng) for i in index]
        keys = [tuple(sorted(set(pool.class_ids[i]))) for i in index]
        label_counts = torch.from_numpy(pool.label_counts[index])  # (B, g, g, C + 2)
        present = (label_counts[..., 1:-1].flatten(1, 2).sum(1) > 0).float()  # (B, C)
        image_emb, dense = image_and_dense_embeddings(bundle, to_unit_tensor(pool.images[index]))  # (B, D), (B, N, D)
        text = model.encode_text(torch.cat([tokenizer(captions), class_prompts, pi_prompts]))
        caption_emb, prompt_emb = text[:batch_size], text[batch_size:batch_size + len(class_prompts)]
        of_emb, without_emb = text[batch_size + len(class_prompts):].chunk(2)
        scale = model.logit_scale.exp().clamp(max=100)
        losses = {"clip": contrastive_loss(image_emb, caption_emb, keys, scale),
                  "dense": dense_mil_loss(dense, prompt_emb, label_counts, scale, settings.area_fraction),
                  "region": region_mil_loss(dense, prompt_emb, label_counts, scale, window_generator,
                                            area_fraction=settings.area_fraction),
                  "negation": negation_loss(image_emb, of_emb, without_emb, present, scale)}
        loss = (losses["clip"] + settings.dense_weight * losses["dense"] + settings.region_weight * losses["region"]
                + settings.negation_weight * losses["negation"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0 or step == 1:
            entry = {"step": step, "seconds": round(elapsed, 1), **{k: round(v.item(), 4) for k, v in losses.items()}}
            history.append(entry)
            progress.set_postfix(step=step, **{k: entry[k] for k in losses})
            progress.update((step if budget is None else int(elapsed)) - progress.n)
        if time.time() - last_save > save_every_minutes * 60:
            save_checkpoint(out, toy_clip_checkpoint(model, model_cfg, tokenizer, image_size))
            last_save = time.time()
    progress.close()
    model.eval()
    path = save_checkpoint(out, toy_clip_checkpoint(model, model_cfg, tokenizer, image_size))
    metadata = {
        **record.stamp(open_clip=open_clip.__version__),
        "recipe": recipe,
        "arch": arch,
        "init": shown_path(init) if init is not None else None,
        "train_steps": step,
        **asdict(settings),
        "model_cfg": model_cfg,
        "loss_history": history[-20:],
    }
    if evaluate:
        metadata["metrics"] = acceptance_metrics(load_clip(f"toy-{arch}", checkpoint=path))
    write_metadata(path, metadata)
    return metadata
