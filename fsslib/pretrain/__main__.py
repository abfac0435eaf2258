"""``python -m fsslib.pretrain NAME ...``: make (or evaluate) one pretrained stand-in.

``python -m fsslib.pretrain --help`` lists the names; ``python -m fsslib.pretrain NAME --help``
shows the stand-in's own options.
"""
from __future__ import annotations

import argparse
import sys

from fsslib.errors import FsslibError
from fsslib.pretrain.registry import PRETRAINERS


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the command line of the stand-in named first."""
    argv = sys.argv[1:] if argv is None else argv
    names = "\n".join(f"  {p.name:<17} stands in for {p.stands_in_for}" for p in PRETRAINERS.values())
    parser = argparse.ArgumentParser(prog="python -m fsslib.pretrain", usage="%(prog)s NAME [options]",
                                     description="Make the pretrained stand-ins: the toy tier's, and the paper "
                                                 "tier's base learners and QGNet prior extractor.",
                                     epilog=f"names:\n{names}\n\n'%(prog)s NAME --help' shows a name's options.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(PRETRAINERS), metavar="NAME", help="the stand-in to make (below)")
    args = parser.parse_args(argv[:1])
    try:
        PRETRAINERS[args.name].main(argv[1:])
    except FsslibError as error:  # a user's mistake: its message and fix, without a traceback
        parser.exit(2, f"{parser.prog} {args.name}: error: {error}\n")


if __name__ == "__main__":
    main()
