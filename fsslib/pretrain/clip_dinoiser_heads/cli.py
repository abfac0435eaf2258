"""``python -m fsslib.pretrain toy-clip-dinoiser``: train (or evaluate) CLIP-DINOiser's heads on the toy CLIP.

    python -m fsslib.pretrain toy-clip-dinoiser --threads 1 --out fsslib/checkpoints/toy_clip_dinoiser_heads.pt
    python -m fsslib.pretrain toy-clip-dinoiser --evaluate fsslib/checkpoints/toy_clip_dinoiser_heads.pt
"""
from __future__ import annotations

from fsslib.pretrain.command import settings_command
from fsslib.pretrain.clip_dinoiser_heads.train import CLI, HeadSettings, evaluate_checkpoint, train_dinoiser_heads

main = settings_command(CLI, "Train (or evaluate) CLIP-DINOiser's heads on the toy CLIP.", HeadSettings,
                        train_dinoiser_heads, evaluate_checkpoint, "fsslib/checkpoints/toy_clip_dinoiser_heads.pt")
