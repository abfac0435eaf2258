"""CLIP-DINOiser's pooling threshold gamma chosen on the toy world's validation split, reported on test.

    python benchmarks/clip_dinoiser_gamma.py [--episodes 1000]  ->  benchmarks/results/clip_dinoiser_gamma_toy.md

The paper's gamma is 0.2 (``A' = A * [A >= gamma]``); ``None`` pools with every correlation, negative ones
included (the official ``if self.gamma:``). For each prompt setting (the paper's whole support images,
masked supports, text + support, text alone), each gamma is evaluated on 1-way 1-shot episodes of
the validation split (novel classes of each fold, images apart from the test images) on the 4
folds; the gamma with the best validation mIoU averaged over the folds is chosen once per prompt
setting and then evaluated on the 1000 test episodes of each fold, beside gamma = 0.2 and MaskCLIP
on the same episodes. Training-free: no model is fitted, and nothing is tuned on the test episodes.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fsslib.config import make_config
from fsslib.data.benchmarks import TOY
from fsslib.data.episodes import EpisodeDataset
from fsslib.engine import evaluate_model, open_source
from fsslib.methods import build_method
from fsslib.provenance import run_provenance

RESULTS = Path(__file__).resolve().parent / "results"
PROMPTS = (  # (label, method, variant)
    ("support images (the paper)", "clip-dinoiser-support", ""),
    ("masked support", "clip-dinoiser-support", "masked_support"),
    ("text + support", "clip-dinoiser-support", "text_support"),
    ("text (CLIP-DINOiser)", "clip-dinoiser", ""),
)
GAMMAS = (None, 0.2, 0.4, 0.6, 0.8, 0.9)  # None (or 0): no threshold
PAPER_GAMMA = 0.2
VALIDATION_SEED = 1000  # the validation episodes' seed, as training's model selection uses


@torch.no_grad()
def miou(method: str, variant: str, fold: int, split: str, episodes: int, gamma: float | None = PAPER_GAMMA) -> float:
    """1-way 1-shot mIoU of a training-free method on ``episodes`` episodes of ``split``."""
    options = {} if method == "maskclip" else {"gamma": gamma}
    cfg = make_config(method=method, variant=variant, preset="toy", fold=fold, shots=1, options=options, progress=False)
    seed = VALIDATION_SEED if split == "val" else cfg.seed
    dataset = EpisodeDataset(open_source(cfg, split), fold, 1, cfg.image_size, episodes, seed)
    return evaluate_model(build_method(cfg), dataset, cfg, torch.device("cpu"))["miou"]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per fold and split")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folds = range(TOY.n_folds)
    provenance = run_provenance("cpu")
    lines = ["# CLIP-DINOiser's gamma, chosen on validation episodes (toy tier)", "",
             f"Written by `python benchmarks/clip_dinoiser_gamma.py --episodes {args.episodes}` "
             f"(torch {provenance['torch']}, commit {provenance['commit']}, CPU, 1 thread). 1-way 1-shot, {args.episodes} episodes per fold and split; "
             "validation: the toy world's val split (seed 1000); test: the protocol's test episodes (seed 0).", "",
             "## Validation mIoU (mean over the 4 folds)", "",
             "| prompts | " + " | ".join(f"gamma {g}" for g in GAMMAS) + " | chosen |", "|---|" + "---|" * (len(GAMMAS) + 1)]
    chosen = {}
    for label, method, variant in tqdm(PROMPTS, desc="prompts"):
        validation = {g: mean([miou(method, variant, f, "val", args.episodes, g) for f in folds]) for g in GAMMAS}
        chosen[label] = max(GAMMAS, key=lambda g: validation[g])  # ties: the first in GAMMAS
        lines.append(f"| {label} | " + " | ".join(f"{validation[g]:.1f}" for g in GAMMAS) + f" | {chosen[label]} |")
    lines += ["", "## Test mIoU: the chosen gamma against the paper's 0.2", "",
              "| prompts | gamma | " + " | ".join(f"fold {f}" for f in folds) + " | mean |", "|---|---|" + "---|" * 5]
    reference = [miou("maskclip", "", f, "test", args.episodes) for f in folds]
    for label, method, variant in tqdm(PROMPTS, desc="test"):
        for gamma in dict.fromkeys([chosen[label], PAPER_GAMMA]):
            scores = [miou(method, variant, f, "test", args.episodes, gamma) for f in folds]
            lines.append(f"| {label} | {gamma} | " + " | ".join(f"{s:.1f}" for s in scores) + f" | {mean(scores):.1f} |")
    lines.append("| MaskCLIP (text) | — | " + " | ".join(f"{s:.1f}" for s in reference) + f" | {mean(reference):.1f} |")
    out = RESULTS / "clip_dinoiser_gamma_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
