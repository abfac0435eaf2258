"""The committed lessons open in JupyterLab as they were saved: no widget view whose model is gone (it would
show "Error displaying widget: model not found", and a one-line ``VBox(children=...`` repr on a repository
browser), no widget state, and nothing JupyterLab rewrites on open (the unsaved-changes dot): a current
nbformat with cell ids, and the installed kernel's spec."""
import re

import nbformat
import pytest
import torch

from fsslib import notebook as notebook_helpers
from fsslib.lessons import WIDGET_VIEW, kernelspec, lessons, saveable, solutions

NOTEBOOKS = lessons() + solutions()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_a_committed_lesson_reopens_clean(path):
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert (notebook.nbformat, notebook.nbformat_minor) >= (4, 5)
    assert all(cell.get("id") for cell in notebook.cells), "every cell needs an id (JupyterLab would add them)"
    assert "widgets" not in notebook.metadata
    assert notebook.metadata["kernelspec"] == kernelspec(), "JupyterLab would rewrite the kernelspec on open"
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            assert WIDGET_VIEW not in data, f"cell {index} keeps a widget view"
            assert not str(data.get("text/plain", "")).startswith(("VBox(", "HBox(")), f"cell {index} keeps a widget repr"
            shown = output.get("text", "") + str(data.get("text/plain", "")) + output.get("evalue", "")
            machine = re.search(r"/tmp/|/home/|/root/|/work/", shown)
            assert not machine, f"cell {index} prints a path of the machine that ran it"


def test_saveable_drops_widget_outputs_and_state():
    notebook = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    cell = nbformat.v4.new_code_cell("interactive_figure(...)", outputs=[
        nbformat.v4.new_output("display_data", data={"image/png": "AAAA", "text/plain": "<Figure>"}),
        nbformat.v4.new_output("execute_result", data={WIDGET_VIEW: {"model_id": "x"}, "text/plain": "VBox(...)"},
                               execution_count=1)])
    notebook.cells.append(cell)
    saveable(notebook)
    assert [list(o["data"]) for o in cell.outputs] == [["image/png", "text/plain"]]
    assert "widgets" not in notebook.metadata and notebook.metadata["kernelspec"]["language"] == "python"


def test_setup_sets_one_thread_once_and_says_so(monkeypatch, capsys):
    import warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # setup() installs the lessons' own
    threads = torch.get_num_threads()
    monkeypatch.setattr(notebook_helpers, "_threads_set", False)
    try:
        torch.set_num_threads(2)  # the suite's workers run one thread: start from another count, so setup() must set it
        notebook_helpers.setup("cpu")
        assert torch.get_num_threads() == 1 and "1 CPU thread(s)" in capsys.readouterr().out
        torch.set_num_threads(2)  # a learner's own choice stays
        notebook_helpers.setup("cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_a_lesson_prints_fsslib_s_warnings_without_their_file(monkeypatch):
    import warnings

    from fsslib.errors import short_warnings
    from fsslib.paths import PACKAGE_DIR

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    monkeypatch.setattr(notebook_helpers, "_threads_set", True)  # the test process's thread count stays
    python_s = warnings.formatwarning
    notebook_helpers.setup("cpu")
    ours = warnings.formatwarning("no background", UserWarning, str(PACKAGE_DIR / "clip" / "prompts.py"), 40)
    theirs = warnings.formatwarning("old", DeprecationWarning, "/elsewhere/lib.py", 7)
    assert ours == "UserWarning: no background\n" and theirs.startswith("/elsewhere/lib.py:7: DeprecationWarning: old")
    warnings.formatwarning = python_s
    with short_warnings():  # a command's run (fsslib.config.run_command_line)
        assert warnings.formatwarning("x", UserWarning, str(PACKAGE_DIR / "evaluate.py"), 1) == "UserWarning: x\n"
    assert warnings.formatwarning is python_s


def test_a_path_below_the_working_directory_prints_relative(tmp_path, monkeypatch):
    from fsslib.paths import shown_path

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert shown_path(tmp_path / "work" / "outputs" / "09" / "query.png") == "outputs/09/query.png"
    assert shown_path("outputs/x.png") == "outputs/x.png"
    assert shown_path(tmp_path / "home" / ".cache" / "fsslib") == "~/.cache/fsslib"  # below the home folder
    elsewhere = tmp_path / "elsewhere.png"
    assert shown_path(elsewhere) == str(elsewhere.resolve())  # below neither: absolute


def test_the_lessons_command_refuses_an_unknown_lesson_or_a_count_below_one(capsys):
    """`python -m fsslib.lessons` with a misspelt lesson names the lessons; --jobs 0 is refused, not raised to 1."""
    from fsslib.lessons import main

    for arguments, message in ((["05_picip"], "Unknown lesson '05_picip'"), (["--jobs", "0"], "--jobs: 0 is not"),
                               (["--timeout", "-5"], "--timeout: -5 is not")):
        with pytest.raises(SystemExit) as done:
            main(arguments)
        assert done.value.code == 2 and message in capsys.readouterr().err
