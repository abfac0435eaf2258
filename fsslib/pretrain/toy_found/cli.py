"""``python -m fsslib.pretrain toy-found``: train (or evaluate) the toy FOUND head (background teacher).

    python -m fsslib.pretrain toy-found --threads 1 --out fsslib/checkpoints/toy_found.pt
    python -m fsslib.pretrain toy-found --evaluate fsslib/checkpoints/toy_found.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from fsslib.pretrain.command import add_run_flags, add_settings_flags, parse_run, settings_from
from fsslib.pretrain.toy_found.train import CLI, FoundSettings, train_toy_found, evaluate_checkpoint


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`FoundSettings` field (its default = the shipped recipe), plus --out / --evaluate."""
    parser = argparse.ArgumentParser(prog=CLI, description="Train (or evaluate) the toy FOUND head (background teacher).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, help="checkpoint to write, e.g. fsslib/checkpoints/toy_found.pt")
    add_settings_flags(parser, FoundSettings)
    add_run_flags(parser, "recompute the acceptance metrics of CKPT")
    return parser


def main(argv: list[str]) -> None:
    """Run ``toy-found`` with the arguments that follow its name."""
    args = parse_run(build_parser(), argv, evaluate_checkpoint)
    if args is None:
        return
    metadata = train_toy_found(args.out, settings_from(args, FoundSettings), progress=not args.no_progress,
                              command=f"{CLI} {shlex.join(argv)}")
    print(json.dumps(metadata["held_out"], indent=1))
