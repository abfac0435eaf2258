"""How noisy is the toy tier's plateau rule? The spread of validation and test mIoU over episode samples.

    python benchmarks/validation_noise.py          # the zoo grid's runs (python -m fsslib.runs papermill_runs/zoo_toy.yaml)

A run's learning curve is its validation mIoU on ``val_episodes`` episodes (300 in the trained methods' toy
presets; drawn once, the same every epoch); the plateau rule of ``fsslib.runs`` reads the gain over the last quarter of that curve. For fixed
checkpoints of the zoo grid (``best.pt`` and ``last.pt`` of each run named below) this script evaluates the
validation split with 20 episode seeds of the run's ``val_episodes`` each (the first seed is the run's own) and
reads:

* **val noise**: the standard deviation over seeds of one checkpoint's validation mIoU (the spread over
  episode samples at a fixed checkpoint);
* **paired noise**: the standard deviation over seeds of the *difference* between the run's last and best
  checkpoints on the same episodes (what episode sampling adds to a gain measured on one fixed set);
* **test noise**: the bootstrap standard error of a 1000-episode test mIoU (the rows of the tables);
* **curve noise** (from the run's ``log.jsonl``): the last-quarter gain, its standard error from the curve's own
  epoch-to-epoch noise and the verdict, as every results table gives them (:func:`fsslib.tables.plateau_verdicts`).

Writes ``benchmarks/results/validation_noise_toy.md``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fsslib.config import make_config
from fsslib.data.benchmarks import get_benchmark
from fsslib.data.episodes import EpisodeDataset
from fsslib.engine import evaluate_model, open_source
from fsslib.engine import load_checkpoint, load_model
from fsslib.metrics import episodes_miou, resampled_miou
from fsslib.tables import plateau_verdicts

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = REPO / "papermill_runs" / "outputs" / "zoo_toy"
RUNS = [("prototype", 0), ("prototype", 1), ("prototype", 2), ("prototype", 3), ("pfenet", 0), ("pfenet", 1), ("lfss", 0)]
TEST_EPISODES = 1000


def kept(model, dataset: EpisodeDataset, cfg) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every episode's object [I, U] (E, 2), its class index (E,) and the number of classes."""
    counts, class_ids = evaluate_model(model, dataset, cfg, torch.device("cpu"), keep_episodes=True)["episodes_detail"]
    classes = np.asarray(dataset.classes)
    return counts[:, 1], torch.from_numpy(np.searchsorted(classes, class_ids[:, 0].numpy())), len(classes)


def measure(method: str, fold: int, seeds: int) -> dict:
    folder = OUTPUTS / f"{method}-fold{fold}-1shot-seed0"
    best = load_checkpoint(folder / "best.pt", method)
    val_episodes = best["config"]["val_episodes"]
    cfg = make_config(method=method, preset="toy", fold=fold, shots=1, device="cpu", progress=False)
    benchmark = get_benchmark(cfg.benchmark)
    val_source = open_source(cfg, benchmark.select_split)
    val_sets = [EpisodeDataset(val_source, fold, 1, cfg.image_size, val_episodes, cfg.seed + 1000 + offset, resize=cfg.resize)
                for offset in range(seeds)]  # the run's own validation episodes first
    test_set = EpisodeDataset(open_source(cfg, benchmark.test_split), fold, 1, cfg.image_size, TEST_EPISODES, cfg.seed,
                              mode="test", resize=cfg.resize)
    blocks = {}
    for name in ("best", "last"):
        model = load_model(make_config(method=method, preset="toy", fold=fold, shots=1, device="cpu",
                                       ckpt=folder / f"{name}.pt"), torch.device("cpu"))
        blocks[name] = torch.stack([100 * episodes_miou(*kept(model, val_set, cfg)) for val_set in val_sets])  # (seeds,)
        if name == "best":
            test = kept(model, test_set, cfg)
            test_se = float(100 * resampled_miou(*test, 2000, torch.Generator().manual_seed(0)).std())
    history = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    gain, gain_se, verdict = plateau_verdicts({folder.name: history})[folder.name]
    assert abs(float(blocks["best"][0]) - best["val_miou"]) < 0.01, "the run's own validation episodes give its logged mIoU"
    best_epoch = best["epoch"]
    return {"run": folder.name, "val_episodes": val_episodes, "val_sd": float(blocks["best"].std()),
            "paired_sd": float((blocks["last"] - blocks["best"]).std()),
            "paired_mean": float((blocks["last"] - blocks["best"]).mean()),
            "best_epoch": best_epoch, "test_se": test_se, "gain": gain, "gain_se": gain_se,
            "verdict": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20,
                        help="validation episode seeds per checkpoint (each the run's val_episodes)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "validation_noise_toy.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(method, fold, args.seeds) for method, fold in RUNS]
    lines = ["Toy tier, the zoo grid's runs (seed 0, 1-shot); `python benchmarks/validation_noise.py` "
             f"({args.seeds} validation episode seeds of the run's val_episodes per checkpoint; "
             f"test: bootstrap over {TEST_EPISODES} episodes, 2000 resamples). Points of mIoU.", "",
             "| run | val episodes | val sd (best.pt) | paired sd, last - best | mean last - best | best epoch "
             "| test se (1000 episodes) | last-quarter gain ± se from the curve | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['val_episodes']} | {r['val_sd']:.2f} | {r['paired_sd']:.2f} | {r['paired_mean']:+.2f} | {r['best_epoch']} "
              f"| {r['test_se']:.2f} | {r['gain']:+.2f} ± {r['gain_se']:.2f} | {r['verdict']} |" for r in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
