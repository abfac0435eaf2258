"""``python -m fsslib.pretrain toy-found``: train (or evaluate) the toy FOUND head (background teacher).

    python -m fsslib.pretrain toy-found --threads 1 --out fsslib/checkpoints/toy_found.pt
    python -m fsslib.pretrain toy-found --evaluate fsslib/checkpoints/toy_found.pt
"""
from __future__ import annotations

from fsslib.pretrain.command import settings_command
from fsslib.pretrain.toy_found.train import CLI, FoundSettings, evaluate_checkpoint, train_toy_found

main = settings_command(CLI, "Train (or evaluate) the toy FOUND head (background teacher).", FoundSettings,
                        train_toy_found, evaluate_checkpoint, "fsslib/checkpoints/toy_found.pt")
