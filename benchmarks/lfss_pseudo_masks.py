"""LFSS Table 3 on the toy tier: pseudo-mask mIoU against the ground truth, initial vs refined, per fold.

    python benchmarks/lfss_pseudo_masks.py              # -> benchmarks/results/lfss_pseudo_masks_toy.md
    python benchmarks/lfss_pseudo_masks.py --trained    # the zoo's and the grids' LFSS models -> lfss_circle_masks_toy.md
    python benchmarks/lfss_pseudo_masks.py --diagnose   # what the refiner does, fold 0 -> lfss_refiner_diagnosis_toy.md

For each mask generator (the toy CLIP ResNet, LFSS's choice, and the toy ViT), each way of
binarising MaskCLIP's cosines (``pseudo_mask``) and each refiner setting
(Eq. 4's attention scores, the frozen level it compares), the query's initial and refined
pseudo masks are scored on the fold's 1-shot test episodes (the ones every toy table uses),
with :func:`fsslib.methods.lfss.pseudo_mask_quality` (query against its label, support against its mask). Nothing is trained: VLMD has no learned
weights, so these are the masks every LFSS model of the preset sees.

``--trained`` scores what the trained models add: the zoo's four LFSS models, and the variants trained
by the grids ``lfss_data_rule`` and ``lfss_data_rule_variants`` (run them first, or name their output
folders with ``--outputs``). It scores the support masks predicted by the first circle pass, which
support the query at test time, beside the refined pseudo masks they replace (1-shot, each model on
its own fold's test episodes).
``--diagnose`` measures on the feature grid what the refiner does to the query masks of fold 0:
their area, precision and recall against the ground truth resized to the grid, and how peaked
Eq. 4's attention is (the mean over pixels of its largest weight; 1/64 would be uniform).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fsslib.blocks.masks import foreground_weights
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, episode_batches
from fsslib.engine import open_source
from fsslib.engine import load_model
from fsslib.methods import build_method
from fsslib.methods.lfss import pseudo_mask_quality
from fsslib.methods.lfss.vlmd import background_attention
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
GRID_OUTPUTS = [Path(__file__).resolve().parent.parent / "papermill_runs" / "outputs" / grid
                for grid in ("lfss_data_rule", "lfss_data_rule_variants")]
SETTINGS = (("toy-rn", "vocabulary"), ("toy-rn", "softmax"), ("toy-rn", "threshold"),  # (mask generator, pseudo_mask)
            ("toy-vit", "vocabulary"))
REFINERS = {  # label -> options of the refiner
    "dot, layer3 (as printed)": {"refiner_attention": "dot", "refiner_level": "layer3"},
    "ssp_cosine, layer3": {"refiner_attention": "ssp_cosine", "refiner_level": "layer3"},
    "ssp_cosine, layer2": {"refiner_attention": "ssp_cosine", "refiner_level": "layer2"},
}


def trained_models(outputs: list[Path]) -> list[tuple[str, int, str]]:
    """(variant, fold, checkpoint) of the zoo's four LFSS models, then of every trained 1-shot LFSS run folder under
    ``outputs`` that holds its ``best.pt`` (a folder copied for its table alone holds none)."""
    models = [("", fold, "zoo") for fold in range(4)]
    for run in sorted(run for folder in outputs for run in folder.glob("lfss-*-fold*-1shot-seed0")):
        if (run / "best.pt").exists():  # lfss-<variant>-fold<F>-1shot-seed0
            variant, fold = run.name[len("lfss-"):].split("-fold")
            models.append((variant, int(fold[0]), str(run / "best.pt")))
    if len(models) == 4:
        print(f"no trained LFSS variants under {', '.join(map(str, outputs))}: only the zoo's models are scored. Run "
              "python -m fsslib.runs papermill_runs/lfss_data_rule.yaml and papermill_runs/lfss_data_rule_variants.yaml "
              "for the others, or name their output folders with --outputs.")
    return models


def trained_masks(episodes: int, outputs: list[Path]) -> list[str]:
    """Table rows of the circle's predicted support masks of the :func:`trained_models` under ``outputs``."""
    rows = []
    for variant, fold, ckpt in trained_models(outputs):
        cfg = make_config(method="lfss", variant=variant, fold=fold, shots=1, ckpt=ckpt)
        test = EpisodeDataset(open_source(cfg, "test"), fold, 1, cfg.image_size, episodes, cfg.seed)
        scores = pseudo_mask_quality(load_model(cfg, torch.device("cpu")), test, progress=True, circle=True)
        rows.append(f"| {variant or '(full model, the zoo)'} | {fold} | {scores['support_initial']:.1f} | "
                    f"{scores['support_refined']:.1f} | {scores['support_predicted']:.1f} |")
    return rows


@torch.no_grad()
def refiner_diagnosis(episodes: int, batch_size: int = 32) -> list[str]:
    """Rows (initial, then each refiner setting) of mask area, precision, recall and attention peak on fold 0."""
    rows = []
    for index, (label, refiner) in enumerate(REFINERS.items()):
        cfg = make_config(method="lfss", fold=0, shots=1, options=refiner)
        model = build_method(cfg).eval()
        test = EpisodeDataset(open_source(cfg, "test"), 0, 1, cfg.image_size, episodes, cfg.seed)
        totals = torch.zeros(5)  # initial area, initial hits, refined area, refined hits, ground-truth area
        peaks = []
        for batch in episode_batches(test, batch_size):
            batch = batch.one_way()
            levels = model.frozen_levels(batch)
            masks = model.pseudo_masks_of(batch, levels)
            truth = foreground_weights(batch.query_masks, masks.query.shape[-2:], mode="nearest")[:, 0] > 0.5
            totals += torch.stack([masks.initial_query.sum(), (masks.initial_query & truth).sum(), masks.query.sum(),
                                   (masks.query & truth).sum(), truth.sum()]).float()
            weights = background_attention(levels[model.refiner_level][: len(batch)].float(), masks.initial_query,
                                           model.refiner_attention)
            peaks.append(weights.amax(dim=-1).mean())
        initial_area, initial_hits, refined_area, refined_hits, truth_area = totals.tolist()
        if index == 0:
            rows.append(f"| initial (MaskCLIP) | {initial_area / episodes:.1f} | {initial_hits / initial_area:.2f} | "
                        f"{initial_hits / truth_area:.2f} | |")
        rows.append(f"| refined: {label} | {refined_area / episodes:.1f} | {refined_hits / refined_area:.2f} | "
                    f"{refined_hits / truth_area:.2f} | {float(torch.stack(peaks).mean()):.2f} |")
    rows.append(f"| ground truth | {truth_area / episodes:.1f} | 1 | 1 | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes per fold (default: 1000, the protocol)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trained", action="store_true", help="score the trained LFSS models' circle support masks")
    parser.add_argument("--outputs", type=Path, nargs="+", default=GRID_OUTPUTS,
                        help="with --trained: folders holding LFSS run folders (default: the outputs of the grids "
                             "lfss_data_rule and lfss_data_rule_variants)")
    parser.add_argument("--diagnose", action="store_true", help="mask area, precision, recall and attention peak, fold 0")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    provenance = run_provenance("cpu")
    if args.diagnose:
        lines = [f"What LFSS's refiner does to the query's pseudo masks (toy tier, fold 0, 1-shot, {args.episodes} test "
                 "episodes, `toy-rn` MaskCLIP with the vocabulary rule; `python benchmarks/lfss_pseudo_masks.py --diagnose`): "
                 "per query on the 8 x 8 feature grid, mask area in cells, precision and recall against the ground truth "
                 "resized there (nearest), and the mean largest weight of Eq. 4's attention (1/64 = 0.016 is uniform).", "",
                 "| mask | area (cells) | precision | recall | attention peak |", "|---|---|---|---|---|",
                 *refiner_diagnosis(args.episodes), "",
                 f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu."]
        out = RESULTS / "lfss_refiner_diagnosis_toy.md"
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines) + f"\n-> {out}")
        return
    if args.trained:
        lines = ["LFSS support masks of the trained models: the zoo's, and the variants of the grids lfss_data_rule and "
                 "lfss_data_rule_variants "
                 f"(toy tier, 1-shot, {args.episodes} test episodes of each model's fold; "
                 "`python benchmarks/lfss_pseudo_masks.py --trained`): mIoU (%) of the supports' "
                 "initial and refined pseudo masks and of the first circle pass's prediction, which supports the query.",
                 "", "| variant | fold | initial | refined | predicted (circle pass 1) |", "|---|---|---|---|---|",
                 *trained_masks(args.episodes, args.outputs), "",
                 f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu."]
        out = RESULTS / "lfss_circle_masks_toy.md"
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines) + f"\n-> {out}")
        return
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
    lines += ["", f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu."]
    out = RESULTS / "lfss_pseudo_masks_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n-> {out}")


if __name__ == "__main__":
    main()
