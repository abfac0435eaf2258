"""PFENet: prior mask, FEM and the method's plumbing (toy and paper tier shapes)."""
from __future__ import annotations

import math

import pytest
import torch

from fsslib import train
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeBatch
from fsslib.methods import build_method
from fsslib.methods.pfenet.model import (
    COSINE_EPS,
    FeatureEnrichmentModule,
    max_cosine_similarity,
    min_max_normalise,
    pfenet_prior,
    pyramid_bins,
)
from fsslib.methods.base import segmentation_loss


def fabricated_batch(batch_size: int = 2, shots: int = 1, size: int = 64, seed: int = 0) -> EpisodeBatch:
    """Random images with a square object in every support and query mask."""
    generator = torch.Generator().manual_seed(seed)
    support_masks = torch.zeros(batch_size, shots, size, size, dtype=torch.long)
    support_masks[..., size // 4 : size // 2, size // 4 : size // 2] = 1
    query_masks = torch.zeros(batch_size, size, size, dtype=torch.long)
    query_masks[:, size // 2 :, size // 2 :] = 1
    query_masks[:, 0, :] = 255
    return EpisodeBatch(
        support_images=torch.rand(batch_size, shots, 3, size, size, generator=generator),
        support_masks=support_masks,
        query_images=torch.rand(batch_size, 3, size, size, generator=generator),
        query_masks=query_masks,
        query_labels=[m for m in query_masks],
        class_ids=torch.arange(1, batch_size + 1),
        class_names=[f"class {i}" for i in range(batch_size)],
    )


def test_min_max_normalise_uses_eps_and_handles_constant_maps():
    maps = torch.tensor([[[0.0, 2.0], [1.0, 1.0]], [[3.0, 3.0], [3.0, 3.0]]])  # (2, 2, 2)
    scaled = min_max_normalise(maps)
    assert torch.allclose(scaled[0], torch.tensor([[0.0, 2 / (2 + COSINE_EPS)], [1 / (2 + COSINE_EPS)] * 2]))
    assert torch.equal(scaled[1], torch.zeros(2, 2))  # (x - min) / (0 + eps) = 0


def test_max_cosine_similarity_takes_the_best_support_position():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # positions (1, 0), (0, 1)
    support = torch.tensor([[1.0, 0.5], [0.0, 0.0]]).T.reshape(1, 2, 1, 2)  # (1, 0.5) and a masked-out zero
    similarity = max_cosine_similarity(query, support)
    expected = torch.tensor([1 / math.sqrt(1.25), 0.5 / math.sqrt(1.25)])
    assert torch.allclose(similarity.flatten(), expected, atol=1e-6)


def test_pfenet_prior_masks_the_support_before_matching():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    support = torch.tensor([[1.0, 0.5], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    unmasked = pfenet_prior(query, support, torch.ones(1, 1, 1, 2))
    masked = pfenet_prior(query, support, torch.tensor([[[[1.0, 0.0]]]]))
    assert unmasked.flatten()[1] == pytest.approx(1.0, abs=1e-5)  # (0, 1) matches the second support position
    assert masked.flatten().tolist() == pytest.approx([1.0, 0.0], abs=1e-5)  # that position is masked out


def test_pyramid_bins_follow_pfenet_and_scale_to_the_toy_map():
    assert pyramid_bins(60) == [60, 30, 15, 8]
    assert pyramid_bins(8) == [8, 4, 2, 1]


def test_fem_shapes_and_auxiliary_outputs():
    fem = FeatureEnrichmentModule(feature_dim=16, prior_channels=3).eval()
    logits, auxiliary = fem(torch.rand(2, 16, 8, 8), torch.rand(2, 16), torch.rand(2, 3, 8, 8))
    assert logits.shape == (2, 2, 8, 8)
    assert [tuple(a.shape[-2:]) for a in auxiliary] == [(8, 8), (4, 4), (2, 2), (1, 1)]


@pytest.fixture(scope="module")
def toy_pfenet():
    torch.manual_seed(0)
    return build_method(make_config(method="pfenet", backbone_weights="random"))


def test_backbone_is_frozen_with_eval_batchnorm(toy_pfenet):
    toy_pfenet.train()
    assert not any(p.requires_grad for p in toy_pfenet.backbone.parameters())
    assert not toy_pfenet.backbone.training and toy_pfenet.decoder.training


def test_k_shot_prior_is_the_mean_of_the_shot_priors(toy_pfenet):
    batch = fabricated_batch(shots=3)
    model = toy_pfenet.eval()
    query_levels = model.backbone_levels(batch.query_images)
    support_levels = model.backbone_levels(batch.support_images.flatten(0, 1))
    prior = model.prior_masks(batch, query_levels, support_levels)  # (B, 1, h, w)
    per_shot = []
    for shot in range(3):
        single = EpisodeBatch(batch.support_images[:, shot : shot + 1], batch.support_masks[:, shot : shot + 1],
                              batch.query_images, batch.query_masks, batch.query_labels, batch.class_ids, batch.class_names)
        levels = model.backbone_levels(single.support_images.flatten(0, 1))
        per_shot.append(model.prior_masks(single, query_levels, levels))
    assert prior.shape == (2, 1, 8, 8)
    assert torch.allclose(prior, torch.stack(per_shot).mean(0), atol=1e-6)


def test_loss_is_main_plus_mean_auxiliary(toy_pfenet):
    batch = fabricated_batch()
    model = toy_pfenet.eval()  # no dropout: predict() is deterministic
    logits, auxiliary = model.predict(batch)
    expected = segmentation_loss(logits, batch.query_masks) + torch.stack(
        [segmentation_loss(a, batch.query_masks) for a in auxiliary]).mean()
    assert model.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    assert model(batch).shape == (2, 2, 64, 64)


def test_toy_training_smoke(tiny_cfg):
    summary = train.run(tiny_cfg(method="pfenet", backbone_weights="random"))
    assert len(summary["history"]) == 1 and summary["best_val_miou"] >= 0


def test_paper_tier_shapes_with_random_resnet50():
    torch.manual_seed(0)
    cfg = make_config(method="pfenet", preset="paper", backbone_weights="random")
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.poly_power, cfg.image_size) == ("sgd", 0.0025, 4, 0.9, 473)
    model = build_method(cfg).eval()
    batch = fabricated_batch(batch_size=1, size=473)
    with torch.no_grad():
        logits, auxiliary = model.predict(batch)
        assert logits.shape == (1, 2, 60, 60)
        assert [tuple(a.shape[-2:]) for a in auxiliary] == [(60, 60), (30, 30), (15, 15), (8, 8)]
