"""What training and evaluation share: opening a benchmark split, checkpoint files, and running
episodes through a model into a :class:`~fsslib.metrics.FewShotMeter`.

Checkpoints are read with ``torch.load(weights_only=True)``: they hold only tensors and plain
containers (the RNG states are stored as tensors and lists, see :func:`fsslib.train.rng_state`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fsslib.data.benchmarks import benchmark_of
from fsslib.data.episodes import EpisodeDataset, Source, collate_episodes
from fsslib.device import autocast
from fsslib.errors import CheckpointError
from fsslib.metrics import FewShotMeter, score_at_label_size
from fsslib.models.files import read_weights

if TYPE_CHECKING:
    from fsslib.config import Config
    from fsslib.methods.base import FewShotSegmenter


def open_source(cfg: Config, split: str) -> Source:
    """One split of the benchmark of ``cfg`` (toy images are cached in memory)."""
    benchmark = benchmark_of(cfg)
    return Source(benchmark, split, root=cfg.data_root, cache=benchmark.name == "toy")


def load_checkpoint(path: str | Path, method: str) -> dict:
    """Read a checkpoint written by :mod:`fsslib.train` and check it belongs to ``method``."""
    path = Path(path)
    state = read_weights(path, "Checkpoint", f"train one with `python -m fsslib.train --method {method} --out DIR` and "
                         "pass DIR/best.pt.", "pass a file written by `python -m fsslib.train`, or train again.")
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not an fsslib checkpoint (no model weights in it).",
                              "pass best.pt or last.pt from a `python -m fsslib.train` output folder.")
    if state.get("method") != method:
        raise CheckpointError(f"Checkpoint {path} was trained for method {state.get('method')!r}, not {method!r}.",
                              f"pass a checkpoint of {method!r}, or --method {state.get('method')}.")
    return state


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically, so that a run killed mid-write leaves the previous checkpoint intact."""
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


@torch.no_grad()
def evaluate_model(model: FewShotSegmenter, dataset: EpisodeDataset, cfg: Config, device: torch.device,
                   description: str = "eval", keep_episodes: bool = False) -> dict:
    """Run every episode of ``dataset``; returns the :class:`FewShotMeter` summary plus throughput and the
    model's :meth:`~fsslib.methods.base.FewShotSegmenter.diagnostics` (when it counts any); ``keep_episodes``:
    also ``"episodes_detail"``, every episode's counts and class ids (:meth:`FewShotMeter.kept_episodes`)."""
    benchmark = dataset.source.benchmark
    meter = FewShotMeter(dataset.classes, {c: benchmark.class_name(c) for c in dataset.classes}, keep_episodes)
    batch_size = cfg.eval_batch_size if dataset.query_resize != "short_side" else 1  # queries of their own sizes
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_episodes, num_workers=cfg.num_workers)
    was_training = model.training
    model.eval()
    model.reset_diagnostics()
    start = time.perf_counter()
    for batch in tqdm(loader, desc=description, disable=not cfg.progress, leave=False):
        with autocast(device, cfg.amp):
            logits = model(batch.inputs(model.reads_image_labels).to(device))  # (B, 1+N, H, W)
        score_at_label_size(meter, logits, batch.query_labels, batch.class_ids, lambda up: up.argmax(1))
    elapsed = time.perf_counter() - start
    model.train(was_training)
    diagnostics = model.diagnostics()
    return {**meter.summary(), "episodes_per_s": meter.episodes / max(elapsed, 1e-9),
            **({"diagnostics": diagnostics} if diagnostics else {}),
            **({"episodes_detail": meter.kept_episodes()} if keep_episodes else {})}
