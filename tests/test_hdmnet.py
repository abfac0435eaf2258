"""HDMNet: the hierarchical transformer, the correlation distillation and the whole forward against transcriptions
of the official code; the optimiser groups and one training step.

The transcriptions below rewrite Pbihao/HDMNet ``model/Transformer.py``, ``model/MaskMultiheadAttention.py`` and
``model/HDMNet.py`` (``forward`` from the extracted features on, ``get_similarity``, ``Weighted_GAP``,
``disstil_loss``) in plain torch, without fsslib, variable names as there. mmcv / mmseg are not installed; what
their pieces compute is written out: ``PatchEmbed`` with an int padding = Conv2d (bias) -> flatten -> LayerNorm;
mmcv ``MultiheadAttention`` = its ``proj_drop`` (Dropout) and ``dropout_layer`` (DropPath(0) = identity) around the
replaced ``attn``; ``ConvModule`` = conv (no bias) -> BN -> ReLU; ``resize`` = ``F.interpolate``; SyncBN = BN.
Weights are copied module by module in registration order (the same in both), then compared in float64.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib import train
from fsslib.blocks import blank_outside_masks
from fsslib.blocks.hierarchical import HierarchicalTransformer, TransformerSize, correlation_distillation_loss
from fsslib.config import make_config
from fsslib.errors import CheckpointError, FsslibError
from fsslib.methods.options import OptionError
from fsslib.methods import build_method, frozen_files
from fsslib.models.backbones import IMAGENET_MEAN
from tests.test_ensemble import official_ensemble, official_est_val
from tests.test_pfenet import fabricated_batch

pytestmark = pytest.mark.budget(5)
SMALL = dict(embed_dims=16, num_heads=[1, 2, 4], match_nums_heads=2, down_sr_ratio=[4, 2, 1],
             down_patch_sizes=[1, 3, 3], down_stridess=[1, 2, 2], mlp_ratio=2)


# ---- transcriptions of the official code ---------------------------------------------------------------------

def nlc_to_nchw(x, hw_shape):
    H, W = hw_shape
    B, L, C = x.shape
    return x.transpose(1, 2).reshape(B, C, H, W)


def nchw_to_nlc(x):
    return x.flatten(2).transpose(1, 2).contiguous()


class MaskMultiHeadAttention(nn.Module):
    def __init__(self, in_features, head_num, bias=False):
        super().__init__()
        self.head_num = head_num
        self.linear_q = nn.Linear(in_features, in_features, bias)
        self.linear_k = nn.Linear(in_features, in_features, bias)
        self.linear_v = nn.Linear(in_features, in_features, bias)
        self.linear_o = nn.Linear(in_features, in_features, bias)

    def forward(self, q, k, v, mask=None, cross=False):
        q, k, v = self.linear_q(q), self.linear_k(k), self.linear_v(v)
        q, k, v = self._reshape_to_batches(q), self._reshape_to_batches(k), self._reshape_to_batches(v)
        if mask is not None:
            mask = mask.repeat_interleave(self.head_num, 0)
        y, weights = self.scaled_dotproduct(q, k, v, mask, cross)
        return self.linear_o(self._reshape_from_batches(y)), weights

    def _reshape_to_batches(self, x):
        batch_size, seq_len, in_feature = x.size()
        sub_dim = in_feature // self.head_num
        return x.reshape(batch_size, seq_len, self.head_num, sub_dim).permute(0, 2, 1, 3) \
            .reshape(batch_size * self.head_num, seq_len, sub_dim)

    def _reshape_from_batches(self, x):
        batch_size, seq_len, in_feature = x.size()
        batch_size //= self.head_num
        return x.reshape(batch_size, self.head_num, seq_len, in_feature).permute(0, 2, 1, 3) \
            .reshape(batch_size, seq_len, in_feature * self.head_num)

    def scaled_dotproduct(self, query, key, value, mask=None, cross_att=False, tmp=0.1):
        dk = query.shape[-1]
        if not cross_att:
            scores = torch.einsum("bmc,bnc->bmn", query, key) / (math.sqrt(dk) + 1e-9)
        else:
            query, key = F.normalize(query, dim=2), F.normalize(key, dim=2)
            scores = torch.einsum("bmc,bnc->bmn", query, key) / tmp
        weight = scores
        if cross_att:
            attention = F.softmax(scores, dim=-2)
            attention = attention.masked_fill(mask == 0, 0)
            weight = (weight * mask).sum(2) / (mask.sum(2) + 1e-9)
        else:
            attention = F.softmax(scores, dim=-1)
            weight = weight.mean(2)
        if self.head_num > 1:
            weight = weight.reshape(weight.size(0) // self.head_num, self.head_num, weight.size(1)).mean(1)
        return attention.matmul(value), weight


class EfficientMultiheadAttention(nn.Module):
    def __init__(self, embed_dims, num_heads, proj_drop, sr_ratio):
        super().__init__()
        self.attn = MaskMultiHeadAttention(embed_dims, num_heads, bias=False)  # replaces mmcv's nn.MultiheadAttention
        self.proj_drop = nn.Dropout(proj_drop)
        self.dropout_layer = nn.Identity()  # DropPath(drop_prob=0)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=1e-6)

    def forward(self, x, hw_shape, source=None, identity=None, mask=None, cross=False):
        x_q = x
        x_kv = x if source is None else source
        if self.sr_ratio > 1:
            x_kv = self.norm(nchw_to_nlc(self.sr(nlc_to_nchw(x_kv, hw_shape))))
        if identity is None:
            identity = x_q
        out, weight = self.attn(q=x_q, k=x_kv, v=x_kv, mask=mask, cross=cross)
        return identity + self.dropout_layer(self.proj_drop(out)), weight


class MixFFN(nn.Module):
    def __init__(self, embed_dims, feedforward_channels, ffn_drop):
        super().__init__()
        fc1 = nn.Conv2d(embed_dims, feedforward_channels, 1, bias=True)
        pe_conv = nn.Conv2d(feedforward_channels, feedforward_channels, 3, padding=1, bias=True, groups=feedforward_channels)
        fc2 = nn.Conv2d(feedforward_channels, embed_dims, 1, bias=True)
        drop = nn.Dropout(ffn_drop)
        self.layers = nn.Sequential(fc1, pe_conv, nn.GELU(), drop, fc2, drop)
        self.dropout_layer = nn.Identity()

    def forward(self, x, hw_shape, identity=None):
        out = nchw_to_nlc(self.layers(nlc_to_nchw(x, hw_shape)))
        return (x if identity is None else identity) + self.dropout_layer(out)


class TransformerEncoderLayer(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, drop_rate, sr_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = EfficientMultiheadAttention(embed_dims, num_heads, drop_rate, sr_ratio)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.ffn = MixFFN(embed_dims, feedforward_channels, drop_rate)

    def forward(self, x, hw_shape, source=None, mask=None, cross=False):
        if source is None:
            x, weight = self.attn(self.norm1(x), hw_shape, identity=x)
        else:
            x, weight = self.attn(self.norm1(x), hw_shape, source=self.norm1(source), identity=x, mask=mask, cross=cross)
        return self.ffn(self.norm2(x), hw_shape, identity=x), weight


class PatchEmbed(nn.Module):  # mmseg's, int padding, norm_cfg LN
    def __init__(self, in_channels, embed_dims, kernel_size, stride, padding):
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride, padding, bias=True)
        self.norm = nn.LayerNorm(embed_dims, eps=1e-6)

    def forward(self, x):
        x = self.projection(x)
        out_size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), out_size


class ConvModule(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class MixVisionTransformer(nn.Module):
    def __init__(self, shot=1, num_similarity_channels=2, num_down_stages=3, embed_dims=64, num_heads=(2, 4, 8),
                 match_dims=64, match_nums_heads=2, down_patch_sizes=(1, 3, 3), down_stridess=(1, 2, 2),
                 down_sr_ratio=(4, 2, 1), mlp_ratio=4, drop_rate=0.1):
        super().__init__()
        self.shot = shot
        self.num_down_stages = num_down_stages
        self.down_sample_layers = nn.ModuleList()
        for i in range(num_down_stages):
            self.down_sample_layers.append(nn.ModuleList([
                PatchEmbed(embed_dims, embed_dims, down_patch_sizes[i], down_stridess[i], down_stridess[i] // 2),
                TransformerEncoderLayer(embed_dims, num_heads[i], mlp_ratio * embed_dims, drop_rate, down_sr_ratio[i]),
                TransformerEncoderLayer(embed_dims, num_heads[i], mlp_ratio * embed_dims, drop_rate, down_sr_ratio[i]),
                nn.LayerNorm(embed_dims, eps=1e-6)]))
        self.match_layers = nn.ModuleList()
        for i in range(num_down_stages):
            self.match_layers.append(nn.ModuleList([
                TransformerEncoderLayer(match_dims, match_nums_heads, mlp_ratio * match_dims, drop_rate, 1),
                ConvModule(match_dims + num_similarity_channels, match_dims)]))
        self.parse_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(embed_dims, embed_dims * 4, 1), nn.BatchNorm2d(embed_dims * 4),
            nn.Conv2d(embed_dims * 4, embed_dims * 4, 3, padding=1), nn.BatchNorm2d(embed_dims * 4),
            nn.Conv2d(embed_dims * 4, embed_dims, 1), nn.BatchNorm2d(embed_dims), nn.ReLU())
            for _ in range(num_down_stages)])
        self.cls = nn.Sequential(
            nn.Conv2d(embed_dims, embed_dims * 4, 1), nn.BatchNorm2d(embed_dims * 4),
            nn.Conv2d(embed_dims * 4, embed_dims * 4, 3, padding=1), nn.BatchNorm2d(embed_dims * 4),
            nn.Conv2d(embed_dims * 4, 2, 1))

    def forward(self, q_x, s_x, mask, similarity):
        down_query_features, down_support_features, hw_shapes, down_masks, down_similarity, weights = [], [], [], [], [], []
        for i, layer in enumerate(self.down_sample_layers):
            q_x, q_hw_shape = layer[0](q_x)
            s_x, s_hw_shape = layer[0](s_x)
            q_x, s_x = layer[1](q_x, hw_shape=q_hw_shape)[0], layer[1](s_x, hw_shape=s_hw_shape)[0]
            q_x, s_x = layer[2](q_x, hw_shape=q_hw_shape)[0], layer[2](s_x, hw_shape=s_hw_shape)[0]
            q_x, s_x = layer[3](q_x), layer[3](s_x)
            tmp_mask = F.interpolate(mask, s_hw_shape, mode="nearest")
            b = tmp_mask.shape[0] // self.shot  # rearrange "(b n) 1 h w -> b 1 (n h w)"
            tmp_mask = tmp_mask.reshape(b, 1, -1)
            tmp_mask = tmp_mask.repeat(1, q_hw_shape[0] * q_hw_shape[1], 1)
            tmp_similarity = F.interpolate(similarity, q_hw_shape, mode="bilinear", align_corners=True)
            down_query_features.append(q_x)
            down_support_features.append(s_x.reshape(b, -1, s_x.shape[-1]))  # "(b n) l c -> b (n l) c"
            hw_shapes.append(q_hw_shape)
            down_masks.append(tmp_mask)
            down_similarity.append(tmp_similarity)
            if i != self.num_down_stages - 1:
                q_x, s_x = nlc_to_nchw(q_x, q_hw_shape), nlc_to_nchw(s_x, s_hw_shape)
        outs = None
        for i in range(self.num_down_stages).__reversed__():
            layer = self.match_layers[i]
            out, weight = layer[0](x=down_query_features[i], hw_shape=hw_shapes[i], source=down_support_features[i],
                                   mask=down_masks[i], cross=True)
            out = nlc_to_nchw(out, hw_shapes[i])
            weight = weight.view(out.shape[0], hw_shapes[i][0], hw_shapes[i][1])
            out = layer[1](torch.cat([out, down_similarity[i]], dim=1))
            weights.append(weight)
            if outs is None:
                outs = self.parse_layers[i](out)
            else:
                outs = F.interpolate(outs, size=out.shape[-2:], mode="bilinear")
                outs = outs + self.parse_layers[i](out + outs)
        return self.cls(outs), weights


def disstil_loss(t, s):
    if t.shape[-2:] != s.shape[-2:]:
        t = F.interpolate(t.unsqueeze(1), size=s.shape[-2:], mode="bilinear").squeeze(1)
    t, s = t.flatten(1), s.flatten(1)
    s = torch.softmax(s, dim=1)
    t = torch.softmax(t, dim=1)
    loss = t * torch.log(t + 1e-12) - t * torch.log(s + 1e-12)
    return loss.sum(1).mean()


def official_distillation(y_m, weights):
    weight_t = (y_m == 1).to(weights[0].dtype)
    weight_t = torch.masked_fill(weight_t, weight_t == 0, -1e9)
    for i, weight in enumerate(weights):
        if i == 0:
            distil_loss = disstil_loss(weight_t, weight)
        else:
            distil_loss += disstil_loss(weight_t, weight)
        weight_t = weight.detach()
    return distil_loss / 3


def Weighted_GAP(supp_feat, mask):
    supp_feat = supp_feat * mask
    feat_h, feat_w = supp_feat.shape[-2:][0], supp_feat.shape[-2:][1]
    area = F.avg_pool2d(mask, (supp_feat.size()[2], supp_feat.size()[3])) * feat_h * feat_w + 0.0005
    return F.avg_pool2d(input=supp_feat, kernel_size=supp_feat.shape[-2:]) * feat_h * feat_w / area


def get_similarity(q, s, mask):
    if len(mask.shape) == 3:
        mask = mask.unsqueeze(1)
    mask = F.interpolate((mask == 1).to(q.dtype), q.shape[-2:])
    s = s * mask
    bsize, ch_sz, sp_sz, _ = q.size()[:]
    tmp_query = q.contiguous().view(bsize, ch_sz, -1)
    tmp_query_norm = torch.norm(tmp_query, 2, 1, True)
    tmp_supp = s.contiguous().view(bsize, ch_sz, -1).permute(0, 2, 1)
    tmp_supp_norm = torch.norm(tmp_supp, 2, 2, True)
    similarity = torch.bmm(tmp_supp, tmp_query) / (torch.bmm(tmp_supp_norm, tmp_query_norm) + 1e-7)
    return similarity.max(1)[0].view(bsize, 1, sp_sz, sp_sz)



def official_hdmnet_forward(m, feats, s_y, shot, training, cat_idx):
    """HDMNet.forward from ``extract_feats`` on; ``m`` holds the official modules, ``feats`` the extracted features
    (query_feat_2..5, supp_feat_2..5). Returns final_out, meta_out (at feature size) and the transformer weights."""
    query_feat_2, query_feat_3, query_feat_4, query_feat_5 = feats["q2"], feats["q3"], feats["q4"], feats["q5"]
    supp_feat_2, supp_feat_3, supp_feat_4, supp_feat_5 = feats["s2"], feats["s3"], feats["s4"], feats["s5"]
    query_feat = m.down_query(torch.cat([query_feat_3, query_feat_2], 1))
    mask = s_y.reshape(-1, 1, *s_y.shape[-2:])  # "b n h w -> (b n) 1 h w"
    mask = (mask == 1).to(query_feat.dtype)
    supp_feat = m.down_supp(torch.cat([supp_feat_3, supp_feat_2], 1))
    supp_feat_bin = Weighted_GAP(supp_feat, F.interpolate(mask, size=(supp_feat_3.size(2), supp_feat_3.size(3)),
                                                          mode="bilinear", align_corners=True))
    supp_feat_bin = supp_feat_bin.repeat(1, 1, supp_feat.shape[-2], supp_feat.shape[-1])
    supp_feat_item = supp_feat_2.reshape(-1, shot, *supp_feat_2.shape[1:])
    supp_feat_list = [supp_feat_item[:, i, ...] for i in range(shot)]
    if shot == 1:
        similarity2 = get_similarity(query_feat_4, supp_feat_4, s_y)
        similarity1 = get_similarity(query_feat_5, supp_feat_5, s_y)
    else:
        mask = mask.reshape(-1, shot, *mask.shape[1:])
        supp_feat_4 = supp_feat_4.reshape(-1, shot, *supp_feat_4.shape[1:])
        supp_feat_5 = supp_feat_5.reshape(-1, shot, *supp_feat_5.shape[1:])
        similarity1 = [get_similarity(query_feat_5, supp_feat_5[:, i, ...], mask=mask[:, i, ...]) for i in range(shot)]
        similarity2 = [get_similarity(query_feat_4, supp_feat_4[:, i, ...], mask=mask[:, i, ...]) for i in range(shot)]
        mask = mask.flatten(0, 1)
        similarity2 = torch.stack(similarity2, dim=1).mean(1)
        similarity1 = torch.stack(similarity1, dim=1).mean(1)
    similarity = torch.cat([similarity1, similarity2], dim=1)
    supp_feat = m.supp_merge(torch.cat([supp_feat, supp_feat_bin], dim=1))
    supp_feat_bin = supp_feat_bin.reshape(-1, shot, *supp_feat_bin.shape[1:]).mean(1)
    query_feat = m.query_merge(torch.cat([query_feat, supp_feat_bin, similarity * 10], dim=1))
    meta_out, weights = m.transformer(query_feat, supp_feat, mask, similarity)
    base_out = m.base_learnear(query_feat_5)
    # the K-shot reweighting (HDMNet's gather) and the "Classifier Ensemble" lines: transcribed once, in
    # tests/test_ensemble.py
    _, _, est_val = official_est_val(query_feat_2, supp_feat_list, m.kshot_rw, shot, hdmnet_gather=True)
    final = official_ensemble(meta_out, base_out, est_val, m.gram_merge, m.cls_merge, cat_idx, training,
                              m.base_classes)
    return final, meta_out, weights


# ---- helpers --------------------------------------------------------------------------------------------------

def copy_state(source: nn.Module, target: nn.Module) -> None:
    """Copy every parameter and buffer of ``source`` into ``target`` in registration order (shapes must agree)."""
    pairs = list(zip(source.state_dict().values(), target.state_dict().values()))
    assert len(source.state_dict()) == len(target.state_dict())
    for theirs, ours in pairs:
        assert theirs.shape == ours.shape
        ours.copy_(theirs)


def randomise(module: nn.Module, seed: int) -> None:
    """Every parameter and BatchNorm statistic drawn at random: weights at std 1 / sqrt(fan_in), norms' scales
    around 1, biases and means around 0, running variances in [0.5, 1.5)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            if tensor.dim() > 1:
                tensor.copy_(noise / math.sqrt(tensor[0].numel()))
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator, dtype=torch.float64) + 0.5)
            else:
                tensor.copy_(noise * 0.2 + (1.0 if name.endswith("weight") else 0.0))


def small_transformers(shots: int, seed: int = 0) -> tuple[MixVisionTransformer, HierarchicalTransformer]:
    official = MixVisionTransformer(shot=shots, match_dims=SMALL["embed_dims"], **SMALL).double()
    ours = HierarchicalTransformer(TransformerSize(SMALL["embed_dims"], tuple(SMALL["num_heads"]),
                                                   tuple(SMALL["down_sr_ratio"]), tuple(SMALL["down_patch_sizes"]),
                                                   tuple(SMALL["down_stridess"]), SMALL["match_nums_heads"],
                                                   SMALL["mlp_ratio"])).double()
    randomise(official, seed)
    copy_state(official, ours)
    return official.eval(), ours.eval()


def support_masks(count: int, size: int, seed: int) -> torch.Tensor:
    """(count, size, size) masks with a random foreground square, some 255 pixels."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    for index in range(count):
        top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        masks[index, top : top + size // 2, left : left + size // 3] = 1
    masks[:, -2:, :] = 255
    return masks


# ---- tests ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shots", [1, 2])
def test_transformer_matches_the_official_mix_vision_transformer(shots):
    official, ours = small_transformers(shots)
    generator = torch.Generator().manual_seed(shots)
    batch = 2
    query = torch.randn(batch, 16, 8, 8, generator=generator, dtype=torch.float64)
    support = torch.randn(batch * shots, 16, 8, 8, generator=generator, dtype=torch.float64)
    masks = support_masks(batch * shots, 64, seed=shots)
    similarity = torch.rand(batch, 2, 8, 8, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        expected, expected_weights = official(query, support, (masks == 1).double().unsqueeze(1), similarity)
        logits, correlations = ours(query, support, masks, similarity)
    assert logits.shape == (batch, 2, 8, 8) and [c.shape[-1] for c in correlations] == [2, 4, 8]
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-10)
    for theirs, mine in zip(expected_weights, correlations, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)


def test_distillation_matches_the_official_loop():
    generator = torch.Generator().manual_seed(0)
    correlations = [torch.randn(3, s, s, generator=generator, dtype=torch.float64) * 3 for s in (2, 4, 8)]
    query_masks = support_masks(3, 64, seed=5)
    query_masks[2] = 0  # no object: a uniform teacher
    expected = official_distillation(query_masks, correlations)
    assert torch.isfinite(expected) and expected > 0
    torch.testing.assert_close(correlation_distillation_loss(correlations, query_masks), expected, rtol=0, atol=1e-10)


def test_fixed_batchnorm_stays_in_eval_mode_and_init_weights_is_the_uncalled_method():
    transformer = HierarchicalTransformer(TransformerSize(16, (1, 2, 4), match_heads=2)).train()
    norms = [m for m in transformer.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and transformer.match_stages[0].matcher.training
    conv = transformer.match_stages[0].fuse[0]  # mmcv ConvModule: He-normal, fan_out
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 16)), rel=0.15)
    linear = transformer.down_stages[0].layers[0].attention.to_query  # PyTorch's default: uniform in +-1/sqrt(16)
    assert linear.weight.abs().max().item() <= 0.25
    assert linear.weight.std().item() == pytest.approx(0.25 / math.sqrt(3), rel=0.2)  # uniform's, not init_weights' 0.02
    linear = HierarchicalTransformer(TransformerSize(16, (1, 2, 4)), init="init_weights").down_stages[0].layers[0].attention.to_query
    assert linear.weight.std().item() == pytest.approx(0.02, rel=0.2)


def official_modules(model, shots: int) -> SimpleNamespace:
    """The official HDMNet's trained modules, holding fsslib's weights (the transformer: its transcription)."""
    size = model.transformer.size
    transformer = MixVisionTransformer(shot=shots, embed_dims=size.embed_dims, num_heads=size.heads,
                                       match_dims=size.embed_dims, match_nums_heads=size.match_heads,
                                       down_patch_sizes=size.patch_sizes, down_stridess=size.strides,
                                       down_sr_ratio=size.sr_ratios, mlp_ratio=size.mlp_ratio, drop_rate=size.dropout).double()
    copy_state(model.transformer, transformer)
    transformer.train(model.training)
    transformer.apply(lambda m: m.eval() if isinstance(m, nn.BatchNorm2d) else None)  # the official train.py's fix_bn
    relu, dropout, classifier = model.base_learner.classify

    def holding(official: nn.Module, conv: nn.Conv2d) -> nn.Module:  # an official layer with fsslib's weights
        official.load_state_dict(conv.state_dict())
        return official.double()

    def reduction(conv: nn.Conv2d) -> nn.Sequential:  # down_query / down_supp: 1x1 conv, ReLU, Dropout2d (p 0 here)
        return nn.Sequential(holding(nn.Conv2d(conv.in_channels, conv.out_channels, 1, padding=0, bias=False), conv),
                             nn.ReLU(inplace=True), nn.Dropout2d(p=0.0))

    def merge(conv: nn.Conv2d) -> nn.Sequential:  # query_merge / supp_merge: 1x1 conv, ReLU
        return nn.Sequential(holding(nn.Conv2d(conv.in_channels, conv.out_channels, 1, padding=0, bias=False), conv),
                             nn.ReLU(inplace=True))

    kshot_rw = None
    if shots > 1:  # nn.Sequential(Conv2d(shot, kshot_trans_dim, 1), ReLU, Conv2d(kshot_trans_dim, shot, 1))
        first, second = (m for m in model.shot_weighting.transform if isinstance(m, nn.Conv2d))
        kshot_rw = nn.Sequential(holding(nn.Conv2d(shots, first.out_channels, kernel_size=1), first),
                                 nn.ReLU(inplace=True),
                                 holding(nn.Conv2d(first.out_channels, shots, kernel_size=1), second))
    return SimpleNamespace(
        down_query=reduction(model.down_query[0]), down_supp=reduction(model.down_support[0]),
        supp_merge=merge(model.support_merge[0]), query_merge=merge(model.query_merge[0]), transformer=transformer,
        base_learnear=nn.Sequential(nn.ReLU(inplace=True), nn.Dropout2d(p=0.0),
                                    holding(nn.Conv2d(classifier.in_channels, classifier.out_channels, 1), classifier)),
        base_classes=len(model.base_class_ids), kshot_rw=kshot_rw,
        gram_merge=holding(nn.Conv2d(2, 1, kernel_size=1, bias=False), model.ensemble.gram_merge),
        cls_merge=holding(nn.Conv2d(2, 1, kernel_size=1, bias=False), model.ensemble.cls_merge))


@pytest.mark.parametrize("shots,training", [(1, False), (2, True)])
def test_hdmnet_forward_matches_the_official_forward(shots, training):
    """Eval mode at 1 shot; train mode (every dropout at 0) at 2 shots, where the episode's class leaves the base
    map and the BatchNorms stay fixed."""
    torch.manual_seed(0)
    options = {"base_learner": "random", "dropout": 0.0, "transformer_dropout": 0.0, "base_dropout": False}
    model = build_method(make_config(method="hdmnet", shots=shots, backbone_weights="random", options=options)).double()
    randomise(model.transformer, seed=1)
    model.train(training)
    batch = fabricated_batch(batch_size=2, shots=shots).one_way()
    batch.support_masks[:] = support_masks(2 * shots, 64, seed=3).view(2, shots, 64, 64)
    batch.class_ids[:] = torch.tensor(model.base_class_ids[3:5])
    inputs = batch.inputs()
    inputs.support_images, inputs.query_images = inputs.support_images.double(), inputs.query_images.double()
    flat_masks = batch.support_masks.flatten(0, 1)
    blanked = blank_outside_masks(inputs.support_images.flatten(0, 1), flat_masks, IMAGENET_MEAN)
    backbone = model.base_learner.backbone  # the official blanks the normalised image: the same zero
    torch.testing.assert_close(backbone.normalise(blanked),
                               backbone.normalise(inputs.support_images.flatten(0, 1)) * (flat_masks == 1).unsqueeze(1))
    query, support = model.frozen_features(inputs.query_images), model.frozen_features(blanked)
    feats = {"q2": query["layer2"], "q3": query["layer3"], "q4": query["layer4"], "q5": query["embedding"],
             "s2": support["layer2"], "s3": support["layer3"], "s4": support["layer4"], "s5": support["embedding"]}
    cat_idx = [torch.tensor([3, 4])]  # 0-based indices among the base classes
    with torch.no_grad():
        expected_final, expected_meta, expected_weights = official_hdmnet_forward(
            official_modules(model, shots), feats, batch.support_masks, shots, training, cat_idx)
        final, meta, correlations = model.predict(inputs)
    torch.testing.assert_close(meta, expected_meta, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, expected_final, rtol=0, atol=1e-10)
    for theirs, mine in zip(expected_weights, correlations, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)


def test_the_loss_is_the_official_train_py_sum_without_the_frozen_base_learner_s_term(monkeypatch):
    """The official forward returns ``main_loss + aux_loss1`` (CE of the final and meta scores, upsampled to the
    label with aligned corners, ignore 255) and ``distil_loss / 3``; train.py adds them with ``aux_weight1`` 1 and
    ``aux_weight2 * aux_loss2``, the frozen base learner's CE, which has no gradient and is left out."""
    torch.manual_seed(0)
    model = build_method(make_config(method="hdmnet", backbone_weights="random", options={"base_learner": "random"}))
    batch = fabricated_batch(batch_size=2)
    one_way = batch.one_way()
    y_m = one_way.query_masks.clone()
    y_m[:, :4] = 255  # ignored pixels
    one_way.query_masks = y_m
    generator = torch.Generator().manual_seed(1)
    final_out, meta_out = (torch.randn(2, 2, 8, 8, generator=generator) for _ in range(2))
    weights = [torch.randn(2, size, size, generator=generator) for size in (2, 4, 8)]
    monkeypatch.setattr(model, "predict", lambda inputs: (final_out, meta_out, weights))
    monkeypatch.setattr(batch, "one_way", lambda: one_way)
    criterion = nn.CrossEntropyLoss(ignore_index=255)  # the official criterion
    h, w = y_m.shape[-2:]
    main_loss = criterion(F.interpolate(final_out, size=(h, w), mode="bilinear", align_corners=True), y_m.long())
    aux_loss1 = criterion(F.interpolate(meta_out, size=(h, w), mode="bilinear", align_corners=True), y_m.long())
    expected = (main_loss + aux_loss1) + 1.0 * official_distillation(y_m, weights)
    torch.testing.assert_close(model.loss(batch), expected, rtol=1e-6, atol=1e-6)


def test_optimiser_groups_and_one_toy_training_step():
    torch.manual_seed(0)
    cfg = make_config(method="hdmnet", shots=2, backbone_weights="random", options={"base_learner": "random"})
    model = build_method(cfg)
    optimizer = train.make_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW) and cfg.weight_decay == 0.01
    assert [group["lr"] for group in optimizer.param_groups] == [cfg.lr, 10 * cfg.lr]
    transformer = {id(p) for p in model.transformer.parameters()}
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == transformer
    grouped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in grouped for p in model.shot_weighting.parameters())  # the official kshot_rw: untrained
    assert grouped == {id(p) for p in model.parameters()} - {id(p) for p in model.shot_weighting.parameters()}
    before = model.query_merge[0].weight.detach().clone()
    model.train()
    loss = model.loss(fabricated_batch(batch_size=2, shots=2))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.query_merge[0].weight)
    assert model(fabricated_batch(batch_size=2, shots=2).inputs()).shape == (2, 2, 64, 64)


def test_a_missing_base_learner_names_the_command_that_makes_it(tmp_path):
    missing = tmp_path / "base-learner.pt"
    cfg = make_config(method="hdmnet", fold=2, options={"base_learner": str(missing)})
    with pytest.raises(CheckpointError, match="Method hdmnet needs the frozen base learner of fold 2") as error:
        build_method(cfg)
    assert "python -m fsslib.pretrain base-learner --fold 2" in error.value.fix
    assert frozen_files(cfg) == {"base_learner": str(missing)}
    per_fold = make_config(method="hdmnet", fold=2, options={"base_learner": str(tmp_path / "fold{fold}.pt")})
    assert frozen_files(per_fold) == {"base_learner": str(tmp_path / "fold2.pt")}  # {fold}: the run's fold
    with pytest.raises(CheckpointError, match="fold2.pt"):
        build_method(per_fold)


def test_one_similarity_map_alone_is_that_channel_of_the_two():
    """The control option ``similarity_maps`` (variants embedding_map, layer4_map): a model keeping one level's map
    reads that channel of the official pair (embedding first, layer4 second), its transformer and merge get one
    guide channel, and a wrong list or PI-CLIP(HDMNet), whose priors replace the maps, is refused with its fix."""
    torch.manual_seed(0)
    options = {"base_learner": "random"}
    both = build_method(make_config(method="hdmnet", backbone_weights="random", options=options)).eval()
    batch = fabricated_batch(batch_size=2, shots=1).one_way()
    inputs, masks = batch.inputs(), batch.support_masks.flatten(0, 1)
    supports = blank_outside_masks(inputs.support_images.flatten(0, 1), masks, IMAGENET_MEAN)
    query, support = both.frozen_features(inputs.query_images), both.frozen_features(supports)
    pair = both.similarity_maps(query, support, masks, shots=1)  # (B, 2, h, w)
    for channel, level in enumerate(("embedding", "layer4")):
        alone = build_method(make_config(method="hdmnet", variant=f"{level}_map", backbone_weights="random",
                                         options=options))  # the variant: options similarity_maps=[level]
        torch.testing.assert_close(alone.similarity_maps(query, support, masks, shots=1), pair[:, channel:channel + 1])
        assert alone.query_merge[0].in_channels == both.query_merge[0].in_channels - 1
        assert alone.eval()(fabricated_batch(batch_size=2, shots=1).inputs()).shape == (2, 2, 64, 64)
    for wrong in ([], ["layer4", "layer4"], ["layer3"]):
        with pytest.raises(FsslibError, match="similarity_maps|similarity maps"):
            build_method(make_config(method="hdmnet", backbone_weights="random",
                                     options={**options, "similarity_maps": wrong}))
    with pytest.raises(OptionError, match="has no effect"):
        build_method(make_config(method="piclip-hdmnet", backbone_weights="random",
                                 options={**options, "similarity_maps": ["layer4"]}))
