"""How well a base learner's frozen features still find a novel class: the similarity maps of HDMNet and BAM on
each base learner of the budget control (toy tier, fold 0).

    python benchmarks/base_learner_budget.py         # once: the base learners (their weights stay in its --runs)
    python benchmarks/base_learner_features.py       # -> benchmarks/results/base_learner_features_toy.md

BAM, HDMNet and PI-CLIP on them read a frozen base learner: PSPNet trained on the fold's base classes
(:mod:`fsslib.pretrain.base_learner`). HDMNet guides its transformer with two maps (:mod:`fsslib.methods.hdmnet`):
for each query position, the max cosine to the masked support's positions in the base learner's ``embedding``
(PSPNet's head before its classifier) and in its ``layer4``. BAM's prior is the ``layer4`` map (min-max scaled
per image, which leaves its ranking unchanged). PI-CLIP on HDMNet replaces both maps with CLIP's priors.

A base learner trained longer fits the base classes better; its features may also fit the novel classes worse. Per
base learner, over the first ``--episodes`` 1-way 1-shot test episodes of fold 0 (its novel classes; compare_toy's
test seed 0), the AUC of each map: the probability that the map is higher on a pixel of the target than on a pixel
elsewhere in the query (0.5: no better than chance; ignored pixels left out), averaged over the episodes. Beside it,
the base learner's own base-class test mIoU (its ``.json``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fsslib.blocks import blank_outside_masks
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, collate_episodes
from fsslib.engine import open_source, seeded_build
from fsslib.models.backbones import IMAGENET_MEAN
from fsslib.provenance import run_provenance

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "benchmarks" / "results" / "base_learner_budget"
MAPS = ("embedding", "layer4")  # HDMNet's two maps, in its order; BAM's prior is the layer4 one


def pixel_auc(scores: torch.Tensor, target: torch.Tensor) -> float:
    """The probability that a target pixel scores higher than a non-target pixel (ties count half): the
    Mann-Whitney statistic of ``scores`` (N,) split by the boolean ``target`` (N,)."""
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)  # counts of the sorted values
    ranks = (counts.cumsum(0) - (counts - 1) / 2)[inverse]  # 1-based ranks, tied values at their mean rank
    positives, negatives = int(target.sum()), int((~target).sum())
    return float((ranks[target].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@torch.no_grad()
def similarity_aucs(base_learner: Path, episodes: int) -> dict[str, float]:
    """The mean AUC of HDMNet's two similarity maps on the base learner in ``base_learner`` (the module docstring)."""
    cfg = make_config(method="hdmnet", fold=0, shots=1, options={"base_learner": str(base_learner)})
    model = seeded_build(cfg).eval()  # only its frozen base learner is read
    dataset = EpisodeDataset(open_source(cfg, "test"), cfg.fold, 1, cfg.image_size, episodes, 0)
    aucs: dict[str, list[float]] = {name: [] for name in MAPS}
    for start in tqdm(range(0, len(dataset), cfg.eval_batch_size), desc=base_learner.stem, leave=False):
        batch = collate_episodes([dataset[i] for i in range(start, min(start + cfg.eval_batch_size, len(dataset)))])
        inputs = batch.inputs(False).one_way()
        masks = inputs.support_masks.flatten(0, 1)  # (B, H, W): one shot
        supports = blank_outside_masks(inputs.support_images.flatten(0, 1), masks, IMAGENET_MEAN)
        maps = model.similarity_maps(model.frozen_features(inputs.query_images), model.frozen_features(supports),
                                     masks, 1)  # (B, 2, h, w)
        for index, label in enumerate(batch.query_labels):
            label = torch.as_tensor(label)  # (H, W): 1 the target, 0 the rest, 255 ignored
            scored = label != 255
            up = F.interpolate(maps[index : index + 1], size=label.shape, mode="bilinear", align_corners=True)[0]
            target = (label == 1)[scored]
            if target.any() and not target.all():
                for channel, name in enumerate(MAPS):
                    aucs[name].append(pixel_auc(up[channel][scored], target))
    return {name: sum(values) / len(values) for name, values in aucs.items()}


def base_learners(runs: Path) -> list[tuple[Path, dict]]:
    """The float32 seed-0 base learners of fold 0 whose weights are in ``runs`` (and the zoo's), with their
    ``.json``, by learning rate then epochs."""
    found = []
    for path in [REPO / "fsslib" / "checkpoints" / "zoo" / "base-learner-fold0.pt", *sorted(runs.glob("fold0-*.pt"))]:
        record = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else None
        if record and record["seed"] == 0 and record["settings"].get("precision", "fp32") == "fp32":
            found.append((path, record))
    unique = {(r["settings"]["lr"], r["settings"]["epochs"]): (p, r) for p, r in found}  # the zoo's may be a run's twin
    return [unique[key] for key in sorted(unique)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", type=Path, default=RUNS, help="the budget control's runs (weights and .json)")
    parser.add_argument("--episodes", type=int, default=1000, help="fold 0's 1-way 1-shot test episodes scored")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "base_learner_features_toy.md",
                        help="the page to write")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    learners = base_learners(args.runs)
    if not learners:
        raise SystemExit(f"No base learner weights in {args.runs}: train them with "
                         "python benchmarks/base_learner_budget.py.")
    lines = ["# How well each base learner's features find a novel class (toy tier, fold 0)", "",
             f"Made by `python benchmarks/base_learner_features.py` (the module docstring says what it measures): the "
             f"first {args.episodes} 1-way 1-shot test episodes of fold 0, seed 0 of each base learner, float32. "
             "AUC of each similarity map for the target against the rest of the query, mean over the episodes "
             "(0.5: chance). HDMNet reads both maps, BAM the layer4 one.", "",
             "| lr | epochs | base-class test mIoU | embedding map AUC | layer4 map AUC |", "|---|---|---|---|---|"]
    for path, record in learners:
        aucs = similarity_aucs(path, args.episodes)
        lines.append(f"| {record['settings']['lr']:g} | {record['settings']['epochs']} | "
                     f"{record['held_out']['test']['miou']:.2f} | {aucs['embedding']:.3f} | {aucs['layer4']:.3f} |")
        print(lines[-1], flush=True)
    provenance = run_provenance("cpu")
    lines += ["", f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
