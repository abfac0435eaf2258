"""fsslib.viz's block diagram: every box drawn once, its kinds in the legend, bad input named."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from fsslib.viz import plot_diagram  # noqa: E402


def test_a_diagram_draws_each_box_and_names_its_kinds():
    figure = plot_diagram({"image": (0.1, 0.5, "input"), "CLIP": (0.5, 0.5, "frozen"), "mask": (0.9, 0.5, "output")},
                          [("image", "CLIP"), ("CLIP", "mask", "tokens")], title="MaskCLIP")
    (ax,) = figure.axes
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("image") == texts.count("CLIP") == texts.count("mask") == 1 and "tokens" in texts
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["input", "frozen", "output"]
    plt.close(figure)


def test_a_diagram_names_what_is_wrong():
    with pytest.raises(ValueError, match="unknown box kinds"):
        plot_diagram({"a": (0.1, 0.1, "learned")}, [])
    with pytest.raises(ValueError, match=r"not drawn: \['b'\]"):
        plot_diagram({"a": (0.1, 0.1, "input")}, [("a", "b")])
