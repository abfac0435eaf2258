"""LFSS: every equation on hand-checkable tensors, the ASPP decoder, circle training, no ground truth as input, tiers."""
from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib import train
from fsslib.blocks import ASPPDecoder, AtrousSpatialPyramidPooling, aspp_rates
from fsslib.blocks.masks import foreground_weights, masked_average_pooling
from fsslib.clip import ClipInputError
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset, collate_episodes
from fsslib.engine import evaluate_model, open_source
from fsslib.errors import UnknownNameError
from fsslib.methods import build_method
from fsslib.methods.base import require_one_way, segmentation_loss
from fsslib.methods.lfss import VARIANTS, LfssOptionError, LfssOptions, pseudo_mask_quality
from fsslib.methods.lfss.ccm import correlation_maps, focused_prototype
from fsslib.methods.lfss.dps import (
    association_map,
    cluster_prototypes,
    distributed_prototypes,
    move_seeds,
    place_seeds,
    seed_table,
    spatial_scale,
    superpixel_area,
    superpixel_counts,
)
from fsslib.methods.lfss.vlmd import (
    background_prototypes,
    binarise_scores,
    mix_foreground_prototypes,
    reassign,
    refine_masks,
)
from fsslib.methods.options import OptionError
from tests.test_pfenet import fabricated_batch

E = math.e


# --------------------------------------------------------------------------- ASPP decoder (Eqs. 18-19)


def test_aspp_rates_are_canet_asgnet_rates_scaled_like_the_fem_bins():
    assert aspp_rates(60) == [6, 12, 18]
    assert aspp_rates(50) == [5, 10, 15]  # LFSS: 400 x 400 at output stride 8
    assert aspp_rates(8) == [1, 2, 2]  # toy tier


def test_aspp_dilates_its_3x3_branches_by_the_scaled_rates():
    torch.manual_seed(0)
    aspp = AtrousSpatialPyramidPooling(2, 3)
    x = torch.randn(1, 2, 50, 50)
    pooled = F.relu(aspp.pooled(x.mean((2, 3), keepdim=True))).expand(-1, -1, 50, 50)
    branches = [pooled, F.relu(aspp.pointwise(x))] + [
        F.relu(F.conv2d(x, conv.weight, conv.bias, padding=rate, dilation=rate))
        for conv, rate in zip(aspp.dilated, (5, 10, 15))]
    torch.testing.assert_close(aspp(x), F.relu(aspp.fuse(torch.cat(branches, 1))))
    assert ASPPDecoder(5, 4)(torch.randn(2, 5, 8, 8)).shape == (2, 2, 8, 8)


# --------------------------------------------------------------------------- VLMD: pseudo masks and refiner (Eqs. 2-5)


def test_pseudo_mask_rules_on_hand_cosines():
    # vocabulary: 3 classes then 1 background name; the episode class is index 1
    cosines = torch.tensor([[0.1, 0.3, 0.2, 0.0], [0.4, 0.3, 0.2, 0.1], [0.0, 0.2, 0.1, 0.25]]).T.reshape(1, 4, 1, 3)
    target = torch.tensor([1])
    vocabulary = binarise_scores(cosines, target, 3, "vocabulary", 0.5, 0.1)
    assert vocabulary.tolist() == [[[True, False, False]]]  # class 0 wins pixel 1, the background pixel 2
    # softmax of (class, background) / 0.1: sigmoid(3) = 0.95, sigmoid(2) = 0.88, sigmoid(-0.5) = 0.38
    assert binarise_scores(cosines, target, 3, "softmax", 0.5, 0.1).tolist() == [[[True, True, False]]]
    assert binarise_scores(cosines, target, 3, "softmax", 0.9, 0.1).tolist() == [[[True, False, False]]]
    # threshold: class cosines (0.3, 0.3, 0.2) min-max -> (1, 1, 0)
    assert binarise_scores(cosines, target, 3, "threshold", 0.5, 0.1).tolist() == [[[True, True, False]]]
    with pytest.raises(UnknownNameError, match="otsu"):
        binarise_scores(cosines, target, 3, "otsu", 0.5, 0.1)


def test_eq3_mixes_support_and_query_foreground_prototypes():
    support, query = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert mix_foreground_prototypes(support, query, 0.5).tolist() == [[0.5, 0.5]]
    assert mix_foreground_prototypes(support, query, 0.25).tolist() == [[0.25, 0.75]]


def three_pixels(*vectors: tuple[float, float]) -> torch.Tensor:
    """(1, 2, 1, n) features of n pixels in a row."""
    return torch.tensor(vectors).T.reshape(1, 2, 1, len(vectors))


def test_eq4_background_prototypes_attend_over_the_background_on_three_pixels():
    features = three_pixels((1.0, 0.0), (0.0, 1.0), (1.0, 1.0))
    masks = torch.tensor([[[True, False, False]]])  # pixel 0 foreground; F_b = [0 0], [0 1], [1 1]
    prototypes = background_prototypes(features, masks)[0, :, 0].T  # (3, 2)
    # scores F_p . F_b,j: p0 (0, 0, 1); p1 (0, 1, 1); p2 (0, 1, 2)
    expected = torch.tensor([
        [E / (2 + E), (1 + E) / (2 + E)],
        [E / (1 + 2 * E), 2 * E / (1 + 2 * E)],
        [E**2 / (1 + E + E**2), (E + E**2) / (1 + E + E**2)],
    ])
    torch.testing.assert_close(prototypes, expected)
    # SSP's scores 2 cos: p0 against (0, 0, 1/sqrt(2)) -> weights (1, 1, e^sqrt(2)) / Z
    ssp = background_prototypes(features, masks, "ssp_cosine")[0, :, 0, 0]
    weight = E ** math.sqrt(2)
    torch.testing.assert_close(ssp, torch.tensor([weight, 1 + weight]) / (2 + weight))


def test_eq5_assigns_each_pixel_to_the_closer_prototype_and_removes_a_false_positive():
    features = three_pixels((1.0, 0.1), (0.0, 1.0), (0.1, 1.0))
    initial = torch.tensor([[[True, False, True]]])  # pixel 2 is a false positive
    # the only background feature is (0, 1): every pixel's background prototype points there
    refined = reassign(features, torch.tensor([[1.0, 0.0]]), initial)
    assert refined.tolist() == [[[True, False, False]]]


def test_refiner_mixes_the_shots_mean_with_the_query_prototype_for_every_image():
    torch.manual_seed(0)
    query, support = torch.rand(1, 3, 4, 4), torch.rand(1, 2, 3, 4, 4)
    query_masks, support_masks = torch.rand(1, 4, 4) > 0.5, torch.rand(1, 2, 4, 4) > 0.5
    shots_mean = masked_average_pooling(support[0], support_masks[0].long()).mean(0, keepdim=True)  # (1, 3)
    query_prototype = masked_average_pooling(query, query_masks.long())
    for alpha in (1.0, 0.3):
        mixed = alpha * shots_mean + (1 - alpha) * query_prototype
        refined_query, refined_support = refine_masks(query, support, query_masks, support_masks, alpha)
        assert torch.equal(refined_query, reassign(query, mixed, query_masks))
        assert torch.equal(refined_support[0, 1:], reassign(support[0, 1:], mixed, support_masks[0, 1:]))


# --------------------------------------------------------------------------- DPS (Eqs. 6-12)


def test_superpixel_count_is_asgnets_rule_scaled_to_the_map():
    assert superpixel_area(60, 60) == 100 and spatial_scale(60, 60) == 10
    assert superpixel_area(8, 8) == pytest.approx(100 * 64 / 3600) and spatial_scale(8, 8) == pytest.approx(8 / 6)
    counts = superpixel_counts(torch.tensor([49, 50, 150, 151, 250, 1000]), 100.0)
    assert counts.tolist() == [0, 0, 2, 2, 2, 5]  # round half to even (as numpy), at most 5


def test_eq6_seeds_are_distance_transform_maxima_removed_one_by_one():
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 1:6] = True  # distance 2 along the middle row (2, 2..4); first maximum (2, 2)
    assert place_seeds(mask, 2).tolist() == [[2, 2], [2, 4]]  # (2, 3) is now 1 from the first seed
    # the image border counts as background: a full mask's seed is its centre
    assert place_seeds(np.ones((3, 3), dtype=bool), 1).tolist() == [[1, 1]]


def _seeds_one_mask_at_a_time(mask: np.ndarray, count: int) -> np.ndarray:
    """Eq. 6 on one mask, one distance transform per seed: the reference for the side-by-side placement."""
    from scipy.ndimage import distance_transform_edt

    remaining = np.pad(mask, 1)
    seeds = []
    for _ in range(count):
        distance = distance_transform_edt(remaining)
        row, col = np.unravel_index(np.argmax(distance), distance.shape)
        remaining[row, col] = False
        seeds.append((row - 1, col - 1))
    return np.array(seeds, dtype=np.int64).reshape(count, 2)


@pytest.mark.parametrize("size", [(8, 8), (6, 11), (60, 60)])
def test_eq6_seeds_of_a_batch_placed_side_by_side_equal_one_mask_at_a_time(size):
    """seed_table places every mask's seeds in shared rounds on one canvas: the same seeds as one mask at a time
    (random, full, empty and one-cell masks; counts 0 to 5 and the padding of the table at 0)."""
    generator = torch.Generator().manual_seed(7)
    masks = torch.rand(40, *size, generator=generator) < torch.rand(40, 1, 1, generator=generator)
    masks[0], masks[1], masks[2] = True, False, False
    masks[2, 0, -1] = True  # one cell in a corner
    counts = torch.minimum(torch.randint(0, 6, (40,), generator=generator), masks.flatten(1).sum(1))
    counts[0], counts[2] = 5, 1
    seeds, valid = seed_table(masks, counts)
    assert seeds.shape == (40, int(counts.max()), 2) and valid.sum(1).tolist() == counts.tolist()
    for mask, count, row_seeds in zip(masks.numpy(), counts.tolist(), seeds):
        assert row_seeds[:count].tolist() == _seeds_one_mask_at_a_time(mask, count).tolist()
        assert not row_seeds[count:].any()


def test_eq7_8_seeds_move_to_the_most_query_like_cell_of_their_grid():
    features = torch.zeros(1, 2, 4, 4)
    features[0, 1] = 1.0  # every cell (0, 1): cosine 0 to the query prototype (1, 0)
    features[0, :, 2, 2] = torch.tensor([1.0, 0.2])  # cosine 0.98, inside the 3 x 3 grid of seed (1, 1)
    features[0, :, 1, 3] = torch.tensor([1.0, 0.0])  # cosine 1 but outside that grid
    features[0, :, 1, 0] = torch.tensor([1.0, 0.5])  # cosine 0.89: the best of the clipped grid of seed (0, 0)
    seeds = torch.tensor([[[1, 1], [0, 0]]])
    prototype = torch.tensor([[1.0, 0.0]])
    assert move_seeds(features, seeds, prototype, 3).tolist() == [[[2, 2], [1, 0]]]
    assert move_seeds(features, seeds, prototype, 1).tolist() == seeds.tolist()


def test_a_seed_stays_where_its_own_cell_ties_with_the_best():
    """A zero query prototype (empty query mask) ties every cell at cosine 0: no seed moves up-left."""
    features = torch.randn(1, 3, 5, 5)
    seeds = torch.tensor([[[2, 2], [4, 0]]])
    assert move_seeds(features, seeds, torch.zeros(1, 3), 3).tolist() == seeds.tolist()


def test_superpixel_count_is_capped_at_the_masks_cell_count():
    """On maps under 6 x 6 the scaled area ``a`` is under 1 cell: 3 cells would ask for 5 seeds."""
    assert superpixel_area(5, 5) < 1
    assert superpixel_counts(torch.tensor([3, 1, 0]), superpixel_area(5, 5)).tolist() == [3, 1, 0]


def test_dps_distances_keep_float32_precision():
    """Eq. 10's distances by differences: centres within 1.5e-4 of a float64 computation (5e-5 measured;
    cdist's matrix-product form: 4e-4)."""
    torch.manual_seed(0)
    features = torch.randn(2, 64, 8, 8) + 100  # large norms, small spread: |x|^2 + |y|^2 - 2xy cancels badly
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 1:7, 1:7] = True
    seeds = torch.tensor([[[2, 2], [5, 5]], [[2, 5], [5, 2]]])
    single = cluster_prototypes(features, masks, seeds, 5, 1.3)
    double = cluster_prototypes(features.double(), masks, seeds, 5, 1.3)
    torch.testing.assert_close(single, double.float(), rtol=0, atol=1.5e-4)


def test_lfss_runs_on_maps_under_6_by_6(toy_root):
    """image_size=40 gives 5 x 5 feature maps, where the seed count once overran the mask."""
    cfg = make_config(method="lfss", backbone_weights="random", image_size=40)
    model = build_method(cfg).eval()
    episodes = EpisodeDataset(open_source(cfg, "val"), cfg.fold, 1, cfg.image_size, 4, cfg.seed)
    with torch.no_grad():
        logits = model(collate_episodes([episodes[i] for i in range(4)]).inputs())
    assert logits.shape == (4, 2, 40, 40) and torch.isfinite(logits).all()


def test_eqs9_11_clustering_weights_are_a_softmax_of_minus_q_over_the_masks_pixels():
    features = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 1, 3)  # one channel, pixels at columns 0, 1, 2
    seed = torch.tensor([[[0, 0]]])  # O^0 = (feature 0, row 0, col 0)
    # r = 2: Q = sqrt(F^2 + (col / 2)^2) = (0, sqrt(1.25), sqrt(9 + 1)); C = exp(-Q), O = sum C F / sum C
    weights = torch.tensor([1.0, math.exp(-math.sqrt(1.25)), math.exp(-math.sqrt(10))])
    everywhere = cluster_prototypes(features, torch.ones(1, 1, 3, dtype=torch.bool), seed, 1, 2.0)
    assert everywhere.item() == pytest.approx((weights[1] + 3 * weights[2]).item() / weights.sum().item(), rel=1e-5)
    # pixels outside the mask get no weight
    masked = cluster_prototypes(features, torch.tensor([[[True, True, False]]]), seed, 1, 2.0)
    assert masked.item() == pytest.approx((weights[1] / (1 + weights[1])).item(), rel=1e-5)
    # each centre normalises over the pixels on its own: seeds at both ends give two centres
    two = cluster_prototypes(features, torch.ones(1, 1, 3, dtype=torch.bool), torch.tensor([[[0, 0], [0, 2]]]), 1, 2.0)
    far = torch.tensor([math.exp(-math.sqrt(9 + 1)), math.exp(-math.sqrt(4 + 0.25)), 1.0])  # from O^0 = (3, 0, 2)
    assert two[0, 1].item() == pytest.approx((far[1] + 3 * far[2]).item() / far.sum().item(), rel=1e-5)


def test_dps_pads_the_seeds_and_falls_back_to_one_masked_average_prototype():
    torch.manual_seed(0)
    features = torch.randn(3, 4, 8, 8)
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True  # 16 cells / 1.78 -> N_sp = 5
    masks[1, 0, :2] = True  # 2 cells -> round(1.125) = 1 -> fallback
    prototypes, valid = distributed_prototypes(features, masks, torch.randn(3, 4), grid=3, iterations=5)
    assert prototypes.shape == (3, 5, 4)
    assert valid.sum(1).tolist() == [5, 1, 1] and valid[1:, 0].all()
    torch.testing.assert_close(prototypes[1, 0], masked_average_pooling(features[1:2], masks[1:2].long())[0])
    assert torch.equal(prototypes[2, 0], torch.zeros(4))  # empty mask: zero prototype (cosine 0)
    single, one = distributed_prototypes(features, masks, torch.randn(3, 4), grid=3, iterations=5, clustering=False)
    assert single.shape == (3, 1, 4) and one.all()  # Table 4's global prototype
    torch.testing.assert_close(single[:, 0], masked_average_pooling(features, masks.long()))


def test_eq12_association_map_sums_the_cosines_of_the_valid_prototypes():
    prototypes = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    valid = torch.tensor([[True, True, False]])
    query = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    assert association_map(prototypes, valid, query).item() == pytest.approx(math.sqrt(2), rel=1e-5)


# --------------------------------------------------------------------------- CCM (Eqs. 13-17)


def test_ccm_focused_prototype_and_correlation_maps_by_hand():
    query = three_pixels((1.0, 0.0), (0.0, 1.0))
    query_masks = torch.tensor([[[True, False]]])
    support = three_pixels((1.0, 0.0), (1.0, 1.0))
    support_masks = torch.tensor([[[True, True]]])
    # Eq. 13: cosines of the masked query rows: q0 (1, 1/sqrt 2), q1 masked out (0, 0); softmax over the support
    first = E / (E + E ** (1 / math.sqrt(2)))
    received = torch.tensor([(first + 0.5) / 2, (1 - first + 0.5) / 2])  # A^y: mean over the query positions
    expected = (received[0] * torch.tensor([1.0, 0.0]) + received[1] * torch.tensor([1.0, 1.0])) / (2 + 5e-4)  # Eq. 14
    prototype = focused_prototype(query, query_masks, support, support_masks)
    torch.testing.assert_close(prototype[0], expected)
    maps = correlation_maps(prototype, query, query_masks)  # (1, 2, 1, 2)
    cosine = F.cosine_similarity(expected, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    torch.testing.assert_close(maps[0, 0, 0], torch.stack([cosine[0], torch.tensor(0.0)]), atol=1e-6, rtol=1e-5)  # RCM
    torch.testing.assert_close(maps[0, 1, 0], cosine, atol=1e-6, rtol=1e-5)  # FCM
    assert correlation_maps(prototype, query, query_masks, full_image=False).shape == (1, 1, 1, 2)


def test_empty_query_mask_leaves_the_focused_prototype_the_support_average():
    torch.manual_seed(0)
    support, support_masks = torch.randn(1, 3, 2, 2), torch.tensor([[[True, False], [True, True]]])
    empty = torch.zeros(1, 2, 2, dtype=torch.bool)
    prototype = focused_prototype(torch.randn(1, 3, 2, 2), empty, support, support_masks)
    average = masked_average_pooling(support, support_masks.long())  # uniform attention: A^y = 1/4 everywhere
    torch.testing.assert_close(F.normalize(prototype, dim=1), F.normalize(average, dim=1))


# --------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def toy_lfss():
    torch.manual_seed(0)
    return build_method(make_config(method="lfss", backbone_weights="random"))


def garbage_masks(masks: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.tensor([0, 1, 255])[torch.randint(0, 3, masks.shape, generator=generator)]


def test_toy_pseudo_masks_find_the_episode_class(toy_root):
    cfg = make_config(method="lfss", backbone_weights="random")
    generator = build_method(cfg).pseudo_masks
    assert generator.vocabulary[-1] == "empty scene" and len(generator.vocabulary) == generator.n_classes + 1
    episodes = EpisodeDataset(open_source(cfg, "val"), cfg.fold, 1, cfg.image_size, 16, cfg.seed)
    batch = collate_episodes([episodes[i] for i in range(16)])
    masks = generator(batch.query_images, batch.class_ids[:, 0], (8, 8))  # (16, 8, 8)
    truth = foreground_weights(batch.query_masks, (8, 8), mode="nearest")[:, 0] > 0.5
    assert (masks & truth).sum() / (masks | truth).sum() > 0.25  # about 0.4 with toy-rn; ~0 if the class were wrong


def test_pseudo_mask_quality_of_all_foreground_masks_is_the_all_foreground_score(toy_root, monkeypatch):
    """Table 3's scoring path: masks that cover every image score what the evaluator gives AllForeground."""
    cfg = make_config(method="lfss", backbone_weights="random", eval_batch_size=8)
    model = build_method(cfg)
    monkeypatch.setattr(model.pseudo_masks, "forward",
                        lambda images, class_ids, size: torch.ones(len(images), *size, dtype=torch.bool))
    episodes = EpisodeDataset(open_source(cfg, "test"), cfg.fold, 1, cfg.image_size, 24, cfg.seed)
    scores = pseudo_mask_quality(model, episodes, batch_size=8, circle=True)
    reference = evaluate_model(build_method(make_config(method="all-foreground")), episodes, cfg, torch.device("cpu"))
    assert 3 < reference["miou"] < 30  # the toy objects cover a small part of each image
    assert scores["initial"] == pytest.approx(reference["miou"])
    assert set(scores) == {"initial", "refined", "support_initial", "support_refined", "support_predicted"}
    assert 3 < scores["support_initial"] < 30  # full support masks: the supports' all-foreground score


def test_clip_and_backbone_are_frozen_and_out_of_the_checkpoint(toy_lfss):
    toy_lfss.train()
    keys = list(toy_lfss.state_dict())
    assert keys and all(k.startswith(("reduce.", "decoder.")) for k in keys)
    trainable = {id(p) for p in toy_lfss.parameters()}
    for frozen in (toy_lfss.backbone, toy_lfss.pseudo_masks.clip):
        assert not frozen.training and not any(p.requires_grad or id(p) in trainable for p in frozen.parameters())


def test_no_ground_truth_mask_reaches_the_model(toy_lfss):
    model = toy_lfss.eval()
    batch = fabricated_batch(shots=2)
    garbage = replace(batch, support_masks=garbage_masks(batch.support_masks, 1),
                      query_masks=garbage_masks(batch.query_masks, 2))
    with torch.no_grad():
        torch.testing.assert_close(model(batch.inputs()), model(garbage.inputs()), rtol=0, atol=0)
        model.support_mask_source = "ground_truth"  # the comparison row does read the support masks
        try:
            assert not torch.equal(model(batch.inputs()), model(garbage.inputs()))
        finally:
            model.support_mask_source = "pseudo"


def test_whole_image_query_never_reads_the_query_pseudo_mask(toy_lfss, monkeypatch):
    model = toy_lfss.eval()
    batch = fabricated_batch(shots=2)  # 2 episodes: rows 0-1 of the generator's output are the queries

    def generator_with_query_masks(seed: int):
        def masks(images: torch.Tensor, class_ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
            out = torch.zeros(images.shape[0], *size, dtype=torch.bool)
            out[2:, 2:6, 2:6] = True  # the supports' pseudo masks: one fixed square
            out[:2] = torch.rand(2, *size, generator=torch.Generator().manual_seed(seed)) > 0.5
            return out
        return masks

    def logits(seed: int) -> torch.Tensor:
        monkeypatch.setattr(model.pseudo_masks, "forward", generator_with_query_masks(seed))
        with torch.no_grad():
            return model(batch.inputs())

    assert not torch.equal(logits(1), logits(2))  # the paper's LFSS reads the query's pseudo mask
    model.query_mask_source = "whole_image"
    try:
        first = logits(1)
        assert torch.isfinite(first).all()
        torch.testing.assert_close(first, logits(2), rtol=0, atol=0)
        assert model.encode(require_one_way(batch)).query_pseudo_masks.all()  # the whole query stands in for its mask
    finally:
        model.query_mask_source = "pseudo"
    assert make_config(method="lfss", variant="whole_image_query").options["query_mask"] == "whole_image"


def test_circle_supports_the_query_with_the_predicted_support_masks(toy_lfss, monkeypatch):
    model = toy_lfss.eval()
    calls = []
    predict = model.predict

    def recording(query, query_masks, support, support_masks):
        logits = predict(query, query_masks, support, support_masks)
        calls.append((query_masks, support_masks, logits))
        return logits

    monkeypatch.setattr(model, "predict", recording)
    with torch.no_grad():
        model(fabricated_batch(shots=2).inputs())
    (_, masks_supporting_the_supports, support_logits), (query_masks, masks_supporting_the_query, _) = calls
    assert support_logits.shape == (4, 2, 8, 8)  # pass 1: the B * K supports segmented as queries
    assert torch.equal(masks_supporting_the_supports[:, 0], query_masks.repeat_interleave(2, dim=0))  # by the query
    assert torch.equal(masks_supporting_the_query, (support_logits.argmax(1) == 1).view(2, 2, 8, 8))  # pass 2


def test_circle_loss_weights_support_and_query_by_beta():
    torch.manual_seed(0)
    model = build_method(make_config(method="lfss", backbone_weights="random", options={"beta": 0.25})).eval()
    batch = fabricated_batch(shots=2)
    one_way = batch.one_way()
    with torch.no_grad():
        support_logits, query_logits = model.circle(one_way)
        expected = 0.25 * segmentation_loss(support_logits, one_way.support_masks.flatten(0, 1)) + \
            0.75 * segmentation_loss(query_logits, one_way.query_masks)
        assert model.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_n_way_forward_is_each_way_s_one_way_forward_one_vs_rest(toy_lfss):
    """Two ways: each way's channel is the 1-way forward of the query with that way's supports and class (its
    pseudo masks read the class), as the log-odds of foreground; the background channel is 0."""
    first, second = fabricated_batch(seed=0), fabricated_batch(seed=1)
    two_way = replace(first, support_images=torch.cat([first.support_images, second.support_images], dim=1),
                      support_masks=torch.cat([first.support_masks, second.support_masks], dim=1),
                      class_ids=torch.tensor([[1, 3], [2, 4]]), class_names=[["a", "c"], ["b", "d"]])
    ways = [replace(first, class_ids=torch.tensor([[1], [2]]), class_names=[["a"], ["b"]]),
            replace(first, support_images=second.support_images, support_masks=second.support_masks,
                    class_ids=torch.tensor([[3], [4]]), class_names=[["c"], ["d"]])]
    model = toy_lfss.eval()
    with torch.no_grad():
        logits = model(two_way.inputs())
        one_way = [model(episodes.inputs()) for episodes in ways]  # (B, 2, H, W) each
    assert logits.shape == (2, 3, 64, 64) and torch.equal(logits[:, 0], torch.zeros(2, 64, 64))
    for way, scores in enumerate(one_way, start=1):
        torch.testing.assert_close(logits[:, way], scores[:, 1] - scores[:, 0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits[:, 1], logits[:, 2])  # the ways differ: swapped ways would fail above


def test_variants_are_the_table4_rows():
    assert VARIANTS["baseline"] == {"dps": False, "refine": False, "ccm": False}
    baseline = build_method(make_config(method="lfss", variant="baseline", backbone_weights="random"))
    full = build_method(make_config(method="lfss", variant="dps_refine_ccm", backbone_weights="random"))
    assert (baseline.dps, baseline.refine, baseline.ccm) == (False, False, False)
    assert (full.dps, full.refine, full.ccm) == (True, True, True)
    # decoder input: F_q (64) + P (1) + M_RCM (1) [+ M_FCM (1)]
    assert baseline.decoder.aspp.pointwise.in_channels == 66 and full.decoder.aspp.pointwise.in_channels == 67
    with torch.no_grad():
        assert baseline.eval()(fabricated_batch().inputs()).shape == (2, 2, 64, 64)
    assert make_config(method="lfss", variant="ground_truth_support").options["support_masks"] == "ground_truth"


def test_table5_and_generator_variants_reach_the_model():
    built = {name: build_method(make_config(method="lfss", variant=name, backbone_weights="random"))
             for name in ("grid1", "grid5", "alpha0.1", "alpha0.3", "toy_vit_generator")}
    assert (built["grid1"].grid, built["grid5"].grid) == (1, 5)
    assert (built["alpha0.1"].alpha, built["alpha0.3"].alpha) == (0.1, 0.3)
    assert type(built["toy_vit_generator"].pseudo_masks.bundle.model.visual).__name__ == "VisionTransformer"
    assert len(built["grid1"].pseudo_masks.templates) == 85  # MaskCLIP's, the paper's generator
    single = build_method(make_config(method="lfss", backbone_weights="random", options={"templates": "single"}))
    assert single.pseudo_masks.templates == ("a photo of a {}.",)


@pytest.mark.parametrize("options, error, named", [
    ({"pseudo_mask": "otsu"}, UnknownNameError, "pseudo_mask"),
    ({"pseudo_mask": "softmax", "background_names": []}, LfssOptionError, "no background names"),
    ({"alpha": 1.5}, OptionError, "alpha"),  # out of its declared range: refused by make_config, before any build
    ({"pseudo_threshold": -0.1}, OptionError, "pseudo_threshold"),
    ({"grid": 2}, LfssOptionError, "grid n = 2"),
    ({"support_masks": "boxes"}, UnknownNameError, "support_masks"),
    ({"query_mask": "box"}, UnknownNameError, "query_mask"),
    ({"refiner_level": "layer1"}, UnknownNameError, "refiner_level"),
    ({"refiner_attention": "sdpa"}, UnknownNameError, "refiner_attention"),
    ({"templates": "clip"}, UnknownNameError, "templates"),
    # rejected when the model is built, not at its first forward
    ({"background_names": [" "]}, LfssOptionError, "Empty class or background name"),
    ({"background_names": ["nebula"]}, ClipInputError, "nebula"),  # a word the toy text tower does not know
])
def test_bad_options_name_the_problem(options, error, named):
    with pytest.raises(error, match=re.escape(named)):
        build_method(make_config(method="lfss", backbone_weights="random", options=options))


def test_paper_preset_is_section_4_1_and_its_optimizer_is_adam():
    cfg = make_config(method="lfss", preset="paper")
    assert (cfg.image_size, cfg.lr, cfg.poly_power, cfg.epochs, cfg.backbone) == (400, 1e-3, 0.0, 200, "resnet50")
    assert (cfg.optimizer, cfg.weight_decay) == ("adamw", 0.0)
    assert (LfssOptions.parse(cfg.options).clip, LfssOptions.parse(cfg.options).clip_pretrained) == ("RN50", "openai")
    assert (LfssOptions.alpha, LfssOptions.beta, LfssOptions.grid) == (0.5, 0.5, 3)
    torch.manual_seed(0)
    ours, reference = nn.Linear(3, 2), nn.Linear(3, 2)
    reference.load_state_dict(ours.state_dict())
    optimizers = (train.make_optimizer(cfg, ours), torch.optim.Adam(reference.parameters(), lr=1e-3))
    for module, optimizer in zip((ours, reference), optimizers):
        for step in range(3):
            optimizer.zero_grad()
            module(torch.full((1, 3), float(step + 1))).square().sum().backward()
            optimizer.step()
    torch.testing.assert_close(ours.weight, reference.weight)


@pytest.mark.slow
def test_toy_training_smoke_updates_the_trainable_weights(tmp_path, toy_root):
    cfg = make_config(method="lfss", smoke=True, epochs=1, episodes_per_epoch=8, val_episodes=4, progress=False,
                      out=str(tmp_path))
    summary = train.run(cfg)
    (record,) = summary["history"]
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_miou"])
    torch.manual_seed(cfg.seed)  # train.run seeds the same way before building the model
    initial = build_method(cfg).state_dict()
    trained = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert trained.keys() == initial.keys()
    assert not torch.equal(trained["reduce.0.weight"], initial["reduce.0.weight"])
    assert not torch.equal(trained["decoder.classifier.weight"], initial["decoder.classifier.weight"])


def test_bf16_autocast_keeps_the_refiner_and_clustering_in_float32(toy_lfss):
    """What AMP does to LFSS, checked on the CPU's bf16 autocast (CUDA's autocast is the same policy):
    the loss is finite and differentiable, and the refiner and DPS run in float32 on purpose."""
    batch = fabricated_batch()
    one_way = batch.one_way()
    toy_lfss.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = toy_lfss.loss(batch)
        levels = toy_lfss.frozen_levels(one_way)
        masks = toy_lfss.pseudo_masks_of(one_way, levels)
        features = toy_lfss.encode(one_way)
        prototypes, _ = distributed_prototypes(features.support[:, 0], masks.support[:, 0],
                                               masked_average_pooling(features.query, masks.query.long()), 3, 2)
    loss.backward()
    assert math.isfinite(loss.item()) and toy_lfss.reduce[0].weight.grad is not None
    assert features.query.dtype == torch.bfloat16  # the learnable convolution does run in bf16
    assert prototypes.dtype == torch.float32 and masks.query.dtype == torch.bool
    toy_lfss.zero_grad(set_to_none=True)


def test_empty_pseudo_masks_stay_finite_and_are_counted_in_the_metrics(toy_root, monkeypatch):
    """MaskCLIP finding nothing anywhere: no crash, no NaN, and metrics.json says how often it happened."""
    cfg = make_config(method="lfss", backbone_weights="random", eval_batch_size=4, progress=False)
    model = build_method(cfg)
    monkeypatch.setattr(model.pseudo_masks, "forward",
                        lambda images, class_ids, size: torch.zeros(len(images), *size, dtype=torch.bool))
    batch = fabricated_batch()
    model.train()
    loss = model.loss(batch)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    episodes = EpisodeDataset(open_source(cfg, "test"), cfg.fold, 1, cfg.image_size, 8, cfg.seed)
    summary = evaluate_model(model, episodes, cfg, torch.device("cpu"))
    assert math.isfinite(summary["miou"])
    assert summary["diagnostics"] == {"empty_query_pseudo_masks": 8, "empty_support_pseudo_masks": 8,
                                      "query_images": 8, "support_images": 8}


@pytest.mark.slow
def test_paper_tier_shapes_with_random_rn50_clip_and_resnet50(paper_models):
    """Sec. 4.1's setting at 400 x 400: ResNet-50's 50 x 50 grid, MaskCLIP on RN50, PASCAL's vocabulary.
    One prompt template (``templates="single"``) instead of MaskCLIP's 85: the same code path, without encoding
    2125 prompts on the CPU (4 min)."""
    torch.manual_seed(0)
    model = build_method(make_config(method="lfss", preset="paper", options={"templates": "single"}))
    assert len(model.pseudo_masks.vocabulary) == 20 + 5  # PASCAL's classes and MaskCLIP's background names
    batch = fabricated_batch(batch_size=1, size=400)
    encoded = []  # what the eval-mode forward pass encodes (model.encode of the episode): one pass gives both checks
    encode = model.encode
    model.encode = lambda inputs: encoded.append(encode(inputs)) or encoded[-1]
    with torch.no_grad():  # the training step's backward pass runs in test_paper_tier_cli.py (97 x 97)
        assert math.isfinite(model.train().loss(batch).item())
        encoded.clear()
        assert model.eval()(batch.inputs()).shape == (1, 2, 400, 400)
    (features,) = encoded
    assert features.query.shape == (1, 256, 50, 50) and features.support_grid_masks.shape == (1, 1, 50, 50)
