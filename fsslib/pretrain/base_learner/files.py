"""The base learner's weight file: what :func:`~fsslib.pretrain.base_learner.train.train_base_learner` writes and
BAM (and HDMNet) read back, frozen.

A file holds one fold's :class:`~fsslib.blocks.base_learner.BaseLearner`, backbone included (stage 1 fine-tunes
it), in float16, with what it was trained for: the backbone's name, the benchmark, the fold, its base class ids
(channel ``n`` of the logits is class ``base_classes[n - 1]``), the training crop, the head's width and pyramid bins. The toy tier's
four files ship in the zoo folder; a paper-tier file goes to the weights folder, a dataset folder's into that folder
(:func:`base_learner_path`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fsslib.blocks.base_learner import BaseLearner
from fsslib.data.benchmarks import benchmark_spec, folder_flags
from fsslib.errors import CheckpointError, DatasetNotFoundError
from fsslib.models.backbones import build_backbone
from fsslib.models.files import read_weights
from fsslib.paths import weights_root
from fsslib.pretrain.saving import half_precision, save_checkpoint

FILE_KIND = "fsslib base learner"
RANDOM_HIDDEN = 512  # the head width of a random base learner (PSPNet's)
CLI = "python -m fsslib.pretrain base-learner"
SHIPPED_FOLDER = Path(__file__).resolve().parents[2] / "checkpoints" / "zoo"


def base_learner_path(benchmark: str, fold: int) -> Path:
    """Where the base learner of ``benchmark``'s ``fold`` (``toy``, ``pascal``, ``coco`` or ``folder:PATH``) is
    written and read by default: the shipped ``fsslib/checkpoints/zoo/base-learner-fold<F>.pt`` for the toy world,
    the dataset folder's own ``base-learner-fold<F>.pt``, else ``$FSSLIB_WEIGHTS/base-learner-<benchmark>-fold<F>.pt``."""
    if benchmark == "toy":
        return SHIPPED_FOLDER / f"base-learner-fold{fold}.pt"
    if benchmark.startswith("folder:"):
        return Path(benchmark_spec(benchmark).partition(":")[2]) / f"base-learner-fold{fold}.pt"
    return weights_root() / f"base-learner-{benchmark}-fold{fold}.pt"


def remake_command(fold: int, tier: str = "toy", benchmark: str = "toy", novel_classes: Sequence[int] = ()) -> str:
    """The command that trains the base learner of ``benchmark``'s ``fold`` at ``tier`` into its default place (the
    paper tier's default benchmark is PASCAL-5i; COCO-20i is named; a dataset folder with its ``novel_classes``, or
    its fold of folds.json)."""
    if benchmark.startswith("folder:"):
        return f"{CLI} {folder_flags(benchmark, fold, novel_classes)}" + (f" --tier {tier}" if tier != "toy" else "")
    return f"{CLI} --fold {fold} --tier {tier}" + ("" if benchmark in ("toy", "pascal") else f" --benchmark {benchmark}")


def require_base_classes(base_classes: Sequence[int], benchmark: str, fold: int) -> None:
    """Refuse a fold without base classes: a base learner learns them (every class of the fold is novel)."""
    if not base_classes:
        raise DatasetNotFoundError(
            f"Every class of {benchmark} fold {fold} is novel: no base class is left to train a base learner on (BAM's "
            "stage 1, which BAM, HDMNet and PI-CLIP on them read).",
            "keep some classes out of --novel-classes (or out of the fold in folds.json): they train the base learner; "
            "or evaluate a method without a base learner (e.g. pfenet or piclip) on every class.")


def save_base_learner(path: str | Path, learner: BaseLearner, backbone: str, benchmark: str, fold: int,
                      base_classes: list[int], crop: int, novel_classes: Sequence[int] = ()) -> Path:
    """Write ``learner`` (float16) with what it was trained for (``crop``: its training and scoring size;
    ``novel_classes``: a dataset folder's, given without folds.json); returns the path."""
    return save_checkpoint(path, {
        "kind": FILE_KIND, "backbone": backbone, "benchmark": benchmark, "fold": fold, "base_classes": base_classes,
        "crop": crop, **({"novel_classes": list(novel_classes)} if novel_classes else {}),
        "hidden": learner.hidden, "bins": [stage[0].output_size for stage in learner.ppm.stages],
        "state": half_precision(learner.state_dict())})


def load_base_learner(path: str | Path, backbone: str, benchmark: str, fold: int, base_classes: list[int],
                      fix: str) -> BaseLearner:
    """The base learner in ``path``, in float32 and eval mode, checked to be the one of ``backbone``, ``benchmark``
    and ``fold`` (whose base class ids are ``base_classes``); ``fix`` says how to make the right file."""
    payload = read_weights(path, f"The base learner of {benchmark} fold {fold}", fix)
    if not isinstance(payload, dict) or payload.get("kind") != FILE_KIND:
        raise CheckpointError(f"{path} is not a base learner written by `{CLI}`.", fix)
    made_for = {"backbone": backbone, "benchmark": benchmark, "fold": fold, "base_classes": list(base_classes)}
    differing = {key: payload[key] for key, value in made_for.items() if payload[key] != value}
    if differing:
        wanted = ", ".join(f"{key}={made_for[key]!r}" for key in differing)
        found = ", ".join(f"{key}={value!r}" for key, value in differing.items())
        raise CheckpointError(f"The base learner {path} was trained for {found}, not {wanted}.", fix)
    learner = BaseLearner(build_backbone(backbone, "random"), len(base_classes), hidden=payload["hidden"],
                          bins=payload["bins"])
    learner.load_state_dict({key: value.float() if value.is_floating_point() else value
                             for key, value in payload["state"].items()})
    return learner.eval()


def random_base_learner(backbone: str, base_classes: int, hidden: int) -> BaseLearner:
    """An untrained base learner on a random backbone: shape checks only (``base_learner="random"``)."""
    return BaseLearner(build_backbone(backbone, "random"), base_classes, hidden=hidden).eval()


def base_learner_file(chosen: str | None, benchmark: str, fold: int) -> str | None:
    """The file a method reads for option ``base_learner=chosen``: the fold's default file for None, the given
    path (``{fold}`` in it: the run's fold, so one grid reads a folder of base learners), or None for ``"random"``
    (an untrained base learner)."""
    if chosen == "random":
        return None
    return chosen.replace("{fold}", str(fold)) if chosen else str(base_learner_path(benchmark, fold))


def frozen_base_learner(chosen: str | None, backbone: str, benchmark: str, fold: int, tier: str,
                        base_classes: list[int], method: str, novel_classes: Sequence[int] = ()) -> BaseLearner:
    """The frozen base learner that ``method`` (BAM, HDMNet, PI-CLIP on them) reads for option
    ``base_learner=chosen`` (:func:`base_learner_file`), or a random one; a missing or mismatched file names the
    command that makes it (a dataset folder's with its ``novel_classes``), a fold without base classes says so."""
    benchmark = benchmark_spec(benchmark)
    require_base_classes(base_classes, benchmark, fold)
    path = base_learner_file(chosen, benchmark, fold)
    if path is None:
        return random_base_learner(backbone, len(base_classes), RANDOM_HIDDEN)
    default, remake = str(base_learner_path(benchmark, fold)), remake_command(fold, tier, benchmark, novel_classes)
    fix = (f"train it with `{remake}` (BAM's stage 1; it writes {default}), or pass options={{'base_learner': PATH}}."
           if path == default else
           f"train the base learner of fold {fold} with `{remake} --out {path}`, or leave the option out to read {default}.")
    if benchmark.startswith("folder:"):  # the zoo's models read the toy world's base learners
        fix += (f" Then train {method} on the folder beside it (the zoo's models were trained on the toy world): "
                f"`python -m fsslib.train --method {method} {folder_flags(benchmark, fold, novel_classes)} --out RUN`, "
                "and evaluate with --ckpt RUN/best.pt.")
    try:
        return load_base_learner(path, backbone, benchmark, fold, base_classes, fix)
    except CheckpointError as error:
        raise CheckpointError(f"Method {method} needs the frozen base learner of fold {fold}: {error.problem}",
                              error.fix) from None
