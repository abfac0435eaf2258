"""The toy model zoo: every trained method's main configuration on each toy fold, shipped in the package.

    python -m fsslib.runs papermill_runs/zoo_toy.yaml      # trains the zoo's models and writes them here
    python -m fsslib.runs papermill_runs/qgnet_toy.yaml    # QGNet's, with its paper's ablation rows
                                                             # (fsslib.runs.export_to_zoo)
    python -m fsslib.evaluate --method pfenet --fold 2 --ckpt zoo
    python -m fsslib.zoo                                     # what the zoo holds
    python -m fsslib.runs papermill_runs/zoo_toy.yaml --recheck-zoo   # its models' checks measured again

A zoo model is ``fsslib/checkpoints/zoo/<method>[-<variant>]-fold<f>-<k>shot.pt`` (the run's ``best.pt``
in float16, the trained weights only: frozen backbones, CLIP towers and prior extractors are not in
checkpoints, :mod:`fsslib.blocks.frozen`) beside a ``.json`` of its provenance: the command, commit,
torch build and device of the run, its wall time and validation curve, and a check (the mIoU of the
float16 weights on the first :data:`CHECK_EPISODES` test episodes) that the tests repeat. ``ckpt="zoo"``
picks the model trained on 1-shot episodes, or on ``shots``-shot ones for a method whose weights fit their
training shots only; ``ckpt="zoo:5shot"`` names the training shots. ``$FSSLIB_ZOO`` points at another zoo folder.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from fsslib.errors import CheckpointError
from fsslib.methods import shots_fixed_by_training

SHIPPED_ZOO = Path(__file__).resolve().parent / "checkpoints" / "zoo"


def zoo_root() -> Path:
    """The zoo's folder: ``$FSSLIB_ZOO`` if set (e.g. a zoo of your own), else the shipped one."""
    return Path(os.environ.get("FSSLIB_ZOO") or SHIPPED_ZOO)

ZOO_GRIDS = ("papermill_runs/zoo_toy.yaml", "papermill_runs/qgnet_toy.yaml",
             "papermill_runs/piclip_baselines_toy.yaml")  # the grids that write zoo models
ZOO_REMAKE = (f"python -m fsslib.runs {ZOO_GRIDS[0]} (QGNet's models: python -m fsslib.runs {ZOO_GRIDS[1]}; BAM's, "
              f"HDMNet's and PI-CLIP on them: python -m fsslib.runs {ZOO_GRIDS[2]})")
ZOO_EXPORTS = {True: "every run", "default_variant": "the runs of each method's default configuration (no variant)"}


def zoo_runs(grid: dict, runs: list[dict]) -> list[dict]:
    """The runs of a grid that go into the zoo: its ``zoo`` key (:data:`ZOO_EXPORTS`) says which."""
    setting = grid.get("zoo")
    if not setting:
        return []
    if setting not in ZOO_EXPORTS:
        raise CheckpointError(f"Grid {grid['name']} sets zoo: {setting!r}.",
                              "write zoo: true (every run goes into the zoo) or zoo: default_variant (the runs "
                              "without a variant).")
    return runs if setting is True else [params for params in runs if not params.get("variant")]


# test episodes the .json's check (and the tests) evaluate the float16 weights on: a fingerprint of the weights and
# the code that reads them, not a fold score (some of a fold's classes draw no episode among so few)
CHECK_EPISODES = 12
CHECK_THREADS = 1  # the torch threads of a check: the suite's workers run one
# How far a check may move on another kind of CPU than the one that recorded it (mIoU points): other kernels
# sum in another order and a pixel on a decision boundary may flip (measured: benchmarks/zoo_checks_across_cpus.py).
# On the kind that recorded it a check repeats exactly.
CHECK_TOLERANCE_OTHER_CPU = 0.1


def zoo_name(method: str, fold: int, train_shots: int, variant: str = "") -> str:
    """The file stem of a zoo model, e.g. ``pfenet-fold0-1shot``."""
    return f"{method}{f'-{variant}' if variant else ''}-fold{fold}-{train_shots}shot"


ZOO_MODEL_NAME = re.compile(r".+-fold\d+-\d+shot")  # zoo_name's pattern


def zoo_entries(root: Path | None = None) -> list[str]:
    """The names of the models the zoo (``root``, default :func:`zoo_root`) holds, sorted. The toy base learners
    beside them (``base-learner-fold<F>.pt``, BAM's frozen stage 1, made by ``python -m fsslib.pretrain
    base-learner``) are not zoo models."""
    root = root or zoo_root()
    return sorted(path.stem for path in root.glob("*.pt") if ZOO_MODEL_NAME.fullmatch(path.stem)) if root.is_dir() else []


def names_zoo(ckpt: object) -> bool:
    """Whether a ``ckpt`` setting asks for the zoo (``"zoo"`` or ``"zoo:<k>shot"``) rather than a file."""
    return ckpt == "zoo" or (isinstance(ckpt, str) and ckpt.startswith("zoo:"))


def training_shots(ckpt: str, method: str, variant: str, shots: int) -> int:
    """The training shots ``ckpt`` ("zoo" or "zoo:<k>shot") asks for, evaluated at ``shots``."""
    if ckpt == "zoo":
        return shots if shots_fixed_by_training(method, variant) else 1
    match = re.fullmatch(r"zoo:(\d+)shot", ckpt)
    if not match:
        raise CheckpointError(f"--ckpt {ckpt!r} names no zoo model.",
                              "pass --ckpt zoo (the 1-shot-trained model) or --ckpt zoo:5shot (trained on 5 shots).")
    return int(match.group(1))


def zoo_checkpoint(method: str, fold: int, train_shots: int, variant: str = "", root: Path | None = None) -> Path:
    """The path of a zoo model; a combination the zoo does not hold gets an error listing what it holds."""
    root = root or zoo_root()
    path = root / f"{zoo_name(method, fold, train_shots, variant)}.pt"
    if not path.is_file():
        held = zoo_entries(root)
        raise CheckpointError(
            f"The zoo holds no {method}{f' ({variant})' if variant else ''} model for fold {fold} trained on "
            f"{train_shots}-shot episodes. It holds: {', '.join(held) if held else 'nothing yet'}.",
            f"pick one of those, train this one (`python -m fsslib.train --method {method} --fold {fold} "
            f"--shots {train_shots} --out DIR`, then --ckpt DIR/best.pt), or re-make the zoo: {ZOO_REMAKE}")
    return path


def zoo_record(method: str, fold: int, train_shots: int, variant: str = "", root: Path | None = None) -> dict:
    """A zoo model's ``.json``: its provenance, validation curve, test rows, check and budget."""
    return json.loads(zoo_checkpoint(method, fold, train_shots, variant, root).with_suffix(".json").read_text())


def at_plateau(record: dict) -> bool:
    """Whether a zoo model's record (:func:`zoo_record`) holds the fold-0 doubling of its budget, and that doubling
    moved test mIoU by less than the difference that resolves two rows (:func:`fsslib.runs.budget_record`): False
    for a model trained without that control."""
    return bool(record.get("budget", {}).get("at_plateau", False))


def main(argv: list[str] | None = None) -> None:
    """Print what the zoo holds: each model's best validation mIoU, its epoch and its size."""
    argparse.ArgumentParser(prog="python -m fsslib.zoo", description="List the shipped toy model zoo.").parse_args(argv)
    entries = zoo_entries()
    if not entries:
        print(f"The zoo is empty: {ZOO_REMAKE}")
        return
    total = 0
    for name in entries:
        size = (zoo_root() / f"{name}.pt").stat().st_size
        total += size
        record = zoo_root() / f"{name}.json"
        if not record.is_file():
            print(f"{name:45s} (no provenance .json: re-make it with {ZOO_REMAKE})")
            continue
        info = json.loads(record.read_text())
        selected = "last epoch" if info["best_val_miou"] is None else f"val mIoU {info['best_val_miou']:5.1f}"
        print(f"{name:45s} {selected} (epoch {info['best_epoch']}/{info['epochs']})  {size / 1e6:.1f} MB")
    print(f"{len(entries)} models, {total / 1e6:.1f} MB in {zoo_root()}")


if __name__ == "__main__":
    main(sys.argv[1:])
