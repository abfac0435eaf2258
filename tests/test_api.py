"""The API a user holds: typed method options (validated, parsed by type, listed in --help) and models that
read inputs only."""
from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from fsslib.config import make_config, parse_option
from fsslib.errors import FsslibError, UnknownNameError
from fsslib.methods import METHODS, build_method, method_module, method_options
from fsslib.methods.options import MethodOptions, OptionError


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_declares_typed_options_with_help(method):
    kind = method_module(method).OPTIONS
    assert issubclass(kind, MethodOptions) and kind.method == method
    hints = typing.get_type_hints(kind)
    for spec in dataclasses.fields(kind):
        assert spec.metadata.get("help"), f"{method}.{spec.name} has no help text"
        if hints[spec.name] in (int, float, int | None, float | None):  # a number declares its range or choices
            assert spec.metadata["range"] or spec.metadata["choices"], f"{method}.{spec.name} has no valid range"
    assert kind.parse(make_config(method=method).options) is not None  # the presets' options are valid
    assert method_options(method) == kind().to_dict()


@pytest.mark.parametrize("method, options, message", [
    ("lfss", {"refine": "false"}, "must be bool"),  # bool("false") would be True
    ("piclip", {"vvp_mask_support_image": "false"}, "must be bool"),
    ("pfenet", {"feature_dim": "64"}, "must be int"),
    ("pfenet", {"dropout": True}, "must be float"),
    ("piclip", {"priors": "vtp"}, "must be a list of str"),
    ("piclip", {"priors": ["vtp", "gradcam"]}, "gradcam"),
    ("qgnet", {"projection": "learned"}, "learned"),
    ("pfenet", {"feature_dims": 64}, "feature_dims"),
    ("maskclip", {"clip": None}, "cannot be None"),
    ("pfenet", {"feature_dim": -5}, "feature_dim of pfenet must be at least 1, got -5"),  # ranges: checked before building
    ("pfenet", {"dropout": 7}, "dropout of pfenet must be at least 0, at most 1"),
    ("clip-dinoiser", {"delta": -3}, "delta of clip-dinoiser must be above 0, at most 1"),
    ("piclip", {"vtp_temperature": 0}, "above 0"),
    ("clip-dinoiser-support", {"window": 0}, "at least 1"),
    ("piclip", {"prior_scale": float("inf")}, "prior_scale of piclip must be a finite number, above 0, got inf"),
    ("piclip", {"vtp_temperature": float("inf")}, "must be a finite number"),
    ("hdmnet", {"lr_scale": float("inf")}, "must be a finite number"),
    ("bam", {"aux_weight": float("nan")}, "must be a finite number"),
])
def test_a_wrong_type_or_an_unknown_option_is_refused_when_the_config_is_made(method, options, message):
    with pytest.raises((OptionError, UnknownNameError), match=message):
        make_config(method=method, options=options)


def test_options_keep_their_types_once_parsed():
    from fsslib.methods.lfss import LfssOptions
    from fsslib.methods.piclip import PiclipOptions

    options = PiclipOptions.parse({"priors": ["vtp"], "box_threshold": 1, "clip_image_size": None})
    assert options.priors == ("vtp",) and options.box_threshold == 1.0 and isinstance(options.box_threshold, float)
    assert LfssOptions.parse({}).refine is True and LfssOptions.parse({"refine": False}).refine is False


def test_the_command_line_reads_each_option_by_its_type():
    from fsslib.methods.lfss import LfssOptions
    from fsslib.methods.pfenet import PFENetOptions
    from fsslib.methods.piclip import PiclipOptions
    from fsslib.methods.qgnet import QGNetOptions

    assert parse_option("refine=false", LfssOptions) == ("refine", False)
    assert parse_option("refine=True", LfssOptions) == ("refine", True)
    assert parse_option("feature_dim=64", PFENetOptions) == ("feature_dim", 64)
    assert parse_option("priors=vvp,vtp", PiclipOptions) == ("priors", ["vvp", "vtp"])
    assert parse_option('priors=["vtp"]', PiclipOptions) == ("priors", ["vtp"])
    assert parse_option("vtp_temperature=none", PiclipOptions) == ("vtp_temperature", None)
    assert parse_option("prior_extractor=random", QGNetOptions) == ("prior_extractor", "random")
    with pytest.raises(OptionError, match="must be int") as error:
        parse_option("feature_dim=wide", PFENetOptions)
    assert error.value.fix == "write e.g. --options feature_dim=256 (its default)."  # a value the option takes
    with pytest.raises(OptionError, match="must be bool") as error:
        parse_option("refine=maybe", LfssOptions)
    assert error.value.fix == "write e.g. --options refine=true (its default)."
    with pytest.raises(FsslibError, match="--options priors is not NAME=VALUE") as error:
        parse_option("priors", PiclipOptions)
    assert error.value.fix.startswith("write e.g. --options priors=vvp,vtp (`--method piclip --help`")
    from fsslib.methods import method_options_type

    with pytest.raises(FsslibError, match="--options x: method all-foreground takes no options"):
        parse_option("x", method_options_type("all-foreground"))


def test_help_lists_the_method_s_options(capsys):
    from fsslib.train import main

    with pytest.raises(SystemExit):
        main(["--method", "lfss", "--help"])
    shown = capsys.readouterr().out
    assert "options of method lfss" in shown and "refine: bool = True" in shown and "grid: int = 3 (at least 1)" in shown
    assert "variants of method lfss (--variant NAME): " in shown and "dps_refine" in shown  # its Table 4 rows


def test_a_bad_option_on_the_command_line_exits_2(capsys):
    from fsslib.evaluate import main

    with pytest.raises(SystemExit) as exit_:
        main(["--method", "lfss", "--options", "refine=maybe"])
    assert exit_.value.code == 2 and "refine" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--method", "pfenet", "--options", "feature_dim=-5"])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "must be at least 1" in error and "--options feature_dim=256" in error
    for flags, message in ((["--method", "piclip", "--options", "prior_scale=inf"], "must be a finite number, above 0"),
                           (["--lr", "inf"], "--lr must be a finite number, above 0, got inf")):
        with pytest.raises(SystemExit) as exit_:
            main(flags)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def toy_batch(size: int = 2):
    """``size`` toy test episodes of fold 0, 1-way 1-shot."""
    from fsslib.data.episodes import EpisodeDataset, collate_episodes
    from fsslib.engine import open_source

    episodes = EpisodeDataset(open_source(make_config(), "test"), 0, 1, 64, size, seed=0, mode="test")
    return collate_episodes([episodes[i] for i in range(size)])


def test_models_read_inputs_only(toy_root):
    from fsslib.data.episodes import EpisodeInputs

    assert not {"query_masks", "query_labels"} & {f.name for f in dataclasses.fields(EpisodeInputs)}
    model = build_method(make_config(method="prototype")).eval()
    batch = toy_batch()
    with pytest.raises(FsslibError, match=r"pass batch.inputs\(\)"):
        model(batch)
    inputs = batch.inputs()
    assert inputs.query_classes is None  # image-level labels are withheld unless a model asks
    with torch.no_grad():
        assert model(inputs).shape == (len(batch), 2, 64, 64)


@pytest.mark.parametrize("method", ["piclip", "piclip-bam", "piclip-hdmnet"])
def test_a_model_that_reads_image_labels_says_so_and_is_given_them(method, toy_root):
    """PI-CLIP's official VTP prompts read the query's image-level labels on every baseline: the model says so, is
    refused inputs without them, and trains and predicts with them."""
    options = {"base_learner": "random"} if method != "piclip" else {}
    model = build_method(make_config(method=method, options={**options, "vtp_prompts": "present_classes"})).eval()
    plain = build_method(make_config(method=method, options=options)).eval()
    assert model.reads_image_labels and not plain.reads_image_labels
    batch = toy_batch()
    with pytest.raises(FsslibError, match="image_labels=True"):
        model(batch.inputs())
    assert batch.inputs(image_labels=True).query_classes == batch.query_classes
    with torch.no_grad():
        assert model(batch.inputs(image_labels=True)).shape == (2, 2, 64, 64)
    assert torch.isfinite(model.train().loss(batch))  # the loss asks for the labels itself


def test_options_compare_as_typed_values_against_a_checkpoint(toy_root):
    """A checkpoint trained with an option left at its default loads when the option is written out (and an int
    for a float option is the same value); a different value is refused."""
    from fsslib.config import same_setting
    from fsslib.engine import load_model
    from fsslib.errors import CheckpointError

    assert same_setting("options", {"feature_dim": 64, "dropout": 0.5}, {"feature_dim": 64}, "pfenet")
    assert same_setting("options", {"box_threshold": 0.4}, {"box_threshold": 0.4, "pir_blocks": 8}, "piclip")
    assert not same_setting("options", {"feature_dim": 64}, {"feature_dim": 32}, "pfenet")
    assert not same_setting("options", {"no_longer_an_option": 1}, {}, "pfenet")
    # what a model reads at inference may differ from training: LFSS's pseudo masks' background names
    assert same_setting("options", {"feature_dim": 64}, {"feature_dim": 64, "background_names": ["sky"]}, "lfss")
    assert not same_setting("options", {"feature_dim": 64}, {"feature_dim": 32, "background_names": ["sky"]}, "lfss")
    device = torch.device("cpu")
    load_model(make_config(method="pfenet", ckpt="zoo", options={"feature_dim": 64, "dropout": 0.5}), device)
    with pytest.raises(CheckpointError, match="was trained with options"):
        load_model(make_config(method="pfenet", ckpt="zoo", options={"dropout": 0.1}), device)


@pytest.mark.parametrize("setting, value", [("shots", 0), ("ways", 0), ("episodes", -1), ("lr", 0.0), ("momentum", 1.5),
                                            ("image_size", 4), ("fold", -1)])
def test_settings_out_of_range_are_refused_before_anything_runs(setting, value):
    """make_config checks each numeric setting's range (fsslib.config.SETTING_RANGES) and names the flag and a fix."""
    from fsslib.errors import FsslibError

    with pytest.raises(FsslibError, match=f"--{setting.replace('_', '-')} must be"):
        make_config(method="pfenet", **{setting: value})


def test_a_checkpoint_given_to_a_training_free_method_is_said_to_be_unread(tmp_path):
    """evaluate builds MaskCLIP, which loads no weights of its own: a checkpoint file given to it is warned about."""
    import torch

    from fsslib.engine import load_model

    with pytest.warns(UserWarning, match="loads no checkpoint"):
        load_model(make_config(method="maskclip", ckpt=str(tmp_path / "nothing.pt")), torch.device("cpu"))


def test_training_refuses_a_checkpoint_it_would_not_read(tmp_path):
    """train starts from the method's initial weights: --ckpt is refused with the commands that do read it."""
    from fsslib import train
    from fsslib.errors import FsslibError

    with pytest.raises(FsslibError, match="--resume --out DIR, or evaluate the checkpoint"):
        train.run(make_config(method="pfenet", ckpt="zoo", out=str(tmp_path)))
