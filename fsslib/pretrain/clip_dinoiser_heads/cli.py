"""``python -m fsslib.pretrain toy-clip-dinoiser``: train (or evaluate) CLIP-DINOiser's heads on the toy CLIP.

    python -m fsslib.pretrain toy-clip-dinoiser --threads 1 --out fsslib/checkpoints/toy_clip_dinoiser_heads.pt
    python -m fsslib.pretrain toy-clip-dinoiser --evaluate fsslib/checkpoints/toy_clip_dinoiser_heads.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from fsslib.pretrain.clip_dinoiser_heads.train import CLI, HeadSettings, evaluate_checkpoint, train_dinoiser_heads
from fsslib.pretrain.command import add_run_flags, add_settings_flags, parse_run, settings_from


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`HeadSettings` field (its default = the shipped recipe), plus --out / --evaluate."""
    parser = argparse.ArgumentParser(prog=CLI, description="Train (or evaluate) CLIP-DINOiser's heads on the toy CLIP.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, help="checkpoint to write, e.g. fsslib/checkpoints/toy_clip_dinoiser_heads.pt")
    add_settings_flags(parser, HeadSettings)
    add_run_flags(parser, "recompute the acceptance metrics of CKPT")
    return parser


def main(argv: list[str]) -> None:
    """Run ``toy-clip-dinoiser`` with the arguments that follow its name."""
    args = parse_run(build_parser(), argv, evaluate_checkpoint)
    if args is None:
        return
    metadata = train_dinoiser_heads(args.out, settings_from(args, HeadSettings), progress=not args.no_progress,
                                    command=f"{CLI} {shlex.join(argv)}")
    print(json.dumps(metadata["held_out"], indent=1))
