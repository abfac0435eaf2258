"""Evaluate any method on a benchmark fold with the HSNet episode protocol.

    python -m fsslib.evaluate --method prototype --preset toy --fold 0 --shots 1 \\
        --episodes 1000 --seed 0 --ckpt runs/proto/best.pt --out runs/proto/eval

or ``fsslib.evaluate.run(cfg)``. Writes ``<out>/metrics.json`` (mIoU and FB-IoU in %).
"""
from __future__ import annotations

import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fsslib.config import Config, make_config, run_command_line
from fsslib.data.benchmarks import get_benchmark
from fsslib.data.episodes import EpisodeDataset, Source, collate_episodes
from fsslib.device import autocast, resolve_device
from fsslib.errors import CheckpointError
from fsslib.methods import build_method
from fsslib.methods.base import FewShotSegmenter
from fsslib.metrics import FewShotMeter, score_at_label_size


def open_source(cfg: Config, split: str) -> Source:
    """One split of the benchmark of ``cfg`` (toy images are cached in memory)."""
    benchmark = get_benchmark(cfg.benchmark, cfg.coco_folds)
    return Source(benchmark, split, root=cfg.data_root, cache=benchmark.name == "toy")


MODEL_FIELDS = ("variant", "options", "backbone", "preset")  # settings that change what the weights mean


def load_checkpoint(path: str | Path, method: str) -> dict:
    """Read a checkpoint written by :mod:`fsslib.train` and check it belongs to ``method``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.",
                              f"train one with `python -m fsslib.train --method {method} --out DIR` and pass DIR/best.pt.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # any unpickling failure means the file is not a usable checkpoint
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(error).__name__}: {error}).",
                              "pass a file written by `python -m fsslib.train`, or train again.") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not an fsslib checkpoint (no model weights in it).",
                              "pass best.pt or last.pt from a `python -m fsslib.train` output folder.")
    if state.get("method") != method:
        raise CheckpointError(f"Checkpoint {path} was trained for method {state.get('method')!r}, not {method!r}.",
                              f"pass a checkpoint of {method!r}, or --method {state.get('method')}.")
    return state


def load_model(cfg: Config, device: torch.device) -> FewShotSegmenter:
    """Build ``cfg.method``; trained methods load ``cfg.ckpt`` (required)."""
    model = build_method(cfg)
    if model.trainable:
        if cfg.ckpt is None:
            raise CheckpointError(f"Method {cfg.method!r} is trained, but no checkpoint was given.",
                                  f"pass --ckpt PATH (ckpt=PATH); make one with `python -m fsslib.train --method {cfg.method}`.")
        state = load_checkpoint(cfg.ckpt, cfg.method)
        trained = state.get("config", {})
        changed = [k for k in MODEL_FIELDS if k in trained and trained[k] != getattr(cfg, k)]
        if changed:
            raise CheckpointError(
                f"Checkpoint {cfg.ckpt} was trained with {', '.join(f'{k}={trained[k]!r}' for k in changed)}, "
                f"but this run asks for {', '.join(f'{k}={getattr(cfg, k)!r}' for k in changed)}.",
                "evaluate with the settings the checkpoint was trained with, or train a checkpoint for these.")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise CheckpointError(f"Checkpoint {cfg.ckpt} does not fit this {cfg.method!r} model: {str(error)[:300]}",
                                  "evaluate with the shots / options it was trained with.") from None
    return model.to(device).eval()


@torch.no_grad()
def evaluate_model(model: FewShotSegmenter, dataset: EpisodeDataset, cfg: Config, device: torch.device,
                   description: str = "eval") -> dict:
    """Run every episode of ``dataset``; returns the :class:`FewShotMeter` summary plus throughput."""
    benchmark = dataset.source.benchmark
    meter = FewShotMeter(dataset.classes, {c: benchmark.class_name(c) for c in dataset.classes})
    loader = DataLoader(dataset, batch_size=cfg.eval_batch_size, collate_fn=collate_episodes, num_workers=cfg.num_workers)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    for batch in tqdm(loader, desc=description, disable=not cfg.progress, leave=False):
        with autocast(device, cfg.amp):
            logits = model(batch.to(device))  # (B, 2, H, W)
        score_at_label_size(meter, logits, batch.query_labels, batch.class_ids.tolist(), lambda up: up.argmax(1))
    elapsed = time.perf_counter() - start
    model.train(was_training)
    return {**meter.summary(), "episodes_per_s": meter.episodes / max(elapsed, 1e-9)}


def run(cfg: Config | None = None, **overrides) -> dict:
    """Evaluate ``cfg.method`` on the test split of ``cfg.fold``; writes ``<out>/metrics.json``."""
    cfg = cfg or make_config(**overrides)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    benchmark = get_benchmark(cfg.benchmark, cfg.coco_folds)
    source = open_source(cfg, benchmark.test_split)
    model = load_model(cfg, device)
    seeds = list(range(cfg.seed, cfg.seed + max(1, cfg.eval_seeds)))
    runs = []
    for seed in seeds:
        dataset = EpisodeDataset(source, cfg.fold, cfg.shots, cfg.image_size, cfg.episodes, seed, mode="test")
        runs.append(evaluate_model(model, dataset, cfg, device, description=f"{cfg.method} fold {cfg.fold} seed {seed}"))
    unseen = len(dataset.classes) - len(runs[0]["per_class_iou"])
    if unseen:
        warnings.warn(f"{unseen} of the fold's {len(dataset.classes)} classes had no episode among the "
                      f"{cfg.episodes}: mIoU averages the others only; use more episodes for a fold score.")
    metrics = {
        "miou": statistics.fmean(r["miou"] for r in runs),
        "fbiou": statistics.fmean(r["fbiou"] for r in runs),
        "per_class_iou": {name: statistics.fmean(r["per_class_iou"].get(name, 0.0) for r in runs)
                          for name in runs[0]["per_class_iou"]},
        "episodes": sum(r["episodes"] for r in runs),
        "episodes_per_s": statistics.fmean(r["episodes_per_s"] for r in runs),
        "tier": cfg.tier, "method": cfg.method, "variant": cfg.variant, "benchmark": benchmark.name, "split": source.split,
        "fold": cfg.fold, "shots": cfg.shots, "seed": cfg.seed, "seeds": seeds, "checkpoint": cfg.ckpt,
        "device": str(device),
    }
    if len(runs) > 1:
        metrics["miou_std"] = statistics.stdev(r["miou"] for r in runs)
        metrics["fbiou_std"] = statistics.stdev(r["fbiou"] for r in runs)
        metrics["per_seed_miou"] = [r["miou"] for r in runs]
        metrics["per_seed"] = runs
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({**metrics, "config": cfg.to_dict()}, indent=1))
    return metrics


def main(argv: list[str] | None = None) -> None:
    metrics = run_command_line("python -m fsslib.evaluate", __doc__, run, argv)
    print(f"{metrics['method']} fold {metrics['fold']} {metrics['shots']}-shot ({metrics['tier']} tier): "
          f"mIoU {metrics['miou']:.1f}  FB-IoU {metrics['fbiou']:.1f}  ({metrics['episodes']} episodes, "
          f"{metrics['episodes_per_s']:.1f} episodes/s)")


if __name__ == "__main__":
    main()
