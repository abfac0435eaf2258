"""Does QGNet's prior region map compare like with like? Channel correspondence under ``projection="none"`` (toy tier).

    python benchmarks/qgnet_channels.py [--scenes 300]  ->  benchmarks/results/qgnet_channels_toy.md

Eqs. 9-12 take the cosine between the query's bridge features (the frozen toy ResNet) and its prior
features (the frozen prior extractor) channel by channel, although the two networks were trained
separately and nothing makes their channel c mean the same thing (the official code puts a learned
3x3 convolution before the cosine: ``projection="official"``). Two measurements on held-out scenes
(the prior extractors' acceptance stream), for every shipped toy prior extractor:

* **correspondence**: the Pearson correlation over all layer4 positions between channel c of the
  bridge and channel c of the extractor (mean over c), beside the mean absolute correlation of any
  pair of channels and the mean over c of the best-correlated extractor channel;
* **permutation control**: the prior region map's share of object and of background pixels at 0.5
  (the acceptance metric) with the extractor's channels in their order and randomly permuted (two
  seeds). If the map compared corresponding channels, permuting them would destroy it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from fsslib.methods.qgnet import TOY_PRIORS, toy_prior_checkpoint
from fsslib.models.backbones import MultiLevelBackbone, load_toy_resnet
from fsslib.pretrain.qgnet_prior.metrics import HELD_OUT_SEED, HELD_OUT_STREAM, region_map_scores
from fsslib.pretrain.scenes import render_scenes, to_unit_tensor
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
PERMUTATION_SEEDS = (0, 1)


class ChannelPermuted(nn.Module):
    """A backbone whose layer4 channels come out in the order ``permutation``."""

    def __init__(self, backbone: MultiLevelBackbone, permutation: torch.Tensor):
        super().__init__()
        self.backbone, self.permutation = backbone, permutation

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        return {**features, "layer4": features["layer4"][:, self.permutation]}  # (B, C, h, w)


@torch.no_grad()
def channel_correlations(bridge: MultiLevelBackbone, extractor: MultiLevelBackbone, images: torch.Tensor) -> torch.Tensor:
    """(C, C) Pearson correlations over all layer4 positions of ``images``: bridge channel i against extractor channel j."""
    first, second = bridge.eval()(images)["layer4"], extractor.eval()(images)["layer4"]  # (N, C, h, w) each
    first, second = (f.permute(0, 2, 3, 1).flatten(0, 2) for f in (first, second))  # (N h w, C)
    first, second = ((f - f.mean(0)) / f.std(0).clamp(min=1e-6) for f in (first, second))
    return first.T @ second / (len(first) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=300)
    args = parser.parse_args()
    scenes = render_scenes(args.scenes, HELD_OUT_SEED, HELD_OUT_STREAM)
    images = to_unit_tensor(scenes.images)  # (N, 3, 64, 64)
    bridge = load_toy_resnet()
    lines = ["# Channel correspondence of QGNet's prior region map, `projection=\"none\"` (toy tier)", "",
             f"`python benchmarks/qgnet_channels.py --scenes {args.scenes}`: held-out scenes (seed {HELD_OUT_SEED}, "
             f"stream {HELD_OUT_STREAM}); bridge = the shipped toy ResNet; {run_provenance('cpu')}. Correlations over "
             "all layer4 positions; the prior region map's share of object / background pixels at 0.5 as the "
             "acceptance metric counts it.", "",
             "| prior extractor | matching channels: mean correlation | any pair: mean \\|correlation\\| | best "
             "extractor channel: mean \\|correlation\\| | map >= 0.5, channels in order: objects / background | "
             + " | ".join(f"channels permuted (seed {s}): objects / background" for s in PERMUTATION_SEEDS) + " |",
             "|---|---|---|---|---|" + "---|" * len(PERMUTATION_SEEDS)]
    for name in TOY_PRIORS:
        extractor = load_toy_resnet(toy_prior_checkpoint(name))
        correlations = channel_correlations(bridge, extractor, images)
        maps = [region_map_scores(bridge, extractor, scenes.images, scenes.masks)]
        channels = correlations.shape[1]
        maps += [region_map_scores(bridge, ChannelPermuted(extractor, torch.randperm(
            channels, generator=torch.Generator().manual_seed(seed))), scenes.images, scenes.masks)
            for seed in PERMUTATION_SEEDS]
        lines.append(f"| `{name}` | {correlations.diag().mean():+.3f} | {correlations.abs().mean():.3f} | "
                     f"{correlations.abs().max(dim=1).values.mean():.3f} | "
                     + " | ".join(f"{m['recall_at_0.5']:.2f} / {m['background_at_0.5']:.2f}" for m in maps) + " |")
    out = RESULTS / "qgnet_channels_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
