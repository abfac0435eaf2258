"""The figures of lesson 06 (QGNet): each draws what its docstring says, within a notebook column."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fsslib.pretrain.losses import info_nce  # noqa: E402
from fsslib.viz import (COLUMN_INCHES, plot_contrastive_logits, plot_diagram, plot_pretraining_losses,  # noqa: E402
                        plot_region_recall, plot_superpixels, plot_toy_and_paper)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def width(figure) -> float:
    return figure.get_size_inches()[0]


def test_the_contrastive_figure_writes_each_rows_info_nce_and_chance():
    generator = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(4, 8, generator=generator), dim=1)
    keys = F.normalize(torch.randn(4, 8, generator=generator), dim=1)
    queue = F.normalize(torch.randn(8, 16, generator=generator), dim=0)
    positive, negatives = (queries * keys).sum(1), queries @ queue
    figure = plot_contrastive_logits(positive, negatives, 0.2, "global loss", item="scene", queue_symbol="K")
    (ax,) = figure.axes
    written = [float(t.get_text().split()[-1]) for t in ax.texts if t.get_text().startswith("loss ")]
    each = [float(info_nce(queries[i:i + 1], keys[i:i + 1], queue, 0.2)) for i in range(4)]
    assert written == pytest.approx(each, abs=0.006)
    assert f"{math.log(17):.2f}" in ax.get_title() and f"{sum(each) / 4:.2f}" in ax.get_title()
    assert "chance log(1 + K)" in ax.get_title() and "(K = 16)" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"scene {i}" for i in range(4)]
    assert width(figure) <= COLUMN_INCHES


def test_the_pretraining_losses_draw_each_loss_its_chance_and_the_full_queue():
    figure = plot_pretraining_losses({"global": [1.0, 2.0, 3.0], "local": [1.5, 2.5, 3.5]}, {"global": 4.0, "local": 4.0},
                                     queue_full=2, title="steps")
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels[:4] == ["global", "chance, global", "local", "chance, local"] and "from here" in labels[-1]
    assert width(figure) <= COLUMN_INCHES
    shared = plot_pretraining_losses({"global": [1.0], "local": [1.5]}, 4.0)  # queues of one size: one line
    labels = [t.get_text() for t in shared.axes[0].get_legend().get_texts()]
    assert labels == ["chance, log(1 + queue size), every loss", "global", "local"]


def test_the_region_recall_figure_draws_recall_and_background_per_map():
    summary = {"thresholds": [0.1, 0.5, 0.9], "recall": [99.0, 80.0, 10.0], "background_share": [90.0, 30.0, 2.0]}
    figure = plot_region_recall({"guided region map": summary, "prior region map": summary}, title="t")
    ax = figure.axes[0]
    assert len(ax.lines) == 4 and list(ax.lines[0].get_ydata()) == summary["recall"]
    assert list(ax.lines[1].get_ydata()) == summary["background_share"]
    assert width(figure) <= COLUMN_INCHES
    paper = plot_region_recall({"prior region map": summary}, reported={"paper": ([0.1, 0.9], [99.9, 6.6])})
    assert list(paper.axes[0].lines[-1].get_ydata()) == [99.9, 6.6]
    assert paper.axes[0].get_legend().get_texts()[-1].get_text() == "paper"


def test_toy_and_paper_are_two_panels_with_every_value_on_its_bar():
    toy = {"PFENet": {"1-shot": 63.4, "5-shot": 65.4}, "QGNet": {"1-shot": 63.3, "5-shot": 65.1}}
    paper = {"PFENet": {"1-shot": 60.8, "5-shot": 61.9}, "QGNet": {"1-shot": 61.6, "5-shot": 62.8}}
    figure = plot_toy_and_paper(toy, paper, "toy tier", "PASCAL-5i")
    left, right = figure.axes
    assert left.get_title() == "toy tier" and right.get_title() == "PASCAL-5i"
    assert sorted(t.get_text() for t in left.texts) == sorted(f"{v:.1f}" for m in toy.values() for v in m.values())
    assert sorted(t.get_text() for t in right.texts) == sorted(f"{v:.1f}" for m in paper.values() for v in m.values())
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["PFENet", "QGNet"]
    assert width(figure) <= COLUMN_INCHES


def test_superpixels_take_a_title():
    figure = plot_superpixels(torch.rand(3, 3, 16, 16), {"SLIC": torch.zeros(3, 16, 16, dtype=torch.long)},
                              title="SLIC, K = 128")
    assert figure._suptitle.get_text() == "SLIC, K = 128"


def test_superpixel_boundaries_are_white_in_a_black_outline_on_the_enlarged_image():
    """On a yellow image (a yellow toy object) the boundary between two segments still shows: white, outlined."""
    from fsslib.viz import SUPERPIXEL_ZOOM

    yellow = torch.tensor([1.0, 1.0, 0.0])[None, :, None, None].expand(1, 3, 16, 16)
    halves = torch.zeros(1, 16, 16, dtype=torch.long)
    halves[:, :, 8:] = 1
    drawn = plot_superpixels(yellow, {"SLIC": halves}).axes[0].images[0].get_array()
    assert drawn.shape[:2] == (16 * SUPERPIXEL_ZOOM, 16 * SUPERPIXEL_ZOOM)
    colours = {tuple(np.round(pixel, 3)) for pixel in np.asarray(drawn).reshape(-1, 3)}
    assert colours == {(1.0, 1.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)}


def test_diagram_arrows_end_at_the_boxes_outlines():
    """Each arrow is clipped to its two boxes (and drawn over them), so its head shows whatever a box's width."""
    figure = plot_diagram({"a wide box with a long label": (0.2, 0.5, "input"), "b": (0.8, 0.5, "output")},
                          [("a wide box with a long label", "b")])
    ax = figure.axes[0]
    boxes = {t.get_text(): t for t in ax.texts}
    (arrow,) = [a for a in ax.texts if a.get_text() == "" and getattr(a, "arrow_patch", None) is not None]
    assert arrow.arrow_patch.patchA is boxes["a wide box with a long label"].get_bbox_patch()
    assert arrow.arrow_patch.patchB is boxes["b"].get_bbox_patch()
    assert arrow.get_zorder() > boxes["b"].get_zorder()
