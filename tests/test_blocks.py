"""The shared few-shot blocks: masks and prototypes, correlations and priors, the FEM decoder, frozen models."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks import (
    COSINE_EPS,
    FeatureEnrichmentModule,
    foreground_weights,
    masked_average_pooling,
    masked_support_prior,
    max_cosine_similarity,
    min_max_normalise,
    pyramid_bins,
)
from fsslib.blocks.frozen import HoldsFrozen


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


def test_masked_support_prior_masks_the_support_before_matching():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    support = torch.tensor([[1.0, 0.5], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    unmasked = masked_support_prior(query, support, torch.ones(1, 1, 1, 2))
    masked = masked_support_prior(query, support, torch.tensor([[[[1.0, 0.0]]]]))
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


class OfficialFEM(nn.Module):
    """dvlab-research/PFENet ``model/PFENet.py``'s decoder, transcribed from its ``__init__`` and ``forward``
    (from ``query_feat``, the pooled ``supp_feat`` and ``corr_query_mask`` to ``out`` and ``out_list``) without
    fsslib: same module names, so fsslib's weights load by name. Two departures, both of form: the prior has
    ``prior_channels`` channels (``mask_add_num``), and every bin is pooled with ``nn.AdaptiveAvgPool2d(bin)``
    (the official list skips bin 1, which its own 60/30/15/8 never reaches)."""

    def __init__(self, reduce_dim: int, bins: list[int], prior_channels: int = 1, classes: int = 2,
                 bin_to_bin: bool = False) -> None:
        super().__init__()
        self.pyramid_bins = bins
        self.bin_to_bin = bin_to_bin  # fsslib's former inter-scale path: the previous bin resized straight to this one
        self.init_merge = nn.ModuleList(nn.Sequential(
            nn.Conv2d(reduce_dim * 2 + prior_channels, reduce_dim, kernel_size=1, padding=0, bias=False),
            nn.ReLU(inplace=True)) for _ in bins)
        self.beta_conv = nn.ModuleList(nn.Sequential(
            nn.Conv2d(reduce_dim, reduce_dim, kernel_size=3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(reduce_dim, reduce_dim, kernel_size=3, padding=1, bias=False), nn.ReLU(inplace=True))
            for _ in bins)
        self.inner_cls = nn.ModuleList(nn.Sequential(
            nn.Conv2d(reduce_dim, reduce_dim, kernel_size=3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Dropout2d(p=0.1), nn.Conv2d(reduce_dim, classes, kernel_size=1)) for _ in bins)
        self.res1 = nn.Sequential(nn.Conv2d(reduce_dim * len(bins), reduce_dim, kernel_size=1, padding=0, bias=False),
                                  nn.ReLU(inplace=True))
        self.res2 = nn.Sequential(
            nn.Conv2d(reduce_dim, reduce_dim, kernel_size=3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(reduce_dim, reduce_dim, kernel_size=3, padding=1, bias=False), nn.ReLU(inplace=True))
        self.alpha_conv = nn.ModuleList(nn.Sequential(
            nn.Conv2d(2 * reduce_dim, reduce_dim, kernel_size=1, stride=1, padding=0, bias=False), nn.ReLU())
            for _ in range(len(bins) - 1))
        self.cls = nn.Sequential(
            nn.Conv2d(reduce_dim, reduce_dim, kernel_size=3, padding=1, bias=False), nn.ReLU(inplace=True),
            nn.Dropout2d(p=0.1), nn.Conv2d(reduce_dim, classes, kernel_size=1))

    def forward(self, query_feat, supp_feat, corr_query_mask):
        out_list, pyramid_feat_list, bin_sized = [], [], []
        for idx, bin in enumerate(self.pyramid_bins):
            query_feat_bin = nn.AdaptiveAvgPool2d(bin)(query_feat)
            supp_feat_bin = supp_feat.expand(-1, -1, bin, bin)
            corr_mask_bin = F.interpolate(corr_query_mask, size=(bin, bin), mode="bilinear", align_corners=True)
            merge_feat_bin = torch.cat([query_feat_bin, supp_feat_bin, corr_mask_bin], 1)
            merge_feat_bin = self.init_merge[idx](merge_feat_bin)
            if idx >= 1:
                pre_feat_bin = (bin_sized[idx - 1] if self.bin_to_bin else pyramid_feat_list[idx - 1]).clone()
                pre_feat_bin = F.interpolate(pre_feat_bin, size=(bin, bin), mode="bilinear", align_corners=True)
                rec_feat_bin = torch.cat([merge_feat_bin, pre_feat_bin], 1)
                merge_feat_bin = self.alpha_conv[idx - 1](rec_feat_bin) + merge_feat_bin
            merge_feat_bin = self.beta_conv[idx](merge_feat_bin) + merge_feat_bin
            inner_out_bin = self.inner_cls[idx](merge_feat_bin)
            bin_sized.append(merge_feat_bin)
            merge_feat_bin = F.interpolate(merge_feat_bin, size=(query_feat.size(2), query_feat.size(3)),
                                           mode="bilinear", align_corners=True)
            pyramid_feat_list.append(merge_feat_bin)
            out_list.append(inner_out_bin)
        query_feat = torch.cat(pyramid_feat_list, 1)
        query_feat = self.res1(query_feat)
        query_feat = self.res2(query_feat) + query_feat
        return self.cls(query_feat), out_list


@pytest.mark.parametrize("size, bins, prior_channels", [(60, [60, 30, 15, 8], 1), (8, [8, 4, 2, 1], 3)])
def test_fem_matches_an_independent_transcription_of_the_official_decoder(size, bins, prior_channels):
    """The paper's 60 x 60 map (PFENet's one prior) and the toy tier's 8 x 8 (PI-CLIP-like 3 priors), in float64."""
    torch.manual_seed(0)
    fem = FeatureEnrichmentModule(feature_dim=8, prior_channels=prior_channels).double().eval()
    official = OfficialFEM(reduce_dim=8, bins=bins, prior_channels=prior_channels).double().eval()
    official.load_state_dict(fem.state_dict())  # every tensor by its official name, none missing or extra
    query, prototype = torch.rand(2, 8, size, size, dtype=torch.float64), torch.rand(2, 8, dtype=torch.float64)
    prior = torch.rand(2, prior_channels, size, size, dtype=torch.float64)
    logits, auxiliary = fem(query, prototype, prior)
    expected, expected_auxiliary = official(query, prototype[:, :, None, None], prior)
    torch.testing.assert_close(logits, expected, rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(auxiliary, expected_auxiliary, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, bins, same", [(8, [8, 4, 2, 1], True), (60, [60, 30, 15, 8], False)])
def test_the_former_inter_scale_path_equals_the_official_one_at_the_toy_map_only(size, bins, same):
    """At the toy tier's 8 x 8 map the resizes to bins 2 and 1 keep only corner values, which an upsampling with
    aligned corners keeps too, so resizing bin to bin (fsslib's former path) and through the full map (the official
    one) give the same outputs bit for bit, and gradients equal but for the order of their sums (float64's last
    bits): the toy zoo trained on the former path is a model of the official decoder. At the paper's 60 x 60 the
    outputs differ."""
    torch.manual_seed(0)
    official = OfficialFEM(reduce_dim=8, bins=bins).double().train()
    former = OfficialFEM(reduce_dim=8, bins=bins, bin_to_bin=True).double().train()
    former.load_state_dict(official.state_dict())
    inputs = (torch.rand(2, 8, size, size, dtype=torch.float64), torch.rand(2, 8, 1, 1, dtype=torch.float64),
              torch.rand(2, 1, size, size, dtype=torch.float64))
    outputs, gradients = [], []
    for model in (official, former):
        torch.manual_seed(1)  # the same dropout masks
        logits, auxiliary = model(*inputs)
        (logits.square().mean() + sum(a.square().mean() for a in auxiliary)).backward()
        outputs.append([logits, *auxiliary])
        gradients.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*outputs)) is same
    if same:
        for a, b in zip(*gradients):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_pfenet_loss_is_the_official_main_plus_mean_auxiliary_at_the_label_size():
    """The official training loss: ``out`` and each ``out_list`` map upsampled to the label with aligned corners,
    CE with 255 ignored, main + mean of the auxiliaries; computed from the official decoder transcription."""
    from fsslib.config import make_config
    from fsslib.methods import build_method
    from tests.test_pfenet import fabricated_batch

    torch.manual_seed(0)
    model = build_method(make_config(method="pfenet", backbone_weights="random")).double().eval()
    batch = fabricated_batch()
    batch = type(batch)(**{**batch.__dict__, "support_images": batch.support_images.double(),
                           "query_images": batch.query_images.double()})
    captured = {}
    model.decoder.register_forward_hook(lambda module, inputs, output: captured.__setitem__("inputs", inputs))
    loss = model.loss(batch)
    query, prototype, prior = captured["inputs"]
    official = OfficialFEM(reduce_dim=query.shape[1], bins=pyramid_bins(query.shape[-1])).double().eval()
    official.load_state_dict(model.decoder.state_dict())
    out, out_list = official(query, prototype[:, :, None, None], prior)
    labels = batch.query_masks

    def criterion(logits):
        upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
        return F.cross_entropy(upsampled, labels, ignore_index=255)

    expected = criterion(out) + sum(criterion(inner) for inner in out_list) / len(out_list)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-6)  # fsslib's CE runs in float32


def test_foreground_weights_and_masked_average_pooling():
    masks = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 255], [0, 0, 0, 0], [0, 0, 0, 0]]])  # (1, 4, 4): 255 counts as 0
    weights = foreground_weights(masks, (2, 2), mode="area")
    assert weights.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]
    features = torch.arange(16.0).view(1, 1, 4, 4)
    # the mask at the features' own size: the mean of the four foreground values, with PFENet's eps
    assert masked_average_pooling(features, masks).item() == pytest.approx((0 + 1 + 4 + 5) / (4 + 5e-4))


class _Holder(HoldsFrozen):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)
        self.hold_frozen("teacher", nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))


def test_frozen_models_stay_out_of_parameters_and_state_dict_but_follow_to():
    holder = _Holder().train()
    assert set(holder.state_dict()) == {"head.weight", "head.bias"}
    assert len(list(holder.parameters())) == 2
    assert not holder.teacher.training and not any(p.requires_grad for p in holder.teacher.parameters())
    holder.to(torch.float64)
    assert holder.teacher[0].weight.dtype == torch.float64 and holder.head.weight.dtype == torch.float64


def test_sliding_windows_follow_mmseg_s_grid():
    from fsslib.blocks.sliding import window_starts
    from fsslib.errors import UnknownNameError

    assert window_starts(6, 4, 2) == [0, 2]
    assert window_starts(7, 4, 2) == [0, 2, 3]  # the last window moved back to end at the border
    assert window_starts(3, 4, 2) == [0]  # shorter than a window: one window of its length
    assert window_starts(448, 448, 224) == [0]
    assert window_starts(597, 448, 224) == [0, 149]  # PASCAL's 500 x 375 after the short side went to 448
    with pytest.raises(UnknownNameError, match="positive integers"):
        window_starts(10, 0, 2)


def test_sliding_windows_average_the_windows_that_cover_each_pixel():
    """Hand-built: a 4 x 6 image, windows of 4 at stride 2 start at columns 0 and 2; the first window
    scores 1 everywhere, the second 3, so columns 0-1 get 1, columns 2-3 the mean 2, columns 4-5 3."""
    from fsslib.blocks.sliding import slide

    calls = []

    def predict(crop: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(crop.shape))
        return torch.full((crop.shape[0], 2, *crop.shape[-2:]), 1.0 + 2 * (len(calls) - 1))

    scores = slide(predict, torch.zeros(1, 3, 4, 6), window=4, stride=2)
    expected_row = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    torch.testing.assert_close(scores, expected_row.expand(1, 2, 4, 6))
    assert calls == [(1, 3, 4, 4), (1, 3, 4, 4)]
    image = torch.rand(2, 3, 7, 9)  # scores that depend on the pixel only give the pixel's own score back
    torch.testing.assert_close(slide(lambda crop: crop * 2, image, window=4, stride=3), image * 2)


def test_sliding_windows_sum_in_float32_whatever_the_scores_dtype():
    """mmseg adds the windows into a float32 buffer; bfloat16 scores (autocast) summed in bfloat16 lose ~1e-2."""
    from fsslib.blocks.sliding import slide

    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16) * 10
    low = slide(lambda crop: crop.to(torch.bfloat16), image, window=6, stride=2)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, slide(lambda crop: crop.to(torch.bfloat16).float(), image, window=6, stride=2))
