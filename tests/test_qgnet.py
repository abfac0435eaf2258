"""QGNet: the prior region map (Eqs. 9-12) by hand, its place in PFENet's FEM, and loading the prior extractor."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torchvision

from fsslib.blocks.priors import MaskedSupportPrior
from fsslib.config import make_config
from fsslib.errors import CheckpointError, UnknownNameError
from fsslib.methods import build_method, qgnet
from fsslib.methods.qgnet import QgnetOptionError, RegionMaps, prior_region_map
from fsslib.models.backbones import DeepStemResNet50Backbone, ResNet50Backbone, ToyResNet, load_moco_resnet50
from tests.test_pfenet import fabricated_batch


def test_eqs9_12_max_cosine_over_the_prior_positions_then_min_max():
    bridge = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).T.reshape(1, 2, 1, 3)  # x_1 = (1, 0), x_2 = (0, 1), x_3 = (1, 1)
    prior = torch.tensor([[1.0, 0.0], [-1.0, 0.5]]).T.reshape(1, 2, 1, 2)  # p_1 = (1, 0), p_2 = (-1, 0.5)
    # s_q = max_q' cos: x_1 -> 1 (p_1); x_2 -> max(0, 0.5 / sqrt(1.25)) = 0.447; x_3 -> max(1/sqrt2, -0.5/sqrt(2.5)) = 0.707
    s = torch.tensor([1.0, 0.5 / 1.25**0.5, 2**-0.5])
    expected = (s - s.min()) / (s.max() - s.min() + 1e-7)  # Eq. 12
    torch.testing.assert_close(prior_region_map(bridge, prior), expected.view(1, 1, 3), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def toy_qgnet():
    torch.manual_seed(0)
    return build_method(make_config(method="qgnet", backbone_weights="random", options={"prior_extractor": "random"}))


def test_region_maps_are_the_guided_map_then_the_query_only_prior_map(toy_qgnet):
    batch = fabricated_batch().one_way()
    backbone, extractor = toy_qgnet.backbone, toy_qgnet.prior.prior_extractor
    with torch.no_grad():
        query_levels = toy_qgnet.backbone_levels(batch.query_images)
        support_levels = toy_qgnet.backbone_levels(batch.support_images.flatten(0, 1))
        maps = toy_qgnet.prior_maps(batch.inputs())  # (B, 2, h, w)
        guided = MaskedSupportPrior()(batch, query_levels, support_levels, backbone)
        bridge = backbone.layer4(query_levels["layer3"]).flatten(2)  # (B, C, hw): X_q
        prior = extractor(batch.query_images)["layer4"].flatten(2)  # (B, C, hw'): P_q of the same query
    cosine = torch.einsum("bcq,bcp->bqp", bridge, prior) / (bridge.norm(dim=1)[:, :, None] * prior.norm(dim=1)[:, None] + 1e-7)
    s = cosine.amax(dim=2)  # (B, hw): Eq. 10
    low, high = s.amin(dim=1, keepdim=True), s.amax(dim=1, keepdim=True)
    torch.testing.assert_close(maps[:, 0:1], guided)
    torch.testing.assert_close(maps[:, 1].flatten(1), (s - low) / (high - low + 1e-7), rtol=1e-5, atol=1e-5)
    other_supports = fabricated_batch(seed=5).one_way()  # the prior region map reads the query alone
    with torch.no_grad():
        other_levels = toy_qgnet.backbone_levels(other_supports.support_images.flatten(0, 1))
        other = toy_qgnet.prior(replace(batch, support_images=other_supports.support_images), query_levels, other_levels,
                                backbone)
    torch.testing.assert_close(other[:, 1], maps[:, 1])
    assert not torch.allclose(other[:, 0], maps[:, 0])


def test_both_extractors_are_frozen_and_the_official_projection_is_trained(toy_qgnet):
    keys = list(toy_qgnet.state_dict())
    assert not any(k.startswith(("backbone.", "prior.prior_extractor.")) for k in keys)
    assert toy_qgnet.decoder.init_merge[0][0].in_channels == 2 * 64 + 2  # query, prototype, guided + prior region maps
    official = build_method(make_config(method="qgnet", variant="official_projection", backbone_weights="random",
                                        options={"prior_extractor": "random"}))
    projection = official.prior.project_prior[0]
    assert (projection.in_channels, projection.out_channels, projection.kernel_size) == (192, 64, (3, 3))
    official.train()
    official.loss(fabricated_batch()).backward()
    assert official.prior.project_bridge[0].weight.grad is not None and projection.weight.grad is not None


def test_widths_that_cannot_be_compared_name_the_fix():
    with pytest.raises(QgnetOptionError, match="projection"):
        RegionMaps(ToyResNet(widths=(8, 8, 8, 16)), bridge_channels=192)


def test_missing_toy_prior_extractor_says_how_to_make_it(tmp_path):
    missing = tmp_path / "prior.pt"
    with pytest.raises(CheckpointError, match="fsslib.pretrain toy-qgnet-prior"):
        build_method(make_config(method="qgnet", backbone_weights="random", options={"prior_extractor": str(missing)}))


def test_a_missing_shipped_prior_names_the_flags_that_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(qgnet, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="toy-qgnet-prior --losses global --out .*toy_qgnet_prior_global_only.pt"):
        build_method(make_config(method="qgnet", backbone_weights="random", options={"toy_prior": "global_only"}))
    with pytest.raises(UnknownNameError, match="slic_shorter"):
        build_method(make_config(method="qgnet", backbone_weights="random", options={"toy_prior": "slic_3000"}))
    with pytest.raises(UnknownNameError, match="slic_shorter"):  # also beside a path of one's own
        build_method(make_config(method="qgnet", backbone_weights="random",
                                 options={"toy_prior": "slic_3000", "prior_extractor": str(tmp_path / "mine.pt")}))
    with pytest.raises(CheckpointError, match="checkpoint that `python -m fsslib.pretrain toy-qgnet-prior` wrote"):
        build_method(make_config(method="qgnet", backbone_weights="random", options={"prior_extractor": str(tmp_path / "mine.pt")}))


def test_moco_checkpoints_load_the_key_encoder_without_its_head(tmp_path):
    net = torchvision.models.resnet50(weights=None)
    state = {f"module.encoder_k.{k}": v for k, v in net.state_dict().items()}
    state.update({f"module.encoder_q.{k}": v + 1 if v.is_floating_point() else v for k, v in net.state_dict().items()})
    state.update({"module.encoder_k.fc.0.weight": torch.zeros(3), "module.queue": torch.zeros(2, 2)})  # MoCo v2 head, queue
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "moco.pth.tar")
    key = load_moco_resnet50(tmp_path / "moco.pth.tar")
    assert torch.equal(key.stem[0].weight, net.conv1.weight) and torch.equal(key.layer4[2].bn3.bias, net.layer4[2].bn3.bias)
    assert torch.equal(load_moco_resnet50(tmp_path / "moco.pth.tar", "encoder_q").stem[0].weight, net.conv1.weight + 1)
    torch.save(net.state_dict(), tmp_path / "imagenet.pth")
    with pytest.raises(CheckpointError, match="MoCo"):
        load_moco_resnet50(tmp_path / "imagenet.pth")


@pytest.mark.slow
def test_paper_tier_shapes_with_random_resnet50s(paper_models):
    """473 x 473, ResNet-50 bridge (the deep stem, PFENet's) and prior extractor (the standard stem, MoCo's), random,
    both region maps into the FEM at 60 x 60."""
    torch.manual_seed(0)
    cfg = make_config(method="qgnet", preset="paper", options={"prior_extractor": "random"})
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.image_size, cfg.epochs) == ("sgd", 0.0025, 4, 473, 200)
    model = build_method(cfg).eval()
    assert isinstance(model.backbone, DeepStemResNet50Backbone) and isinstance(model.prior.prior_extractor, ResNet50Backbone)
    batch = fabricated_batch(batch_size=1, size=473)
    with torch.no_grad():
        logits, auxiliary = model.predict(batch.one_way())
    assert logits.shape == (1, 2, 60, 60) and len(auxiliary) == 4
    assert model.decoder.init_merge[0][0].in_channels == 2 * 256 + 2
    with pytest.raises(CheckpointError, match="prior extractor"):
        build_method(make_config(method="qgnet", preset="paper"))


def test_a_random_prior_extractor_is_the_one_its_checkpoint_was_trained_beside(tmp_path):
    """QGNet's untrained prior extractor (Table VI's row without either loss) has random weights: a checkpoint
    reloads beside the same ones whatever drew from torch's generator before (engine.seeded_build)."""
    from fsslib.engine import load_model

    cfg = make_config(method="qgnet", variant="untrained_prior", backbone_weights="random", seed=3)
    torch.manual_seed(cfg.seed)  # as training seeds before it builds
    trained = build_method(cfg)
    path = tmp_path / "best.pt"
    from fsslib.blocks.frozen import frozen_digests
    torch.save({"method": "qgnet", "model": trained.state_dict(), "config": cfg.to_dict(), "frozen": frozen_digests(trained),
                "epoch": 1}, path)
    torch.rand(100)  # other work moved the generator
    loaded = load_model(replace(cfg, ckpt=str(path)), torch.device("cpu"))
    assert frozen_digests(loaded) == frozen_digests(trained)


def test_region_map_statistics_refuse_a_model_without_qgnet_s_region_maps():
    """PFENet's one-channel prior (or PI-CLIP's channels) would be read as the guided and prior maps: refused."""
    from fsslib.errors import FsslibError
    from fsslib.methods.qgnet import region_map_statistics

    pfenet = build_method(make_config(method="pfenet", backbone_weights="random"))
    with pytest.raises(FsslibError, match="QGNet's guided and prior region maps.*PFENet with MaskedSupportPrior"):
        region_map_statistics(pfenet, [])
