"""Where fsslib reads data and writes outputs.

Data root: the environment variable ``FSSLIB_DATA`` (default ``~/.cache/fsslib/data``).
Layout below it::

    $FSSLIB_DATA/toyworld/            generated on first use (seconds)
    $FSSLIB_DATA/VOCdevkit/VOC2012/   PASCAL-5i, after ``python -m fsslib.data.prepare pascal``
    $FSSLIB_DATA/coco/                COCO-20i, after ``python -m fsslib.data.prepare coco``

Pretrained weights for the paper tier are looked up in ``FSSLIB_WEIGHTS``
(default ``~/.cache/fsslib/weights``) unless a path is given explicitly.

What the notebooks write (evaluation folders, a train/eval run's checkpoints) goes under
``FSSLIB_OUTPUTS``, by default ``notebooks/outputs/`` of the checkout fsslib is imported from
(ignored by git), or ``~/.cache/fsslib/outputs`` for an installed copy: the same folder whatever
the working directory a notebook is run from.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKPOINT_DIR = PACKAGE_DIR / "checkpoints"  # the toy tier's shipped checkpoints
DEFAULT_DATA_ROOT = Path("~/.cache/fsslib/data")
DEFAULT_WEIGHTS_ROOT = Path("~/.cache/fsslib/weights")
CHECKOUT_OUTPUTS = PACKAGE_DIR.parent / "notebooks" / "outputs"  # ignored by the checkout's .gitignore
DEFAULT_OUTPUTS_ROOT = Path("~/.cache/fsslib/outputs")
# where a user reads how to fetch the paper tier's datasets and weights (named by every missing-file error)
DATASETS_DOC = "docs/paper_tier.md, 'Datasets'"
WEIGHTS_DOC = "docs/paper_tier.md, 'Weights'"


def data_root() -> Path:
    """The data root: ``$FSSLIB_DATA`` or ``~/.cache/fsslib/data``."""
    return Path(os.environ.get("FSSLIB_DATA", DEFAULT_DATA_ROOT)).expanduser()


def weights_root() -> Path:
    """The pretrained-weights folder: ``$FSSLIB_WEIGHTS`` or ``~/.cache/fsslib/weights``."""
    return Path(os.environ.get("FSSLIB_WEIGHTS", DEFAULT_WEIGHTS_ROOT)).expanduser()


def outputs_root() -> Path:
    """Where notebooks write: ``$FSSLIB_OUTPUTS``, else the checkout's ``notebooks/outputs/``, else
    ``~/.cache/fsslib/outputs`` (fsslib installed outside a checkout)."""
    if "FSSLIB_OUTPUTS" in os.environ:
        return Path(os.environ["FSSLIB_OUTPUTS"]).expanduser()
    return CHECKOUT_OUTPUTS if CHECKOUT_OUTPUTS.parent.is_dir() else DEFAULT_OUTPUTS_ROOT.expanduser()
