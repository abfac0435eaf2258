"""PI-CLIP's priors on BAM and HDMNet (``--method piclip-bam`` / ``piclip-hdmnet``): where the CLIP priors enter.

PI-CLIP(HDMNet) against vangjin/PI-CLIP ``model/PI_CLIP.py``: ``query_merge(cat([query_feat_cnn, supp_feat_bin,
img_cam * 10, clip_similarity * 10]))`` and ``transformer(query_feat, supp_feat, mask, img_cam, clip_similarity)``,
whose matching convolutions take ``match_dims + 2 + 2K`` channels; ``img_cam`` is the refined VTP twice and
``clip_similarity`` the last CLIP block's VVP of each shot, then the block before's (assembled by hand below from the
priors' maps). PI-CLIP(BAM) has no official code: its priors replace BAM's one prior channel, times 10.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsslib import train
from fsslib.config import make_config
from fsslib.errors import FsslibError
from fsslib.methods import build_method, frozen_files, method_presets
from tests.test_pfenet import fabricated_batch

pytestmark = pytest.mark.budget(15)
FEATURE_DIM = 16


def plug_in(method: str, shots: int = 1, **options):
    torch.manual_seed(0)
    clip = {"clip": "toy-vit", "clip_pretrained": None} if method.startswith("piclip") else {}
    options = {"base_learner": "random", "feature_dim": FEATURE_DIM, **clip, **options}
    return build_method(make_config(method=method, backbone_weights="random", shots=shots, options=options)).eval()


def official_clip_channels(priors: dict[str, torch.Tensor], num_blocks: int, vvp_blocks: list[int], shots: int,
                           size: tuple[int, int]) -> torch.Tensor:
    """The official ``cat([img_cam, clip_similarity])`` (unscaled) from the priors' maps, resized to the CNN's map."""
    rows = {block: i for i, block in enumerate(vvp_blocks)}
    similarity1 = torch.cat([priors["vvp"][:, rows[num_blocks - 1], shot, None] for shot in range(shots)], dim=1)
    similarity2 = torch.cat([priors["vvp"][:, rows[num_blocks - 2], shot, None] for shot in range(shots)], dim=1)

    def resize(x):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)

    img_cam = resize(priors["vtp_refined"][:, None]).repeat(1, 2, 1, 1)
    return torch.cat([img_cam, resize(torch.cat([similarity1, similarity2], dim=1))], dim=1)


def captured_inputs(module: torch.nn.Module, model: torch.nn.Module, batch) -> tuple:
    captured = {}

    def keep(module: torch.nn.Module, inputs: tuple, output) -> None:
        captured.setdefault("inputs", inputs)

    handle = module.register_forward_hook(keep)
    model(batch.inputs())
    handle.remove()
    return captured["inputs"]


@pytest.mark.parametrize("shots", [1, 2])
def test_piclip_hdmnet_priors_enter_query_merge_times_ten_and_the_transformer_unscaled(shots):
    model = plug_in("piclip-hdmnet", shots=shots)
    batch = fabricated_batch(shots=shots)
    guide = model.guide
    expected = official_clip_channels(guide.clip_priors(batch.one_way()), guide.bundle.num_blocks, guide.vvp_blocks,
                                      shots, (8, 8))  # (B, 2 + 2K, 8, 8)
    merged = captured_inputs(model.query_merge, model, batch)[0]  # (B, 2D + 2 + 2K, h, w)
    assert merged.shape[1] == 2 * FEATURE_DIM + 2 + 2 * shots
    torch.testing.assert_close(merged[:, 2 * FEATURE_DIM:], 10 * expected, atol=1e-5, rtol=1e-5)
    similarity = captured_inputs(model.transformer, model, batch)[3]
    torch.testing.assert_close(similarity, expected, atol=1e-6, rtol=1e-6)
    for level in model.transformer.match_stages:  # the official match conv: match_dims + 2 + 2K channels
        assert level.fuse[0].in_channels == model.transformer.size.embed_dims + 2 + 2 * shots


@pytest.mark.parametrize("shots", [1, 2])
def test_piclip_bam_priors_replace_bam_s_prior_times_ten(shots):
    model = plug_in("piclip-bam", shots=shots)
    batch = fabricated_batch(shots=shots)
    expected = official_clip_channels(model.prior.clip_priors(batch.one_way()), model.prior.bundle.num_blocks,
                                      model.prior.vvp_blocks, shots, (8, 8))
    merged = captured_inputs(model.init_merge, model, batch)[0]  # (B, 2D + 2 + 2K, h, w)
    assert merged.shape[1] == 2 * FEATURE_DIM + 2 + 2 * shots
    torch.testing.assert_close(merged[:, 2 * FEATURE_DIM:], 10 * expected, atol=1e-5, rtol=1e-5)


def test_the_baselines_keep_their_own_priors():
    bam = plug_in("bam")
    hdmnet = plug_in("hdmnet")
    assert bam.prior is None and bam.init_merge[0].in_channels == 2 * FEATURE_DIM + 1
    assert hdmnet.guide is None and hdmnet.query_merge[0].in_channels == 2 * FEATURE_DIM + 2


@pytest.mark.parametrize("method", ["piclip-bam", "piclip-hdmnet"])
def test_table_3_variants_and_one_toy_training_step(method):
    vtp_only = plug_in(method, priors=["vtp"], refine=["vtp"])  # Table 3's "baseline + VTP"
    source = vtp_only.prior if method == "piclip-bam" else vtp_only.guide
    assert source.channels == 2
    cfg = make_config(method=method, shots=2, backbone_weights="random",
                      options={"base_learner": "random", "feature_dim": FEATURE_DIM})
    assert cfg.options["clip"] == "toy-vit" and cfg.novel_rule == "bam"  # the baseline's toy preset + the toy CLIP
    model = build_method(cfg).train()
    optimizer = train.make_optimizer(cfg, model)
    loss = model.loss(fabricated_batch(batch_size=2, shots=2))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not any("clip" in key or key.startswith("base_learner") for key in model.state_dict())  # frozen, outside


def test_presets_options_and_frozen_files():
    for method, baseline in (("piclip-bam", "bam"), ("piclip-hdmnet", "hdmnet")):
        presets, base = method_presets(method), method_presets(baseline)
        assert presets["paper"]["epochs"] == 30 and presets["paper"]["batch_size"] == 4  # PI-CLIP Sec. 4.1
        assert presets["paper"]["options"]["vtp_temperature"] == 0.01
        assert {k: v for k, v in presets["toy"].items() if k != "options"} == {
            k: v for k, v in base["toy"].items() if k != "options"}  # the baseline's toy budget
        cfg = make_config(method=method, fold=1)
        assert frozen_files(cfg)["base_learner"].endswith("base-learner-fold1.pt")
    with pytest.raises(FsslibError, match="mask_support_cnn"):  # PI-CLIP(PFENet)'s option only
        make_config(method="piclip-hdmnet", options={"mask_support_cnn": True})
