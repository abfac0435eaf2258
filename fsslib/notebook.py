"""Small helpers that keep the notebooks thin.

Widgets: every notebook widget is built by :func:`interactive_figure`. It draws each figure to a PNG
and sets it as the state of an ``ipywidgets.Output``, instead of capturing ``plt.show()`` inside the
Output widget (``with out:``, as ``ipywidgets.interactive`` does). Captured output makes headless
clients hang: nbclient (under papermill and ``nbconvert --execute``) mimics the Output widget and
answers each captured output with a ``comm_msg`` on the kernel's shell socket while it polls that
socket for the cell's ``execute_reply``; with a figure's payload the reply's wake-up can be lost, and
the client waits until its cell timeout (forever by default). Measured on a one-cell notebook: the
cell waited the full 30 s timeout in 5 of 5 runs, and ended in 2.5-3.6 s in 3 of 3 runs with the
mimic's send disabled. A widget whose output is set, not captured, sends nothing back.
"""
from __future__ import annotations

import base64
import io
import os
import platform
import sys
import traceback
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from matplotlib.figure import Figure

from fsslib.data.episodes import Episode, EpisodeDataset, collate_episodes
from fsslib.device import resolve_device
from fsslib.errors import FsslibError, short_warning
from fsslib.methods.base import FewShotSegmenter
from fsslib.paths import data_root, outputs_root, shown_path, weights_root

if TYPE_CHECKING:
    import ipywidgets

SMOKE_VARIABLE = "FSSLIB_SMOKE"


def smoke_requested() -> bool:
    """True when ``FSSLIB_SMOKE=1``: the tests run every notebook with tiny settings."""
    return os.environ.get(SMOKE_VARIABLE, "").lower() in ("1", "true", "yes")


TOY_THREADS = 1  # torch CPU threads for the lessons' toy models: 02's live training took 6.9 s at 1, 13.7 s at 2
_threads_set = False


def setup(device: str = "auto", threads: int = TOY_THREADS) -> torch.device:
    """The first call of every lesson: sets torch's CPU thread count, once, to ``threads`` (1 by default: the
    toy models' tensors are small, and a second thread costs more in synchronisation than it saves), prints
    one line saying so, and returns the device the lesson runs on (:func:`fsslib.device.resolve_device`).
    fsslib's warnings print as their message (:func:`fsslib.errors.short_warning`).

    Later calls leave the thread count alone (``torch.set_num_threads`` in a cell still changes it)."""
    global _threads_set
    warnings.formatwarning = short_warning
    if not _threads_set:
        torch.set_num_threads(threads)
        _threads_set = True
    chosen = resolve_device(device)
    print(f"fsslib: device {chosen}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s) "
          f"(set to {threads} once: the fastest for the toy models)")
    return chosen


def environment_report(device: str = "auto") -> dict[str, str]:
    """Versions, device and data locations, for notebook 00."""
    import matplotlib
    import numpy
    import open_clip
    import torchvision

    chosen = resolve_device(device)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "open_clip": open_clip.__version__,
        "numpy": numpy.__version__,
        "matplotlib": matplotlib.__version__,
        "device": str(chosen) + (f" ({torch.cuda.get_device_name(chosen)})" if chosen.type == "cuda" else ""),
        "cpu threads": str(torch.get_num_threads()),
        "data root (FSSLIB_DATA)": shown_path(data_root()),
        "weights root (FSSLIB_WEIGHTS)": shown_path(weights_root()),
    }


@torch.no_grad()
def predict_episode(model: FewShotSegmenter, episode: Episode, device: str = "auto") -> torch.Tensor:
    """The (H, W) prediction of ``model`` for one episode, at the model's input size."""
    chosen = resolve_device(device)
    model = model.to(chosen).eval()
    return model(collate_episodes([episode]).inputs(model.reads_image_labels).to(chosen))[0].argmax(0).cpu()


def output_dir(name: str) -> Path:
    """A notebook's output folder ``<outputs root>/name`` (see :func:`fsslib.paths.outputs_root`), so
    that a notebook writes to the same ignored place whatever the working directory."""
    return outputs_root() / name


def _figure_output(figure: Figure, caption: str = "") -> dict:
    """An nbformat ``display_data`` output holding the figure as a PNG, with ``caption`` written above it
    when given (the figure keeps the caption: save the copy without it first)."""
    if caption:
        figure.text(0.0, 1.01, caption, ha="left", va="bottom", fontsize=8, style="italic", color="0.35")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buffer.getvalue()).decode("ascii"), "text/plain": repr(figure)}}


def _error_output(settings: str) -> dict:
    """The current exception as a ``stream`` output, shown in place of the figure: one line for an
    :class:`~fsslib.errors.FsslibError` (a value the user can change, e.g. a name the toy text tower
    cannot encode), the traceback for anything else (a bug)."""
    error = sys.exc_info()[1]
    if isinstance(error, FsslibError):
        text = f"cannot draw {settings}: {error.problem} How to fix: {error.fix}".replace("\n", " ") + "\n"
    else:
        text = traceback.format_exc()
    return {"output_type": "stream", "name": "stderr", "text": text}


def _in_notebook_kernel() -> bool:
    """True inside an IPython kernel, where ``display`` reaches the cell's outputs (not in a plain
    interpreter or a test)."""
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.initialized() and type(InteractiveShell.instance()).__name__ == "ZMQInteractiveShell"


def interactive_figure(draw: Callable[..., Figure], **controls: ipywidgets.ValueWidget) -> ipywidgets.VBox:
    """A widget that redraws ``draw(**values)`` whenever one of the named ``controls`` (ipywidgets, e.g.
    ``episode=IntSlider(0, 0, 99)``) changes: the controls above an Output showing the figure, the one
    call a lesson needs.

    ``draw`` returns a matplotlib figure (every ``fsslib.viz`` function does). The first figure is drawn
    now, so a mistake in ``draw`` fails the cell; in a notebook it is also shown before the widget as a
    plain figure captioned "static figure: <settings>", which is what a page without a kernel (a
    repository browser, a reopened notebook) and a headless run show. While the widget runs in
    JupyterLab, a style it carries hides that static copy, so the learner sees one figure, the one
    that responds. Text boxes redraw on Enter (or leaving the box), not on every keystroke; a
    redraw that raises an :class:`~fsslib.errors.FsslibError` (e.g. a name the toy text tower cannot
    encode) shows its one-line message in place of the figure, another error its traceback; a line
    above the figure says when a redraw is running (loading models can take seconds). Headless
    clients (papermill, ``nbconvert --execute``) run it without hanging: see the module docstring.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    if not controls:
        raise TypeError("interactive_figure needs at least one control, e.g. episode=ipywidgets.IntSlider(0, 0, 9)")
    for name, control in controls.items():
        if not isinstance(control, widgets.ValueWidget):
            raise TypeError(f"control {name!r} is a {type(control).__name__}, not an ipywidgets value widget "
                            "(e.g. IntSlider, Text, Dropdown)")
        control.description = control.description or name
        style = getattr(control, "style", None)
        if style is not None and "description_width" in style.keys and not style.description_width:
            style.description_width = "initial"  # the whole description, not "compactn..."
        if isinstance(control, (widgets.Text, widgets.Textarea)):
            control.continuous_update = False  # redraw on Enter, not on each partial word
    output = widgets.Output()
    busy = widgets.Label(layout=widgets.Layout(display="none"))  # shown while a redraw runs

    def settings() -> str:
        return ", ".join(f"{name}={control.value!r}" for name, control in controls.items())

    def outputs_of_values(static_caption: str = "") -> list[dict]:
        """The figure's output, and its captioned static copy when ``static_caption`` is given; the figure
        is closed, so the inline backend does not draw it a second time."""
        figure = draw(**{name: control.value for name, control in controls.items()})
        if not isinstance(figure, Figure):
            raise TypeError(f"draw must return a matplotlib Figure, got {type(figure).__name__}: "
                            "return the figure a fsslib.viz function makes")
        try:
            return [_figure_output(figure)] + ([_figure_output(figure, static_caption)] if static_caption else [])
        finally:
            plt.close(figure)

    def redraw(change: dict | None = None) -> None:
        busy.value, busy.layout.display = f"loading and drawing {settings()} ...", None
        try:
            output.outputs = tuple(outputs_of_values())
        except Exception:  # shown to the user in place of the figure; the first draw raises instead
            output.outputs = (_error_output(settings()),)
        finally:
            busy.layout.display = "none"

    shown, *static = outputs_of_values(f"static figure: {settings()} (with a running kernel, the widget below "
                                       "redraws it)" if _in_notebook_kernel() else "")
    output.outputs = (shown,)
    if static:
        display(static[0]["data"], raw=True)
    for control in controls.values():
        control.observe(redraw, names="value")
    box_class = f"fsslib-widget-{uuid.uuid4().hex}"
    hide_static = widgets.HTML(f"<style>.jp-OutputArea-child:has(+ .jp-OutputArea-child .{box_class}) "
                               "{display: none;}</style>", layout=widgets.Layout(display="none"))
    box = widgets.VBox([*controls.values(), hide_static, busy, output])
    box.add_class(box_class)
    return box


def episode_browser(dataset: EpisodeDataset, draw: Callable[[Episode], Figure]) -> ipywidgets.VBox:
    """A slider over the dataset's episode indices that shows ``draw(episode)`` (see :func:`interactive_figure`)."""
    import ipywidgets as widgets

    return interactive_figure(lambda episode: draw(dataset[episode]),
                              episode=widgets.IntSlider(0, 0, len(dataset) - 1))
