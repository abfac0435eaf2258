"""The pretrained stand-ins fsslib can make, by the name ``python -m fsslib.pretrain NAME`` takes.

Each entry names the module whose ``main(argv)`` is the stand-in's command line; it is
imported only when that name is run, so listing the names stays cheap.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Pretrainer:
    """One pretrained stand-in: what it replaces on the toy tier and where its command line lives."""

    name: str
    stands_in_for: str
    cli_module: str

    def main(self, argv: list[str]) -> None:
        """Run the stand-in's command line with the arguments that follow its name."""
        importlib.import_module(self.cli_module).main(argv)


PRETRAINERS: dict[str, Pretrainer] = {
    entry.name: entry
    for entry in (
        Pretrainer("toy-resnet", "ImageNet ResNet-50 (PFENet, PI-CLIP and QGNet backbones)",
                   "fsslib.pretrain.toy_resnet.cli"),
        Pretrainer("toy-clip", "CLIP ViT-B/16 and RN50 (MaskCLIP, LFSS, PI-CLIP)", "fsslib.pretrain.toy_clip.cli"),
        Pretrainer("toy-qgnet-prior", "QGNet's prior extractor (ResNet-50, MoCo v2 + local patch loss)",
                   "fsslib.pretrain.qgnet_prior.cli"),
        Pretrainer("qgnet-prior", "QGNet's unpublished prior extractor at the paper tier (ResNet-50 on PASCAL's or "
                   "COCO's images)", "fsslib.pretrain.qgnet_prior.paper_cli"),
        Pretrainer("toy-dino", "DINO ViT-B/16 and ViT-S/8 (CLIP-DINOiser's and FOUND's teachers)",
                   "fsslib.pretrain.toy_dino.cli"),
        Pretrainer("toy-found", "FOUND on DINO ViT-S/8 (CLIP-DINOiser's background teacher)",
                   "fsslib.pretrain.toy_found.cli"),
        Pretrainer("toy-clip-dinoiser", "CLIP-DINOiser's correlation and background heads on CLIP ViT-B/16",
                   "fsslib.pretrain.clip_dinoiser_heads.cli"),
        Pretrainer("base-learner", "BAM's base learner (PSPNet on a fold's base classes; BAM's and HDMNet's stage 1)",
                   "fsslib.pretrain.base_learner.cli"),
    )
}
