"""What every stand-in's command line shares: ``--threads``, ``--evaluate CKPT``, ``--no-progress`` and ``--out``."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch


def add_run_flags(parser: argparse.ArgumentParser, evaluate_help: str) -> None:
    """Add ``--threads``, ``--evaluate CKPT`` and ``--no-progress`` to a stand-in's parser."""
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--evaluate", type=Path, metavar="CKPT", help=evaluate_help)
    parser.add_argument("--no-progress", action="store_true")


def parse_run(parser: argparse.ArgumentParser, argv: list[str],
              evaluate: Callable[[Path], dict]) -> argparse.Namespace | None:
    """Parse ``argv``; with ``--evaluate CKPT`` print ``evaluate(CKPT)`` and return None, else the arguments of a
    training run (``--out`` required)."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        print(json.dumps(evaluate(args.evaluate), indent=1))
        return None
    if args.out is None:
        parser.error("give --out PATH (to train) or --evaluate CKPT")
    return args
