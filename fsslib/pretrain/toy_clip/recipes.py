"""The recipes that make the shipped toy CLIP checkpoints: one or more ``train_toy_clip`` stages.

The RN is one stage. The ViT has three: from scratch at area fraction 0.5, then on from
the previous stage at 0.8 and at 1.0, each with a fresh warm-up and cosine at a lower
learning rate (``fsslib/checkpoints/README.md`` has the numbers).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from fsslib.errors import CheckpointError, FsslibError, unknown
from fsslib.paths import CHECKPOINT_DIR
from fsslib.paths import shown_path
from fsslib.pretrain.toy_clip.train import CLI, TrainSettings, train_toy_clip

RECIPE_BATCH = 32  # every shipped stage trains on batches of 32


@dataclass(frozen=True)
class Stage:
    """One ``train_toy_clip`` call of a recipe; ``init`` names the previous stage's file."""

    out: str
    settings: TrainSettings
    init: str | None = None


RECIPES: dict[str, tuple[Stage, ...]] = {
    "rn": (Stage("toy_clip_rn.pt", TrainSettings(steps=20_000, batch_size=RECIPE_BATCH)),),
    "vit": (
        Stage("toy_clip_vit_stage1.pt", TrainSettings(steps=30_000, batch_size=RECIPE_BATCH)),
        Stage("toy_clip_vit_stage2.pt", TrainSettings(steps=6_000, batch_size=RECIPE_BATCH, lr=5e-4, area_fraction=0.8),
              init="toy_clip_vit_stage1.pt"),
        Stage("toy_clip_vit.pt", TrainSettings(steps=3_000, batch_size=RECIPE_BATCH, lr=5e-4, area_fraction=1.0),
              init="toy_clip_vit_stage2.pt"),
    ),
}


def stage_command(arch: str, stage: Stage, out_dir: str | Path) -> str:
    """The ``train`` command that runs ``stage`` alone (recorded in the stage's metadata)."""
    out_dir = Path(out_dir)
    init = [f"--init {shown_path(out_dir / stage.init)}"] if stage.init is not None else []
    return " ".join([f"{CLI} train --arch {arch}", *init, *stage.settings.flags(), f"--out {shown_path(out_dir / stage.out)}"])


def train_recipe(arch: str, out_dir: str | Path = CHECKPOINT_DIR, start: int = 1,
                 stages: tuple[Stage, ...] | None = None, model_cfg: dict | None = None,
                 pool_cache: str | Path | None = None, evaluate: bool = True) -> list[dict]:
    """Run the stages of ``RECIPES[arch]`` (or ``stages``) from stage ``start`` (1-based) into
    ``out_dir``; an earlier stage's checkpoint must already be there. Returns each stage's metadata.

    The scene pool is rendered once and shared by the stages (in ``pool_cache``, else a
    temporary folder); it is a pure function of the seed, so this changes no weight.
    """
    stages = stages if stages is not None else RECIPES.get(arch)
    if stages is None:
        raise unknown("toy CLIP recipe", arch, sorted(RECIPES))
    if not 1 <= start <= len(stages):
        raise FsslibError(f"The {arch} recipe has stages 1 to {len(stages)}; there is no stage {start}.",
                          f"pass --start between 1 and {len(stages)}.")
    out_dir = Path(out_dir)
    first_init = stages[start - 1].init
    if first_init is not None and not (out_dir / first_init).is_file():
        raise CheckpointError(f"Stage {start} of the {arch} recipe continues from {out_dir / first_init}, "
                              "which does not exist.", f"run the recipe from an earlier stage (--start {start - 1}).")
    with tempfile.TemporaryDirectory() as scratch:
        return [
            train_toy_clip(arch, out_dir / stage.out, stage.settings,
                           model_cfg=model_cfg if stage.init is None else None,
                           init=out_dir / stage.init if stage.init is not None else None,
                           pool_cache=pool_cache or scratch, evaluate=evaluate,
                           command=stage_command(arch, stage, out_dir),
                           recipe={"command": f"{CLI} recipe {arch}", "stage": number, "stages": len(stages)})
            for number, stage in enumerate(stages[start - 1:], start)
        ]
