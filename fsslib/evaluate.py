"""Evaluate any method on a benchmark fold with the HSNet episode protocol.

    python -m fsslib.evaluate --method prototype --preset toy --fold 0 --shots 1 \\
        --episodes 1000 --seed 0 --ckpt runs/proto/best.pt --out runs/proto/eval
    python -m fsslib.evaluate --method pfenet --ways 2 --ckpt runs/pfenet/best.pt ...   # 2-way 1-shot
    python -m fsslib.evaluate --method pfenet --fold 2 --ckpt zoo        # the shipped toy model (fsslib.zoo)

or ``fsslib.evaluate.run(cfg)``. Writes ``<out>/metrics.json`` (mIoU and FB-IoU in %, with the
torch version, the fsslib commit and the device that produced them) and ``<out>/episodes.npz`` (every
episode's intersection and union counts, ``counts`` (E, 1+N, 2), and class ids, ``class_ids`` (E, N), of the
first evaluation seed: what strata of the episodes are scored from, :mod:`fsslib.data.strata`).
"""
from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

import numpy as np
import torch

from fsslib.config import Config, make_config, run_command_line
from fsslib.data.benchmarks import Benchmark, benchmark_of, benchmark_spec, get_benchmark
from fsslib.data.episodes import EpisodeDataset
from fsslib.data.folder import class_key
from fsslib.device import resolve_device
from fsslib.engine import checkpoint_path, evaluate_model, load_checkpoint, load_model, load_model_and_config, open_source
from fsslib.errors import CheckpointError, FsslibError, check_output_folder
from fsslib.paths import atomic_path, write_text
from fsslib.provenance import run_provenance

__all__ = ["FewEpisodesWarning", "checkpoint_path", "evaluate_model", "load_checkpoint", "load_model", "main",
           "open_source", "run"]


class FewEpisodesWarning(UserWarning):
    """Some of the fold's classes drew no episode: the mIoU averages the others only, so it is no fold score."""


def check_novel_classes_unseen(cfg: Config, benchmark: Benchmark, trained: dict | None, checkpoint: str | None) -> None:
    """Refuse to score, as the fold's novel classes, classes the checkpoint trained on: the base classes of the
    benchmark and fold it records, compared by name (:func:`~fsslib.data.folder.class_key`). On the benchmark it
    trained on that is an error; on another one (a zoo model on a dataset folder), a warning: a shared name may
    be another class there."""
    if not trained or "benchmark" not in trained or "fold" not in trained:
        return
    try:
        seen_on = get_benchmark(trained["benchmark"], trained.get("coco_folds", "interleaved"),
                                trained.get("novel_classes") or ())
    except FsslibError:  # e.g. the dataset folder it trained on is gone: nothing to compare with
        return
    seen = {class_key(seen_on.class_name(c)) for c in seen_on.base_classes(trained["fold"])}
    both = [benchmark.class_name(c) for c in benchmark.fold_classes(cfg.fold) if class_key(benchmark.class_name(c)) in seen]
    if not both:
        return
    where = f"{trained['benchmark']} fold {trained['fold']}"
    if benchmark_spec(trained["benchmark"]) == benchmark_spec(cfg.benchmark):  # a folder however its path is written
        given = trained.get("novel_classes")
        novel = f" --novel-classes {','.join(map(str, given))}" if given else ""
        raise CheckpointError(
            f"Checkpoint {checkpoint} trained on {both} ({where}'s base classes), which this run scores as fold "
            f"{cfg.fold}'s novel classes: a few-shot score on classes it has seen.",
            f"evaluate the fold it was trained for (--fold {trained['fold']}{novel}), or train a checkpoint for this "
            "fold.")
    warnings.warn(f"Checkpoint {checkpoint} trained on classes named {both} ({where}'s base classes), which this run "
                  f"scores as novel on {cfg.benchmark}: if they are the same classes, the score is not a few-shot one.",
                  stacklevel=3)


def run(cfg: Config | None = None, **overrides) -> dict:
    """Evaluate ``cfg.method`` on the test split of ``cfg.fold``; writes ``<out>/metrics.json``."""
    cfg = cfg or make_config(**overrides)
    check_output_folder(cfg.out)  # before the evaluation, which writes there at its end
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    benchmark = benchmark_of(cfg)
    source = open_source(cfg, benchmark.test_split)
    model, trained = load_model_and_config(cfg, device)
    checkpoint = checkpoint_path(cfg) if model.trainable else None
    check_novel_classes_unseen(cfg, benchmark, trained, checkpoint)
    train_shots = None if trained is None else trained.get("shots")
    seeds = list(range(cfg.seed, cfg.seed + max(1, cfg.eval_seeds)))
    runs = []
    for seed in seeds:
        dataset = EpisodeDataset(source, cfg.fold, cfg.shots, cfg.image_size, cfg.episodes, seed, mode="test", ways=cfg.ways,
                                 resize=cfg.resize)
        runs.append(evaluate_model(model, dataset, cfg, device, description=f"{cfg.method} fold {cfg.fold} seed {seed}",
                                   keep_episodes=True))
    counts, class_ids = runs[0].pop("episodes_detail")  # the first seed's episodes, for strata (fsslib.data.strata)
    for later in runs[1:]:
        later.pop("episodes_detail")
    unseen = len(dataset.classes) - len(runs[0]["per_class_iou"])
    if unseen:
        warnings.warn(f"{unseen} of the fold's {len(dataset.classes)} classes had no episode among the "
                      f"{cfg.episodes}: mIoU averages the others only; use more episodes for a fold score.",
                      FewEpisodesWarning)
    metrics = {
        "miou": statistics.fmean(r["miou"] for r in runs),
        "fbiou": statistics.fmean(r["fbiou"] for r in runs),
        "per_class_iou": {name: statistics.fmean(r["per_class_iou"].get(name, 0.0) for r in runs)
                          for name in runs[0]["per_class_iou"]},
        "episodes": sum(r["episodes"] for r in runs),
        "episodes_per_s": statistics.fmean(r["episodes_per_s"] for r in runs),
        "tier": cfg.tier, "method": cfg.method, "variant": cfg.variant, "options": cfg.options, "benchmark": benchmark.name, "split": source.split,
        "fold": cfg.fold, "ways": cfg.ways, "shots": cfg.shots, "seed": cfg.seed, "seeds": seeds,
        "checkpoint": checkpoint, "train_shots": train_shots,
        **run_provenance(device),
    }
    if model.reads_image_labels:  # a comparison setting, not a few-shot result: said in the results
        metrics["reads_query_image_labels"] = True
    diagnostics = [r["diagnostics"] for r in runs if "diagnostics" in r]
    if diagnostics:  # counts the method reports (e.g. LFSS's empty pseudo masks), summed over the seeds
        metrics["diagnostics"] = {key: sum(d[key] for d in diagnostics) for key in diagnostics[0]}
    if len(runs) > 1:
        metrics["miou_std"] = statistics.stdev(r["miou"] for r in runs)
        metrics["fbiou_std"] = statistics.stdev(r["fbiou"] for r in runs)
        metrics["per_seed_miou"] = [r["miou"] for r in runs]
        metrics["per_seed"] = runs
    out = Path(cfg.out)
    write_text(out / "metrics.json", json.dumps({**metrics, "config": cfg.to_dict()}, indent=1))
    with atomic_path(out / "episodes.npz") as temporary:
        np.savez_compressed(temporary, counts=counts.numpy(), class_ids=class_ids.numpy(), seed=seeds[0])
    return metrics


def main(argv: list[str] | None = None) -> None:
    metrics = run_command_line("python -m fsslib.evaluate", __doc__, run, argv)
    print(f"{metrics['method']} fold {metrics['fold']} {metrics['ways']}-way {metrics['shots']}-shot ({metrics['tier']} tier): "
          f"mIoU {metrics['miou']:.1f}  FB-IoU {metrics['fbiou']:.1f}  ({metrics['episodes']} episodes, "
          f"{metrics['episodes_per_s']:.1f} episodes/s)")


if __name__ == "__main__":
    main()
