"""The lessons and their solutions read in small steps: a markdown cell says one thing (per notebook, the median
markdown cell holds at most 50 words and none more than 150), the code cells a learner reads are short (per
notebook, the median code cell not collapsed, i.e. without ``"jupyter": {"source_hidden": true}``, holds at most
9 statements and comment lines: a statement wrapped over several lines counts once), no code line is wider than
107 characters (what JupyterLab 4 shows beside its file browser in a window 1280 pixels wide, at its default
font: measured, a wider line scrolls), and imports take a few lines (no code cell's import statements span more than 10
lines: an import used in one or two cells is made where it is used)."""
from __future__ import annotations

import ast
import io
import re
import statistics
import tokenize
from pathlib import Path

import nbformat
import pytest

from fsslib.lessons import lessons, solutions
from notebook_cells import as_python

MEDIAN_WORDS, MAX_WORDS, MEDIAN_STATEMENTS, MAX_IMPORT_LINES, MAX_WIDTH = 50, 150, 9, 10, 107


def import_lines(source: str) -> int:
    """The lines that the import statements of a code cell span (an IPython ``%`` or ``!`` line is left out)."""
    return sum(node.end_lineno - node.lineno + 1 for node in ast.walk(ast.parse(as_python(source)))
               if isinstance(node, (ast.Import, ast.ImportFrom)))


def statements(source: str) -> int:
    """The statements and comment lines of a code cell: a statement wrapped over several lines counts once (an
    IPython ``%`` or ``!`` line counts as one statement)."""
    tokens = tokenize.generate_tokens(io.StringIO(as_python(source) + "\n").readline)
    return sum(token.type == tokenize.NEWLINE
               or (token.type == tokenize.COMMENT and token.line.lstrip().startswith("#")) for token in tokens)


def style_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """What breaks the course's cell-size rules in ``notebook`` (empty when none)."""
    words = [len(cell.source.split()) for cell in notebook.cells if cell.cell_type == "markdown"]
    lines = [statements(cell.source) for cell in notebook.cells if cell.cell_type == "code"
             and not cell.metadata.get("jupyter", {}).get("source_hidden")]
    problems = []
    if words and statistics.median(words) > MEDIAN_WORDS:
        problems.append(f"median markdown cell {statistics.median(words)} words > {MEDIAN_WORDS}")
    problems += [f"markdown cell {i} has {n} words > {MAX_WORDS}" for i, n in
                 enumerate(len(c.source.split()) for c in notebook.cells) if notebook.cells[i].cell_type == "markdown"
                 and n > MAX_WORDS]
    if lines and statistics.median(lines) > MEDIAN_STATEMENTS:
        problems.append(f"median visible code cell {statistics.median(lines)} statements > {MEDIAN_STATEMENTS}")
    problems += [f"code cell {i} line {n + 1} is {len(line)} characters wide > {MAX_WIDTH}"
                 for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
                 for n, line in enumerate(cell.source.splitlines()) if len(line) > MAX_WIDTH]
    problems += [f"code cell {i} imports in {n} lines > {MAX_IMPORT_LINES}" for i, n in
                 ((i, import_lines(c.source)) for i, c in enumerate(notebook.cells) if c.cell_type == "code")
                 if n > MAX_IMPORT_LINES]
    return problems


@pytest.mark.parametrize("path", lessons() + solutions(), ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_a_lesson_reads_in_small_cells(path: Path):
    assert style_problems(nbformat.read(path, as_version=4)) == []


def fabricated(markdown_words: list[int], code_lines: list[int], hidden: list[int] = (),
               imports: int = 0) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell(" ".join(["word"] * n)) for n in markdown_words]
    for k, n in enumerate(code_lines):
        cell = nbformat.v4.new_code_cell("\n".join([f"import m{i}" for i in range(imports if k == 0 else 0)]
                                                   + ["x = 1"] * n))
        if k in hidden:
            cell.metadata["jupyter"] = {"source_hidden": True}
        notebook.cells.append(cell)
    return notebook


def test_the_check_fails_on_a_violating_notebook():
    assert style_problems(fabricated([40, 45, 50], [5, 10, 3])) == []
    assert style_problems(fabricated([60, 70, 20], [5])) == ["median markdown cell 60 words > 50"]
    assert style_problems(fabricated([20, 20, 151], [5])) == ["markdown cell 2 has 151 words > 150"]
    assert style_problems(fabricated([20], [12, 14, 3])) == ["median visible code cell 12 statements > 9"]
    assert style_problems(fabricated([20], [12, 14, 3], hidden=[0, 1])) == []  # collapsed cells do not count
    wide = fabricated([20], [2])
    wide.cells[1].source = "# a comment\nx = 1\ny = [" + "1, " * 33 + "100,\n     2]  # and another"
    assert style_problems(wide) == ["code cell 1 line 3 is 108 characters wide > 107"]
    assert statements(wide.cells[1].source) == 3  # the comment line and two statements, the second wrapped
    assert style_problems(fabricated([20], [2, 3, 3], imports=10)) == []
    assert style_problems(fabricated([20], [2, 3, 3], imports=11)) == ["code cell 1 imports in 11 lines > 10"]
    wrapped = "from fsslib.viz import (a, b,\n                        c)\n%matplotlib inline\nimport torch"
    assert import_lines(wrapped) == 3


@pytest.mark.parametrize("path", lessons() + solutions(), ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_a_lesson_writes_through_its_outputs_folder(path: Path):
    """Files go under fsslib.notebook.output_dir (FSSLIB_OUTPUTS), never a relative outputs/ path: that one works
    only from notebooks/ of a checkout, and python -m fsslib.lessons could not tell it apart."""
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code":
            relative = re.search(r"""["']\.?/?outputs(/|["'])""", cell.source)
            assert not relative, f"cell {index} names a relative outputs/ path"


@pytest.mark.parametrize("path", lessons() + solutions(), ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_a_lesson_that_says_it_runs_in_under_a_minute_did(path: Path):
    """"Runs in under a minute" is typed in a lesson's prose: its last execution (``fsslib.lessons``) must bear it
    out."""
    notebook = nbformat.read(path, as_version=4)
    if any("under a minute" in cell.source for cell in notebook.cells if cell.cell_type == "markdown"):
        assert notebook.metadata["fsslib"]["executed_in_s"] < 60, "it took a minute or more when last executed"
