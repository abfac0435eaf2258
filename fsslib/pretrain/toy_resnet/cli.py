"""``python -m fsslib.pretrain toy-resnet``: pretrain (or evaluate) the toy tier's ResNet backbone.

    python -m fsslib.pretrain toy-resnet --steps 1600 --threads 1 --out fsslib/checkpoints/toy_resnet.pt
    python -m fsslib.pretrain toy-resnet --evaluate fsslib/checkpoints/toy_resnet.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path


from fsslib.pretrain.command import add_run_flags, check_positive, parse_run
from fsslib.pretrain.toy_resnet.metrics import evaluate_checkpoint
from fsslib.pretrain.toy_resnet.train import CLI, train_toy_backbone


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``toy-resnet`` (its defaults are the shipped checkpoint's recipe)."""
    parser = argparse.ArgumentParser(prog=CLI, description="Pretrain (or evaluate) the toy tier's ResNet backbone.")
    parser.add_argument("--out", type=Path, help="checkpoint to write, e.g. fsslib/checkpoints/toy_resnet.pt")
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=12000)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=50)
    add_run_flags(parser, "recompute the held-out metrics of CKPT")
    return parser


def main(argv: list[str]) -> None:
    """Run ``toy-resnet`` with the arguments that follow its name."""
    parser = build_parser()
    args = parse_run(parser, argv, evaluate_checkpoint)
    if args is None:
        return
    check_positive(vars(args))
    metadata = train_toy_backbone(args.out, args.steps, args.seed, args.batch_size, args.pool_size, args.lr,
                                  args.weight_decay, args.warmup_steps, progress=not args.no_progress,
                                  command=f"{CLI} {shlex.join(argv)}")
    print(json.dumps(metadata["held_out"], indent=1))
