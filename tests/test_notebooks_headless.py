"""The lessons run headless as a user runs them in a batch: with papermill and with ``jupyter nbconvert --execute``
through its command line, at full settings (``FSSLIB_SMOKE`` unset), from an empty working directory that they
must leave empty, each cell under a time limit that fails fast instead of hanging (widget cells hung both clients
before ``fsslib.notebook.interactive_figure``; docs/notebook_widgets.md). Every lesson is executed once per test
run, by nbval (against its committed outputs); here one lesson with a widget goes through each client, and the
committed lessons are checked for a static figure beside every widget.

``90_train_eval.ipynb`` is not a lesson: the grid tests run it (at full settings in
``test_a_committed_row_is_reproduced``).
"""
from __future__ import annotations

import ast
import builtins
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from fsslib.lessons import lessons, solutions
from notebook_cells import as_python

REPO = Path(__file__).resolve().parent.parent
TUTORIALS = lessons()
CELL_LIMIT_S = 300  # a hang guard: the slowest cell at full settings takes about 20 s on 2 quiet cores


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


def static_figures_beside_widgets(executed: nbformat.NotebookNode, saved: bool = False) -> None:
    """The widget was created (``saved``: and its view dropped, as ``fsslib.lessons`` saves a lesson), and the
    plain call (its cell or the code cell before) drew its figure."""
    for index in widget_cells(executed):
        outputs = executed.cells[index].outputs
        has_view = any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
        assert has_view != saved, index
        before = next((cell.outputs for cell in reversed(executed.cells[:index]) if cell.cell_type == "code"), [])
        assert any("image/png" in o.get("data", {}) for o in [*outputs, *before]), index


def check_executed(path: Path, work: Path) -> None:
    executed = nbformat.read(path, as_version=4)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), "a cell was not executed"
    static_figures_beside_widgets(executed)
    assert sorted(p.name for p in work.iterdir()) == [path.name], "the notebook wrote into the working directory"


@pytest.mark.parametrize("notebook", TUTORIALS, ids=lambda p: p.name)
def test_every_committed_widget_has_its_static_figure_beside_it(notebook):
    """On a repository browser, or reopened without a kernel, a widget shows nothing: its plain call's figure reads."""
    static_figures_beside_widgets(nbformat.read(notebook, as_version=4), saved=True)


@pytest.mark.slow
def test_papermill_runs_a_lesson_with_a_widget_at_full_settings(headless):
    import papermill

    notebook = REPO / "notebooks" / "01_few_shot_task.ipynb"  # the cheapest lesson with a widget, as below
    executed = headless / notebook.name
    papermill.execute_notebook(str(notebook), str(executed), cwd=str(headless), kernel_name="python3",
                               execution_timeout=CELL_LIMIT_S, progress_bar=False)
    check_executed(executed, headless)


@pytest.mark.slow
def test_jupyter_nbconvert_executes_a_lesson_with_a_widget_at_full_settings(headless):
    """``jupyter nbconvert --to notebook --execute`` as a user types it."""
    notebook = REPO / "notebooks" / "01_few_shot_task.ipynb"
    executed = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                               f"--ExecutePreprocessor.timeout={CELL_LIMIT_S}", "--output-dir", str(headless), str(notebook)],
                              cwd=headless, capture_output=True, text=True, timeout=10 * CELL_LIMIT_S)
    assert executed.returncode == 0, executed.stderr[-3000:]
    check_executed(headless / notebook.name, headless)


def _cell_tree(source: str) -> ast.Module:
    return ast.parse(as_python(source))


def _rebound(tree: ast.Module) -> set[str]:
    """The names a cell binds at its top level, imports left out (importing a name again rebinds it to the same
    object)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif not isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store)}
    return names


def _globals_read(function: ast.FunctionDef | ast.Lambda) -> set[str]:
    """The global names a function or lambda reads when it runs."""
    own = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
    own |= {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    loads = {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return loads - own - set(dir(builtins))


def widget_names_rebound_later(notebook: nbformat.NotebookNode) -> list[tuple[int, int, list[str]]]:
    """(widget cell, later cell, names): a widget's function reads a global name that a later cell binds again. A
    learner who runs the whole lesson and then moves the widget's slider gets the later value, and often an error
    (the names it reads: its function's, and those of the lesson's functions that it calls by name)."""
    cells = [(i, _cell_tree(cell.source)) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    functions = {node.name: _globals_read(node) for _, tree in cells for node in tree.body
                 if isinstance(node, ast.FunctionDef)}
    found = []
    for i, tree in cells:
        for call in ast.walk(tree):
            helper = getattr(call.func, "id", None) if isinstance(call, ast.Call) else None
            if helper not in ("interactive_figure", "episode_browser") or not call.args:
                continue
            target = call.args[0]
            reads = _globals_read(target) if isinstance(target, ast.Lambda) else {getattr(target, "id", "")}
            for name in list(reads):
                reads |= functions.get(name, set())
            found += [(i, j, sorted(_rebound(later) & reads))
                      for j, later in cells if j > i and _rebound(later) & reads]
    return found


@pytest.mark.parametrize("notebook", TUTORIALS + solutions(), ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_a_widget_reads_no_name_that_a_later_cell_binds_again(notebook):
    assert widget_names_rebound_later(nbformat.read(notebook, as_version=4)) == []


def test_the_rebinding_check_finds_a_later_assignment():
    cells = ["def show(n):\n    return plot(scenes[n])", "interactive_figure(show, n=slider)",
             "from fsslib.viz import plot\nfor step in range(2):\n    scenes = others[step]"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    assert widget_names_rebound_later(notebook) == [(1, 2, ["scenes"])]  # the import of plot does not count
    notebook.cells[2].source = "for step in range(2):\n    scene_batch = others[step]"
    assert widget_names_rebound_later(notebook) == []


def test_the_lessons_run_through_both_clients_have_widgets():
    """Notebook 01's episode browser and notebook 03's class-name box: the widgets that hung both clients before."""
    for name in ("01_few_shot_task.ipynb", "03_clip_dense_features.ipynb"):
        assert widget_cells(nbformat.read(REPO / "notebooks" / name, as_version=4)), f"{name} no longer has a widget"


def test_every_notebook_widget_uses_the_helper():
    """ipywidgets' own ``interactive`` / ``interact`` capture output and hang headless clients."""
    for path in REPO.glob("notebooks/*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            assert "widgets.interactive(" not in cell.source and "widgets.interact(" not in cell.source, path.name


def test_interactive_figure_sets_its_output_and_redraws(monkeypatch):
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from fsslib.notebook import interactive_figure

    drawn = []

    def draw(size: int):
        drawn.append(size)
        figure, ax = plt.subplots(figsize=(1, 1))
        ax.plot(range(size))
        return figure

    open_before = plt.get_fignums()
    slider = widgets.IntSlider(2, 1, 9)
    box = interactive_figure(draw, size=slider)
    output = box.children[-1]
    assert drawn == [2] and output.outputs[0]["output_type"] == "display_data"
    assert "image/png" in output.outputs[0]["data"] and plt.get_fignums() == open_before  # closed: not drawn twice
    first = output.outputs[0]["data"]["image/png"]
    slider.value = 7
    assert drawn == [2, 7] and output.outputs[0]["data"]["image/png"] != first
    json.dumps(output.outputs)  # the widget state is plain JSON, as the front end receives it
    with pytest.raises(TypeError, match="must return a matplotlib Figure"):
        interactive_figure(lambda size: None, size=widgets.IntSlider(1, 1, 2))
    with pytest.raises(TypeError, match="not an ipywidgets value widget"):
        interactive_figure(draw, size=3)


def test_a_failing_redraw_shows_the_error_in_place_of_the_figure():
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from fsslib.notebook import interactive_figure

    def draw(size: int):
        if size > 5:
            raise ValueError("too large")
        return plt.subplots(figsize=(1, 1))[0]

    slider = widgets.IntSlider(1, 1, 9)
    box = interactive_figure(draw, size=slider)
    slider.value = 8
    (shown,) = box.children[-1].outputs
    assert shown["output_type"] == "stream" and "too large" in shown["text"]


def test_a_name_the_text_tower_cannot_encode_shows_one_line_not_a_traceback():
    """Typing in a text box redraws on Enter only; a bad value (any FsslibError) gives a one-line message."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from fsslib.clip import class_embeddings
    from fsslib.clip.loading import load_clip
    from fsslib.notebook import interactive_figure

    bundle = load_clip("toy-vit")

    def draw(name: str):
        class_embeddings(bundle, [name])  # raises ClipInputError for a word the toy text tower does not know
        return plt.subplots(figsize=(1, 1))[0]

    name = widgets.Text("striped star")
    box = interactive_figure(draw, name=name)
    assert name.continuous_update is False and box.children[-1].outputs[0]["output_type"] == "display_data"
    name.value = "stri"  # a partial word, as typed
    (shown,) = box.children[-1].outputs
    assert shown["output_type"] == "stream" and shown["text"].count("\n") == 1, shown["text"]
    assert shown["text"].startswith("cannot draw name='stri': ") and "['stri']" in shown["text"]
    assert "Traceback" not in shown["text"]
    name.value = "dotted star"
    assert "image/png" in box.children[-1].outputs[0]["data"]


def test_the_widget_labels_its_controls_in_full_and_says_when_it_redraws():
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from fsslib.notebook import interactive_figure

    notes = []

    def draw(compactness: float, image_index: int):
        if busy is not None:  # the first draw comes before the widget exists
            notes.append((busy.value, busy.layout.display))  # what the learner sees while the figure is drawn
        return plt.subplots(figsize=(1, 1))[0]

    slider, index = widgets.FloatLogSlider(1.0, base=10, min=-1, max=2), widgets.IntSlider(0, 0, 5, description="image")
    busy = None
    box = interactive_figure(draw, compactness=slider, image_index=index)
    busy = next(child for child in box.children if isinstance(child, widgets.Label))
    assert slider.style.description_width == "initial" and slider.description == "compactness"
    assert index.description == "image" and busy.layout.display == "none"
    index.value = 3
    assert notes[-1] == ("loading and drawing compactness=1.0, image_index=3 ...", None) and busy.layout.display == "none"


def test_notebook_outputs_go_to_one_ignored_folder(monkeypatch, tmp_path):
    from fsslib.notebook import output_dir
    from fsslib.paths import CHECKOUT_OUTPUTS

    monkeypatch.delenv("FSSLIB_OUTPUTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert output_dir("x") == CHECKOUT_OUTPUTS / "x" == REPO / "notebooks" / "outputs" / "x"
    ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/outputs/x/metrics.json"], cwd=REPO)
    assert ignored.returncode == 0, "notebooks/outputs/ must be ignored by git"
    monkeypatch.setenv("FSSLIB_OUTPUTS", str(tmp_path / "mine"))
    assert output_dir("x") == tmp_path / "mine" / "x"
