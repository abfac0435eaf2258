"""``python -m fsslib.pretrain qgnet-prior``: pretrain QGNet's prior extractor on PASCAL's or COCO's images (the paper
tier), written where QGNet's paper grids read it.

    python -m fsslib.pretrain qgnet-prior                        # PASCAL, 1000 epochs
                                       # -> $FSSLIB_WEIGHTS/qgnet_prior_extractor_pascal.pth.tar
    python -m fsslib.pretrain qgnet-prior --benchmark coco      # COCO 2014, 200 epochs
    python -m fsslib.pretrain qgnet-prior --resume               # after an interruption
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import torch

from fsslib.errors import FsslibError
from fsslib.pretrain.command import add_settings_flags, settings_from
from fsslib.pretrain.qgnet_prior.paper import CLI, PaperPriorSettings, default_out, train_paper_prior


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`PaperPriorSettings` field (its default: the recipe), plus --out, --resume, --threads."""
    parser = argparse.ArgumentParser(prog=CLI, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Pretrain QGNet's prior extractor (a MoCo v2 ResNet-50 with the local "
                                                 "patch loss) on a benchmark's images, for QGNet's paper tier.")
    parser.add_argument("--out", type=Path, help="file to write (default: where the paper grids look, "
                                                 "$FSSLIB_WEIGHTS/qgnet_prior_extractor_<benchmark>.pth.tar)")
    add_settings_flags(parser, PaperPriorSettings)
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from OUT.partial.pt (written every --checkpoint-every "
                             "epochs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str]) -> None:
    """Run ``qgnet-prior`` with the arguments that follow its name."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_from(args, PaperPriorSettings)
    out = args.out or default_out(settings.benchmark)
    try:
        metadata = train_paper_prior(out, settings, progress=not args.no_progress, command=f"{CLI} {shlex.join(argv)}",
                                     resume=args.resume)
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")
    print(json.dumps({"file": str(out), "last_epoch": metadata["curve"][-1]}, indent=1))
