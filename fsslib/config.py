"""One flat configuration for every job, filled from a preset (nanoGPT-style).

``make_config(method=..., preset="toy", **overrides)`` starts from the defaults below,
applies the preset (``toy`` or ``paper``), then the method's own preset values and the
options of its ``variant``, then ``smoke`` shrinking, then the explicit overrides. The same functions run both tiers;
only these values differ.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from fsslib.errors import FsslibError, unknown
from fsslib.methods import method_options, method_presets, method_variants

TIERS = ("toy", "paper")


@dataclass
class Config:
    # what to run
    method: str = "prototype"
    variant: str = ""  # a named option set of the method (its VARIANTS), e.g. an ablation row
    preset: str = "toy"
    fold: int = 0
    ways: int = 1  # N of the N-way test episodes (training episodes are 1-way)
    shots: int = 1
    seed: int = 0
    # data
    benchmark: str = "toy"
    coco_folds: str = "interleaved"
    image_size: int = 64
    novel_rule: str = "pfenet"
    augment: str = "pfenet"  # training augmentation: "pfenet" (scale, rotation, flip, blur) or "none"
    resize: str = "pad"  # "pad": longer side to image_size, padded square (PFENet); "squash": both sides (HSNet);
    # "short_side": test queries' shorter side to image_size, for sliding windows (CLIP-DINOiser's evaluation)
    data_root: str | None = None  # None: $FSSLIB_DATA/<benchmark root>
    # evaluation (HSNet protocol)
    episodes: int = 1000
    eval_seeds: int = 1  # > 1: seeds seed .. seed+n-1, mean +- std (BAM style)
    eval_batch_size: int = 16
    # training
    epochs: int = 5
    episodes_per_epoch: int = 500
    val_episodes: int = 200
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9  # the poly schedule's power (0: constant), unless lr_step_epochs > 0
    lr_step_epochs: int = 0  # > 0: a step schedule instead, lr x lr_step_gamma every lr_step_epochs epochs
    lr_step_gamma: float = 0.1
    amp: bool = True  # bf16 autocast on CUDA; always off on the CPU
    num_workers: int = 0
    # method options
    backbone: str = "toy-resnet"
    backbone_weights: str | None = None  # None: the default pretrained weights; "random"; or a local file
    options: dict[str, Any] = field(default_factory=dict)
    # run control
    device: str = "auto"
    out: str = "runs/latest"
    ckpt: str | None = None
    resume: bool = False
    smoke: bool = False
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def tier(self) -> str:
        return self.preset


PRESETS: dict[str, dict[str, Any]] = {
    "toy": dict(benchmark="toy", image_size=64, epochs=5, episodes_per_epoch=500, val_episodes=200,
                batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=1e-4, backbone="toy-resnet"),
    # PFENet's PASCAL-5i recipe: 473x473, SGD 0.0025, momentum 0.9, wd 1e-4, poly 0.9, batch 4, 200 epochs.
    "paper": dict(benchmark="pascal", image_size=473, epochs=200, episodes_per_epoch=5953, val_episodes=1000,
                  batch_size=4, optimizer="sgd", lr=0.0025, weight_decay=1e-4, backbone="resnet50"),
}
SMOKE = dict(epochs=1, episodes_per_epoch=24, val_episodes=16, episodes=40, eval_batch_size=8, batch_size=4)


def make_config(method: str = "prototype", preset: str = "toy", **overrides: Any) -> Config:
    """Build a :class:`Config` for ``method`` on ``preset``; ``None`` overrides are ignored, paths
    (``out``, ``ckpt``, ...) may be given as ``pathlib.Path``."""
    if preset not in PRESETS:
        raise unknown("preset", preset, list(PRESETS))
    valid = {f.name for f in fields(Config)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise unknown("config field", bad[0], sorted(valid))
    values: dict[str, Any] = {"method": method, "preset": preset, **PRESETS[preset]}
    method_values = dict(method_presets(method).get(preset, {}))
    variant = overrides.get("variant") or ""
    variants = method_variants(method)
    if variant and variant not in variants:
        raise unknown(f"variant of {method}", variant, sorted(variants) or ["(this method has none)"])
    chosen = variants.get(variant, {})
    variant_fields = {k: v for k, v in chosen.items() if k in valid}  # a data-rule control, e.g. {"augment": "pfenet"}
    options = {**method_values.pop("options", {}), **{k: v for k, v in chosen.items() if k not in valid},
               **(overrides.pop("options", None) or {})}
    accepted = method_options(method)
    for key in options:
        if key not in accepted:
            raise unknown(f"option of method {method}", key, sorted(accepted) or ["(this method takes none)"])
    values.update(method_values)
    values.update(variant_fields)
    if overrides.get("smoke"):
        values.update(SMOKE)
    values.update({k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in overrides.items() if v is not None})
    return Config(**values, options=options)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Expose every :class:`Config` field as ``--field`` (bools as ``--field/--no-field``)."""
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "options":
            parser.add_argument(flag, action="append", default=None, metavar="KEY=VALUE",
                                help='method option (repeatable), JSON values, e.g. --options \'priors=["vtp"]\'')
        elif f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None)


def run_command_line(prog: str, description: str, job: Callable[[Config], dict], argv: list[str] | None) -> dict:
    """Parse ``--field`` flags into a :class:`Config` and run ``job``; user errors exit with their message."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return job(config_from_args(args))
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` described by parsed command-line arguments."""
    values = {k: v for k, v in vars(args).items() if v is not None}
    if "options" in values:
        values["options"] = dict(_parse_option(item) for item in values["options"])
    return make_config(**values)


PYTHON_LITERALS = {"True": True, "False": False, "None": None}


def _parse_option(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise unknown("--options entry", item, ["KEY=VALUE"])
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, PYTHON_LITERALS.get(raw, raw)  # pooling=False means what a Python user expects
