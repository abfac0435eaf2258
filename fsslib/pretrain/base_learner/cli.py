"""``python -m fsslib.pretrain base-learner``: train (or evaluate) BAM's base learner of one fold.

    python -m fsslib.pretrain base-learner --fold 0 --out runs/base-learner-fold0.pt   # toy tier, beside the shipped
    python -m fsslib.pretrain base-learner --fold 0 --replace-shipped  # remakes the shipped toy file of fold 0
    python -m fsslib.pretrain base-learner --fold 0 --tier paper     # PASCAL-5i -> $FSSLIB_WEIGHTS/base-learner-pascal-fold0.pt
    python -m fsslib.pretrain base-learner --benchmark folder:DIR --novel-classes 3,4   # -> DIR/base-learner-fold0.pt
    python -m fsslib.pretrain base-learner --evaluate fsslib/checkpoints/zoo/base-learner-fold0.pt
"""
from __future__ import annotations

import argparse
import json
import shlex
import typing
from dataclasses import fields
from pathlib import Path

import torch

from fsslib.errors import FsslibError
from fsslib.pretrain.base_learner.files import CLI, SHIPPED_FOLDER, base_learner_path
from fsslib.pretrain.base_learner.train import TIERS, BaseLearnerSettings, evaluate_checkpoint, tier_settings, train_base_learner
from fsslib.pretrain.command import check_positive


def build_parser(tier: str) -> argparse.ArgumentParser:
    """One flag per :class:`BaseLearnerSettings` field, its default the ``tier``'s, plus --out / --evaluate."""
    parser = argparse.ArgumentParser(prog=CLI, description="Train (or evaluate) BAM's base learner of one fold.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, help="file to write (default: the benchmark's, base_learner_path)")
    defaults, hints = tier_settings(tier), typing.get_type_hints(BaseLearnerSettings)
    for setting in fields(BaseLearnerSettings):
        parser.add_argument(f"--{setting.name.replace('_', '-')}", type=hints[setting.name],
                            default=getattr(defaults, setting.name), help=setting.metadata["help"],
                            **({"choices": TIERS} if setting.name == "tier" else {}))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--evaluate", type=Path, metavar="CKPT", help="score the base learner CKPT on held-out images")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from OUT.partial.pt (written at the end of every epoch)")
    parser.add_argument("--replace-shipped", action="store_true",
                        help="write over the shipped toy base learner (the zoo's BAM, HDMNet and PI-CLIP models of the "
                             "fold read it and refuse another)")
    return parser


def refuse_shipped(out: Path, replace_shipped: bool) -> None:
    """A run may write over a shipped base learner only when asked: the zoo's models of its fold record its digest
    and refuse to load beside another file."""
    if out.exists() and out.resolve().parent == SHIPPED_FOLDER.resolve() and not replace_shipped:
        raise FsslibError(f"{out} is the shipped base learner; the zoo's BAM, HDMNet and PI-CLIP models of its fold "
                          "read it and would refuse to load beside a new one.",
                          "write elsewhere with --out PATH (a method reads it through options base_learner=PATH), or "
                          "pass --replace-shipped to remake the zoo's file.")


def main(argv: list[str]) -> None:
    """Run ``base-learner`` with the arguments that follow its name (``--tier`` picks the defaults of the others)."""
    tier = argparse.ArgumentParser(add_help=False)
    tier.add_argument("--tier", choices=TIERS, default="toy")
    parser = build_parser(tier.parse_known_args(argv)[0].tier)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        print(json.dumps(evaluate_checkpoint(args.evaluate, args.data_root, args.eval_batch_size, args.device), indent=1))
        return
    values = {f.name: getattr(args, f.name) for f in fields(BaseLearnerSettings)}
    check_positive(values, BaseLearnerSettings)
    settings = BaseLearnerSettings(**values)
    out = args.out or base_learner_path(settings.benchmark, settings.fold)
    try:
        refuse_shipped(Path(out), args.replace_shipped)
        metadata = train_base_learner(out, settings, progress=not args.no_progress, command=f"{CLI} {shlex.join(argv)}",
                                      resume=args.resume)
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")
    print(json.dumps({"file": str(out), "best": metadata["best"], "plateau": metadata["plateau"],
                      "held_out_miou": {split: scores["miou"] for split, scores in metadata["held_out"].items()}},
                     indent=1))
