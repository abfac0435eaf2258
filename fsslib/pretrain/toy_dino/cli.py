"""``python -m fsslib.pretrain toy-dino``: train (or evaluate) the toy DINO.

    python -m fsslib.pretrain toy-dino --threads 1 --out fsslib/checkpoints/toy_dino.pt
    python -m fsslib.pretrain toy-dino --evaluate fsslib/checkpoints/toy_dino.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from fsslib.pretrain.command import add_run_flags, add_settings_flags, parse_run, settings_from
from fsslib.pretrain.toy_dino.metrics import acceptance_metrics
from fsslib.pretrain.toy_dino.train import CLI, DinoSettings, train_toy_dino


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`DinoSettings` field (its default = the shipped recipe), plus --out / --evaluate."""
    parser = argparse.ArgumentParser(prog=CLI, description="Train (or evaluate) the toy DINO.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, help="checkpoint to write, e.g. fsslib/checkpoints/toy_dino.pt")
    add_settings_flags(parser, DinoSettings)
    add_run_flags(parser, "recompute the acceptance metrics of CKPT")
    return parser


def main(argv: list[str]) -> None:
    """Run ``toy-dino`` with the arguments that follow its name."""
    args = parse_run(build_parser(), argv, acceptance_metrics)
    if args is None:
        return
    metadata = train_toy_dino(args.out, settings_from(args, DinoSettings), progress=not args.no_progress,
                              command=f"{CLI} {shlex.join(argv)}")
    print(json.dumps(metadata["held_out"], indent=1))
