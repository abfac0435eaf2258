"""The lessons' paragraphs on trained models say what the lessons print and the results they read.

A paragraph that describes a trained model (where a map peaks, which stratum gains) is typed prose, and a
retrained model can leave it stale. Each test here finds its paragraph by a phrase, then checks the paragraph's
claims on the lesson's committed outputs (nbval keeps them equal to what the code prints) or on the committed
results the lesson reads. Rewriting the paragraph or retraining the model fails the test until both agree again
(files only: a fraction of a second)."""
from __future__ import annotations

import json
import re
from functools import cache

import nbformat

from fsslib.compare import read_comparison
from fsslib.pretrain.base_learner.files import base_learner_path
from fsslib.tables import REPO
from fsslib.zoo import at_plateau, zoo_record

LESSONS = REPO / "notebooks"


@cache
def cells(lesson: str) -> list:
    """The committed cells of ``lesson``, read once."""
    return nbformat.read(LESSONS / lesson, as_version=4).cells


def paragraph(lesson: str, phrase: str) -> str:
    """The markdown cell of ``lesson`` that contains ``phrase`` (the claim a test checks)."""
    found = [cell.source for cell in cells(lesson)
             if cell.cell_type == "markdown" and phrase in " ".join(cell.source.split())]
    assert len(found) == 1, f"{lesson}: {len(found)} markdown cells say {phrase!r}; update this test with the paragraph"
    return found[0]


def printed(lesson: str, code: str) -> str:
    """What the code cell of ``lesson`` that contains ``code`` printed, as committed."""
    found = [cell for cell in cells(lesson) if cell.cell_type == "code" and code in cell.source]
    assert len(found) == 1, f"{lesson}: {len(found)} code cells hold {code!r}"
    return "".join(output.get("text", "") for output in found[0].outputs if output.get("name") == "stdout")


def means_on_regions(line: str) -> dict[str, float]:
    """The means of one map by region, as ``where_it_falls`` prints them: "target 'checkered star' 0.73 · ...",
    to {region: mean}."""
    return {quoted or plain: float(value)
            for quoted, plain, value in re.findall(r"(?:'([^']+)'|(background)) (-?[\d.]+)", line)}


def test_lesson_05_bam_paragraph_holds_on_episode_1():
    """Lesson 05, section 11: "The base learner marks the checkered circle ... and little of the star. The meta
    learner puts some foreground on the circle ... the circle's foreground goes, the star's stays ... the learned
    weights also rescale the meta learner's background ($c_1 \\neq 1$)"."""
    paragraph("05_piclip.ipynb", "The base learner marks the checkered circle, a class it was trained on")
    paragraph("05_piclip.ipynb", "The meta learner puts some foreground on the circle")
    paragraph("05_piclip.ipynb", "the circle's foreground goes, the star's stays")
    lines = printed("05_piclip.ipynb", "bam_maps = {").splitlines()
    base, meta, ensemble = (means_on_regions(next(line for line in lines if line.startswith(start)))
                            for start in ("base learner", "meta learner", "ensemble"))
    assert base["checkered circle"] > 0.5 > base["checkered star"]
    assert meta["checkered circle"] > meta["background"]
    assert ensemble["checkered circle"] < min(0.5, meta["checkered circle"]) and ensemble["checkered star"] > 0.5
    merges = re.search(r"c = \((-?[\d.]+), (-?[\d.]+)\)", printed("05_piclip.ipynb", "learned merges"))
    assert abs(float(merges[1]) - 1) > 0.05


def test_lesson_05_hdmnet_paragraph_holds_on_episode_35():
    """Lesson 05, section 11: "The coarsest map picks the quarter of the image that holds the cross. The finer maps
    keep that region high but peak at its top-left corner, on a token mostly beside the cross"."""
    paragraph("05_piclip.ipynb", "The coarsest map picks the quarter of the image that holds the cross")
    paragraph("05_piclip.ipynb", "peak at its top-left corner, on a token mostly beside the cross")
    said = printed("05_piclip.ipynb", "peaks at row")
    found = re.findall(r"(\w+) map \(\d+ x \d+\) peaks at row (\d+), column (\d+): a token (\d+)% on the cross, "
                       r"holding (\d+)% of its", said)
    peaks = {level: (int(row), int(column), float(on) / 100, float(held) / 100)
             for level, row, column, on, held in found}
    assert set(peaks) == {"coarsest", "middle", "finest"}
    assert peaks["coarsest"][3] > 0.5  # the quarter holds most of the cross
    for level in ("middle", "finest"):
        row, column, on_the_cross, _ = peaks[level]
        assert (row, column) == (0, 0) and on_the_cross < 0.5, level


def test_lesson_08_strata_paragraph_holds_on_the_committed_differences():
    """Lesson 08, section 4's reading of the strata: QGNet's and LFSS's gains do not rise steadily with the classes;
    PI-CLIP is lower with a fill distractor on all three baselines (intervals apart); with a shape distractor lower
    on PFENet, higher on BAM and HDMNet (intervals overlapping); LFSS higher with a fill distractor (apart), not
    clearly with a shape one; support images trail the text prompt with a distractor, by less (apart)."""
    said = paragraph("08_side_by_side.ipynb", "PI-CLIP is lower with a fill distractor than without on all three")
    assert "With a shape distractor it is lower on PFENet and higher on BAM and HDMNet" in " ".join(said.split())
    _, _, differences = read_comparison("compare_toy", REPO / "papermill_runs" / "results")
    by_key = {(row["method"], row["grouping"], row["stratum"]): row for row in differences}

    def distractor(pair: str, kind: str) -> tuple[float, float, bool]:
        """The difference with a ``kind`` distractor, without it, and whether their intervals are apart."""
        with_it, without = (by_key[(pair, f"{kind} distractor in the query", s)] for s in ("yes", "no"))
        apart = with_it["low"] > without["high"] or with_it["high"] < without["low"]
        return with_it["miou"], without["miou"], apart

    for pair in ("qgnet - pfenet", "lfss - pfenet"):
        gains = [by_key[(pair, "classes in the query", n)]["miou"] for n in ("1", "2", "3+")]
        assert not all(a < b for a, b in zip(gains, gains[1:])), pair
    shape_higher = {"piclip - pfenet": False, "piclip-bam - bam": True, "piclip-hdmnet - hdmnet": True}
    for pair, higher in shape_higher.items():
        yes, no, apart = distractor(pair, "fill")
        assert yes < no and apart, pair
        yes, no, apart = distractor(pair, "shape")
        assert (yes > no) == higher and not apart, pair
    yes, no, apart = distractor("lfss - pfenet", "fill")
    assert yes > no and apart
    assert not distractor("lfss - pfenet", "shape")[2]
    for kind in ("shape", "fill"):
        yes, no, apart = distractor("clip-dinoiser-support - clip-dinoiser", kind)
        assert no < yes < 0 and apart, kind


def test_lesson_08_budget_takeaway_holds_on_the_zoo_s_records():
    """Lesson 08's takeaway: "the four models are at their plateau, their shared base learner is not" (fold 0,
    1 shot, the zoo's records that section 3 prints)."""
    paragraph("08_side_by_side.ipynb", "the four models are at their plateau, their shared base learner is not")
    for method in ("bam", "piclip-bam", "hdmnet", "piclip-hdmnet"):
        assert at_plateau(zoo_record(method, 0, 1)), method
    base = json.loads(base_learner_path("toy", 0).with_suffix(".json").read_text())
    assert not base["budget"]["at_plateau"]
