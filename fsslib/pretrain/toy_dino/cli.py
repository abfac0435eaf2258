"""``python -m fsslib.pretrain toy-dino``: train (or evaluate) the toy DINO.

    python -m fsslib.pretrain toy-dino --threads 1 --out fsslib/checkpoints/toy_dino.pt
    python -m fsslib.pretrain toy-dino --evaluate fsslib/checkpoints/toy_dino.pt
"""
from __future__ import annotations

from fsslib.pretrain.command import settings_command
from fsslib.pretrain.toy_dino.metrics import acceptance_metrics
from fsslib.pretrain.toy_dino.train import CLI, DinoSettings, train_toy_dino

main = settings_command(CLI, "Train (or evaluate) the toy DINO.", DinoSettings, train_toy_dino, acceptance_metrics,
                        "fsslib/checkpoints/toy_dino.pt")
