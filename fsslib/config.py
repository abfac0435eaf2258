"""One flat configuration for every job, filled from a preset (nanoGPT-style).

``make_config(method=..., preset="toy", **overrides)`` starts from the defaults below,
applies the preset (``toy`` or ``paper``), then the method's own preset values and the
options of its ``variant``, then ``smoke`` shrinking, then the explicit overrides. The same functions run both tiers;
only these values differ.
"""
from __future__ import annotations

import argparse
import copy
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from fsslib.data.benchmarks import BENCHMARKS, get_benchmark, id_or_name, split_list
from fsslib.errors import FsslibError, short_warnings, unknown
from fsslib.methods import METHODS, method_options_type, method_presets, method_variants
from fsslib.methods.options import MethodOptions, range_problem, range_text

TIERS = ("toy", "paper")
MODEL = "model"  # a field that changes what trained weights mean: a checkpoint is evaluated with its own
RUN_CONTROL = "run control"  # a field that does not change what a training run computes (resuming ignores it)


def _role(default: Any, role: str) -> Any:
    """A :class:`Config` field marked with its role (:func:`fields_with_role`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"role": role})
    return field(default=default, metadata={"role": role})


@dataclass
class Config:
    # what to run
    method: str = "prototype"
    variant: str = _role("", MODEL)  # a named option set of the method (its VARIANTS), e.g. an ablation row
    preset: str = _role("toy", MODEL)
    fold: int = 0
    ways: int = _role(1, RUN_CONTROL)  # N of the N-way test episodes (training episodes are 1-way)
    shots: int = 1
    seed: int = 0
    # data
    benchmark: str = "toy"
    coco_folds: str = "interleaved"
    image_size: int = 64
    novel_rule: str = "pfenet"
    augment: str = "pfenet"  # training augmentation: "pfenet" (scale, rotation, flip, blur) or "none"
    augment_on: str = _role("loader", RUN_CONTROL)  # where it runs: "loader" (its workers), "device" (the trainer's) or
    # "auto" (the device when it is a GPU, else the loader)
    resize: str = "pad"  # "pad": longer side to image_size, padded square (PFENet); "squash": both sides (HSNet);
    # "short_side": test queries' shorter side to image_size, for sliding windows (CLIP-DINOiser's evaluation)
    data_root: str | None = None  # None: $FSSLIB_DATA/<benchmark root>
    novel_classes: list[int | str] = field(default_factory=list)  # a dataset folder without folds.json: its novel
    # classes (fold 0), ids or names of its classes.txt
    extra_classes: list[str] = field(default_factory=list)  # class names beyond the benchmark's, appended to the class
    # list that text-reading methods encode (fsslib.predict: the user's names)
    # evaluation (HSNet protocol)
    episodes: int = _role(1000, RUN_CONTROL)
    eval_seeds: int = _role(1, RUN_CONTROL)  # > 1: seeds seed .. seed+n-1, mean +- std (BAM style)
    eval_batch_size: int = 16
    score_resize: str = _role("aligned", RUN_CONTROL)  # how logits reach the label size: "aligned" (PFENet / HSNet:
    # bilinear, aligned corners) or "probabilities" (CLIP-DINOiser's official: exp of the logits, corners not aligned)
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
    num_workers: int = _role(0, RUN_CONTROL)
    # speed on a GPU (fsslib.speed): the same computation up to rounding, so a resumed run may change them
    compile: bool = _role(False, RUN_CONTROL)
    channels_last: bool = _role(False, RUN_CONTROL)
    fused_attention: bool = _role(False, RUN_CONTROL)
    # method options
    backbone: str = _role("toy-resnet", MODEL)
    backbone_weights: str | None = None  # None: the default pretrained weights; "random"; or a local file
    options: dict[str, Any] = _role({}, MODEL)
    # run control
    device: str = _role("auto", RUN_CONTROL)
    out: str = _role("runs/latest", RUN_CONTROL)
    ckpt: str | None = _role(None, RUN_CONTROL)
    resume: bool = _role(False, RUN_CONTROL)
    smoke: bool = False
    progress: bool = _role(True, RUN_CONTROL)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def tier(self) -> str:
        return self.preset


def fields_with_role(role: str) -> tuple[str, ...]:
    """The :class:`Config` fields marked ``role`` (:data:`MODEL` or :data:`RUN_CONTROL`)."""
    return tuple(f.name for f in fields(Config) if f.metadata.get("role") == role)


def same_setting(name: str, saved: Any, current: Any, method: str) -> bool:
    """Whether a recorded setting equals the current one; method options compare as typed values (an option
    left at its default equals the default written out, ``1`` equals ``1.0`` for a float), those marked
    ``inference`` left out (:meth:`fsslib.methods.options.MethodOptions.weights_meaning`)."""
    if name != "options":
        return saved == current
    kind = method_options_type(method)
    try:
        return kind.parse(saved).weights_meaning() == kind.parse(current).weights_meaning()
    except FsslibError:  # an option this fsslib no longer has, or no longer accepts
        return False


PRESETS: dict[str, dict[str, Any]] = {
    "toy": dict(benchmark="toy", image_size=64, epochs=5, episodes_per_epoch=500, val_episodes=200,
                batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=1e-4, backbone="toy-resnet"),
    # PFENet's PASCAL-5i recipe: 473x473, SGD 0.0025, momentum 0.9, wd 1e-4, poly 0.9, batch 4, 200 epochs.
    "paper": dict(benchmark="pascal", image_size=473, epochs=200, episodes_per_epoch=5953, val_episodes=1000,
                  batch_size=4, optimizer="sgd", lr=0.0025, weight_decay=1e-4, backbone="resnet50",
                  augment_on="auto"),  # on a GPU, the loader's workers decode and resize, the GPU warps and blurs
}
SMOKE = dict(epochs=1, episodes_per_epoch=24, val_episodes=16, episodes=40, eval_batch_size=8, batch_size=4)


SETTING_RANGES: dict[str, dict[str, float]] = {  # the numeric settings' valid ranges, checked by make_config
    **{name: {"at least": 0} for name in ("fold", "seed", "weight_decay", "poly_power", "lr_step_epochs", "num_workers",
                                          "val_episodes")},
    **{name: {"at least": 1} for name in ("ways", "shots", "episodes", "eval_seeds", "eval_batch_size", "epochs",
                                          "episodes_per_epoch", "batch_size")},
    "image_size": {"at least": 16},  # the toy ResNet's stride 8 leaves 2 x 2 features
    "lr": {"above": 0}, "lr_step_gamma": {"above": 0}, "momentum": {"at least": 0, "at most": 1},
}


SETTING_HELP: dict[str, str] = {  # --help's text of settings whose name does not say it all
    "compile": "torch.compile the model's backbones, decoders and transformers (fsslib.speed; off by default): "
               "faster GPU steps after a one-off compile, cached in $TORCH_HOME/inductor for the next run",
    "channels_last": "convolution weights in channels-last (NHWC) order, for cuDNN's fastest kernels on a GPU "
                     "(fsslib.speed; off by default)",
    "fused_attention": "HDMNet's self-attention through scaled_dot_product_attention (fsslib.speed; off by default; "
                       "changes nothing for methods without it)",
    "amp": "bf16 autocast on CUDA (on by default); always off on the CPU",
    "augment_on": "where training episodes are augmented: loader (in its workers; the toy preset's), device (on the "
                  "batch where the model runs, e.g. the GPU) or auto (device on a GPU, else loader; the paper "
                  "preset's). On the CPU all give the same episodes, and loader the fastest",
    "method": f"the method: {', '.join(METHODS)}",
    "variant": "an ablation row of the method (its VARIANTS); default: the paper's model",
    "preset": "toy (default: the toy world and stand-ins) or paper (the papers' sizes, backbones and schedules)",
    "benchmark": "toy (the preset's), pascal, coco, or folder:PATH for a dataset folder (docs/your_data.md)",
    "novel_classes": "a dataset folder without folds.json: fold 0's novel classes, ids or names of its classes.txt",
    "extra_classes": "class names beyond the benchmark's, for the methods that read names",
    "ckpt": "a checkpoint file, or zoo (the shipped toy model of --fold)",
    "device": "auto (CUDA when present), cpu, cuda or cuda:N",
}


def check_settings(cfg: Config) -> Config:
    """Raise, naming the flag and its range, unless every numeric setting of ``cfg`` is in :data:`SETTING_RANGES`,
    ``score_resize`` is one of :data:`fsslib.metrics.SCORE_RESIZES`, ``augment_on`` "auto" or one of
    :data:`fsslib.data.episodes.AUGMENT_ON`, and a named benchmark has ``fold`` and is not
    given ``novel_classes`` (a dataset folder's)."""
    from fsslib.data.episodes import AUGMENT_ON
    from fsslib.metrics import SCORE_RESIZES

    if cfg.score_resize not in SCORE_RESIZES:
        raise unknown("--score-resize", cfg.score_resize, SCORE_RESIZES)
    if cfg.augment_on not in ("auto", *AUGMENT_ON):
        raise unknown("--augment-on", cfg.augment_on, ["auto", *AUGMENT_ON])
    for name, bounds in SETTING_RANGES.items():
        value = getattr(cfg, name)
        problem = range_problem(value, bounds)
        if problem:
            flag = "--" + name.replace("_", "-")
            raise FsslibError(f"{flag} {problem}, got {value!r}.",
                              f"pass {flag} {getattr(Config, name)} (the default) or another value in that range.")
    if cfg.benchmark in BENCHMARKS:  # a dataset folder's folds are read with its files (fsslib.data.folder)
        # refuses --novel-classes and a fold the benchmark lacks
        get_benchmark(cfg.benchmark, cfg.coco_folds, cfg.novel_classes).fold_classes(cfg.fold)
    return cfg


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
    method_options_type(method).parse(options)  # an unknown name or a value of the wrong type fails here, clearly
    values.update(method_values)
    values.update(variant_fields)
    if overrides.get("smoke"):
        values.update(SMOKE)
    values.update({k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in overrides.items() if v is not None})
    return check_settings(Config(**values, options=options))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Expose every :class:`Config` field as ``--field`` (bools as ``--field/--no-field``)."""
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "options":
            parser.add_argument(flag, action="append", default=None, metavar="KEY=VALUE",
                                help="method option (repeatable), read by its type (listed below), e.g. --options "
                                     "feature_dim=64; a list as a,b or JSON")
        elif f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=SETTING_HELP.get(f.name))
        elif str(f.type).startswith("list["):
            item = {"list[int]": int, "list[str]": str}.get(str(f.type), id_or_name)
            parser.add_argument(flag, type=lambda text, item=item: split_list(text, item), default=None, metavar="A,B,...",
                                help=SETTING_HELP.get(f.name))
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            bounds = SETTING_RANGES.get(f.name)
            parts = [SETTING_HELP.get(f.name), range_text(bounds) if bounds else None]
            parser.add_argument(flag, type=kind, default=None, help="; ".join(p for p in parts if p) or None)


def run_command_line(prog: str, description: str, job: Callable[[Config], dict], argv: list[str] | None) -> dict:
    """Parse ``--field`` flags into a :class:`Config` and run ``job``; user errors exit with their message."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=options_help(argv),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        with short_warnings():
            return job(config_from_args(args))
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")


def options_help(argv: list[str] | None) -> str:
    """``--help``'s list of the options of the method named on the command line (default: the prototype)."""
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--method", default=Config.method)
    finder.add_argument("--preset", default="toy")
    found = finder.parse_known_args(argv)[0]
    if found.method not in METHODS or found.preset not in PRESETS:
        return f"methods: {', '.join(METHODS)}; presets: {', '.join(PRESETS)}"
    kind = method_options_type(found.method)
    values = {**kind().to_dict(), **make_config(method=found.method, preset=found.preset).options}
    variants = sorted(method_variants(found.method))
    listed = f"\nvariants of method {found.method} (--variant NAME): {', '.join(variants)}" if variants else ""
    return (f"options of method {found.method} with preset {found.preset} (--options KEY=VALUE; --method M / --preset P "
            f"--help lists others):\n{kind.describe(values)}{listed}")


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` described by parsed command-line arguments."""
    values = {k: v for k, v in vars(args).items() if v is not None}
    if "options" in values:
        kind = method_options_type(values.get("method", Config.method))
        values["options"] = dict(parse_option(item, kind) for item in values["options"])
    return make_config(**values)


def parse_option(item: str, kind: type[MethodOptions]) -> tuple[str, Any]:
    """``KEY=VALUE`` from a command line, the value read by the type of option ``KEY`` of ``kind``."""
    key, sep, raw = item.partition("=")
    names = {f.name for f in fields(kind)}
    if not sep and not names:
        raise FsslibError(f"--options {item}: method {kind.method} takes no options.", "drop --options.")
    if not sep:
        example = kind.example(key) if key in names else "NAME=VALUE"
        raise FsslibError(f"--options {item} is not NAME=VALUE.",
                          f"write e.g. --options {example} (`--method {kind.method} --help` lists its options).")
    return key, kind.from_text(key, raw)
