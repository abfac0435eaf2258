"""LFSS Table 3 on the toy tier: pseudo-mask mIoU against the ground truth, initial vs refined, per fold.

    python benchmarks/lfss_pseudo_masks.py    # -> benchmarks/results/lfss_pseudo_masks_toy.md

For each mask generator (the toy CLIP ResNet, LFSS's choice, and the toy ViT), each way of
binarising MaskCLIP's cosines (``pseudo_mask``) and each refiner setting
(Eq. 4's attention scores, the frozen level it compares), the query's initial and refined
pseudo masks are scored on the fold's 1-shot test episodes (the ones every toy table uses),
with :func:`fsslib.methods.lfss.pseudo_mask_quality` (query against its label, support against its mask). Nothing is trained: VLMD has no learned
weights, so these are the masks every LFSS model of the preset sees.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset
from fsslib.engine import open_source
from fsslib.methods import build_method
from fsslib.methods.lfss import pseudo_mask_quality
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = (("toy-rn", "vocabulary"), ("toy-rn", "softmax"), ("toy-rn", "threshold"),  # (mask generator, pseudo_mask)
            ("toy-vit", "vocabulary"))
REFINERS = {  # label -> options of the refiner
    "dot, layer3 (as printed)": {"refiner_attention": "dot", "refiner_level": "layer3"},
    "ssp_cosine, layer3": {"refiner_attention": "ssp_cosine", "refiner_level": "layer3"},
    "ssp_cosine, layer2": {"refiner_attention": "ssp_cosine", "refiner_level": "layer2"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per fold (default: 1000, the protocol)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, list[float]] = {}
    for fold in range(4):
        for clip, rule in SETTINGS:
            for index, (label, refiner) in enumerate(REFINERS.items()):
                cfg = make_config(method="lfss", fold=fold, shots=1, options={"clip": clip, "pseudo_mask": rule, **refiner})
                episodes = EpisodeDataset(open_source(cfg, "test"), fold, 1, cfg.image_size, args.episodes, cfg.seed)
                scores = pseudo_mask_quality(build_method(cfg), episodes, progress=True)
                for image, prefix in (("query", ""), ("support", "support_")):
                    if index == 0:  # the initial masks do not depend on the refiner
                        rows.setdefault(f"| {clip} | {rule} | {image} | initial (MaskCLIP) |", []).append(scores[f"{prefix}initial"])
                    rows.setdefault(f"| {clip} | {rule} | {image} | refined: {label} |", []).append(scores[f"{prefix}refined"])
            print(f"fold {fold} done")
    lines = [f"LFSS pseudo masks of the query and the support (Table 3), mIoU (%) against the ground truth, toy tier (MaskCLIP on the "
             f"toy CLIP ResNet `toy-rn`, the default, or ViT `toy-vit`; refiner on the toy ResNet), 1-shot, {args.episodes} test episodes per fold "
             "(`python benchmarks/lfss_pseudo_masks.py`).", "",
             "| generator | pseudo_mask | image | mask | fold 0 | fold 1 | fold 2 | fold 3 | mean |", "|---|---|---|---|---|---|---|---|---|"]
    for key, values in sorted(rows.items(), key=lambda item: " support " in item[0]):  # queries first
        lines.append(f"{key} " + " | ".join(f"{v:.1f}" for v in values) + f" | {sum(values) / len(values):.1f} |")
    provenance = run_provenance("cpu")
    lines += ["", f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu."]
    out = RESULTS / "lfss_pseudo_masks_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n-> {out}")


if __name__ == "__main__":
    main()
