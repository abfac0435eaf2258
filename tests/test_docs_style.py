"""The written pages read as the docs' style asks: sentences under about 40 words, table cells under about 25,
no issue numbers. Checked on the README, docs/, the grids' answers and notes, the benchmarks' and the zoo's READMEs
and the notebooks' markdown cells (code blocks, display equations and HTML comments left out)."""
from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), REPO / "benchmarks" / "README.md",
         REPO / "fsslib" / "checkpoints" / "zoo" / "README.md",
         *sorted(path for kind in ("answer", "notes", "summary") for path in (REPO / "papermill_runs").glob(f"*.{kind}.md"))]
NOTEBOOKS = sorted((REPO / "notebooks").rglob("*.ipynb"))
SENTENCE_WORDS = 45  # "about 40"
CELL_WORDS = 30  # "about 25"
LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+")
ABBREVIATIONS = re.compile(r"\b(e\.g|i\.e|Eqs?|Sec|Fig|vs|al)\.")
SENTENCE_END = re.compile(r"(?<=[.?!])\**\s+(?=[A-Za-z*`(\[_$])")  # a bold or italic label ends one too


def prose(text: str) -> tuple[list[str], list[str]]:
    """(paragraphs and list items joined into one line each, table cells) of a markdown text."""
    text = re.sub(r"```.*?```|<!--.*?-->|\$\$.*?\$\$", "", text, flags=re.S)
    paragraphs, cells, current = [], [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells += [cell for cell in stripped.strip("|").split("|") if not set(cell) <= set("-: ")]
        if not stripped or stripped.startswith(("|", "#", "![")) or line.startswith("    ") or LIST_ITEM.match(line):
            if current:
                paragraphs.append(" ".join(current))
            current = [LIST_ITEM.sub("", line)] if LIST_ITEM.match(line) else []
            continue
        current.append(stripped)
    return paragraphs + ([" ".join(current)] if current else []), cells


def words(text: str) -> int:
    return sum(1 for word in text.split() if re.search(r"[A-Za-z0-9]", word))


def test_prose_splits_sentences_lists_and_cells():
    paragraphs, cells = prose("One e.g. two. Three four?\n\n- item one\n  goes on\n\n| a b | c |\n|---|---|\n```\nx. y\n```\n$$a. b$$")
    assert paragraphs == ["One e.g. two. Three four?", "item one goes on"] and cells == [" a b ", " c "]
    assert SENTENCE_END.split(ABBREVIATIONS.sub(r"\1", "**Bold lead.** Then Eq. 3 holds. *Label.* last one")) == [
        "**Bold lead.", "Then Eq 3 holds.", "*Label.", "last one"]


def test_sentences_and_table_cells_stay_short_and_no_page_names_an_issue():
    long_sentences, long_cells, issues = [], [], []
    for page in PAGES + NOTEBOOKS:
        text = page.read_text() if page.suffix == ".md" else "\n\n".join(
            "".join(cell["source"]) for cell in json.loads(page.read_text())["cells"] if cell["cell_type"] == "markdown")
        paragraphs, cells = prose(text)
        for paragraph in paragraphs:
            long_sentences += [f"{page.relative_to(REPO)}: {sentence}" for sentence in
                               SENTENCE_END.split(ABBREVIATIONS.sub(r"\1", paragraph)) if words(sentence) > SENTENCE_WORDS]
        long_cells += [f"{page.relative_to(REPO)}: {cell}" for cell in cells if words(cell) > CELL_WORDS]
        issues += [f"{page.relative_to(REPO)}: {hit}" for hit in re.findall(r"\bissues? #?\d+", text, flags=re.I)]
    assert not long_sentences, "\n".join(long_sentences)
    assert not long_cells, "\n".join(long_cells)
    assert not issues, "\n".join(issues)
