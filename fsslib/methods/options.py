"""Typed method options: each method declares its options as a frozen dataclass of :class:`MethodOptions`.

A field is declared with :func:`option` (default, help text, and the allowed values: a closed set of
choices, or a range for a number); its type hint is the contract. :meth:`MethodOptions.parse` turns a plain
dict (a config's ``options``, JSON from a grid file) into the typed object and rejects an unknown name or a value of the
wrong type with one message (``{"refine": "false"}`` is a string, not a boolean); :meth:`MethodOptions.from_text`
reads a command-line ``KEY=VALUE`` by the field's type; a number outside its range is refused by ``parse``
(which :func:`fsslib.config.make_config` calls before anything is built); :meth:`MethodOptions.describe` is what
``--help`` prints. Groups of options several methods share (a frozen CLIP, PFENet's decoder) are base
classes here, so each default is written once.
"""
from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import Field, asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, TypeVar

from fsslib.errors import FsslibError, unknown

if TYPE_CHECKING:
    from fsslib.blocks.base_learner import BaseLearner
    from fsslib.methods.base import MethodConfig

Options = TypeVar("Options", bound="MethodOptions")
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class OptionError(FsslibError, ValueError):
    """A method option of the wrong type or value."""


def option(default: Any, help: str, choices: tuple[Any, ...] | None = None, at_least: float | None = None,
           above: float | None = None, at_most: float | None = None, inference: bool = False) -> Any:
    """A dataclass field with its default, its help text and (optionally) its allowed values: ``choices``, or for
    a number (each entry of a list of numbers) its range, ``at_least`` or ``above`` a bound and ``at_most`` one.
    ``inference``: the option sets what the model reads at inference, not what its weights mean (e.g. the
    background names of a text-driven pseudo mask), so a checkpoint may be evaluated with another value."""
    bounds = {"at least": at_least, "above": above, "at most": at_most}
    return field(default=default, metadata={"help": help, "choices": choices, "inference": inference,
                                            "range": {word: bound for word, bound in bounds.items() if bound is not None}})


def redefault(group: type[MethodOptions], name: str, default: Any) -> Any:
    """Option ``name`` of ``group`` with another default (e.g. a method's own CLIP), its help and range kept."""
    return field(default=default, metadata=group.__dataclass_fields__[name].metadata)


@dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options; subclasses add fields made with :func:`option`."""

    method: ClassVar[str] = "this method"

    @classmethod
    def parse(cls: type[Options], values: Mapping[str, Any] | None = None) -> Options:
        """The typed options from ``values`` (missing names keep their defaults)."""
        values = dict(values or {})
        names = [f.name for f in fields(cls)]
        for name in values:
            if name not in names:
                raise unknown(f"option of method {cls.method}", name, names or ["(this method takes none)"])
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _check(cls.method, f, hints[f.name], values[f.name]) for f in fields(cls) if f.name in values})

    @classmethod
    def from_text(cls, name: str, raw: str) -> Any:
        """The value of option ``name`` written as text on a command line, read by the option's type."""
        by_name = {f.name: f for f in fields(cls)}
        if name not in by_name:
            raise unknown(f"option of method {cls.method}", name, list(by_name) or ["(this method takes none)"])
        return _from_text(cls.method, by_name[name], typing.get_type_hints(cls)[name], raw)

    @classmethod
    def example(cls, name: str) -> str:
        """``NAME=DEFAULT`` as a command line writes option ``name`` (``refine=true``), for a message's fix."""
        return f"{name}={_written({f.name: f for f in fields(cls)}[name].default)}"

    @classmethod
    def describe(cls, values: Mapping[str, Any] | None = None) -> str:
        """One line per option: name, type, value (``values``' if given, e.g. a preset's, else the default) and
        help (``--help``'s list)."""
        hints = typing.get_type_hints(cls)
        lines = []
        for f in fields(cls):
            default = (values or {}).get(f.name, f.default)
            default = list(default) if isinstance(default, tuple) else default
            choices = f.metadata.get("choices")
            many = typing.get_origin(_optional(hints[f.name])[1]) is tuple
            allowed = f" ({'entries among' if many else 'one of'} {', '.join(map(str, choices))})" if choices else ""
            allowed += f" ({'entries ' if many else ''}{range_text(f.metadata['range'])})" if f.metadata.get("range") else ""
            lines.append(f"  {f.name}: {_type_name(hints[f.name])} = {default!r}{allowed}\n      {f.metadata.get('help', '')}")
        return "\n".join(lines) if lines else "  (none)"

    def weights_meaning(self) -> dict[str, Any]:
        """The options that change what trained weights mean: all but those marked ``inference``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("inference")}

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), as a config or a JSON file holds them."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}


def _optional(hint: Any) -> tuple[bool, Any]:
    """(whether ``hint`` admits None, the hint without None)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return len(args) < len(typing.get_args(hint)), args[0] if len(args) == 1 else hint
    return False, hint


def _type_name(hint: Any) -> str:
    optional, inner = _optional(hint)
    origin = typing.get_origin(inner)
    name = f"list of {typing.get_args(inner)[0].__name__}" if origin is tuple else getattr(inner, "__name__", str(inner))
    return f"{name} or None" if optional else name


def _check(method: str, spec: Field, hint: Any, value: Any) -> Any:
    """``value`` converted to the option's type (int to float, list to tuple), or a clear error."""
    optional, inner = _optional(hint)
    fix = f"pass {_type_name(hint)}, e.g. the default {spec.default!r}"
    if value is None:
        if optional:
            return None
        raise OptionError(f"Option {spec.name} of {method} cannot be None.", fix + ".")
    if typing.get_origin(inner) is tuple:
        item = typing.get_args(inner)[0]
        if not isinstance(value, (list, tuple)) or not all(_is(entry, item) for entry in value):
            raise OptionError(f"Option {spec.name} of {method} must be a list of {item.__name__}, got {value!r}.", fix + ".")
        converted: Any = tuple(item(entry) for entry in value)
        allowed = spec.metadata.get("choices")
        wrong = [entry for entry in converted if allowed and entry not in allowed]
        if wrong:
            raise unknown(f"entry of option {spec.name} of {method}", wrong[0], list(allowed))
        for entry in converted:
            _check_range(method, spec, entry)
        return converted
    if not _is(value, inner):
        raise OptionError(f"Option {spec.name} of {method} must be {_type_name(hint)}, got {value!r} "
                          f"({type(value).__name__}).", fix + (" (true or false, not a string)." if inner is bool else "."))
    converted = inner(value)
    allowed = spec.metadata.get("choices")
    if allowed and converted not in allowed:
        raise unknown(f"value of option {spec.name} of {method}", converted, list(allowed))
    _check_range(method, spec, converted)
    return converted


RANGE_TESTS = {"at least": lambda value, bound: value >= bound, "above": lambda value, bound: value > bound,
               "at most": lambda value, bound: value <= bound}  # the words a range is written in


def range_text(bounds: dict[str, float]) -> str:
    """A range in words, e.g. "at least 1" or "above 0, at most 1"."""
    return ", ".join(f"{word} {bound}" for word, bound in bounds.items())


def range_problem(value: Any, bounds: dict[str, float]) -> str | None:
    """What a number ``value`` must be and is not ("must be above 0"; infinity and NaN are never in a range), or
    None when it meets every bound of ``bounds`` (words of :data:`RANGE_TESTS`) or is not a number."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number" + (f", {range_text(bounds)}" if bounds else "")
    if isinstance(value, (int, float)) and not all(RANGE_TESTS[word](value, bound) for word, bound in bounds.items()):
        return f"must be {range_text(bounds)}"
    return None


def _check_range(method: str, spec: Field, value: Any) -> None:
    """Raise unless the number ``value`` is finite and lies in the range of option ``spec`` (if it declares one)."""
    problem = range_problem(value, spec.metadata.get("range") or {})
    if problem:
        raise OptionError(f"Option {spec.name} of {method} {problem}, got {value!r}.",
                          "pass a value in that range, or the default: "
                          f"--options {spec.name}={_written(spec.default)}.")


def _written(value: Any) -> str:
    """``value`` as a command line writes it: a list as a,b; None as none; a bool as true or false."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _is(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _from_text(method: str, spec: Field, hint: Any, raw: str) -> Any:
    name = spec.name
    optional, inner = _optional(hint)
    if optional and raw.lower() in ("none", "null"):
        return None
    try:
        if inner is bool:
            if raw.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError
            return raw.lower() in TRUE_WORDS
        if inner in (int, float):
            return inner(raw)
        if typing.get_origin(inner) is tuple:
            item = typing.get_args(inner)[0]
            if raw.startswith("["):
                return json.loads(raw)
            return [item(entry) for entry in raw.split(",") if entry]
    except (ValueError, json.JSONDecodeError):
        raise OptionError(f"Option {name} of {method} must be {_type_name(hint)}, got {raw!r}.",
                          f"write e.g. --options {name}={_written(spec.default)} (its default).") from None
    return raw


@dataclass(frozen=True)
class NoOptions(MethodOptions):
    """A method without options."""


@dataclass(frozen=True)
class ClipOptions(MethodOptions):
    """The frozen CLIP a method reads (:func:`fsslib.clip.load_clip`)."""

    clip: str = option("toy-vit", "the CLIP model: toy-vit / toy-rn (shipped toy CLIPs) or an open_clip name (ViT-B-16, RN50)")
    clip_pretrained: str | None = option(None, "open_clip pretrained tag (openai, laion2b_s34b_b88k); None for the toy CLIPs")
    clip_checkpoint: str | None = option(None, "a local CLIP weights file instead of the tag's default location")


@dataclass(frozen=True)
class BaseLearnerOptions(MethodOptions):
    """The frozen base learner (BAM's stage 1) that BAM, HDMNet and PI-CLIP on them read."""

    base_learner: str | None = option(
        None, "the frozen base learner's file: None (the fold's: fsslib/checkpoints/zoo/base-learner-fold<F>.pt on the "
        "toy world, else $FSSLIB_WEIGHTS/base-learner-<benchmark>-fold<F>.pt), a file written by python -m "
        "fsslib.pretrain base-learner ({fold} in it: the run's fold), or random (shape checks)")

    def base_learner_files(self, cfg: MethodConfig) -> dict[str, str]:
        """The base learner's file of ``cfg`` by role (the run's provenance names it), none when random."""
        from fsslib.data.benchmarks import benchmark_spec
        from fsslib.pretrain.base_learner import base_learner_file

        path = base_learner_file(self.base_learner, benchmark_spec(cfg.benchmark), cfg.fold)
        return {"base_learner": path} if path else {}

    def frozen_base_learner(self, cfg: MethodConfig, base_classes: list[int]) -> BaseLearner:
        """The frozen base learner of ``cfg``'s fold, or a random one; a missing file names the command that makes it."""
        from fsslib.data.benchmarks import given_novel_classes
        from fsslib.pretrain.base_learner import frozen_base_learner

        return frozen_base_learner(self.base_learner, cfg.backbone, cfg.benchmark, cfg.fold, cfg.preset, base_classes,
                                   cfg.method, given_novel_classes(cfg))


@dataclass(frozen=True)
class DecoderOptions(MethodOptions):
    """PFENet's decoder (FEM), shared by PFENet, PI-CLIP and QGNet."""

    feature_dim: int = option(256, "channels of the reduced features (PFENet's reduce_dim: 256 paper, 64 toy)", at_least=1)
    dropout: float = option(0.5, "dropout of the feature reductions (PFENet: 0.5)", at_least=0, at_most=1)
    init: str = option("he_normal", "the new convolutions' initial weights: he_normal (fsslib's, which the toy tier's "
                       "short runs need) or pytorch (PyTorch's default, the official code's; the paper presets')",
                       ("he_normal", "pytorch"))
