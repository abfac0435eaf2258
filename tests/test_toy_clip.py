"""Toy CLIP: tokenizer, architectures, losses, training and recipes (fsslib.pretrain.toy_clip), shipped checkpoints."""
from __future__ import annotations

import json
import random
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fsslib.clip import bundle_from_model, image_and_dense_embeddings, load_clip, prepare_images
from fsslib.clip import toy
from fsslib.clip.prompts import MASKCLIP_TEMPLATES, PICLIP_NON_TARGET_TEMPLATE, PICLIP_TARGET_TEMPLATE
from fsslib.data.toyworld import CLASS_NAMES
from fsslib.errors import CheckpointError, FsslibError
from fsslib.paths import CHECKPOINT_DIR
from fsslib.pretrain import losses
from fsslib.pretrain.captions import caption_scene
from fsslib.pretrain.scenes import render_pool, to_unit_tensor
from fsslib.pretrain.toy_clip import RECIPES, Stage, TrainSettings, train_recipe, train_toy_clip
from fsslib.pretrain.toy_clip.cli import build_parser, settings_from
from fsslib.pretrain.toy_clip.metrics import maskclip_iou, render_eval_set, zero_shot_accuracy
from fsslib.pretrain.toy_clip.recipes import stage_command

SHIPPED = {arch: CHECKPOINT_DIR / f"toy_clip_{arch}.pt" for arch in ("vit", "rn")}


def tiny_cfg(arch: str) -> dict:
    """A toy architecture small enough to train in seconds at 32 px (4x4 feature grid)."""
    cfg = toy.default_model_cfg(arch, image_size=32, context_length=24)
    cfg["text_cfg"].update(width=32, heads=1, layers=1)
    cfg["embed_dim"] = 32
    if arch == "vit":
        cfg["vision_cfg"].update(width=32, layers=2)
    return cfg


def tiny(steps: int, **settings) -> TrainSettings:
    """Settings of a seconds-long run on a tiny pool."""
    return TrainSettings(steps=steps, **{"pool_size": 16, "batch_size": 4, **settings})


def trainable_bundle(model: torch.nn.Module):
    """A bundle of ``model`` that stays trainable (a bundle freezes its model)."""
    bundle = bundle_from_model(model, toy.WordTokenizer(toy.toy_vocabulary(), 24), mean=toy.MEAN, std=toy.STD)
    model.requires_grad_(True)
    return bundle


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one torch thread per test, restored after


def test_tokenizer_round_trip_and_eot_is_argmax():
    tokenizer = toy.WordTokenizer(toy.toy_vocabulary(), context_length=32)
    tokens = tokenizer(["A photo of a Striped Star.", "a photo without a dotted circle, zebra!"])  # (2, 32)
    assert tokens.shape == (2, 32) and tokens.dtype == torch.long
    assert tokenizer.decode(tokens[0]) == "a photo of a striped star ."
    assert "<unk>" in tokenizer.decode(tokens[1])  # 'zebra' and '!' are not toy words
    assert (tokens.argmax(-1) == (tokens != 0).sum(-1) - 1).all()  # EOT: last and highest id
    assert tokens[:, 0].eq(tokenizer.sot_id).all()


def test_vocabulary_covers_all_paper_prompts():
    tokenizer = toy.WordTokenizer(toy.toy_vocabulary(), context_length=32)
    prompts = [t.format(name) for t in MASKCLIP_TEMPLATES for name in CLASS_NAMES[:2]]
    prompts += [PICLIP_TARGET_TEMPLATE.format("solid circle"), PICLIP_NON_TARGET_TEMPLATE.format("solid circle"),
                toy.EMPTY_PROMPT]
    assert len(MASKCLIP_TEMPLATES) == 85
    assert not (tokenizer(prompts) == tokenizer.unk_id).any()


def test_vocabulary_is_the_shipped_one():
    assert torch.load(SHIPPED["vit"], weights_only=True)["vocab"] == toy.toy_vocabulary()


def test_captions_use_only_known_words_and_name_the_objects():
    tokenizer = toy.WordTokenizer(toy.toy_vocabulary(), context_length=32)
    rng = random.Random(0)
    captions = [caption_scene([7, 12], ["on the left", "at the top"], rng) for _ in range(200)]
    assert not (tokenizer(captions) == tokenizer.unk_id).any()
    assert all(CLASS_NAMES[6] in c and CLASS_NAMES[11] in c for c in captions)
    assert any("without" in c for c in captions)
    assert caption_scene([], [], rng) in {toy.EMPTY_PROMPT, "an empty scene.", "no objects."}


@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_open_clip_structure_and_dense_grid(arch: str):
    model = toy.build_toy_clip(tiny_cfg(arch))
    bundle = trainable_bundle(model)
    images = torch.rand(2, 3, 32, 32)
    image_emb, dense = image_and_dense_embeddings(bundle, images)  # (2, D), (2, 16, D)
    assert dense.shape == (2, 16, 32) and dense.requires_grad
    torch.testing.assert_close(image_emb, model.encode_image(prepare_images(bundle, images)))
    if arch == "vit":
        assert isinstance(model.visual.conv1, toy.ConvStem)
        assert len(model.visual.transformer.resblocks) == 2 and model.visual.proj.shape == (32, 32)


@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_losses_fall_on_a_fixed_batch(arch: str):
    torch.manual_seed(0)
    cfg = tiny_cfg(arch)
    model = toy.build_toy_clip(cfg)
    bundle = trainable_bundle(model)
    tokenizer = bundle.tokenizer
    pool = render_pool(16, seed=0, size=32, progress=False)
    images = to_unit_tensor(pool.images)  # (16, 3, 32, 32)
    rng = random.Random(0)
    captions = tokenizer([caption_scene(c, p, rng) for c, p in zip(pool.class_ids, pool.positions)])
    prompts = tokenizer([toy.ZERO_SHOT_TEMPLATE.format(n) for n in CLASS_NAMES] + [toy.EMPTY_PROMPT])
    keys = [tuple(sorted(set(c))) for c in pool.class_ids]
    counts = torch.from_numpy(pool.label_counts)  # (16, 4, 4, C + 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    history = []
    for step in range(25):
        image_emb, dense = image_and_dense_embeddings(bundle, images)
        text = model.encode_text(torch.cat([captions, prompts]))
        scale = model.logit_scale.exp()
        windows = torch.Generator().manual_seed(step % 3)
        loss = (losses.contrastive_loss(image_emb, text[:16], keys, scale)
                + losses.dense_mil_loss(dense, text[16:], counts, scale)
                + losses.region_mil_loss(dense, text[16:], counts, scale, windows))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert np.mean(history[-3:]) < 0.7 * np.mean(history[:3])


def test_negation_loss_prefers_of_for_present_classes():
    image = torch.tensor([[1.0, 0.0]])
    of, without = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    scale = torch.tensor(10.0)
    low = losses.negation_loss(image, of, without, torch.ones(1, 1), scale)
    high = losses.negation_loss(image, of, without, torch.zeros(1, 1), scale)
    assert low < 0.01 < high


def test_train_writes_checkpoint_and_metadata_that_round_trip(tmp_path):
    out = tmp_path / "tiny.pt"
    metadata = train_toy_clip("vit", out, tiny(3, pool_size=32, batch_size=8), model_cfg=tiny_cfg("vit"),
                              evaluate=False)
    assert metadata["train_steps"] == 3 and metadata["seed"] == 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert {"command", "seed", "git_commit", "wall_time_minutes", "hardware", "batch_size", "lr"} <= set(saved)
    checkpoint = torch.load(out, weights_only=True)
    assert {"model_cfg", "state_dict", "vocab", "context_length", "image_size", "mean", "std"} <= set(checkpoint)
    bundle = load_clip(str(out))
    images = torch.rand(2, 3, 32, 32)
    reloaded = bundle.model.encode_image(prepare_images(bundle, images))
    model = toy.build_toy_clip(checkpoint["model_cfg"]).eval()
    model.load_state_dict({k: v.float() for k, v in checkpoint["state_dict"].items()})
    torch.testing.assert_close(reloaded, model.encode_image(prepare_images(bundle, images)))
    assert bundle.model_cfg == tiny_cfg("vit") and bundle.tokenizer.vocab == toy.toy_vocabulary()


def test_step_budget_makes_training_exactly_reproducible(tmp_path):
    weights = []
    for run in ("a", "b"):
        train_toy_clip("rn", tmp_path / f"{run}.pt", tiny(4, seed=3), model_cfg=tiny_cfg("rn"), evaluate=False)
        weights.append(torch.load(tmp_path / f"{run}.pt", weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0)


def test_training_continues_from_a_checkpoint(tmp_path):
    first = tmp_path / "first.pt"
    train_toy_clip("rn", first, tiny(2), model_cfg=tiny_cfg("rn"), evaluate=False)
    metadata = train_toy_clip("rn", tmp_path / "second.pt", tiny(2), evaluate=False, init=first)
    assert metadata["init"] == str(first) and metadata["model_cfg"] == tiny_cfg("rn")  # the architecture of init
    before = torch.load(first, weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "second.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(before[name], after[name]) for name in before)  # it trained on
    with pytest.raises(CheckpointError, match="another vocabulary or architecture"):
        train_toy_clip("vit", tmp_path / "third.pt", tiny(1), evaluate=False, init=first)


def test_recipe_chains_its_stages_like_separate_train_calls(tmp_path):
    stages = (Stage("a.pt", tiny(2)), Stage("b.pt", tiny(2, lr=5e-4, area_fraction=1.0), init="a.pt"))
    first, second = train_recipe("rn", tmp_path, stages=stages, model_cfg=tiny_cfg("rn"), evaluate=False)
    assert first["recipe"]["stage"] == 1 and second["recipe"] == {
        "command": "python -m fsslib.pretrain toy-clip recipe rn", "stage": 2, "stages": 2}
    assert second["init"] == str(tmp_path / "a.pt") and second["area_fraction"] == 1.0
    assert second["command"].startswith("python -m fsslib.pretrain toy-clip train --arch rn --init ")
    assert "--area-fraction 1 " in second["command"]
    train_toy_clip("rn", tmp_path / "direct.pt", tiny(2, lr=5e-4, area_fraction=1.0), init=tmp_path / "a.pt",
                   evaluate=False)
    recipe_weights = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    direct_weights = torch.load(tmp_path / "direct.pt", weights_only=True)["state_dict"]
    for name in direct_weights:
        torch.testing.assert_close(recipe_weights[name], direct_weights[name], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="--start 1"):
        train_recipe("rn", tmp_path / "empty", start=2, stages=stages, evaluate=False)
    with pytest.raises(FsslibError, match="no stage 3"):
        train_recipe("rn", tmp_path, start=3, stages=stages, evaluate=False)


def test_stage_commands_parse_back_to_their_settings():
    for arch, stages in RECIPES.items():
        for stage in stages:
            command = stage_command(arch, stage, CHECKPOINT_DIR)
            args = build_parser().parse_args(shlex.split(command)[4:])  # after 'python -m fsslib.pretrain toy-clip'
            assert settings_from(args) == stage.settings and args.arch == arch
            assert (args.init.name if args.init else None) == stage.init and args.out.name == stage.out
    odd = replace(TrainSettings(minutes=1.5), weight_decay=0.1, warmup_steps=10)
    assert settings_from(build_parser().parse_args(["train", "--arch", "vit", "--out", "x.pt", *odd.flags()])) == odd


@pytest.mark.parametrize("arch", sorted(RECIPES))
def test_shipped_checkpoints_were_made_by_their_recipe(arch: str):
    """Each stage's metadata records the recipe's settings, so `recipe ARCH` re-makes what ships."""
    stages = RECIPES[arch]
    assert stages[-1].out == f"toy_clip_{arch}.pt"
    for number, stage in enumerate(stages, 1):
        metadata = json.loads((CHECKPOINT_DIR / stage.out).with_suffix(".json").read_text())
        assert metadata["recipe"], f"{stage.out} was not made by its recipe: run {stage_command(arch, stage, CHECKPOINT_DIR)}"
        assert metadata["recipe"]["stage"] == number and metadata["recipe"]["stages"] == len(stages)
        recorded = {key: metadata[key] for key in ("lr", "area_fraction", "batch_size", "pool_size", "seed")}
        settings = stage.settings
        assert recorded == {"lr": settings.lr, "area_fraction": settings.area_fraction,
                            "batch_size": settings.batch_size, "pool_size": settings.pool_size, "seed": settings.seed}
        assert metadata["train_steps"] == settings.steps and metadata["arch"] == arch
        init = metadata.get("init")  # older metadata has no key: trained from scratch
        assert (Path(init).name if init else None) == stage.init
        remake = metadata.get("remake", metadata["command"])  # 'remake': the current command of an older record
        assert remake == stage_command(arch, stage, Path("fsslib/checkpoints"))


@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_shipped_checkpoint_meets_the_acceptance_targets(arch: str):
    """The issue's targets, as documented in the metadata, and MaskCLIP IoU re-measured on 100 of its 500 scenes."""
    metrics = json.loads(SHIPPED[arch].with_suffix(".json").read_text())["metrics"]
    assert metrics["zero_shot_acc"] >= 0.70 and metrics["maskclip_fg_iou"] >= 0.45
    assert metrics["cos_of_without"] < 0.9 and metrics["vtp_gradcam_iou"] > metrics["all_foreground_iou"]
    iou, _, _, all_foreground = maskclip_iou(load_clip(f"toy-{arch}"), render_eval_set("multi", 100))
    assert iou >= metrics["maskclip_fg_iou"] - 0.06 and iou > 3 * all_foreground


def test_training_needs_exactly_one_budget():
    with pytest.raises(ValueError, match="exactly one budget"):
        TrainSettings(steps=3, minutes=1.0)
    with pytest.raises(FsslibError, match="exactly one budget"):
        TrainSettings()


def test_region_loss_rewards_locality():
    """A dense map that puts the class on its object scores lower than one that puts it elsewhere."""
    counts = torch.zeros(1, 8, 8, 22)
    counts[..., 0] = 64  # background everywhere ...
    counts[0, :3, :3, 0], counts[0, :3, :3, 5] = 0, 64  # ... but class 5 in the top-left 3 x 3 cells
    prompts = torch.eye(21, 32)  # prompt k = unit vector k; background = 20

    def dense_with_class_at(rows: slice, cols: slice) -> torch.Tensor:
        labels = torch.full((8, 8), 20)
        labels[rows, cols] = 4  # class 5 has prompt index 4
        return prompts[labels.flatten()][None]  # (1, 64, 32)

    right = dense_with_class_at(slice(0, 3), slice(0, 3))
    wrong = dense_with_class_at(slice(5, 8), slice(5, 8))
    scale = torch.tensor(20.0)

    def region(dense: torch.Tensor) -> torch.Tensor:
        return losses.region_mil_loss(dense, prompts, counts, scale, torch.Generator().manual_seed(0), windows=16)

    assert region(right) < 0.1 < region(wrong)
    # the image-level loss only knows what is in the picture and how large, not where
    torch.testing.assert_close(losses.dense_mil_loss(right, prompts, counts, scale),
                               losses.dense_mil_loss(wrong, prompts, counts, scale))


def test_missing_checkpoint_says_how_to_fix(tmp_path):
    with pytest.raises(CheckpointError, match="How to fix") as error:
        load_clip("toy-vit", checkpoint=tmp_path / "nope.pt")
    assert "python -m fsslib.pretrain toy-clip recipe vit" in error.value.fix


@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_shipped_checkpoint_is_near_its_documented_zero_shot_accuracy(arch: str):
    """On 100 of the documented 1000 images: within 0.12 of the documented accuracy either way (three standard errors
    of a 100-image accuracy), so another checkpoint, worse or better, is caught."""
    path = SHIPPED[arch]
    assert path.is_file() and path.with_suffix(".json").is_file(), f"{path.name} and its .json are shipped and missing"
    documented = json.loads(path.with_suffix(".json").read_text())["metrics"]["zero_shot_acc"]
    accuracy = zero_shot_accuracy(load_clip(f"toy-{arch}"), render_eval_set("single", 100))
    assert abs(accuracy - documented) <= 0.12, (accuracy, documented)
