"""Every tutorial notebook runs headless at its full settings (``FSSLIB_SMOKE`` unset), as a user runs
it in a batch: with papermill and with ``jupyter nbconvert --execute`` through its command line, from an
empty working directory that it must leave empty, each cell under a time limit that fails fast instead of
hanging (the widget cells hung both before ``fsslib.notebook.interactive_figure``: issue 27;
docs/notebook_widgets.md).

``90_train_eval.ipynb`` is not a tutorial: the grid tests run it (at full settings in
``test_a_committed_row_is_reproduced``).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
TUTORIALS = sorted(p for p in (REPO / "notebooks").glob("[0-8]*.ipynb"))
CELL_LIMIT_S = 120  # the slowest cell at full settings takes about 20 s on 2 cores


@pytest.fixture
def headless(tmp_path, toy_root, monkeypatch):
    """An empty working directory; full settings; the notebooks' outputs under tmp_path."""
    monkeypatch.delenv("FSSLIB_SMOKE", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws, as for a user (Agg hid the hang)
    monkeypatch.setenv("FSSLIB_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one core per test worker
    work = tmp_path / "work"
    work.mkdir()
    return work


def widget_cells(notebook: nbformat.NotebookNode) -> list[int]:
    """The cells that create a widget through fsslib.notebook's helpers."""
    return [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            and any(helper in cell.source for helper in ("interactive_figure(", "episode_browser("))]


def check_executed(path: Path, work: Path) -> None:
    executed = nbformat.read(path, as_version=4)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "a cell was not executed"
    for index in widget_cells(executed):  # the widget was created; the plain call (its cell or the code cell before) drew
        outputs = executed.cells[index].outputs
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), index
        before = next((cell.outputs for cell in reversed(executed.cells[:index]) if cell.cell_type == "code"), [])
        assert any("image/png" in o.get("data", {}) for o in [*outputs, *before]), index
    assert sorted(p.name for p in work.iterdir()) == [path.name], "the notebook wrote into the working directory"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", TUTORIALS, ids=lambda p: p.name)
def test_papermill_runs_the_notebook_at_full_settings(notebook, headless):
    import papermill

    executed = headless / notebook.name
    papermill.execute_notebook(str(notebook), str(executed), cwd=str(headless), kernel_name="python3",
                               execution_timeout=CELL_LIMIT_S, progress_bar=False)
    check_executed(executed, headless)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", TUTORIALS, ids=lambda p: p.name)
def test_jupyter_nbconvert_executes_the_notebook_at_full_settings(notebook, headless):
    """``jupyter nbconvert --to notebook --execute`` as a user types it."""
    executed = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                               f"--ExecutePreprocessor.timeout={CELL_LIMIT_S}", "--output-dir", str(headless), str(notebook)],
                              cwd=headless, capture_output=True, text=True, timeout=10 * CELL_LIMIT_S)
    assert executed.returncode == 0, executed.stderr[-3000:]
    check_executed(headless / notebook.name, headless)


def test_the_tutorials_with_widgets_are_among_those_run():
    """Notebook 01's episode browser and notebook 06's superpixel widget hung both clients before the helper."""
    for name in ("01_few_shot_task.ipynb", "06_qgnet.ipynb"):
        assert widget_cells(nbformat.read(REPO / "notebooks" / name, as_version=4)), f"{name} no longer has a widget"
    assert {"01_few_shot_task.ipynb", "06_qgnet.ipynb"} <= {p.name for p in TUTORIALS}
