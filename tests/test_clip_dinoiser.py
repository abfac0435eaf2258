"""CLIP-DINOiser's heads, guided pooling and background rule, by hand (wysoczanska/clip_dinoiser)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fsslib.clip import ClipInputError, load_clip, maskclip_features, maskclip_features_and_tap
from fsslib.errors import UnknownNameError
from fsslib.methods.clip_dinoiser.model import (DinoiserHeads, apply_background, background_loss, class_log_scores,
                                                correlation_loss, guided_pooling, teacher_targets)
from fsslib.methods.options import OptionError


def test_the_tap_is_ln_2_of_the_mid_block_tokens_of_the_same_pass():
    bundle = load_clip("toy-vit")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense, tap = maskclip_features_and_tap(bundle, images, -2)
        torch.testing.assert_close(dense, maskclip_features(bundle, images))
        visual = bundle.visual
        x = visual.conv1((images - torch.tensor(bundle.mean).view(1, 3, 1, 1)) / torch.tensor(bundle.std).view(1, 3, 1, 1))
        x = torch.cat([visual.class_embedding.expand(2, 1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        x = visual.ln_pre(x + visual.positional_embedding)
        x = visual.transformer.resblocks[0](x)
        block = visual.transformer.resblocks[1]
        mid = x + block.attention(q_x=block.ln_1(x))  # open_clip's block, before its MLP
        expected = block.ln_2(mid)[:, 1:].transpose(1, 2).reshape(2, -1, 8, 8)
    torch.testing.assert_close(tap, expected)
    with pytest.raises(ClipInputError, match="value path"):
        maskclip_features_and_tap(bundle, images, -1)


def test_correlation_head_gives_cosines_and_the_background_head_reads_unit_features():
    torch.manual_seed(0)
    heads = DinoiserHeads(in_channels=6, dim=4)
    features = torch.randn(2, 6, 3, 5)
    correlations = heads.correlation(features)  # (B, N, N)
    projected = heads.correlation.proj(features).flatten(2)  # (B, 4, 15)
    n, m = 3, 11
    torch.testing.assert_close(correlations[1, n, m], F.cosine_similarity(projected[1, :, n], projected[1, :, m], dim=0))
    assert heads.correlation.proj.padding_mode == "replicate" and heads.correlation.proj.kernel_size == (3, 3)
    torch.testing.assert_close(heads.background(features * 7.0), heads.background(features))


def test_teacher_targets_and_losses_follow_the_official_training():
    teacher = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.1]]])
    targets = teacher_targets(teacher, gamma=0.2)
    assert targets[0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]  # cosines 1, 0.99, 0, -0.99
    weak = torch.tensor([[[1.0, 0.0], [1.0, 0.2]]])  # cosine 0.98, and 1 with itself
    loose = torch.tensor([[[1.0, 0.0], [0.1, 1.0]]])  # cosine 0.0995: under gamma 0.2, positive without a threshold
    assert teacher_targets(loose, gamma=0.2)[0, 0].tolist() == [1.0, 0.0]
    assert teacher_targets(loose, gamma=None)[0, 0].tolist() == teacher_targets(loose, gamma=0)[0, 0].tolist() == [1.0, 1.0]
    assert teacher_targets(weak, gamma=None).tolist() == teacher_targets(weak, gamma=0.2).tolist()
    predicted = torch.tensor([[[0.8, -0.3], [0.1, 0.5]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    by_hand = -(torch.log(torch.sigmoid(torch.tensor(0.8))) + torch.log(1 - torch.sigmoid(torch.tensor(0.0)))
                + torch.log(1 - torch.sigmoid(torch.tensor(0.1))) + torch.log(torch.sigmoid(torch.tensor(0.5)))) / 4
    torch.testing.assert_close(correlation_loss(predicted, target), by_hand)  # negatives count as logit 0
    saliency = torch.tensor([[[[0.7, 0.5]]]])
    logits = torch.tensor([[[[1.0, -2.0]]]])
    torch.testing.assert_close(background_loss(logits, saliency),
                               F.binary_cross_entropy_with_logits(logits, torch.tensor([[[[1.0, 0.0]]]])))


def test_guided_pooling_against_a_loop_over_pixels():
    torch.manual_seed(0)
    dense = torch.randn(2, 5, 3, 4)  # (B, D, h, w)
    correlations = torch.rand(2, 12, 12) * 1.2 - 0.2
    pooled = guided_pooling(dense, correlations, gamma=0.2)
    flat = dense.flatten(2)
    for b in range(2):
        for n in range(12):
            weights = [float(a) if a >= 0.2 else 0.0 for a in correlations[b, n]]
            expected = sum(w * flat[b, :, m] for m, w in enumerate(weights)) / (sum(weights) + 1e-6)
            torch.testing.assert_close(pooled[b].flatten(1)[:, n], expected)


@pytest.mark.parametrize("gamma", [None, 0.0])
def test_guided_pooling_without_gamma_thresholds_nothing(gamma):
    """The official ``if self.gamma:``: no gamma keeps every correlation, negative ones included."""
    torch.manual_seed(0)
    dense = torch.randn(1, 3, 2, 2)
    correlations = torch.rand(1, 4, 4) * 2 - 1 + 4 * torch.eye(4)  # some negative; rows sum above 0
    expected = torch.einsum("bnm,bdm->bdn", correlations, dense.flatten(2)) / (correlations.sum(-1)[:, None] + 1e-6)
    torch.testing.assert_close(guided_pooling(dense, correlations, gamma=gamma), expected.view_as(dense))


def test_gamma_none_reaches_the_segmenter():
    from fsslib.config import make_config
    from fsslib.methods import build_method

    model = build_method(make_config(method="clip-dinoiser", options={"gamma": None}))
    assert model.gamma is None


def test_scores_and_the_background_rule():
    features = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.05]]]])  # (B=1, D=2, h=1, w=2)
    embeddings = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # background, class 1
    log_scores = class_log_scores(features, embeddings)
    cosines = torch.tensor([[0.0, 0.05 / (1 + 0.05**2) ** 0.5], [1.0, 1 / (1 + 0.05**2) ** 0.5]])
    torch.testing.assert_close(log_scores[0, :, 0].exp(), torch.softmax(100 * cosines, dim=0))  # the official scores
    confident, unsure = torch.tensor([0.005, 0.995]), torch.tensor([0.3, 0.7])
    scores = torch.stack([confident, unsure, unsure], dim=1).view(1, 2, 1, 3)  # three pixels
    foreground_logits = torch.tensor([[[[-1.0, -1.0, 1.0]]]])  # background, background, foreground
    ruled = apply_background(scores.log(), foreground_logits, delta=0.99).exp()
    assert ruled[0, 0, 0].tolist() == pytest.approx([0.005, 1.0, 0.3])  # only the uncertain background pixel
    assert ruled[0, 1, 0].tolist() == pytest.approx([0.995, 0.7, 0.7])


def test_official_heads_load_under_fsslib_names_and_missing_heads_say_how_to_make_them(tmp_path):
    from fsslib.errors import CheckpointError
    from fsslib.methods.clip_dinoiser.model import load_heads

    reference = DinoiserHeads(in_channels=12, dim=8)
    official = {"obj_proj.weight": reference.correlation.proj.weight, "obj_proj.bias": reference.correlation.proj.bias,
                "bkg_decoder.weight": reference.background.proj.weight, "bkg_decoder.bias": reference.background.proj.bias}
    torch.save({"epoch": 99, "model_state_dict": official}, tmp_path / "last.pt")
    heads, block, trained_on = load_heads(tmp_path / "last.pt")
    features = torch.randn(1, 12, 4, 4)
    torch.testing.assert_close(heads.correlation(features), reference.correlation(features))
    assert block == -3 and trained_on is None
    with pytest.raises(CheckpointError, match="toy-clip-dinoiser"):
        load_heads(tmp_path / "absent.pt")


@pytest.mark.slow
def test_tiny_head_training_with_tiny_teachers_writes_loadable_heads(tmp_path):
    from fsslib.methods.clip_dinoiser.model import load_heads
    from fsslib.models.vit import TOY_DINO, VisionTransformer
    from fsslib.pretrain import PRETRAINERS
    from fsslib.pretrain.clip_dinoiser_heads import HeadSettings, train_dinoiser_heads
    from fsslib.pretrain.toy_found import FoundSettings, train_toy_found

    assert "toy-clip-dinoiser" in PRETRAINERS
    torch.save({"backbone": VisionTransformer(TOY_DINO).state_dict()}, tmp_path / "dino.pt")
    train_toy_found(tmp_path / "found.pt", FoundSettings(steps=2, pool_size=6, batch_size=3, dino=str(tmp_path / "dino.pt")),
                    progress=False, n_eval_images=4)
    settings = HeadSettings(steps=3, batch_size=4, pool_size=8, found=str(tmp_path / "found.pt"))
    metadata = train_dinoiser_heads(tmp_path / "heads.pt", settings, progress=False, n_eval_images=6)
    assert set(metadata["held_out"]["grouping_iou"]) == {"learned_correlations", "clip_tapped_features",
                                                         "dino_values_teacher"}
    heads, block, trained_on = load_heads(tmp_path / "heads.pt")
    assert block == 1 and trained_on == "toy-vit" and heads.correlation.proj.out_channels == 256


@pytest.fixture(scope="module")
def tiny_heads_file(tmp_path_factory):
    """Random heads for the toy CLIP (64 channels), saved as the toy stand-in saves them."""
    torch.manual_seed(0)
    heads = DinoiserHeads(in_channels=64, dim=16)
    path = tmp_path_factory.mktemp("heads") / "heads.pt"
    torch.save({"heads": heads.state_dict(), "feature_block": 1, "clip": "toy-vit"}, path)
    return path


def toy_batch(ways: int, shots: int):
    from fsslib.data.episodes import EpisodeDataset, Source, collate_episodes
    from fsslib.data.benchmarks import get_benchmark

    dataset = EpisodeDataset(Source(get_benchmark("toy"), "val"), fold=0, shots=shots, image_size=64, n_episodes=2,
                             seed=0, ways=ways)
    return collate_episodes([dataset[0], dataset[1]])


@pytest.mark.parametrize("method,variant,prompts", [("clip-dinoiser", "", "text"), ("clip-dinoiser-support", "", "support"),
                                                    ("clip-dinoiser-support", "masked_support", "masked_support"),
                                                    ("clip-dinoiser-support", "text_support", "text_support"),
                                                    ("clip-dinoiser", "no_pooling", "text")])
def test_methods_give_n_way_logits_whose_argmax_is_the_winning_vocabulary_entry(tiny_heads_file, toy_root, method,
                                                                                variant, prompts):
    from fsslib.config import make_config
    from fsslib.methods import build_method

    cfg = make_config(method=method, variant=variant, preset="toy", options={"heads": str(tiny_heads_file)})
    model = build_method(cfg)
    batch = toy_batch(ways=2, shots=2)
    with torch.no_grad():
        logits = model(batch.inputs())
        vocabulary, way_index = model.vocabulary(batch)
        scores = F.interpolate(model.log_scores(batch.query_images, vocabulary).exp(), size=(64, 64), mode="bilinear",
                               align_corners=False)
        if prompts == "text":  # each way's entry is its class name's text embedding
            names = [model.class_names[c - 1] for c in batch.class_ids.flatten().tolist()]
            expected_prompts = model.text_embeddings(names).view(2, 2, -1)
        else:  # each way's entry is built from that way's own supports
            expected_prompts = model.vocabulary(replace(batch, support_images=batch.support_images.flip(1),
                                                        support_masks=batch.support_masks.flip(1),
                                                        class_ids=batch.class_ids.flip(1)))[0][:, -2:].flip(1)
        prompts_of_ways = vocabulary.gather(1, way_index[..., None].expand(-1, -1, vocabulary.shape[-1]))
    torch.testing.assert_close(prompts_of_ways, expected_prompts)
    assert logits.shape == (2, 3, 64, 64) and torch.isfinite(logits).all()
    winner = scores.argmax(dim=1)  # (B, H, W) over the merged vocabulary
    channels = way_index - len(model.background_names) + 1  # (B, N)
    expected = torch.zeros_like(winner)
    for way in range(2):
        expected[winner == channels[:, way, None, None]] = way + 1
    assert (logits.argmax(dim=1) == expected).float().mean() > 0.999  # ties aside
    assert model.prompts == prompts


def test_sliding_windows_average_each_window_s_probabilities(tiny_heads_file, toy_root):
    """A 64 x 96 query read by windows of 64 at stride 32 (columns 0 and 32): the logits are the log of
    the mean of the two windows' probabilities where they overlap; one window covering the query is
    the one-window model."""
    from fsslib.config import make_config
    from fsslib.methods import build_method

    options = {"heads": str(tiny_heads_file), "window": 64, "stride": 32}
    model = build_method(make_config(method="clip-dinoiser", preset="toy", options=options))
    batch = toy_batch(ways=2, shots=1)
    wide = replace(batch, query_images=torch.cat([batch.query_images, batch.query_images[..., :32].flip(-1)], dim=-1))
    with torch.no_grad():
        vocabulary, way_index = model.vocabulary(wide)
        left, right = model.scores(wide.query_images[..., :64], vocabulary), model.scores(wide.query_images[..., 32:], vocabulary)
        expected = torch.cat([left[..., :32], (left[..., 32:] + right[..., :32]) / 2, right[..., 32:]], dim=-1)
        torch.testing.assert_close(model(wide.inputs()), model.way_logits(expected.clamp(min=1e-6).log(), way_index))
        one_window = build_method(make_config(method="clip-dinoiser", preset="toy", options={"heads": str(tiny_heads_file)}))
        torch.testing.assert_close(model(batch.inputs()), one_window(batch.inputs()))
    assert len(model.templates) == 80  # CLIP's ImageNet templates, the official code's
    with pytest.raises(UnknownNameError, match="option templates"):
        build_method(make_config(method="clip-dinoiser", preset="toy", options={**options, "templates": "many"}))
    with pytest.raises(OptionError, match="no window is set"):  # a stride alone would be ignored
        build_method(make_config(method="clip-dinoiser", preset="toy",
                                 options={"heads": str(tiny_heads_file), "stride": 32}))
    paper = make_config(method="clip-dinoiser", preset="paper")
    assert (paper.resize, paper.options["window"], paper.options["stride"], paper.image_size) == ("short_side", 448, 224, 448)


def test_support_prompts_are_the_normalised_mean_of_the_support_image_embeddings(tiny_heads_file, toy_root):
    from fsslib.clip import encode_image
    from fsslib.config import make_config
    from fsslib.methods import build_method

    model = build_method(make_config(method="clip-dinoiser-support", preset="toy", options={"heads": str(tiny_heads_file)}))
    batch = toy_batch(ways=1, shots=3)
    with torch.no_grad():
        prompts = model.support_embeddings(batch.support_images, batch.support_masks)  # (B, 1, D)
        shots = F.normalize(encode_image(model.bundle, batch.support_images[1, 0]), dim=-1)  # (K, D)
    torch.testing.assert_close(prompts[1, 0], F.normalize(shots.mean(0), dim=0))


def test_two_way_evaluation_needs_no_checkpoint_and_writes_metrics(tiny_heads_file, tiny_cfg, tmp_path):
    from fsslib import evaluate

    metrics = evaluate.run(tiny_cfg(method="clip-dinoiser-support", ways=2, episodes=8, out=str(tmp_path / "cd"),
                                    options={"heads": str(tiny_heads_file)}))
    assert metrics["method"] == "clip-dinoiser-support" and metrics["ways"] == 2 and metrics["episodes"] == 8
    per_class = metrics["per_class_iou"]  # 2-way episodes score both ways' classes; mIoU is their mean
    assert len(per_class) >= 2 and metrics["miou"] == pytest.approx(sum(per_class.values()) / len(per_class))


@pytest.mark.slow
def test_paper_tier_shapes_two_way_at_448_with_random_vit_b16_and_heads(monkeypatch, random_vit_b16, tmp_path):
    """The official setting's shapes: ViT-B/16 at 448 (28 x 28 grid), heads on block -3 (768 -> 256), PASCAL's names."""
    import fsslib.methods.clip_dinoiser as clip_dinoiser
    from fsslib.config import make_config
    from fsslib.data.episodes import EpisodeBatch
    from fsslib.methods import build_method

    reference = DinoiserHeads(in_channels=768)
    official = {"obj_proj.weight": reference.correlation.proj.weight, "obj_proj.bias": reference.correlation.proj.bias,
                "bkg_decoder.weight": reference.background.proj.weight, "bkg_decoder.bias": reference.background.proj.bias}
    torch.save({"model_state_dict": official}, tmp_path / "last.pt")
    monkeypatch.setattr(clip_dinoiser, "load_clip", lambda name, pretrained=None, checkpoint=None: random_vit_b16)
    # one prompt template instead of the 80: the same code path, without encoding 80 prompts per class on the CPU
    cfg = make_config(method="clip-dinoiser-support", preset="paper", options={"heads": str(tmp_path / "last.pt"),
                                                                               "templates": "single"})
    assert cfg.image_size == 448
    model = build_method(cfg)
    assert model.feature_block == -3 and model.background_names == ["background"] and len(model.class_names) == 20
    generator = torch.Generator().manual_seed(0)
    size, ways = 448, 2
    masks = torch.zeros(1, size, size, dtype=torch.long)
    batch = EpisodeBatch(support_images=torch.rand(1, ways, 1, 3, size, size, generator=generator),
                         support_masks=torch.ones(1, ways, 1, size, size, dtype=torch.long),
                         query_images=torch.rand(1, 3, size, size, generator=generator), query_masks=masks,
                         query_labels=[masks[0]], class_ids=torch.tensor([[3, 7]]), class_names=[["bird", "car"]])
    taps, correlations = [], []  # what the forward pass taps and correlates: one ViT-B/16 pass of the query gives both checks
    monkeypatch.setattr(clip_dinoiser.segmenter, "maskclip_features_and_tap",
                        lambda *args: taps.append(maskclip_features_and_tap(*args)) or taps[-1])
    model.heads.correlation.register_forward_hook(lambda module, inputs, output: correlations.append(output))
    with torch.no_grad():
        assert model(batch.inputs()).shape == (1, 1 + ways, size, size)
    assert len(taps) == len(correlations) == 1  # 448 x 448 in windows of 448: the query in one window
    (_, tapped), correlation = taps[0], correlations[0]
    assert tapped.shape == (1, 768, 28, 28) and correlation.shape == (1, 784, 784)


def test_trained_adapter_starts_as_the_training_free_model_and_weights_classes_by_presence(tiny_heads_file, toy_root):
    from fsslib.config import make_config
    from fsslib.methods import build_method

    options = {"heads": str(tiny_heads_file)}
    plain = build_method(make_config(method="clip-dinoiser-support", preset="toy", options=options))
    trained = build_method(make_config(method="clip-dinoiser-support", variant="trained_adapter", preset="toy",
                                       options=options))
    assert not plain.trainable and trained.trainable and [n for n, _ in trained.named_parameters()] == [
        "adapter.weight", "adapter.bias"]
    batch = toy_batch(ways=1, shots=1)
    with torch.no_grad():
        torch.testing.assert_close(trained(batch.inputs()), plain(batch.inputs()))
    vocabulary, way_index = trained.vocabulary(batch)
    log_scores = F.interpolate(trained.log_scores(batch.query_images, vocabulary), size=(64, 64), mode="bilinear",
                               align_corners=False)  # not clamped: far-off pixels keep their gradient
    logits = trained.way_logits(log_scores, way_index)
    masks = batch.query_masks
    counts = torch.stack([((masks == c)).sum() for c in (0, 1)]).float()
    weights = (1 / counts) * 2 / (1 / counts).sum()
    expected = F.cross_entropy(logits, masks, weight=weights, ignore_index=255)
    torch.testing.assert_close(trained.loss(batch), expected)
    trained.loss(batch).backward()
    assert trained.adapter.weight.grad.abs().sum() > 0


def test_trained_variant_uses_the_paper_s_step_schedule(tiny_heads_file, tiny_cfg):
    from fsslib import train

    cfg = tiny_cfg(method="clip-dinoiser-support", variant="trained_adapter", options={"heads": str(tiny_heads_file)})
    assert (cfg.optimizer, cfg.lr, cfg.lr_step_epochs, cfg.lr_step_gamma) == ("adamw", 1e-4, 10, 0.1)
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    schedule = train.make_schedule(cfg, optimizer, steps_per_epoch=3)
    factors = []
    for _ in range(61):
        factors.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert factors[29] == 1.0 and factors[30] == pytest.approx(0.1) and factors[60] == pytest.approx(0.01)
    summary = train.run(cfg)
    assert summary["epochs"] == 1 and "val_miou" in summary["history"][-1]


def test_heads_of_another_clip_and_misspelt_flags_fail_clearly(tiny_heads_file, toy_root, monkeypatch, random_vit_b16):
    import fsslib.methods.clip_dinoiser as clip_dinoiser
    from fsslib.config import make_config
    from fsslib.errors import CheckpointError
    from fsslib.methods import build_method
    from fsslib.methods.options import OptionError

    with pytest.raises(OptionError, match="pooling"):
        build_method(make_config(method="clip-dinoiser", options={"heads": str(tiny_heads_file), "pooling": "no"}))
    monkeypatch.setattr(clip_dinoiser, "load_clip", lambda name, pretrained=None, checkpoint=None: random_vit_b16)
    with pytest.raises(CheckpointError, match="heads=PATH"):
        build_method(make_config(method="clip-dinoiser", preset="paper", options={"heads": str(tiny_heads_file)}))
    from fsslib.config import parse_option
    assert parse_option("pooling=False", clip_dinoiser.ClipDinoiserOptions) == ("pooling", False)
    assert parse_option("background_names=sky", clip_dinoiser.ClipDinoiserOptions) == ("background_names", ["sky"])
