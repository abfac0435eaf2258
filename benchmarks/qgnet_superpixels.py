"""Are QGNet's toy patches objects? The two measurements that choose the superpixel settings (toy tier).

    python benchmarks/qgnet_superpixels.py [--scenes 500]  ->  benchmarks/results/qgnet_superpixels_toy.md

QGNet's local loss contrasts patches of objects ("computer patches and keyboard patches"). For each
candidate setting of SLIC and of Felzenszwalb's segmentation, on held-out toy scenes (the prior
extractors' acceptance stream):

* **patch object share**: the share of sampled patches that are at least half object, the patches
  sampled as pretraining samples them (uniformly among an image's segments of at least
  ``min_patch_area`` = 24 pixels, its largest when none is): the mean over images of the share of
  eligible segments whose labelled pixels are at least half object;
* **pure object pixels**: the share of object pixels that lie in segments at least 90% one class.

Pixels labelled 255 (object borders) count in neither (:func:`fsslib.pretrain.qgnet_prior.patches.patch_object_share`).
The settings of the first toy prior extractors and the chosen ones (``TOY_SUPERPIXELS``) are marked.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tqdm.auto import tqdm

from fsslib.data.layout import IGNORE
from fsslib.pretrain.qgnet_prior.patches import TOY_SUPERPIXELS, patch_object_share
from fsslib.pretrain.qgnet_prior.train import PriorSettings
from fsslib.pretrain.scenes import Scenes, render_scenes
from fsslib.pretrain.toy_resnet.model import N_CLASSES

RESULTS = Path(__file__).resolve().parent / "results"
HELD_OUT_SEED, HELD_OUT_STREAM = 0, 93  # the prior extractors' acceptance scenes
FIRST_SETTINGS = {"slic": {"n_segments": 16, "compactness": 10.0}, "felzenszwalb": {"scale": 100.0, "sigma": 0.5, "min_size": 30}}
CANDIDATES = {
    "slic": [{"n_segments": n, "compactness": c} for n in (16, 32, 64, 96, 128) for c in (0.1, 0.3, 1.0, 3.0, 10.0)],
    "felzenszwalb": [{"scale": s, "sigma": 0.5, "min_size": m} for s in (50.0, 100.0, 200.0, 400.0, 800.0)
                     for m in (10, 20, 30)],
}
SLIC_CEILING = [{"n_segments": n, "compactness": c} for n in (192, 256, 384) for c in (0.3, 1.0)]  # not candidates


def table(scenes: Scenes, method: str, candidates: list[dict], min_area: int) -> list[str]:
    """The Markdown table of the two measurements for every setting of ``method`` in ``candidates``."""
    lines = ["| setting | segments per image | sampled patches at least half object "
             "| object pixels in segments at least 90% one class |", "|---|---|---|---|"]
    for settings in tqdm(candidates, desc=method):
        measured = patch_object_share(scenes.images, scenes.masks, method, settings, min_area, N_CLASSES)
        marks = [mark for mark, chosen in (("*first extractors*", settings == FIRST_SETTINGS[method]),
                                           ("**chosen**", settings == TOY_SUPERPIXELS[method])) if chosen]
        described = ", ".join(f"{k} {v}" for k, v in settings.items())
        lines.append(f"| {' '.join([described, *marks])} | {measured['segments_per_image']:.1f} | "
                     f"{measured['patch_object_share']:.3f} ± {measured['patch_object_share_se']:.3f} | "
                     f"{measured['pure_object_pixels']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=500)
    args = parser.parse_args()
    scenes = render_scenes(args.scenes, HELD_OUT_SEED, HELD_OUT_STREAM)
    min_area = PriorSettings().min_patch_area
    lines = ["# QGNet's toy patches: how much of them is object (toy tier)", "",
             f"Written by `python benchmarks/qgnet_superpixels.py --scenes {args.scenes}`: {args.scenes} held-out toy "
             f"scenes (seed {HELD_OUT_SEED}, stream {HELD_OUT_STREAM}); patches sampled among segments of at least "
             f"{min_area} pixels, as pretraining samples them. *first extractors*: the setting of the first toy prior "
             "extractors; **chosen**: `TOY_SUPERPIXELS`, the largest patch object share, where shares within two "
             "standard errors (over the images, after ±) count as tied, the purer segments among them.", ""]
    for method, candidates in CANDIDATES.items():
        lines += [f"## {method}", "", *table(scenes, method, candidates, min_area), ""]
    labelled = scenes.masks != IGNORE
    object_pixels = float(((scenes.masks > 0) & labelled).sum() / labelled.sum())
    lines += ["## slic beyond the candidates", "",
              "Not candidates: more segments than the grid above, to see whether SLIC can reach half of its sampled "
              f"patches mostly object. Objects cover {object_pixels:.3f} of the labelled pixels of these scenes.", "",
              *table(scenes, "slic", SLIC_CEILING, min_area), ""]
    out = RESULTS / "qgnet_superpixels_toy.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
