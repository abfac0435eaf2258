"""The course's lessons, executed and committed: ``python -m fsslib.lessons`` (``make notebooks``).

    python -m fsslib.lessons                      # every lesson and solution, 2 at a time, written back executed
    python -m fsslib.lessons 05_piclip notebooks/solutions/05_piclip.ipynb   # some of them

A lesson is a numbered notebook ``notebooks/NN_*.ipynb`` below 90 (``90_train_eval.ipynb`` is the grids'
parameterised template and stays without outputs); the exercises' solutions are ``notebooks/solutions/NN_*.ipynb``. Each runs at its full settings (``FSSLIB_SMOKE`` unset)
in a fresh kernel, from an empty working directory, with its outputs under a temporary ``FSSLIB_OUTPUTS``
below it (``outputs/``, where a checkout's notebooks write theirs, so printed paths read as a learner's do)
and one torch thread (as under ``make test``, whose nbval run compares the committed outputs: the same
thread count gives the same float arithmetic). The notebook is written back in place with its outputs; the
widgets' outputs and state are not kept (each widget has a static figure beside it: :func:`saveable`), and the seconds it took go to the
notebook's metadata (``fsslib.executed_in_s``), where the README's minutes per lesson come from.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from fsslib.errors import FsslibError, unknown
from fsslib.paths import PACKAGE_DIR

if TYPE_CHECKING:
    import nbformat

NOTEBOOKS = PACKAGE_DIR.parent / "notebooks"
CELL_TIMEOUT_S = 300
KERNEL_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def lessons() -> list[Path]:
    """The course's notebooks in order (``NN_name.ipynb`` with NN below 90)."""
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if int(p.name[:2]) < 90)


def solutions() -> list[Path]:
    """The exercises' solutions, one notebook per lesson that has exercises (``notebooks/solutions/NN_name.ipynb``)."""
    return sorted((NOTEBOOKS / "solutions").glob("[0-9][0-9]_*.ipynb"))


def minutes_to_run(path: Path) -> int:
    """The whole minutes (at least 1) the notebook took when it was last executed by :func:`execute`."""
    import nbformat

    seconds = nbformat.read(path, as_version=4).metadata.get("fsslib", {}).get("executed_in_s")
    if seconds is None:
        raise FsslibError(f"{path.name} has not been executed by fsslib.lessons (no run time in its metadata).",
                          f"run python -m fsslib.lessons {path}")
    return max(1, round(seconds / 60))


def lesson_path(name: str) -> Path:
    """``05_piclip``, ``05_piclip.ipynb`` or a path: the lesson's notebook, or an error naming the lessons."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.is_file():
        return path.resolve()
    for lesson in lessons():
        if name in (lesson.stem, lesson.name):
            return lesson
    raise unknown("lesson", name, [p.stem for p in lessons()] + ["or a notebook's path"])


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def kernelspec() -> dict[str, str]:
    """The ``python3`` kernel's spec as JupyterLab writes it into a notebook's metadata (name, display name
    and language): a notebook whose kernelspec differs is changed by JupyterLab when its kernel starts,
    and opens with the unsaved-changes dot."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    return {"display_name": spec.display_name, "language": spec.language, "name": "python3"}


def saveable(notebook: nbformat.NotebookNode) -> None:
    """Make an executed notebook what a reopened one should show: the widgets' outputs (a widget view,
    whose model is gone once the kernel is, and its one-line text repr) are dropped, so each widget cell
    shows only its static figure until it is run; the widgets' state is not kept; the kernelspec is the
    installed kernel's, so that JupyterLab has nothing to change when the kernel starts."""
    notebook.metadata.pop("widgets", None)
    notebook.metadata["kernelspec"] = kernelspec()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if WIDGET_VIEW not in output.get("data", {})]
            cell.metadata.pop("widgets", None)


def execute(path: Path, timeout: int = CELL_TIMEOUT_S) -> float:
    """Run the notebook at ``path`` at its full settings and write it back with its outputs; the seconds it took."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder) / "notebooks"  # the kernel's working directory, its outputs below it as in a checkout
        outputs = work / "outputs"
        work.mkdir()
        os.environ.update(KERNEL_ENVIRONMENT, FSSLIB_OUTPUTS=str(outputs))
        for variable in ("FSSLIB_SMOKE", "MPLBACKEND"):  # full settings; the kernel's inline backend draws
            os.environ.pop(variable, None)
        try:
            start = time.perf_counter()
            NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                           resources={"metadata": {"path": str(work)}}).execute()
            seconds = time.perf_counter() - start
        finally:
            os.environ.clear()
            os.environ.update(saved)
        left = sorted(p.name for p in work.iterdir() if p != outputs)
        if left:
            raise RuntimeError(f"{path.name} wrote {left} into its working directory; write under fsslib.notebook.output_dir.")
    saveable(notebook)
    notebook.metadata.setdefault("fsslib", {})["executed_in_s"] = round(seconds, 1)
    nbformat.write(notebook, path)
    return seconds


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsslib.lessons", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lessons", nargs="*", help="lesson names (e.g. 05_piclip); default: every lesson")
    parser.add_argument("--jobs", type=at_least_one, default=2, help="lessons executed at once, one torch thread each")
    parser.add_argument("--timeout", type=at_least_one, default=CELL_TIMEOUT_S, help="seconds one cell may take")
    args = parser.parse_args(argv)
    try:
        paths = [lesson_path(name) for name in args.lessons] if args.lessons else lessons() + solutions()
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for path, seconds in zip(paths, pool.map(execute, paths, [args.timeout] * len(paths))):
            print(f"{path.name}: executed in {seconds:.0f} s")


if __name__ == "__main__":
    main()
