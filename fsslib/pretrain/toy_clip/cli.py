"""``python -m fsslib.pretrain toy-clip``: train, re-make or evaluate a toy CLIP.

    python -m fsslib.pretrain toy-clip recipe vit                 # every stage of a shipped checkpoint, in order
    python -m fsslib.pretrain toy-clip recipe vit --start 3       # only the last stage, from the shipped stage 2
    python -m fsslib.pretrain toy-clip train --arch rn --steps 20000 --batch-size 32 --out toy_clip_rn.pt
    python -m fsslib.pretrain toy-clip train --arch vit --init CKPT --area-fraction 0.8 ...   # continue training CKPT
    python -m fsslib.pretrain toy-clip evaluate fsslib/checkpoints/toy_clip_vit.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
import typing
from dataclasses import fields
from pathlib import Path

import torch

from fsslib.clip.loading import load_clip
from fsslib.errors import FsslibError
from fsslib.paths import CHECKPOINT_DIR
from fsslib.pretrain.command import check_positive
from fsslib.pretrain.saving import write_metadata
from fsslib.pretrain.toy_clip.metrics import acceptance_metrics
from fsslib.pretrain.toy_clip.recipes import RECIPES, train_recipe
from fsslib.pretrain.toy_clip.train import CLI, TrainSettings, train_toy_clip

BUDGETS = ("steps", "minutes")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per ``TrainSettings`` field, with its default; exactly one budget is required."""
    hints = typing.get_type_hints(TrainSettings)
    budget = parser.add_mutually_exclusive_group(required=True)
    for setting in fields(TrainSettings):
        kind = next(t for t in typing.get_args(hints[setting.name]) or (hints[setting.name],) if t is not type(None))
        target = budget if setting.name in BUDGETS else parser
        target.add_argument(f"--{setting.name.replace('_', '-')}", type=kind, default=setting.default,
                            help=setting.metadata["help"])


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``toy-clip``: subcommands train, recipe and evaluate."""
    parser = argparse.ArgumentParser(prog=CLI, description="Train, re-make or evaluate a toy CLIP.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a toy CLIP and write CKPT + CKPT.json",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--arch", choices=["vit", "rn"], required=True)
    train.add_argument("--out", type=Path, required=True)
    _add_settings(train)
    train.add_argument("--pool-cache", type=Path, default=None, help="folder to keep the rendered scene pool in")
    train.add_argument("--init", type=Path, default=None, help="continue training this toy CLIP checkpoint")
    recipe = commands.add_parser("recipe", help="re-make a shipped checkpoint, every stage in order")
    recipe.add_argument("arch", choices=sorted(RECIPES))
    recipe.add_argument("--start", type=int, default=1, help="first stage to run (earlier ones must exist)")
    recipe.add_argument("--out-dir", type=Path, default=CHECKPOINT_DIR, help="default: the shipped checkpoints")
    recipe.add_argument("--pool-cache", type=Path, default=None, help="folder to keep the rendered scene pool in")
    evaluate = commands.add_parser("evaluate", help="recompute the acceptance metrics of a checkpoint")
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument("--write", action="store_true", help="store them in the checkpoint's .json")
    return parser


def settings_from(args: argparse.Namespace) -> TrainSettings:
    """The ``TrainSettings`` of parsed ``train`` arguments (counts and rates checked: :func:`check_positive`)."""
    values = {setting.name: getattr(args, setting.name) for setting in fields(TrainSettings)}
    check_positive(values, TrainSettings)
    return TrainSettings(**values)


def main(argv: list[str]) -> None:
    """Run ``toy-clip`` with the arguments that follow its name."""
    parser = build_parser()
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "train":
        metadata = train_toy_clip(args.arch, args.out, settings_from(args), init=args.init,
                                  pool_cache=args.pool_cache, command=f"{CLI} {shlex.join(argv)}")
        print(json.dumps(metadata.get("metrics", {}), indent=1))
    elif args.command == "recipe":
        try:
            stages = train_recipe(args.arch, args.out_dir, args.start, pool_cache=args.pool_cache)
        except FsslibError as error:
            parser.exit(2, f"error: {error}\n")
        print(json.dumps(stages[-1].get("metrics", {}), indent=1))
    else:
        metrics = acceptance_metrics(load_clip(str(args.checkpoint)))
        print(json.dumps(metrics, indent=1))
        if args.write:
            meta_path = args.checkpoint.with_suffix(".json")
            metadata = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            write_metadata(args.checkpoint, {**metadata, "metrics": metrics})
