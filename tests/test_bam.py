"""BAM (fsslib.methods.bam) against a transcription of the official forward and loss, and its frozen base learner.

``OfficialBAM`` below rewrites chunbolang/BAM ``model/BAM.py`` (``OneModel.forward`` from the query features to
``final_out`` and the losses), ``model/ASPP.py`` and ``model/PPM.py`` in plain torch without fsslib, variable
names as there (``.cuda()`` dropped; ``layer0`` is the backbone's stem on normalised images; ``zoom_factor`` 1 returns
the maps at feature size). It gets fsslib's weights and inputs; float64, dropout off, BatchNorm in eval mode (the
official ``fix_bn``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks.base_learner import BaseLearner
from fsslib.config import make_config
from fsslib.data.benchmarks import TOY
from fsslib.data.episodes import EpisodeBatch, OneWayInputs
from fsslib.errors import CheckpointError
from fsslib.methods import build_method, frozen_files
from fsslib.methods.bam import BAM
from fsslib.models.backbones import ToyResNet
from fsslib.pretrain.base_learner.files import SHIPPED_FOLDER, save_base_learner
from tests.test_ensemble import official_ensemble, official_est_val

pytestmark = pytest.mark.budget(5)
FOLD = 0
BASE = TOY.base_classes(FOLD)


# ---- transcription of the official code ---------------------------------------------------------------------

def Weighted_GAP(supp_feat, mask):
    supp_feat = supp_feat * mask
    feat_h, feat_w = supp_feat.shape[-2:][0], supp_feat.shape[-2:][1]
    area = F.avg_pool2d(mask, (supp_feat.size()[2], supp_feat.size()[3])) * feat_h * feat_w + 0.0005
    supp_feat = F.avg_pool2d(input=supp_feat, kernel_size=supp_feat.shape[-2:]) * feat_h * feat_w / area
    return supp_feat



class PPM(nn.Module):
    def __init__(self, in_dim, reduction_dim, bins):
        super().__init__()
        self.features = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(bin), nn.Conv2d(in_dim, reduction_dim, 1, bias=False),
                                                    nn.BatchNorm2d(reduction_dim), nn.ReLU(inplace=True)) for bin in bins)

    def forward(self, x):
        x_size = x.size()
        out = [x]
        for f in self.features:
            out.append(F.interpolate(f(x), x_size[2:], mode='bilinear', align_corners=True))
        return torch.cat(out, 1)


class ASPP(nn.Module):
    def __init__(self, out_channels=256):
        super().__init__()
        self.layer6_0 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 1, 1, 0, bias=True), nn.ReLU())
        self.layer6_1 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 1, 1, 0, bias=True), nn.ReLU())
        self.layer6_2 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, padding=6, dilation=6, bias=True), nn.ReLU())
        self.layer6_3 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, padding=12, dilation=12, bias=True), nn.ReLU())
        self.layer6_4 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, padding=18, dilation=18, bias=True), nn.ReLU())

    def forward(self, x):
        feature_size = x.shape[-2:]
        global_feature = F.avg_pool2d(x, kernel_size=feature_size)
        global_feature = self.layer6_0(global_feature)
        global_feature = global_feature.expand(-1, -1, feature_size[0], feature_size[1])
        return torch.cat([global_feature, self.layer6_1(x), self.layer6_2(x), self.layer6_3(x), self.layer6_4(x)], dim=1)


class OfficialBAM(nn.Module):
    """OneModel of model/BAM.py: reduce_dim, classes and base_classes as arguments; low_fea 'layer2'."""

    def __init__(self, backbone, fea_dim, feat4_dim, reduce_dim, hidden, base_classes, shot, kshot_trans_dim, zoom_factor):
        super().__init__()
        self.shot, self.zoom_factor, self.base_classes, self.cls_type, self.vgg = shot, zoom_factor, base_classes, 'Base', False
        self.criterion = nn.CrossEntropyLoss(ignore_index=255)
        self.classes = 2
        self.low_fea_id = 'layer2'[-1]
        self.layer0, self.layer1, self.layer2, self.layer3, self.layer4 = (backbone.stem, backbone.layer1, backbone.layer2,
                                                                           backbone.layer3, backbone.layer4)
        bins = (1, 2, 3, 6)
        cls = nn.Sequential(nn.Conv2d(feat4_dim * 2, hidden, 3, padding=1, bias=False), nn.BatchNorm2d(hidden),
                            nn.ReLU(inplace=True), nn.Dropout2d(p=0.1), nn.Conv2d(hidden, base_classes + 1, 1))
        self.learner_base = nn.Sequential(PPM(feat4_dim, int(feat4_dim / len(bins)), bins), cls)
        self.down_query = nn.Sequential(nn.Conv2d(fea_dim, reduce_dim, 1, bias=False), nn.ReLU(inplace=True), nn.Dropout2d(p=0.5))
        self.down_supp = nn.Sequential(nn.Conv2d(fea_dim, reduce_dim, 1, bias=False), nn.ReLU(inplace=True), nn.Dropout2d(p=0.5))
        self.init_merge = nn.Sequential(nn.Conv2d(reduce_dim * 2 + 1, reduce_dim, 1, bias=False), nn.ReLU(inplace=True))
        self.ASPP_meta = ASPP(reduce_dim)
        self.res1_meta = nn.Sequential(nn.Conv2d(reduce_dim * 5, reduce_dim, 1, bias=False), nn.ReLU(inplace=True))
        self.res2_meta = nn.Sequential(nn.Conv2d(reduce_dim, reduce_dim, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                       nn.Conv2d(reduce_dim, reduce_dim, 3, padding=1, bias=False), nn.ReLU(inplace=True))
        self.cls_meta = nn.Sequential(nn.Conv2d(reduce_dim, reduce_dim, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                      nn.Dropout2d(p=0.1), nn.Conv2d(reduce_dim, self.classes, 1))
        self.gram_merge = nn.Conv2d(2, 1, kernel_size=1, bias=False)
        self.cls_merge = nn.Conv2d(2, 1, kernel_size=1, bias=False)
        if shot > 1:
            self.kshot_rw = nn.Sequential(nn.Conv2d(self.shot, kshot_trans_dim, kernel_size=1), nn.ReLU(inplace=True),
                                          nn.Conv2d(kshot_trans_dim, self.shot, kernel_size=1))

    def forward(self, x, s_x, s_y, y_m, y_b, cat_idx=None):
        x_size = x.size()
        h = int((x_size[2] - 1) / 8 * self.zoom_factor + 1)
        w = int((x_size[3] - 1) / 8 * self.zoom_factor + 1)
        with torch.no_grad():
            query_feat_0 = self.layer0(x)
            query_feat_1 = self.layer1(query_feat_0)
            query_feat_2 = self.layer2(query_feat_1)
            query_feat_3 = self.layer3(query_feat_2)
            query_feat_4 = self.layer4(query_feat_3)
        query_feat = torch.cat([query_feat_3, query_feat_2], 1)
        query_feat = self.down_query(query_feat)
        supp_pro_list = []
        final_supp_list = []
        mask_list = []
        supp_feat_list = []
        for i in range(self.shot):
            mask = (s_y[:, i, :, :] == 1).float().unsqueeze(1)
            mask_list.append(mask)
            with torch.no_grad():
                supp_feat_0 = self.layer0(s_x[:, i, :, :, :])
                supp_feat_1 = self.layer1(supp_feat_0)
                supp_feat_2 = self.layer2(supp_feat_1)
                supp_feat_3 = self.layer3(supp_feat_2)
                mask = F.interpolate(mask, size=(supp_feat_3.size(2), supp_feat_3.size(3)), mode='bilinear', align_corners=True)
                supp_feat_4 = self.layer4(supp_feat_3 * mask)
                final_supp_list.append(supp_feat_4)
            supp_feat = torch.cat([supp_feat_3, supp_feat_2], 1)
            supp_feat = self.down_supp(supp_feat)
            supp_pro = Weighted_GAP(supp_feat, mask)
            supp_pro_list.append(supp_pro)
            supp_feat_list.append({'2': supp_feat_2}[self.low_fea_id])  # eval('supp_feat_' + self.low_fea_id)
        # the "K-Shot Reweighting" lines: transcribed once, in tests/test_ensemble.py
        _, weight_soft, est_val = official_est_val({'2': query_feat_2}[self.low_fea_id], supp_feat_list,
                                                   getattr(self, 'kshot_rw', None), self.shot, hdmnet_gather=False)
        corr_query_mask_list = []
        cosine_eps = 1e-7
        for i, tmp_supp_feat in enumerate(final_supp_list):
            resize_size = tmp_supp_feat.size(2)
            tmp_mask = F.interpolate(mask_list[i], size=(resize_size, resize_size), mode='bilinear', align_corners=True)
            tmp_supp_feat_4 = tmp_supp_feat * tmp_mask
            q = query_feat_4
            s = tmp_supp_feat_4
            bsize, ch_sz, sp_sz, _ = q.size()[:]
            tmp_query = q
            tmp_query = tmp_query.reshape(bsize, ch_sz, -1)
            tmp_query_norm = torch.norm(tmp_query, 2, 1, True)
            tmp_supp = s
            tmp_supp = tmp_supp.reshape(bsize, ch_sz, -1)
            tmp_supp = tmp_supp.permute(0, 2, 1)
            tmp_supp_norm = torch.norm(tmp_supp, 2, 2, True)
            similarity = torch.bmm(tmp_supp, tmp_query) / (torch.bmm(tmp_supp_norm, tmp_query_norm) + cosine_eps)
            similarity = similarity.max(1)[0].reshape(bsize, sp_sz * sp_sz)
            similarity = (similarity - similarity.min(1)[0].unsqueeze(1)) / (
                similarity.max(1)[0].unsqueeze(1) - similarity.min(1)[0].unsqueeze(1) + cosine_eps)
            corr_query = similarity.reshape(bsize, 1, sp_sz, sp_sz)
            corr_query = F.interpolate(corr_query, size=(query_feat_3.size()[2], query_feat_3.size()[3]), mode='bilinear',
                                       align_corners=True)
            corr_query_mask_list.append(corr_query)
        corr_query_mask = torch.cat(corr_query_mask_list, 1)
        corr_query_mask = (weight_soft * corr_query_mask).sum(1, True)
        supp_pro = torch.cat(supp_pro_list, 2)
        supp_pro = (weight_soft.permute(0, 2, 1, 3) * supp_pro).sum(2, True)
        concat_feat = supp_pro.expand_as(query_feat)
        merge_feat = torch.cat([query_feat, concat_feat, corr_query_mask], 1)
        merge_feat = self.init_merge(merge_feat)
        base_out = self.learner_base(query_feat_4)
        query_meta = self.ASPP_meta(merge_feat)
        query_meta = self.res1_meta(query_meta)
        query_meta = self.res2_meta(query_meta) + query_meta
        meta_out = self.cls_meta(query_meta)
        # the "Classifier Ensemble" lines: transcribed once, in tests/test_ensemble.py
        final_out = official_ensemble(meta_out, base_out, est_val, self.gram_merge, self.cls_merge, cat_idx,
                                      self.training and self.cls_type == 'Base', self.base_classes)
        if self.zoom_factor != 1:
            meta_out = F.interpolate(meta_out, size=(h, w), mode='bilinear', align_corners=True)
            base_out = F.interpolate(base_out, size=(h, w), mode='bilinear', align_corners=True)
            final_out = F.interpolate(final_out, size=(h, w), mode='bilinear', align_corners=True)
        if self.training:
            main_loss = self.criterion(final_out, y_m.long())
            aux_loss1 = self.criterion(meta_out, y_m.long())
            return final_out, meta_out, base_out, main_loss, aux_loss1  # (+ the maps, to compare them)
        return final_out, meta_out, base_out


def fix_bn(m):
    if m.__class__.__name__.find('BatchNorm') != -1:
        m.eval()


# ---- fsslib's model and the same weights in the transcription ------------------------------------------------

def randomise_batch_norms(module: nn.Module, generator: torch.Generator) -> None:
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            for tensor in (norm.running_mean, norm.bias):
                tensor.data = 0.2 * torch.randn(tensor.shape, generator=generator)
            for tensor in (norm.running_var, norm.weight):
                tensor.data = 0.5 + torch.rand(tensor.shape, generator=generator)


def models(shots: int, feature_dim: int = 8, hidden: int = 16) -> tuple[BAM, OfficialBAM]:
    """fsslib's BAM on a random toy base learner, and the transcription holding the same weights (float64, no dropout)."""
    generator = torch.Generator().manual_seed(shots)
    torch.manual_seed(shots)
    learner = BaseLearner(ToyResNet(), len(BASE), hidden=hidden)
    randomise_batch_norms(learner, generator)
    model = BAM(learner, BASE, shots, feature_dim=feature_dim)
    for merge in (model.ensemble.gram_merge, model.ensemble.cls_merge):  # off the identity start, so every input counts
        merge.weight.data = torch.randn(merge.weight.shape, generator=generator)
    channels = learner.backbone.channels
    official = OfficialBAM(learner.backbone, channels["layer2"] + channels["layer3"], channels["layer4"], feature_dim,
                           hidden, len(BASE), shots, 2, zoom_factor=1)
    ppm = {f"0.features.{k[len('stages.'):]}": v for k, v in learner.ppm.state_dict().items()}
    head = {"1.0.weight": learner.embed[0].weight, **{f"1.1.{k}": v for k, v in learner.embed[1].state_dict().items()},
            "1.4.weight": learner.classify[2].weight, "1.4.bias": learner.classify[2].bias}
    official.learner_base.load_state_dict({**ppm, **head})
    pairs = {"down_query": model.down_query, "down_supp": model.down_support, "init_merge": model.init_merge,
             "res1_meta": model.res1, "res2_meta": model.res2, "cls_meta": model.cls_meta,
             "gram_merge": model.ensemble.gram_merge, "cls_merge": model.ensemble.cls_merge}
    for name, module in pairs.items():
        getattr(official, name).load_state_dict(module.state_dict())
    branches = [model.aspp.pooled, model.aspp.pointwise, *model.aspp.dilated]
    for index, conv in enumerate(branches):
        getattr(official.ASPP_meta, f"layer6_{index}")[0].load_state_dict(conv.state_dict())
    if shots > 1:
        official.kshot_rw.load_state_dict(model.shot_weighting.transform.state_dict())
    for module in (*model.modules(), *learner.modules(), *official.modules()):
        if isinstance(module, nn.Dropout2d):
            module.p = 0.0
    return model.double(), official.double()


def episode(shots: int, batch_size: int = 2) -> OneWayInputs:
    generator = torch.Generator().manual_seed(10 + shots)
    masks = torch.randint(0, 2, (batch_size, shots, 64, 64), generator=generator)
    masks[:, :, :4] = 255  # ignored rows
    masks[:, :, 18:40, 18:40] = 1  # foreground at the positions the 8 x 8 resize samples (9i, 9j)
    return OneWayInputs(torch.rand(batch_size, shots, 3, 64, 64, generator=generator, dtype=torch.float64), masks,
                        torch.rand(batch_size, 3, 64, 64, generator=generator, dtype=torch.float64),
                        torch.tensor(BASE[3:3 + batch_size]), ["a"] * batch_size)


def official_inputs(model: BAM, inputs: OneWayInputs) -> dict:
    normalise = model.backbone.normalise
    return {"x": normalise(inputs.query_images), "s_x": normalise(inputs.support_images.flatten(0, 1)).unflatten(
        0, inputs.support_images.shape[:2]), "s_y": inputs.support_masks,
        "cat_idx": [torch.tensor([BASE.index(int(c)) for c in inputs.class_ids])]}


@pytest.mark.parametrize("shots", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_bam_matches_the_official_forward(shots, training):
    """Final scores, meta and base logits at feature size: eval mode (the whole base foreground) and training mode
    (the episode's base class left out of it), 1 and 2 shots (the K-shot weighting, sorted and unsorted)."""
    model, official = models(shots)
    model.train(training)
    official.train(training)
    official.apply(fix_bn)
    inputs = episode(shots)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)  # the official training forward ends in its loss, at zoom 1 on 8 x 8
    with torch.no_grad():
        ours = model.predict(inputs)
        theirs = official(**official_inputs(model, inputs), y_m=labels, y_b=labels)[:3]
    for name, mine, reference in zip(("final", "meta", "base"), ours, theirs):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-10, msg=name)
    if training:  # the left-out class changes the scores
        with torch.no_grad():
            assert not torch.allclose(ours[0], model.eval().predict(inputs)[0])


def training_losses(shots: int) -> tuple[BAM, OfficialBAM, torch.Tensor, torch.Tensor]:
    """fsslib's loss and the transcription's main + aux_weight1 * aux losses on one training batch, the official
    forward upsampled to the 64 x 64 labels (zoom 8), in training mode with the frozen BatchNorms."""
    model, official = models(shots)
    official.zoom_factor = 8
    model.train()
    official.train()
    official.apply(fix_bn)
    inputs = episode(shots)
    labels = torch.randint(0, 2, (2, 64, 64), generator=torch.Generator().manual_seed(3))
    labels[:, -3:] = 255
    batch = EpisodeBatch(inputs.support_images[:, None], inputs.support_masks[:, None], inputs.query_images, labels,
                         list(labels), inputs.class_ids[:, None], [["a"], ["a"]])
    *_, main_loss, aux_loss1 = official(**official_inputs(model, inputs), y_m=labels, y_b=labels)
    return model, official, model.loss(batch), main_loss + 1.0 * aux_loss1


def test_bam_loss_is_the_official_main_plus_auxiliary_loss():
    """CE of the final scores (read as logits, as the official code) + aux_weight1 * CE of the meta logits, both
    upsampled to the labels; the base learner's CE has no gradient and is not in fsslib's loss."""
    _, _, ours, theirs = training_losses(2)
    # fsslib's segmentation_loss takes the cross-entropy in float32 (the logits may be bf16): float32's precision
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-6, atol=0)


def test_bam_gradients_at_two_shots_are_the_official_ones():
    """The K-shot weighting learns through the prototypes, the scene difference and the weighted prior (the
    official ``(weight_soft * corr_query_mask).sum(1, True)`` runs under autograd): every trained weight's
    gradient equals the transcription's at 2 shots."""
    model, official, ours, theirs = training_losses(2)
    ours.backward()
    theirs.backward()
    pairs = {"kshot_rw": model.shot_weighting.transform, "init_merge": model.init_merge, "down_supp": model.down_support,
             "down_query": model.down_query, "res1_meta": model.res1, "res2_meta": model.res2,
             "cls_meta": model.cls_meta, "gram_merge": model.ensemble.gram_merge, "cls_merge": model.ensemble.cls_merge}
    pairs = {name: (module, getattr(official, name)) for name, module in pairs.items()}
    branches = [model.aspp.pooled, model.aspp.pointwise, *model.aspp.dilated]
    pairs.update({f"ASPP_meta.layer6_{index}": (conv, getattr(official.ASPP_meta, f"layer6_{index}")[0])
                  for index, conv in enumerate(branches)})
    trained = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for mine, _ in pairs.values() for p in mine.parameters()} == trained  # every trained weight
    for name, (mine_module, reference_module) in pairs.items():
        for (key, mine), reference in zip(mine_module.named_parameters(), reference_module.parameters(), strict=True):
            torch.testing.assert_close(mine.grad.double(), reference.grad, rtol=1e-5, atol=1e-9, msg=f"{name}.{key}")


def test_the_frozen_base_learner_is_outside_the_checkpoint_and_its_dropout_follows_train_mode():
    model, _ = models(1)
    assert not any(name.startswith("base_learner") for name in model.state_dict())
    assert all(not p.requires_grad for p in model.base_learner.parameters())
    model.train()
    assert model.base_learner.classify.training and not model.base_learner.embed.training
    model.eval()
    assert not model.base_learner.classify.training


@pytest.fixture
def base_learner_file(tmp_path):
    """A random toy base learner of fold 0 in the file format of ``python -m fsslib.pretrain base-learner``."""
    learner = BaseLearner(ToyResNet(), len(BASE), hidden=16)
    return save_base_learner(tmp_path / "base-learner-fold0.pt", learner, "toy-resnet", "toy", FOLD, BASE, 64)


def test_a_missing_or_mismatched_base_learner_names_the_command_that_makes_it(tmp_path, base_learner_file):
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match=r"(?s)base learner of fold 0.*python -m fsslib.pretrain base-learner --fold 0"):
        build_method(make_config(method="bam", fold=0, options={"base_learner": str(missing)}))
    with pytest.raises(CheckpointError, match=r"(?s)trained for fold=0.*not fold=1.*--fold 1"):
        build_method(make_config(method="bam", fold=1, options={"base_learner": str(base_learner_file)}))
    cfg = make_config(method="bam", fold=2)
    assert frozen_files(cfg) == {"base_learner": str(SHIPPED_FOLDER / "base-learner-fold2.pt")}


def test_the_toy_preset_trains_one_step(tiny_cfg, base_learner_file):
    from fsslib.data.episodes import EpisodeDataset, Source, collate_episodes
    from fsslib.train import make_optimizer

    cfg = tiny_cfg(method="bam", fold=FOLD, options={"base_learner": str(base_learner_file)})
    assert cfg.novel_rule == "bam" and cfg.options["feature_dim"] == 64
    model = build_method(cfg).train()
    episodes = EpisodeDataset(Source(TOY, "train"), FOLD, 1, 64, 4, mode="train", novel_rule=cfg.novel_rule)
    batch = collate_episodes([episodes[i] for i in range(4)])
    optimizer = make_optimizer(cfg, model)
    before = model.cls_meta[-1].weight.detach().clone()
    loss = model.loss(batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.cls_meta[-1].weight)
    assert model(batch.inputs()).shape == (4, 2, 64, 64)
