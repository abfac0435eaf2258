"""fsslib.viz's block diagram: every box drawn once, its kinds in the legend, bad input named."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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


def test_the_toy_numbers_stand_beside_the_papers_with_their_values_written():
    from fsslib.viz import COLUMN_INCHES, plot_toy_beside_paper

    rows = [{"method": "pfenet", "toy": 63.4, "paper": 60.8}, {"method": "maskclip", "toy": 44.3, "paper": None},
            {"method": "clip-dinoiser-support", "toy": 22.1, "paper": 4.83, "mark": "*"}]
    figure = plot_toy_beside_paper(rows, "toy tier", "PASCAL-5i", title="1-way 1-shot")
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.texts] == ["63.4", "44.3", "22.1", "60.8", "4.8*"]
    heights = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks()))
    assert heights["pfenet"] > heights["maskclip"] > heights["clip-dinoiser-support"]  # the first row on top
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["toy tier", "PASCAL-5i"]
    assert figure.get_size_inches()[0] <= COLUMN_INCHES
    plt.close(figure)


def test_maps_share_a_colour_scale_when_given_limits():
    import torch

    from fsslib.viz import plot_maps

    image, mask = torch.rand(3, 16, 16), torch.zeros(16, 16, dtype=torch.long)
    maps = {"low": torch.linspace(0.1, 0.3, 16).view(4, 4), "high": torch.linspace(0.5, 0.9, 16).view(4, 4)}
    for limits, expected in ((None, [(0.1, 0.3), (0.5, 0.9)]), ((0.0, 1.0), [(0.0, 1.0), (0.0, 1.0)])):
        figure = plot_maps(image, maps, mask, title="two maps", class_names=["a"], limits=limits)
        ranges = [panel.get_images()[0].get_clim() for panel in figure.axes if panel.get_title() in maps]
        assert [tuple(round(v, 4) for v in clim) for clim in ranges] == expected
        plt.close(figure)
    figure = plot_maps(image, {"prior": torch.linspace(0, 0.99987, 16).view(4, 4)}, mask, title="t", class_names=["a"])
    figure.canvas.draw()
    colorbar = next(ax for ax in figure.axes if ax.get_label() == "<colorbar>")
    assert [t.get_text() for t in colorbar.get_yticklabels()] == ["0", "1"]  # not 0.0000 and 0.9999
    plt.close(figure)
    support = plot_maps(image, {}, mask, title="t", class_names=["a"], outlined="support mask")
    assert support.axes[0].get_title() == "image, support mask outlined"  # a support's mask is not a ground truth
    plt.close(support)
    tinted = plot_maps(image, {"score": maps["low"]}, mask, title="t", class_names=["a"],
                       labels={"prediction": torch.ones(4, 4, dtype=torch.long)})
    # a tinted panel names its outline (a tint and an outline of one colour are told apart); a score map does not
    assert [ax.get_title() for ax in tinted.axes if ax.images] == ["image, truth outlined", "score",
                                                                   "prediction\ntruth outlined"]
    plt.close(tinted)


def _two_way_episode(query_label):
    import torch

    from fsslib.data.episodes import Episode

    mask = query_label.clone()
    support_masks = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    support_masks[..., 2:6, 2:6] = 1  # each support's object: a square inside the image
    return Episode(support_images=torch.rand(2, 1, 3, 8, 8), support_masks=support_masks,
                   query_image=torch.rand(3, 8, 8), query_mask=mask, query_label=query_label,
                   class_ids=(1, 2), class_names=("solid circle", "striped square"))


def test_a_two_way_title_says_which_class_the_query_lacks():
    import torch

    from fsslib.viz import absent_ways, plot_episode, plot_side_by_side

    label = torch.zeros(8, 8, dtype=torch.long)
    label[:2, :2] = 1  # way 1 only
    episode = _two_way_episode(label)
    assert absent_ways(episode) == " · not in the query: 'striped square'"
    for figure in (plot_episode(episode), plot_side_by_side(episode, {"m": label}, {"m": "image + mask"})):
        assert "not in the query: 'striped square'" in figure._suptitle.get_text()
        plt.close(figure)
    label[4:, 4:] = 2
    assert absent_ways(_two_way_episode(label)) == ""


def test_supports_whose_masks_the_method_does_not_read_are_drawn_without_them():
    import torch

    from fsslib.viz import plot_episode

    label = torch.zeros(8, 8, dtype=torch.long)
    label[:2, :2] = 1
    episode = _two_way_episode(label)
    read, unread = plot_episode(episode), plot_episode(episode, support_mode="images (no masks)", masks_read=False)
    support_read, support_unread = read.axes[0].images[0].get_array(), unread.axes[0].images[0].get_array()
    assert np.allclose(support_read, support_unread)  # the support image itself, in its colours, on both
    assert len(read.axes[0].collections) == 2 and not unread.axes[0].collections  # the mask's outline is gone
    assert "(mask not read)" in unread.axes[0].get_title() and "(mask not read)" not in read.axes[0].get_title()
    plt.close(read)
    plt.close(unread)


def test_a_panel_s_iou_is_the_query_s_own():
    import torch

    from fsslib.viz import episode_iou

    truth = torch.zeros(4, 4, dtype=torch.long)
    truth[:2] = 1  # 8 pixels of way 1
    truth[3, 3] = 255
    prediction = torch.zeros(4, 4, dtype=torch.long)
    prediction[:1] = 1  # 4 of them, nothing else
    prediction[3, 3] = 1  # ignored
    assert episode_iou(prediction, truth, 1) == 50.0
    prediction[2, :2] = 2  # a way-2 prediction where no way-2 pixel is: IoU 0 for way 2
    assert episode_iou(prediction, truth, 2) == 25.0
    assert episode_iou(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long), 1) == 100.0


def test_a_learning_curve_legend_is_not_the_smallest_text():
    from fsslib.viz import plot_learning_curves

    history = [{"epoch": e, "val_miou": 10.0 + e} for e in range(4)]
    figure = plot_learning_curves({"live run": history, "zoo model": history}, title="t")
    assert min(t.get_fontsize() for t in figure.legends[0].get_texts()) >= 9
    plt.close(figure)


def test_per_class_bars_title_each_run_s_miou():
    from fsslib.viz import plot_per_class

    run = {"method": "maskclip", "fold": 0, "ways": 1, "shots": 5, "miou": 45.61,
           "per_class_iou": {"a": 40.0, "b": 51.2}}
    reference = {"method": "all-foreground", "ways": 1, "shots": 5, "miou": 9.2, "per_class_iou": {"a": 8.0, "b": 10.4}}
    other = {**reference, "method": "2-way 1-shot", "ways": 2, "shots": 1}
    figures = plot_per_class(run), plot_per_class(run, reference), plot_per_class(run, other)
    assert [figure.axes[0].get_title() for figure in figures] == [
        "fold 0, 1-way 5-shot: mIoU 45.6", "fold 0, 1-way 5-shot: mIoU maskclip 45.6, all-foreground 9.2",
        "fold 0: mIoU maskclip 45.6, 2-way 1-shot 9.2"]  # settings that differ are the runs' names
    for figure in figures:
        plt.close(figure)


def test_part_prototypes_name_their_class_and_each_part_s_colour():
    import torch

    from fsslib.viz import plot_part_prototypes

    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, 2:6] = True
    assignment = torch.full((8, 8), -1)
    assignment[2:6, 2:4], assignment[2:6, 4:6] = 0, 2  # parts 1 and 3
    seeds = torch.tensor([[3.0, 2.0], [3.0, 5.0]])
    figure = plot_part_prototypes(torch.rand(3, 32, 32), mask, seeds, seeds + 0.5, assignment,
                                  class_name="striped star")
    support, _, parts = figure.axes
    assert support.get_title() == "support: striped star"
    assert [t.get_text() for t in parts.get_legend().get_texts()] == ["part 1", "part 2 (empty)", "part 3"]
    assert parts.images[0].get_extent() == figure.axes[1].images[0].get_extent()  # the parts on the mask's grid
    seed_markers = [line for line in figure.axes[1].lines if line.get_marker() == "o"]
    tab10 = plt.get_cmap("tab10")
    assert [line.get_markeredgecolor() for line in seed_markers] == [tab10(0), tab10(1)]  # seed i: part i's colour
    plt.close(figure)


def test_a_tint_reads_on_an_object_of_its_own_colour():
    """Way 1's red over a red object: the tint shows because the image under it is drawn in grey levels."""
    import torch

    from fsslib.viz import WAY_COLOURS, overlay

    image = torch.tensor(WAY_COLOURS[0]).view(3, 1, 1).expand(3, 8, 8)  # every pixel in way 1's red
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:, :4] = 1
    tinted = overlay(image, mask)
    assert np.abs(tinted[:, :4] - tinted[:, 4:]).max() > 0.2  # tinted and untinted halves differ (0 over colour)
    assert np.allclose(tinted[:, 4:], tinted[:, 4:, :1])  # outside the mask: grey, red = green = blue
    in_colour = overlay(image, mask, alpha=0.0, grey=False)
    assert np.allclose(in_colour, image.permute(1, 2, 0).numpy())  # no tint, in colour: the image itself


def test_a_support_mask_is_outlined_in_its_way_s_colour():
    import torch
    from matplotlib.colors import to_rgba

    from fsslib.viz import WAY_COLOURS, plot_episode

    label = torch.zeros(8, 8, dtype=torch.long)
    label[:2, :2] = 1
    figure = plot_episode(_two_way_episode(label))
    second_way_support = figure.axes[2]  # row 2 (way 2), column 1: 1 shot and the query per row
    assert [tuple(c.get_edgecolor()[0]) for c in second_way_support.collections] == [
        to_rgba("white"), to_rgba(WAY_COLOURS[1])]
    plt.close(figure)


def test_the_legend_names_the_untinted_background_only_where_a_panel_is_tinted():
    import torch

    from fsslib.viz import plot_episode

    label = torch.zeros(8, 8, dtype=torch.long)
    label[:2, :2] = 1
    episode = _two_way_episode(label)
    for prediction, entries in ((None, ["solid circle", "striped square"]),
                                (label, ["background (no tint)", "solid circle", "striped square"])):
        figure = plot_episode(episode, prediction)
        assert [text.get_text() for text in figure.legends[0].get_texts()] == entries
        fills = [patch.get_facecolor()[3] for patch in figure.legends[0].get_patches()[-2:]]
        assert fills == ([0.0, 0.0] if prediction is None else [0.5, 0.5])  # a class's swatch: outline, or tint too
        plt.close(figure)


def test_the_truth_outline_has_a_white_edge_under_the_way_s_colour():
    """A tinted prediction in the way's red and the truth's red outline stay apart: the outline lies on white."""
    import torch
    from matplotlib.colors import to_rgba

    from fsslib.viz import WAY_COLOURS, outline

    mask = torch.zeros(16, 16, dtype=torch.long)
    mask[4:12, 4:12] = 1
    figure, ax = plt.subplots()
    outline(ax, mask, ways=1)
    colours = [tuple(contour.get_edgecolor()[0]) for contour in ax.collections]
    assert colours == [to_rgba("white"), to_rgba(WAY_COLOURS[0])]  # drawn in this order: the colour on top
    plt.close(figure)


def test_a_marked_patch_is_boxed_on_its_cell_of_every_chosen_panel():
    import torch

    from fsslib.viz import mark_patch, plot_maps

    image, mask = torch.rand(3, 64, 64), torch.zeros(64, 64, dtype=torch.long)
    figure = plot_maps(image, {"a": torch.rand(8, 8), "b": torch.rand(8, 8)}, mask, title="t", class_names=["x"])
    mark_patch(figure, 10, (8, 8), panels=["a"])  # row 1, column 2 of the 8 x 8 tokens: 8 pixels each
    boxed = [ax for ax in figure.axes if ax.patches]
    assert [ax.get_title() for ax in boxed] == ["a"]
    assert [(p.get_xy(), p.get_width(), p.get_height()) for p in boxed[0].patches] == [((15.5, 7.5), 8.0, 8.0)] * 2
    plt.close(figure)


def test_side_by_side_supports_are_drawn_without_a_mask_no_method_reads():
    import torch

    from fsslib.viz import plot_side_by_side

    label = torch.zeros(8, 8, dtype=torch.long)
    label[:2, :2] = 1
    episode = _two_way_episode(label)
    figure = plot_side_by_side(episode, {"m": label}, {"m": "class names"}, masks_read=False)
    assert [ax.get_title() for ax in figure.axes[:2]] == ["support: solid circle\nmask not read",
                                                          "support: striped square\nmask not read"]
    assert not figure.axes[0].collections and not figure.axes[1].collections
    plt.close(figure)


def test_a_bootstrap_figure_marks_its_interval_the_measured_difference_and_zero():
    import torch

    from fsslib.viz import plot_bootstrap, signed

    assert [signed(x) for x in (-0.04, 0.04, -1.0, 2.5, -0.06)] == ["+0.0", "+0.0", "-1.0", "+2.5", "-0.1"]
    figure = plot_bootstrap(torch.linspace(1.0, 5.0, 200), (-0.04, 4.5), 3.0, "b - a")
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [  # a bound rounding to zero prints +0.0
        "200 resamples", "95% interval [+0.0, +4.5]", "measured +3.0", "no difference"]
    assert sorted(line.get_xdata()[0] for line in ax.get_lines()) == [0, 3.0]
    assert sum(bar.get_height() for bar in ax.containers[0]) == 200  # the histogram counts every resample
    plt.close(figure)
