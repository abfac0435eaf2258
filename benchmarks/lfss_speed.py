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
from fsslib.provenance import run_provenance
from timing import median_seconds

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
    support, masks = features.support[:, 0], features.support_masks[:, 0]  # (B, D, h, w), (B, h, w)
    query_prototypes = masked_average_pooling(features.query, features.query_masks.long())  # (B, D)

    def batched():
        return distributed_prototypes(support, masks, query_prototypes, model.grid, EVAL_ITERATIONS)

    def looped():
        return [distributed_prototypes(support[i:i + 1], masks[i:i + 1], query_prototypes[i:i + 1], model.grid,
                                       EVAL_ITERATIONS) for i in range(len(support))]

    together, one_by_one = batched(), looped()
    for index, (prototypes, valid) in enumerate(one_by_one):
        count = prototypes.shape[1]
        torch.testing.assert_close(together[0][index, :count][valid[0]], prototypes[0][valid[0]], rtol=1e-4, atol=1e-5)
    seconds_batched, seconds_looped = median_seconds(batched, args.repeats), median_seconds(looped, args.repeats)
    lines += [f"| DPS on {args.batch_size} supports (Eqs. 6-11, {EVAL_ITERATIONS} iterations), batched | "
              f"{1e3 * seconds_batched:.1f} ms |",
              f"| the same, one support at a time | {1e3 * seconds_looped:.1f} ms ({seconds_looped / seconds_batched:.1f}x "
              "the batched time) |"]
    provenance = run_provenance("cpu")
    lines += ["", f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu "
                  "(this project's 2-core machines; 25% apart from run to run)."]
    out = RESULTS / "lfss_speed_toy.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n-> {out}")


if __name__ == "__main__":
    main()
