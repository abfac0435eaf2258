"""BAM's base learner and learner ensemble (fsslib.blocks.base_learner, fsslib.blocks.ensemble) against
transcriptions of the official code.

The transcriptions below rewrite chunbolang/BAM ``model/PPM.py``, ``model/PSPNet.py`` (the head) and the K-shot
reweighting and "Classifier Ensemble" lines of ``model/BAM.py`` / Pbihao/HDMNet ``model/HDMNet.py`` in plain torch,
without fsslib, variable names as there; fsslib's blocks get the same weights and inputs. float64, under a second.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks.base_learner import BaseLearner, PyramidPooling, base_class_index
from fsslib.blocks.ensemble import LearnerEnsemble, ShotWeighting, gram_matrix, scene_difference
from fsslib.errors import EpisodeShapeError
from fsslib.models.backbones import build_backbone

pytestmark = pytest.mark.budget(5)


# ---- transcriptions of the official code ---------------------------------------------------------------------

def official_gram(fea):
    b, c, h, w = fea.shape
    fea = fea.reshape(b, c, h * w)
    fea_T = fea.permute(0, 2, 1)
    fea_norm = fea.norm(2, 2, True)
    fea_T_norm = fea_T.norm(2, 1, True)
    return torch.bmm(fea, fea_T) / (torch.bmm(fea_norm, fea_T_norm) + 1e-7)


def official_est_val(query_low, supp_feat_list, kshot_rw, shot, hdmnet_gather):
    bs = query_low.shape[0]
    que_gram = official_gram(query_low)
    norm_max = torch.ones_like(que_gram).norm(dim=(1, 2))
    est_val_list = []
    for supp_item in supp_feat_list:
        supp_gram = official_gram(supp_item)
        gram_diff = que_gram - supp_gram
        est_val_list.append((gram_diff.norm(dim=(1, 2)) / norm_max).reshape(bs, 1, 1, 1))
    est_val_total = torch.cat(est_val_list, 1)
    if shot > 1:
        val1, idx1 = est_val_total.sort(1)
        val2, idx2 = idx1.sort(1)
        weight = kshot_rw(val1)
        if hdmnet_gather:
            idx3 = idx1.gather(1, idx2)
            weight = weight.gather(1, idx3)
        else:
            weight = weight.gather(1, idx2)
        weight_soft = torch.softmax(weight, 1)
    else:
        weight_soft = torch.ones_like(est_val_total)
    est_val = (weight_soft * est_val_total).sum(1, True)
    return est_val_total, weight_soft, est_val


def official_ensemble(meta_out, base_out, est_val, gram_merge, cls_merge, cat_idx, training, base_classes):
    bs = meta_out.shape[0]
    meta_out_soft = meta_out.softmax(1)
    base_out_soft = base_out.softmax(1)
    meta_map_bg = meta_out_soft[:, 0:1, :, :]
    meta_map_fg = meta_out_soft[:, 1:, :, :]
    if training:
        c_id_array = torch.arange(base_classes + 1)
        base_map_list = []
        for b_id in range(bs):
            c_id = cat_idx[0][b_id] + 1
            c_mask = (c_id_array != 0) & (c_id_array != c_id)
            base_map_list.append(base_out_soft[b_id, c_mask, :, :].unsqueeze(0).sum(1, True))
        base_map = torch.cat(base_map_list, 0)
    else:
        base_map = base_out_soft[:, 1:, :, :].sum(1, True)
    est_map = est_val.expand_as(meta_map_fg)
    meta_map_bg = gram_merge(torch.cat([meta_map_bg, est_map], dim=1))
    meta_map_fg = gram_merge(torch.cat([meta_map_fg, est_map], dim=1))
    merge_map = torch.cat([meta_map_bg, base_map], 1)
    merge_bg = cls_merge(merge_map)
    return torch.cat([merge_bg, meta_map_fg], dim=1)


class OfficialPPM(nn.Module):
    def __init__(self, in_dim, reduction_dim, bins):
        super().__init__()
        self.features = nn.ModuleList(nn.Sequential(
            nn.AdaptiveAvgPool2d(bin), nn.Conv2d(in_dim, reduction_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(reduction_dim), nn.ReLU(inplace=True)) for bin in bins)

    def forward(self, x):
        out = [x]
        for f in self.features:
            out.append(F.interpolate(f(x), x.size()[2:], mode='bilinear', align_corners=True))
        return torch.cat(out, 1)


# ---- tests ---------------------------------------------------------------------------------------------------

def _randomise_batch_norm(module: nn.Module, generator: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator, dtype=m.running_mean.dtype) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator, dtype=m.running_var.dtype) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator, dtype=m.weight.dtype) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator, dtype=m.bias.dtype) * 0.1)


def test_pspnet_head_matches_official_ppm_and_cls() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    learner = BaseLearner(build_backbone("toy-resnet"), base_classes=15, hidden=32).double().eval()
    _randomise_batch_norm(learner, generator)
    fea_dim = learner.backbone.channels["layer4"]
    ppm = OfficialPPM(fea_dim, fea_dim // 4, (1, 2, 3, 6)).double().eval()
    cls = nn.Sequential(nn.Conv2d(fea_dim * 2, 32, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(32),
                        nn.ReLU(inplace=True), nn.Dropout2d(p=0.1), nn.Conv2d(32, 16, kernel_size=1)).double().eval()
    ppm.load_state_dict({k.replace("stages", "features"): v for k, v in learner.ppm.state_dict().items()})
    cls.load_state_dict({**{f"0.{k}": v for k, v in learner.embed[0].state_dict().items()},
                         **{f"1.{k}": v for k, v in learner.embed[1].state_dict().items()},
                         **{f"4.{k}": v for k, v in learner.classify[2].state_dict().items()}})
    layer4 = torch.randn(2, fea_dim, 8, 8, dtype=torch.float64)
    embedding, logits = learner.head(layer4)
    expected = cls(ppm(layer4))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(embedding, cls[1](cls[0](ppm(layer4))), rtol=0, atol=1e-10)
    assert logits.shape == (2, 16, 8, 8) and isinstance(learner.ppm, PyramidPooling)
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    assert learner(images).shape == (1, 16, 8, 8)


@pytest.mark.parametrize("shots,hdmnet_gather", [(1, False), (3, False), (3, True), (5, True)])
def test_scene_difference_and_shot_weights_match_official(shots: int, hdmnet_gather: bool) -> None:
    torch.manual_seed(shots)
    query = torch.randn(4, 12, 8, 8, dtype=torch.float64)
    supports = torch.randn(4, shots, 12, 8, 8, dtype=torch.float64)
    weighting = ShotWeighting(shots, hidden=2, unsort=not hdmnet_gather).double()
    if weighting.transform is not None:  # random weights, so that the order matters
        for p in weighting.parameters():
            p.data.normal_()
    official_total, official_weights, official_est = official_est_val(
        query, [supports[:, k] for k in range(shots)], weighting.transform, shots, hdmnet_gather)
    difference = scene_difference(query, supports)  # (B, K)
    weights = weighting(difference)
    torch.testing.assert_close(difference, official_total.view(4, shots), rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, official_weights.view(4, shots), rtol=0, atol=1e-12)
    torch.testing.assert_close((weights * difference).sum(1), official_est.view(4), rtol=0, atol=1e-12)
    torch.testing.assert_close(gram_matrix(query), official_gram(query), rtol=0, atol=1e-12)


def test_hdmnet_gather_is_the_identity_permutation() -> None:
    """HDMNet's ``idx1.gather(1, idx2)`` undoes the sort's own permutation: its weights stay in the sorted order."""
    differences = torch.tensor([[0.3, 0.1, 0.2]], dtype=torch.float64)
    _, idx1 = differences.sort(1)
    _, idx2 = idx1.sort(1)
    assert idx1.gather(1, idx2).tolist() == [[0, 1, 2]]
    weighting = ShotWeighting(3, hidden=0, unsort=True).double()
    with torch.no_grad():
        weighting.transform.weight.copy_(torch.eye(3).view(3, 3, 1, 1))  # weight = the sorted difference itself
    bam = weighting(differences)
    weighting.unsort = False
    hdmnet = weighting(differences)
    torch.testing.assert_close(bam, differences.softmax(1))  # each shot weighted by its own difference
    torch.testing.assert_close(hdmnet, differences.sort(1).values.softmax(1))  # weights in the sorted order


@pytest.mark.parametrize("training", [True, False])
def test_learner_ensemble_matches_official(training: bool) -> None:
    torch.manual_seed(3)
    base_classes = 15
    meta = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    base = torch.randn(3, 1 + base_classes, 8, 8, dtype=torch.float64)
    est_val = torch.rand(3, 1, 1, 1, dtype=torch.float64)
    cat_idx = [torch.tensor([0, 7, 14])]  # the official 0-based index of each episode class among the base classes
    ensemble = LearnerEnsemble().double()
    for p in ensemble.parameters():  # away from the identity start, so that both inputs of each merge count
        p.data.normal_()
    expected = official_ensemble(meta, base, est_val, ensemble.gram_merge, ensemble.cls_merge, cat_idx, training,
                                 base_classes)
    exclude = cat_idx[0] + 1 if training else None
    torch.testing.assert_close(ensemble(meta, base, est_val.view(3), exclude), expected, rtol=0, atol=1e-12)


def test_ensemble_starts_as_the_meta_learner_and_resizes_the_base_map() -> None:
    ensemble = LearnerEnsemble()
    meta = torch.randn(2, 2, 8, 8)
    scores = ensemble(meta, torch.randn(2, 16, 4, 4), torch.rand(2))
    torch.testing.assert_close(scores, meta.softmax(1))  # both merges start as [1, 0]


def test_base_class_index() -> None:
    base_ids = [1, 2, 3, 4, 5, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]  # fold 1 of PASCAL-5i: 6-10 novel
    ids = torch.tensor([1, 6, 11, 20])
    assert base_class_index(ids, base_ids).tolist() == [1, 0, 6, 15]


def test_the_scene_difference_stays_float32_under_bf16_autocast() -> None:
    """BAM's and HDMNet's shot weights read the scene difference: under a GPU run's bf16 autocast (here the CPU's) it
    is the float32 value exactly, from float32 or bf16 features, so both weigh shots as the official float32 code."""
    generator = torch.Generator().manual_seed(0)
    query, supports = torch.randn(2, 16, 6, 6, generator=generator), torch.randn(2, 3, 16, 6, 6, generator=generator)
    exact = scene_difference(query, supports)  # (2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        flat = query.flatten(2)  # (2, 16, 36)
        assert torch.matmul(flat, flat.transpose(1, 2)).dtype == torch.bfloat16  # autocast is on
        under_autocast = scene_difference(query, supports)
        from_bf16 = scene_difference(query.bfloat16(), supports.bfloat16())
    assert under_autocast.dtype == from_bf16.dtype == torch.float32
    torch.testing.assert_close(under_autocast, exact, rtol=0, atol=0)
    rounded = scene_difference(query.bfloat16().float(), supports.bfloat16().float())  # the bf16 inputs, in float32
    torch.testing.assert_close(from_bf16, rounded, rtol=0, atol=0)


@pytest.mark.parametrize("built, given", [(1, 5), (5, 1), (5, 3)])
def test_the_shot_weighting_refuses_another_number_of_shots(built: int, given: int) -> None:
    """A 1-shot model given K supports would sum them (weights all one); a K-shot one cannot read other counts:
    both stop with the count they were built for, whatever path (evaluation, a lesson's helper) called them."""
    with pytest.raises(EpisodeShapeError, match=f"built for {built} support"):
        ShotWeighting(built)(torch.rand(2, given))
    assert ShotWeighting(built)(torch.rand(2, built)).shape == (2, built)
