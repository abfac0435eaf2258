"""``python -m fsslib.pretrain toy-qgnet-prior``: pretrain (or evaluate) a toy QGNet prior extractor.

    python -m fsslib.pretrain toy-qgnet-prior --patches slic --out fsslib/checkpoints/toy_qgnet_prior_slic.pt
    python -m fsslib.pretrain toy-qgnet-prior --losses global --out fsslib/checkpoints/toy_qgnet_prior_global_only.pt
    python -m fsslib.pretrain toy-qgnet-prior --evaluate fsslib/checkpoints/toy_qgnet_prior_slic.pt
    python -m fsslib.pretrain toy-qgnet-prior --patches slic --out ... --resume   # after an interruption
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from fsslib.pretrain.command import add_run_flags, add_settings_flags, parse_run, settings_from
from fsslib.pretrain.qgnet_prior.metrics import acceptance_metrics
from fsslib.pretrain.qgnet_prior.train import CLI, PriorSettings, train_prior_extractor


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`PriorSettings` field (its default = the shipped recipe), plus --out / --evaluate."""
    parser = argparse.ArgumentParser(prog=CLI, description="Pretrain (or evaluate) a toy QGNet prior extractor.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, help="checkpoint to write, e.g. fsslib/checkpoints/toy_qgnet_prior_slic.pt")
    add_settings_flags(parser, PriorSettings)
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep the superpixels in")
    parser.add_argument("--workers", type=int, default=2, help="processes computing the superpixels")
    parser.add_argument("--device", default="auto", help="where the encoders run: auto (CUDA when there is one), cpu, cuda")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from OUT.partial.pt (written at every curve point)")
    add_run_flags(parser, "recompute the acceptance metrics of CKPT")
    return parser


def main(argv: list[str]) -> None:
    """Run ``toy-qgnet-prior`` with the arguments that follow its name."""
    parser = build_parser()
    args = parse_run(parser, argv, acceptance_metrics)
    if args is None:
        return
    settings = settings_from(args, PriorSettings)
    metadata = train_prior_extractor(args.out, settings, args.cache, progress=not args.no_progress,
                                     command=f"{CLI} {shlex.join(argv)}", workers=args.workers, resume=args.resume,
                                     device=args.device)
    print(json.dumps(metadata["held_out"], indent=1))
