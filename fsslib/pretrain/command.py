"""What every stand-in's command line shares: ``--threads``, ``--evaluate CKPT``, ``--no-progress``, ``--out``,
and one flag per field of its settings dataclass."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import typing
from collections.abc import Callable
from pathlib import Path

import torch

from fsslib.errors import FsslibError

T = typing.TypeVar("T")  # a settings dataclass


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


# settings that must be above 0 where a stand-in has them (None: the setting is not used, e.g. toy-clip's --steps
# beside --minutes); a name ending in _lr too
POSITIVE_SETTINGS = ("steps", "epochs", "minutes", "batch_size", "eval_batch_size", "pool_size", "lr", "crop")


def check_positive(values: dict[str, typing.Any], settings_class: type | None = None) -> None:
    """Refuse a count, budget or learning rate at or below 0, or not finite (``values``: settings by name), naming the
    flag: a negative step count or a batch of 0 would otherwise fail deep in the training, or train nothing. A
    setting whose default in ``settings_class`` is 0 takes 0 (it means "the default", e.g. the paper's epochs)."""
    fields = dataclasses.fields(settings_class) if settings_class else ()
    zero_is_default = {f.name for f in fields if f.default == 0}
    for name, value in values.items():
        if value == 0 and name in zero_is_default:
            continue
        if (name in POSITIVE_SETTINGS or name.endswith("_lr")) and value is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            flag = f"--{name.replace('_', '-')}"
            raise FsslibError(f"{flag} {value} is not above 0.", f"pass {flag} with a positive value.")


def add_settings_flags(parser: argparse.ArgumentParser, settings_class: type) -> None:
    """One ``--flag`` per field of a settings dataclass (type, default and ``metadata["help"]`` from the field)."""
    hints = typing.get_type_hints(settings_class)
    for setting in dataclasses.fields(settings_class):
        parser.add_argument(f"--{setting.name.replace('_', '-')}", type=hints[setting.name], default=setting.default,
                            help=setting.metadata["help"])


def settings_from(args: argparse.Namespace, settings_class: type[T]) -> T:
    """The settings dataclass filled from parsed flags (see :func:`add_settings_flags`), counts and rates checked
    (:func:`check_positive`)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings_class)}
    check_positive(values, settings_class)
    return settings_class(**values)


def settings_command(prog: str, description: str, settings_class: type, train: Callable[..., dict],
                     evaluate: Callable[[Path], dict], example: str) -> Callable[[list[str]], None]:
    """The ``main(argv)`` of a stand-in whose command line is its settings dataclass, ``--out`` and the run flags.

    Training calls ``train(out, settings, progress=..., command=...)`` and prints the metadata's
    ``held_out`` metrics; ``--evaluate CKPT`` prints ``evaluate(CKPT)``.
    """

    def main(argv: list[str]) -> None:
        parser = argparse.ArgumentParser(prog=prog, description=description,
                                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        parser.add_argument("--out", type=Path, help=f"checkpoint to write, e.g. {example}")
        add_settings_flags(parser, settings_class)
        add_run_flags(parser, "recompute the acceptance metrics of CKPT")
        args = parse_run(parser, argv, evaluate)
        if args is None:
            return
        metadata = train(args.out, settings_from(args, settings_class), progress=not args.no_progress,
                         command=f"{prog} {shlex.join(argv)}")
        print(json.dumps(metadata["held_out"], indent=1))

    return main
