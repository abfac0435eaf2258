"""CLIP-DINOiser speed on the toy tier: evaluation episodes/s (1-way and 2-way), and guided pooling
as one batched product against a per-image loop (the official code pools one image at a time).

    python benchmarks/clip_dinoiser_speed.py    # -> benchmarks/results/clip_dinoiser_speed_toy.md

Evaluation runs ``clip-dinoiser-support`` (toy preset) over test episodes of fold 0 through
:func:`fsslib.engine.evaluate_model`, data loading included, with heads of random weights (speed does
not depend on them; the shipped toy heads are used when present). Pooling times
:func:`fsslib.methods.clip_dinoiser.model.guided_pooling` on a batch of toy feature maps; both ways give
the same features (checked). Times are medians of ``--repeats`` passes, ratios from the same run.
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset
from fsslib.engine import evaluate_model, open_source
from fsslib.methods import build_method
from fsslib.methods.clip_dinoiser.model import TOY_HEADS_CHECKPOINT, DinoiserHeads, guided_pooling
from timing import batched_against_loop, write_report

RESULTS = Path(__file__).resolve().parent / "results"


def heads_file(folder: Path) -> Path:
    """The shipped toy heads, or random heads of the same shape saved in ``folder``."""
    if TOY_HEADS_CHECKPOINT.is_file():
        return TOY_HEADS_CHECKPOINT
    path = folder / "random_heads.pt"
    torch.save({"heads": DinoiserHeads(in_channels=64).state_dict(), "feature_block": 1, "clip": "toy-vit"}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=300, help="evaluation episodes per setting")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="images pooled at once")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"CLIP-DINOiser on the toy tier, {args.threads} CPU threads (`python benchmarks/clip_dinoiser_speed.py`).",
             "", "| measurement | value |", "|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        heads = heads_file(Path(folder))
        for ways in (1, 2):
            cfg = make_config(method="clip-dinoiser-support", fold=0, ways=ways, progress=False,
                              options={"heads": str(heads)})
            model = build_method(cfg)
            episodes = EpisodeDataset(open_source(cfg, "test"), 0, 1, cfg.image_size, args.episodes, cfg.seed, ways=ways)
            summary = evaluate_model(model, episodes, replace(cfg, eval_batch_size=16), torch.device("cpu"))
            lines.append(f"| evaluation, {ways}-way 1-shot, batch 16 (data loading included) | "
                         f"{summary['episodes_per_s']:.1f} episodes/s |")

    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(args.batch_size, 64, 8, 8, generator=generator)  # the toy CLIP's MaskCLIP grid
    correlations = torch.rand(args.batch_size, 64, 64, generator=generator) * 1.2 - 0.2

    def batched():
        return guided_pooling(dense, correlations)

    def looped():
        return torch.cat([guided_pooling(dense[i:i + 1], correlations[i:i + 1]) for i in range(args.batch_size)])

    torch.testing.assert_close(batched(), looped())
    lines += batched_against_loop(f"guided pooling of {args.batch_size} toy feature maps (8 x 8)", batched, looped,
                                  args.repeats)
    write_report(lines, RESULTS / "clip_dinoiser_speed_toy.md")

if __name__ == "__main__":
    main()
