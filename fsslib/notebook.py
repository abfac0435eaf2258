"""Small helpers that keep the notebooks thin."""
from __future__ import annotations

import os
import platform
from typing import Callable

import torch

from fsslib.data.episodes import Episode, EpisodeDataset, collate_episodes
from fsslib.device import resolve_device
from fsslib.methods.base import FewShotSegmenter
from fsslib.paths import data_root, weights_root

SMOKE_VARIABLE = "FSSLIB_SMOKE"


def smoke_requested() -> bool:
    """True when ``FSSLIB_SMOKE=1``: the tests run every notebook with tiny settings."""
    return os.environ.get(SMOKE_VARIABLE, "").lower() in ("1", "true", "yes")


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
        "data root (FSSLIB_DATA)": str(data_root()),
        "weights root (FSSLIB_WEIGHTS)": str(weights_root()),
    }


@torch.no_grad()
def predict_episode(model: FewShotSegmenter, episode: Episode, device: str = "auto") -> torch.Tensor:
    """The (H, W) prediction of ``model`` for one episode, at the model's input size."""
    chosen = resolve_device(device)
    model = model.to(chosen).eval()
    return model(collate_episodes([episode]).to(chosen))[0].argmax(0).cpu()


def episode_browser(dataset: EpisodeDataset, draw: Callable[[Episode], object]):
    """An ipywidgets slider over episode indices that calls ``draw(episode)`` (pair it with a plain call)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def show(index: int) -> None:
        draw(dataset[index])
        plt.show()

    return widgets.interactive(show, index=widgets.IntSlider(0, 0, len(dataset) - 1, description="episode"))
