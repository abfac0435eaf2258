"""What training, evaluation and prediction share: opening a benchmark split, checkpoint files, loading a
model (:func:`load_model`: built, its trained weights checked and loaded), and running episodes through a
model into a :class:`~fsslib.metrics.FewShotMeter`.

Checkpoints are read with ``torch.load(weights_only=True)``: they hold only tensors and plain
containers (the RNG states are stored as tensors and lists, see :func:`fsslib.train.rng_state`).
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fsslib.blocks.frozen import frozen_digests
from fsslib.config import MODEL, fields_with_role, same_setting
from fsslib.data.benchmarks import benchmark_of, folder_flags, given_novel_classes
from fsslib.data.episodes import EpisodeDataset, Source, collate_episodes
from fsslib.device import autocast
from fsslib.errors import CheckpointError, DatasetNotFoundError
from fsslib.metrics import FewShotMeter, score_at_label_size
from fsslib.methods import build_method, check_shots
from fsslib.models.files import read_weights
from fsslib.zoo import ZOO_REMAKE, names_zoo, training_shots, zoo_checkpoint

if TYPE_CHECKING:
    from fsslib.config import Config
    from fsslib.methods.base import FewShotSegmenter


def open_source(cfg: Config, split: str) -> Source:
    """One split of the benchmark of ``cfg`` (toy images are cached in memory)."""
    benchmark = benchmark_of(cfg)
    if benchmark.name == "folder" and cfg.data_root is not None:
        raise DatasetNotFoundError(f"data_root={cfg.data_root} does not apply to a dataset folder: its path is the "
                                   f"benchmark's ({cfg.benchmark}).", "drop --data-root, or name the folder in --benchmark.")
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


MODEL_FIELDS = fields_with_role(MODEL)  # settings that change what the weights mean


def checkpoint_path(cfg: Config) -> str | None:
    """``cfg.ckpt``, with ``zoo`` / ``zoo:<k>shot`` resolved to the shipped model of the method and fold
    (:mod:`fsslib.zoo`)."""
    ckpt = None if cfg.ckpt is None else os.fspath(cfg.ckpt)
    if not names_zoo(ckpt):
        return ckpt
    shots = training_shots(ckpt, cfg.method, cfg.variant, cfg.shots)
    return str(zoo_checkpoint(cfg.method, cfg.fold, shots, cfg.variant))


def benchmark_flags(cfg: Config) -> str:
    """The command-line flags naming the benchmark and fold of ``cfg`` (a dataset folder's novel classes by id)."""
    if cfg.benchmark.startswith("folder:"):
        return folder_flags(cfg.benchmark, cfg.fold, given_novel_classes(cfg))
    return f"--benchmark {cfg.benchmark} --fold {cfg.fold}"


def seeded_build(cfg: Config) -> FewShotSegmenter:
    """``build_method(cfg)`` with torch's generator seeded by ``cfg.seed`` and restored afterwards: the draws training
    makes right after seeding (``fsslib.train.run``), so every load gets the random weights it was trained with."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_method(cfg)


def load_model(cfg: Config, device: torch.device) -> FewShotSegmenter:
    """Build ``cfg.method``; trained methods load ``cfg.ckpt`` (required: a path, or ``zoo``)."""
    return load_model_and_config(cfg, device)[0]


def load_model_and_config(cfg: Config, device: torch.device) -> tuple[FewShotSegmenter, dict | None]:
    """:func:`load_model`, with the configuration the checkpoint was trained with (None: a training-free method).

    The model is built under ``cfg.seed``, as training builds it: a frozen part with random weights (e.g. QGNet's
    untrained prior extractor) is then the one the checkpoint was trained beside, whatever ran before."""
    model = seeded_build(cfg)
    trained = None
    if not model.trainable and cfg.ckpt is not None and not names_zoo(cfg.ckpt):
        # a grid may hand ckpt: zoo to every method, training-free ones too; a file given to one is said to be unread
        warnings.warn(f"Method {cfg.method!r} loads no checkpoint: {cfg.ckpt} is not read.", stacklevel=2)
    if model.trainable:
        path = checkpoint_path(cfg)
        if path is None:
            raise CheckpointError(f"Method {cfg.method!r} is trained, but no checkpoint was given.",
                                  f"pass --ckpt PATH (ckpt=PATH) or --ckpt zoo (the shipped toy model); make one with "
                                  f"`python -m fsslib.train --method {cfg.method}`.")
        state = load_checkpoint(path, cfg.method)
        trained = state.get("config", {})
        changed = [k for k in MODEL_FIELDS if k in trained and not same_setting(k, trained[k], getattr(cfg, k), cfg.method)]
        if changed:
            raise CheckpointError(
                f"Checkpoint {path} was trained with {', '.join(f'{k}={trained[k]!r}' for k in changed)}, "
                f"but this run asks for {', '.join(f'{k}={getattr(cfg, k)!r}' for k in changed)}.",
                "evaluate with the settings the checkpoint was trained with, or train a checkpoint for these.")
        check_shots(cfg.method, cfg.variant, trained.get("shots", cfg.shots), cfg.shots, f"Checkpoint {path}")
        recorded, built = state.get("frozen", {}), frozen_digests(model)
        missing = sorted(set(recorded) - set(built))
        other = sorted(name for name in set(recorded) & set(built) if built[name] != recorded[name])
        if missing or other:
            found = "; ".join(part for part in (f"other weights in {', '.join(other)}" if other else "",
                                                f"no {', '.join(missing)}" if missing else "") if part)
            fold = trained.get("fold", cfg.fold)
            per_fold = (f"it was trained on fold {fold}, whose frozen models this run did not load: pass "
                        f"--fold {fold} (fold={fold}); else ") if fold != cfg.fold else ""
            fix = ("build the model with the frozen weights it was trained with (the same backbone_weights and shipped "
                   f"checkpoints), or train it again; for the zoo: {ZOO_REMAKE}" if cfg.benchmark == "toy" or not
                   names_zoo(cfg.ckpt) else f"the zoo's models were trained on the toy world: train {cfg.method} on "
                   f"{cfg.benchmark} beside its own frozen models (`python -m fsslib.train --method {cfg.method} "
                   f"{benchmark_flags(cfg)} --out RUN`), then pass --ckpt RUN/best.pt.")
            raise CheckpointError(
                f"Checkpoint {path} was trained beside frozen models that this {cfg.method!r} model does not hold as "
                f"they were ({found}): its trained layers would read features they were not trained on.",
                per_fold + fix)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise CheckpointError(f"Checkpoint {path} does not fit this {cfg.method!r} model: {str(error)[:300]}",
                                  "evaluate with the shots / options it was trained with.") from None
    return model.to(device).eval(), trained


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
        score_at_label_size(meter, logits, batch.query_labels, batch.class_ids, lambda up: up.argmax(1), cfg.score_resize)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    diagnostics = model.diagnostics()
    return {**meter.summary(), "episodes_per_s": meter.episodes / max(elapsed, 1e-9),
            **({"diagnostics": diagnostics} if diagnostics else {}),
            **({"episodes_detail": meter.kept_episodes()} if keep_episodes else {})}
