"""LFSS speed on the toy tier: evaluation episodes/s, and DPS batched against a per-episode loop.

    python benchmarks/lfss_speed.py    # -> benchmarks/results/lfss_speed_toy.md

Evaluation runs the toy preset's LFSS (untrained: speed does not depend on the weights) over
test episodes of fold 0 through :func:`fsslib.engine.evaluate_model`, data loading included.
DPS times :func:`fsslib.methods.lfss.dps.distributed_prototypes` on the supports of a batch of
real episodes at once, and once per support (the loop an unbatched implementation would run);
both give the same prototypes (checked). Times are medians of ``--repeats`` passes, ratios from
the same run.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from fsslib.blocks.masks import masked_average_pooling
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, collate_episodes
from fsslib.engine import evaluate_model, open_source
from fsslib.methods import build_method
from fsslib.methods.lfss.dps import EVAL_ITERATIONS, distributed_prototypes
from timing import batched_against_loop, write_report

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=300, help="evaluation episodes per setting")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="episodes whose supports DPS clusters at once")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"LFSS on the toy tier, {args.threads} CPU threads (`python benchmarks/lfss_speed.py`).", "",
             "| measurement | value |", "|---|---|"]
    for shots in (1, 5):
        cfg = make_config(method="lfss", fold=0, shots=shots, progress=False)
        model = build_method(cfg)
        episodes = EpisodeDataset(open_source(cfg, "test"), 0, shots, cfg.image_size, args.episodes, cfg.seed)
        summary = evaluate_model(model, episodes, replace(cfg, eval_batch_size=16), torch.device("cpu"))
        lines.append(f"| evaluation, 1-way {shots}-shot, batch 16 (data loading included) | "
                     f"{summary['episodes_per_s']:.1f} episodes/s |")

    cfg = make_config(method="lfss", fold=0, shots=1)
    model = build_method(cfg).eval()
    episodes = EpisodeDataset(open_source(cfg, "test"), 0, 1, cfg.image_size, args.batch_size, cfg.seed)
    with torch.no_grad():
        features = model.encode(collate_episodes([episodes[i] for i in range(args.batch_size)]).one_way())
    support, masks = features.support[:, 0], features.support_grid_masks[:, 0]  # (B, D, h, w), (B, h, w)
    query_prototypes = masked_average_pooling(features.query, features.query_pseudo_masks.long())  # (B, D)

    def batched():
        return distributed_prototypes(support, masks, query_prototypes, model.grid, EVAL_ITERATIONS)

    def looped():
        return [distributed_prototypes(support[i:i + 1], masks[i:i + 1], query_prototypes[i:i + 1], model.grid,
                                       EVAL_ITERATIONS) for i in range(len(support))]

    together, one_by_one = batched(), looped()
    for index, (prototypes, valid) in enumerate(one_by_one):
        count = prototypes.shape[1]
        torch.testing.assert_close(together[0][index, :count][valid[0]], prototypes[0][valid[0]], rtol=1e-4, atol=1e-5)
    lines += batched_against_loop(f"DPS on {args.batch_size} supports (Eqs. 6-11, {EVAL_ITERATIONS} iterations)",
                                  batched, looped, args.repeats, unit="ms")
    write_report(lines, RESULTS / "lfss_speed_toy.md")

if __name__ == "__main__":
    main()
