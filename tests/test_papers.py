"""The papers' reported numbers (fsslib.papers) stand in the papers' own text, row by row."""
from __future__ import annotations

from pathlib import Path

import pytest

from fsslib.errors import UnknownNameError
from fsslib.papers import PAPER_FILES, all_reported, reported

PAPERS = Path(__file__).resolve().parent.parent.parent / "shared" / "papers"


@pytest.mark.parametrize("row", all_reported(), ids=lambda r: f"{r.paper}-{r.method}-{r.ways}w{r.shots}s")
def test_each_reported_row_is_printed_in_its_paper(row):
    path = PAPERS / PAPER_FILES[row.paper]
    if not path.is_file():
        pytest.skip("the papers' texts are not beside this checkout (shared/papers)")
    lines = path.read_text().splitlines()
    if row.folds[0] is None:  # printed as a fraction of one
        assert any(f"{row.mean / 100:.4f}" in line and f"{row.ways}-way {row.shots}-shot" in line for line in lines)
        return
    shown = [f"{value:.1f}" for value in (*row.folds, row.mean)]
    assert any(all(value in line.split() for value in shown) and " ".join(shown) in " ".join(line.split()) for line in lines), row


def test_an_unknown_row_names_those_there_are():
    assert reported("piclip", "piclip").mean == 71.2 and reported("qgnet", "qgnet", shots=5).folds[3] == 61.6
    with pytest.raises(UnknownNameError, match="piclip/piclip 1-way 1-shot"):
        reported("piclip", "hdmnet")
