"""The papers' reported numbers (fsslib.papers) stand in the papers' own text, row by row, inside the table named."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from fsslib.errors import UnknownNameError
from fsslib.papers import PAPER_FILES, QGNET_PRIOR_RECALL, all_reported, has_reported, reported

PAPERS = Path(__file__).resolve().parent.parent.parent / "shared" / "papers"
CAPTION = re.compile(r"table\s+[0-9ivx]+\b", re.IGNORECASE)  # a line opening a table's caption


def _table_lines(lines: list[str], where: str) -> list[str]:
    """The lines from the caption of the table ``where`` names ("Table 2, ..." -> "Table 2") to the next caption."""
    name = where.split(",")[0].strip()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{re.escape(name)}\b", line.strip(), re.IGNORECASE))
    end = next((i for i in range(start + 1, len(lines)) if CAPTION.match(lines[i].strip())), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("row", all_reported(), ids=lambda r: f"{r.paper}-{r.method}-{r.benchmark}-{r.ways}w{r.shots}s")
def test_each_reported_row_is_printed_in_its_paper(row):
    path = PAPERS / PAPER_FILES[row.paper]
    if not path.is_file():
        pytest.skip("the papers' texts are not beside this checkout (shared/papers)")
    lines = path.read_text().splitlines()
    if row.folds[0] is None:  # printed as a fraction of one
        assert any(f"{row.mean / 100:.4f}" in line and f"{row.ways}-way {row.shots}-shot" in line for line in lines)
        return
    shown = [f"{value:.1f}" for value in (*row.folds, row.mean)]
    table = _table_lines(lines, row.where)
    assert any(all(value in line.split() for value in shown) and " ".join(shown) in " ".join(line.split())
               for line in table), row
    caption = " ".join(table[:2])
    assert ("COCO" in caption) == (row.benchmark == "coco"), (row, caption)  # the table is of the benchmark said


def test_an_unknown_row_names_those_there_are():
    assert reported("piclip", "piclip").mean == 71.2 and reported("qgnet", "qgnet", shots=5).folds[3] == 61.6
    assert reported("qgnet", "qgnet", shots=5, benchmark="coco").mean == 44.8
    assert has_reported("lfss", "lfss", benchmark="coco") and not has_reported("lfss", "lfss", shots=5)
    with pytest.raises(UnknownNameError, match="piclip/piclip 1-way 1-shot"):
        reported("piclip", "dcama")  # a row of Table 1 that fsslib does not implement
    with pytest.raises(UnknownNameError, match="piclip/pfenet 1-way 1-shot COCO-20i"):
        reported("piclip", "pfenet", benchmark="coco")  # printed with ResNet-101 only


def test_table_1_holds_each_baseline_of_piclip_and_piclip_on_it():
    """PI-CLIP's Table 1 plugs its priors into PFENet, BAM and HDMNet: each baseline and each plug-in, as fsslib
    names the methods (lesson 05 reads them), at 1 and 5 shots."""
    from fsslib.methods import METHODS

    for baseline, plugged in (("pfenet", "piclip"), ("bam", "piclip-bam"), ("hdmnet", "piclip-hdmnet")):
        for shots in (1, 5):
            assert baseline in METHODS and plugged in METHODS
            assert has_reported("piclip", baseline, shots) and has_reported("piclip", plugged, shots)
    assert reported("piclip", "piclip-hdmnet").folds == (76.4, 83.5, 74.7, 72.8)
    assert reported("piclip", "bam", shots=5).mean == 70.9


def test_qgnet_s_prior_map_recall_is_table_vii_s_row():
    path = PAPERS / PAPER_FILES["qgnet"]
    if not path.is_file():
        pytest.skip("the papers' texts are not beside this checkout (shared/papers)")
    table = _table_lines(path.read_text().splitlines(), QGNET_PRIOR_RECALL.where)
    thresholds = next(line.split()[1:] for line in table if line.startswith("threshold"))
    recall = next(line.split()[1:] for line in table if line.startswith("$Recall_{p,gt}$"))
    assert [float(t) for t in thresholds] == list(QGNET_PRIOR_RECALL.thresholds)
    assert [float(r.rstrip("%")) for r in recall] == list(QGNET_PRIOR_RECALL.recall)
    assert "fold-0" in " ".join(table[:3]) and "PASCAL" in " ".join(table[:3])
