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

Every file fsslib writes for a user is written atomically (:func:`atomic_path`): a temporary file in the same
folder, then a rename, so that an interrupted run, or two runs writing the same name, leave a whole file (the last
run's) and never a torn or mixed one.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (same suffix, so writers that go by it pick the same format) for the block to
    write; renamed onto ``path`` when the block succeeds, removed when it fails. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o666 & ~umask)  # as an ordinary open() would create it (mkstemp's is private)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`); returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def save_figure(figure: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib ``figure`` to ``path`` atomically (:func:`atomic_path`; the format from its suffix)."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi)
    return Path(path)


def shown_path(path: Path | str) -> str:
    """``path`` as fsslib's messages print it: relative to the working directory when it lies below it (what a user
    types from there), else below the home folder as ``~/...``, else absolute."""
    absolute = Path(path).expanduser().resolve()
    for base, prefix in ((Path.cwd().resolve(), ""), (Path.home().resolve(), "~/")):
        if absolute.is_relative_to(base) and absolute != base:
            return prefix + str(absolute.relative_to(base))
    return str(absolute)
