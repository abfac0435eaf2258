"""The lessons read in small steps: a markdown cell says one thing (per lesson, the median markdown cell holds at
most 50 words and none more than 150), and the code cells a learner reads are short (per lesson, the median
code cell not collapsed, i.e. without ``"jupyter": {"source_hidden": true}``, holds at most 10 lines)."""
from __future__ import annotations

import statistics
from pathlib import Path

import nbformat
import pytest

from fsslib.lessons import lessons

MEDIAN_WORDS, MAX_WORDS, MEDIAN_LINES = 50, 150, 10


def style_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """What breaks the course's cell-size rules in ``notebook`` (empty when none)."""
    words = [len(cell.source.split()) for cell in notebook.cells if cell.cell_type == "markdown"]
    lines = [len(cell.source.splitlines()) for cell in notebook.cells if cell.cell_type == "code"
             and not cell.metadata.get("jupyter", {}).get("source_hidden")]
    problems = []
    if words and statistics.median(words) > MEDIAN_WORDS:
        problems.append(f"median markdown cell {statistics.median(words)} words > {MEDIAN_WORDS}")
    problems += [f"markdown cell {i} has {n} words > {MAX_WORDS}" for i, n in
                 enumerate(len(c.source.split()) for c in notebook.cells) if notebook.cells[i].cell_type == "markdown"
                 and n > MAX_WORDS]
    if lines and statistics.median(lines) > MEDIAN_LINES:
        problems.append(f"median visible code cell {statistics.median(lines)} lines > {MEDIAN_LINES}")
    return problems


@pytest.mark.parametrize("path", lessons(), ids=lambda p: p.name)
def test_a_lesson_reads_in_small_cells(path: Path):
    assert style_problems(nbformat.read(path, as_version=4)) == []


def fabricated(markdown_words: list[int], code_lines: list[int], hidden: list[int] = ()) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell(" ".join(["word"] * n)) for n in markdown_words]
    for k, n in enumerate(code_lines):
        cell = nbformat.v4.new_code_cell("\n".join(["x = 1"] * n))
        if k in hidden:
            cell.metadata["jupyter"] = {"source_hidden": True}
        notebook.cells.append(cell)
    return notebook


def test_the_check_fails_on_a_violating_notebook():
    assert style_problems(fabricated([40, 45, 50], [5, 10, 3])) == []
    assert style_problems(fabricated([60, 70, 20], [5])) == ["median markdown cell 60 words > 50"]
    assert style_problems(fabricated([20, 20, 151], [5])) == ["markdown cell 2 has 151 words > 150"]
    assert style_problems(fabricated([20], [12, 14, 3])) == ["median visible code cell 12 lines > 10"]
    assert style_problems(fabricated([20], [12, 14, 3], hidden=[0, 1])) == []  # collapsed cells do not count
