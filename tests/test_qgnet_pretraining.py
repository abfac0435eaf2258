"""QGNet's prior-extractor pretraining: InfoNCE and the queues by hand, MoCo's momentum update, patches, aug-plus."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsslib.errors import UnknownNameError
from fsslib.models.backbones import ToyResNet, load_toy_resnet
from fsslib.pretrain import PRETRAINERS
from fsslib.pretrain.losses import info_nce
from fsslib.pretrain.qgnet_prior.moco import GlobalLocalMoCo
from fsslib.pretrain.qgnet_prior.patches import (TOY_SUPERPIXELS, segment_table, patch_crops, patch_object_share,
                                                 sample_segments, segment_purity, superpixels)
from fsslib.pretrain.qgnet_prior.train import PriorSettings, train_prior_extractor, training_images
from fsslib.pretrain.saving import file_sha256


def test_info_nce_is_minus_log_the_positive_share_of_the_softmax():
    queries = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=1)
    keys = F.normalize(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), dim=1)
    queue = F.normalize(torch.tensor([[1.0, -1.0], [0.0, 1.0], [-1.0, 0.0]]), dim=1).T  # (D, M)
    t = 0.2
    expected = []
    for q, k in zip(queries, keys):
        positive = math.exp(float(q @ k) / t)
        negatives = sum(math.exp(float(q @ n) / t) for n in queue.T)
        expected.append(-math.log(positive / (positive + negatives)))  # Eqs. 1 and 6
    assert info_nce(queries, keys, queue, t).item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_momentum_update_and_queues_wrap_around():
    torch.manual_seed(0)
    model = GlobalLocalMoCo(ToyResNet(widths=(4, 4, 4, 8)), dim=3, queue_size=5, local_queue_size=4, momentum=0.9)
    before = [p.clone() for p in model.key_encoder.parameters()]
    with torch.no_grad():
        for p in model.query_encoder.parameters():
            p.add_(1.0)
    model.update_key_encoder()
    for old, key, query in zip(before, model.key_encoder.parameters(), model.query_encoder.parameters()):
        torch.testing.assert_close(key, 0.9 * old + 0.1 * query)  # theta_k <- m theta_k + (1 - m) theta_q
    keys = F.normalize(torch.randn(3, 3), dim=1)
    model.enqueue(keys, local=False)
    model.enqueue(keys * 2, local=False)  # 6 keys into 5 slots: the sixth overwrites slot 0
    torch.testing.assert_close(model.queue[:, 1:3], keys[1:].T)
    torch.testing.assert_close(model.queue[:, 0], 2 * keys[2])
    assert model.pointers.tolist() == [1, 0]
    model.enqueue(keys, local=True)
    torch.testing.assert_close(model.local_queue[:, :3], keys.T)
    assert model.pointers.tolist() == [1, 3]


def test_keys_do_not_depend_on_the_chunking_in_eval_mode():
    torch.manual_seed(0)
    model = GlobalLocalMoCo(ToyResNet(widths=(4, 4, 4, 8)), dim=3, queue_size=4, local_queue_size=4, key_chunks=4).eval()
    images = torch.rand(8, 3, 32, 32)
    keys = model.keys(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(keys, model.key_encoder(images))  # shuffled, chunked, put back in order


def test_patch_is_the_segments_box_with_the_rest_filled_by_its_mean_colour():
    image = torch.zeros(1, 3, 8, 8)
    image[0, 0, 2:6, 2:4] = 1.0  # segment 1: a red 4 x 2 bar (rows 2-5, cols 2-3)
    image[0, 1, 2:6, 4:6] = 0.5  # beside it, inside the bar's box only if the box were wider
    segments = torch.zeros(1, 8, 8, dtype=torch.long)
    segments[0, 2:6, 2:4] = 1
    segments[0, 2:4, 4:6] = 2
    _, boxes, areas = segment_table(segments[0].numpy())
    bar = int(np.flatnonzero(areas == 8)[0])  # relabelled by area: the bar is the larger segment
    patch = patch_crops(image, torch.from_numpy(segment_table(segments[0].numpy())[0][None]).long(),
                        torch.from_numpy(boxes[None]), torch.tensor([bar]), size=4)
    torch.testing.assert_close(boxes[bar], np.array([3 / 8, 4 / 8, 2 / 8, 4 / 8], dtype=np.float32))
    torch.testing.assert_close(patch[0, 0], torch.ones(4, 4))  # only the bar, resized
    torch.testing.assert_close(patch[0, 1], torch.zeros(4, 4))


def test_segments_are_drawn_among_the_large_enough_ones():
    areas = torch.tensor([[50, 30, 5, 0], [10, 3, 0, 0]])
    drawn = torch.stack([sample_segments(areas, 20, torch.Generator().manual_seed(s)) for s in range(50)])
    assert set(drawn[:, 0].tolist()) == {0, 1} and set(drawn[:, 1].tolist()) == {0}  # none >= 20: the largest


def test_superpixels_cover_the_toy_scene_and_the_table_keeps_the_largest_first():
    image = training_images(PriorSettings(pool_size=2))[0]
    for method in ("slic", "felzenszwalb"):
        segments = superpixels(image, method, {"n_segments": 16, "compactness": 10.0} if method == "slic"
                               else {"scale": 100.0, "sigma": 0.5, "min_size": 30})
        relabelled, _, areas = segment_table(segments)
        assert relabelled.shape == (64, 64) and relabelled.min() == 0
        kept = areas[areas > 0]
        assert kept.sum() == 64 * 64 and (np.diff(kept) <= 0).all() and len(kept) >= 3


def test_patch_object_share_by_hand():
    """Two segments, 4 x 9 and 4 x 7 pixels. The left one: 30 pixels of class 2, 2 of background and a column of
    255 (left out), at least half object and at least 90% one class. The right one: 2 pixels of class 5 among 28,
    neither. One of the two eligible segments is mostly object; 30 of the 32 object pixels are in pure segments;
    with no segment large enough, the largest (the left) stands for the image."""
    segments = np.zeros((4, 16), dtype=np.int32)
    segments[:, 9:] = 1
    mask = np.zeros((4, 16), dtype=np.uint8)
    mask[:, :8] = 2
    mask[0, :2] = 0
    mask[:, 8] = 255
    mask[:2, 9] = 5
    share, pure, objects = segment_purity(segments, mask, min_area=24, n_classes=20)
    assert (share, pure, objects) == (0.5, 30.0, 32)
    assert segment_purity(segments, mask, min_area=40, n_classes=20)[0] == 1.0  # none is large enough: the largest
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[:, 8:24, 8:24] = 255  # a white square on black: Felzenszwalb finds it
    masks = np.zeros((2, 32, 32), dtype=np.uint8)
    masks[:, 8:24, 8:24] = 1
    measured = patch_object_share(images, masks, "felzenszwalb", {"scale": 100.0, "sigma": 0.5, "min_size": 10}, 24, 20)
    assert measured["patch_object_share"] == 0.5 and measured["pure_object_pixels"] == 1.0
    assert measured["patch_object_share_se"] == 0.0 and measured["segments_per_image"] >= 2  # thin edge segments: too small


def test_view_retrieval_and_the_plateau_gain():
    from fsslib.pretrain.qgnet_prior.metrics import (knn_map, knn_map_difference, knn_map_se, last_quarter_gain,
                                                     view_retrieval)

    assert last_quarter_gain([[250, 0.10], [500, 0.12], [750, 0.13], [1000, 0.133]]) == pytest.approx(0.003)
    assert last_quarter_gain([[500, 0.1], [1000, 0.2]]) == pytest.approx(0.1)
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    torch.manual_seed(0)
    extractor = ToyResNet()
    retrieval = view_retrieval(extractor, images)
    assert retrieval == view_retrieval(extractor, images) and retrieval * 20 == pytest.approx(round(retrieval * 20))  # seeded; k of 20
    labels = torch.from_numpy(np.random.default_rng(1).random((200, 20)) < 0.2).float()
    features = F.normalize(labels + 0.5 * torch.randn(200, 20, generator=torch.Generator().manual_seed(0)), dim=1)
    assert knn_map(labels / labels.norm(dim=1, keepdim=True).clamp(min=1), labels) > knn_map(features, labels)
    assert 0.0 < knn_map_se(features, labels) < 0.1  # a 100-query curve point is noisy at the scale of 0.005
    same = knn_map_difference(features, features, labels)
    assert same == {"difference": 0.0, "se": 0.0}  # paired: the same queries score both
    better = knn_map_difference(features, labels / labels.norm(dim=1, keepdim=True).clamp(min=1), labels)
    assert better["difference"] == pytest.approx(knn_map(labels / labels.norm(dim=1, keepdim=True).clamp(min=1), labels)
                                                 - knn_map(features, labels))
    assert 0.0 < better["se"] < better["difference"]


def test_base_only_images_hold_no_novel_class():
    """``images="base"`` keeps the pool's scenes, in order, whose masks show no class of the fold's novel five."""
    from fsslib.data.benchmarks import TOY
    from fsslib.pretrain.qgnet_prior.train import TRAIN_STREAM
    from fsslib.pretrain.scenes import render_scenes

    settings = PriorSettings(pool_size=60, images="base", fold=1)
    base = training_images(settings)
    pool = render_scenes(60, settings.seed, TRAIN_STREAM, settings.image_size)
    kept = [next(i for i, image in enumerate(pool.images) if np.array_equal(image, picture)) for picture in base]
    novel = set(TOY.fold_classes(1))
    assert 0 < len(kept) < 60 and kept == sorted(kept)
    assert not any(novel & set(np.unique(pool.masks[i]).tolist()) for i in kept)  # no novel pixel in a kept scene
    dropped = sorted(set(range(60)) - set(kept))
    assert all(novel & set(np.unique(pool.masks[i]).tolist()) for i in dropped[:5])  # the first dropped show one


def test_control_scenes_and_views_are_named_or_refused(tmp_path):
    plain = training_images(PriorSettings(pool_size=8))
    centric = training_images(PriorSettings(pool_size=8, scenes="object_centric"))
    assert plain.shape == centric.shape and not np.array_equal(plain, centric)
    with pytest.raises(UnknownNameError, match="object_centric"):
        training_images(PriorSettings(pool_size=8, scenes="photos"))
    with pytest.raises(UnknownNameError, match="aug_plus, weak"):
        train_prior_extractor(tmp_path / "x.pt", PriorSettings(steps=1, views="strong"))
    with pytest.raises(UnknownNameError, match="felzenszwalb"):  # refused before 8000 scenes are rendered
        train_prior_extractor(tmp_path / "x.pt", PriorSettings(steps=1, patches="watershed"))
    with pytest.raises(UnknownNameError, match="fp32, bf16"):
        train_prior_extractor(tmp_path / "x.pt", PriorSettings(steps=1, precision="fp16"))


def test_the_bf16_losses_and_gradients_follow_the_float32_ones():
    """precision='bf16' runs the encoders under CPU autocast: one step's loss and gradient stay close to float32's."""
    torch.manual_seed(0)
    model = GlobalLocalMoCo(ToyResNet(), queue_size=64, local_queue_size=64, key_chunks=2)
    views = torch.rand(2, 16, 3, 64, 64)  # (2 views, B, 3, H, W)
    gradients, losses = [], []
    for bf16 in (False, True):
        state = {name: value.clone() for name, value in model.state_dict().items()}
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(views[0], views[1], local=False, generator=torch.Generator().manual_seed(0))
        assert loss.dtype == torch.float32
        loss.backward()
        losses.append(loss.item())
        gradients.append(torch.cat([p.grad.flatten() for p in model.query_encoder.parameters()]))
        model.load_state_dict(state)  # the queue as before
    assert abs(losses[0] - losses[1]) < 0.01 * losses[0]
    assert F.cosine_similarity(gradients[0], gradients[1], dim=0) > 0.97


@pytest.mark.slow
def test_tiny_pretraining_writes_a_loadable_prior_extractor_with_its_provenance(tmp_path):
    from fsslib.pretrain.scenes import render_scenes

    settings = PriorSettings(steps=3, pool_size=24, batch_size=8, queue_size=16, local_queue_size=16, key_chunks=2,
                             eval_every=2, curve_scenes=40)
    metadata = train_prior_extractor(tmp_path / "prior.pt", settings, cache=tmp_path, progress=False, workers=1,
                                     n_eval_images=60)
    assert set(metadata["loss"]) == {"global", "local"} and metadata["settings"]["patches"] == "slic"
    assert list(tmp_path.glob("superpixels_slic_*.npz"))  # computed once, cached
    assert set(metadata["held_out"]["knn_map"]) == {"this", "random_init", "supervised_toy_resnet"}
    assert [point["step"] for point in metadata["curve"]] == [2, 3]  # every eval_every steps, and the last
    assert set(metadata["curve"][0]) == {"step", "knn_map", "view_retrieval", "global", "local"}
    assert metadata["knn_map_curve"] == [[point["step"], point["knn_map"]] for point in metadata["curve"]]
    assert metadata["plateau"]["last_quarter_gain"] == pytest.approx(metadata["curve"][1]["knn_map"] - metadata["curve"][0]["knn_map"])
    held_out = render_scenes(40, seed=0, stream=93)  # the curve scenes (curve_scenes=40)
    assert metadata["patch_object_share"] == patch_object_share(held_out.images, held_out.masks, "slic", TOY_SUPERPIXELS["slic"],
                                                                24, 20)["patch_object_share"]
    assert metadata["superpixels"] == TOY_SUPERPIXELS["slic"]
    assert metadata["plateau"]["final_knn_map_se"] > 0
    assert set(metadata["held_out"]["view_retrieval"]) == {"this", "random_init", "supervised_toy_resnet"}
    load_toy_resnet(tmp_path / "prior.pt")
    assert metadata["checkpoint"]["sha256"] == file_sha256(tmp_path / "prior.pt")
    assert "toy-qgnet-prior" in PRETRAINERS


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch, precision):
    """Stopped in step 3 of 4 (state saved at step 2), then resumed: the weights, curve and losses equal those
    of an uninterrupted run, and the partial state is gone."""
    import fsslib.pretrain.qgnet_prior.train as pretraining
    from fsslib.errors import FsslibError

    settings = PriorSettings(steps=4, pool_size=24, batch_size=8, queue_size=16, local_queue_size=16, key_chunks=2,
                             eval_every=2, curve_scenes=40, precision=precision)
    whole = train_prior_extractor(tmp_path / "whole.pt", settings, cache=tmp_path, progress=False, workers=1,
                                  n_eval_images=40)
    calls = []
    real_crops = pretraining.patch_crops

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_crops(*args, **kwargs)

    monkeypatch.setattr(pretraining, "patch_crops", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_prior_extractor(tmp_path / "resumed.pt", settings, cache=tmp_path, progress=False, workers=1, n_eval_images=40)
    assert (tmp_path / "resumed.partial.pt").is_file() and not (tmp_path / "resumed.pt").exists()
    with pytest.raises(FsslibError, match="other settings"):
        train_prior_extractor(tmp_path / "resumed.pt", PriorSettings(**{**settings.__dict__, "lr": 0.1}), cache=tmp_path,
                              progress=False, workers=1, n_eval_images=40, resume=True)
    monkeypatch.setattr(pretraining, "patch_crops", real_crops)
    resumed = train_prior_extractor(tmp_path / "resumed.pt", settings, cache=tmp_path, progress=False, workers=1,
                                    n_eval_images=40, resume=True)
    for key, value in torch.load(tmp_path / "whole.pt")["backbone"].items():
        assert torch.equal(value, torch.load(tmp_path / "resumed.pt")["backbone"][key]), key
    assert resumed["curve"] == whole["curve"] and resumed["loss"] == whole["loss"] and resumed["resumed_at_step"] == 2
    assert not (tmp_path / "resumed.partial.pt").exists()


@pytest.mark.slow
def test_a_few_paper_tier_steps_of_the_resnet50_moco_on_fabricated_images(random_resnet50):
    """The paper tier's prior extractor (a dilated ResNet-50) through both losses: finite, the query encoder
    learns, the key encoder follows by momentum and both queues advance."""
    moco = GlobalLocalMoCo(copy.deepcopy(random_resnet50), queue_size=8, local_queue_size=8, momentum=0.9, key_chunks=2)
    optimizer = torch.optim.SGD(moco.query_encoder.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 64, generator=generator)
    key_before = moco.key_encoder.backbone.stem[0].weight.clone()
    queues_before = (moco.queue.clone(), moco.local_queue.clone())
    pointers = []
    for _ in range(2):
        moco.update_key_encoder()
        loss = moco.loss(images, images.flip(-1), local=False, generator=generator) + \
            moco.loss(images[:, :, :32, :32], images[:, :, :32, :32].flip(-1), local=True, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
        pointers.append(moco.pointers.tolist())
    assert moco.key_encoder.head[-1].out_features == 128 and moco.query_encoder.backbone.channels["layer4"] == 2048
    assert not torch.equal(moco.key_encoder.backbone.stem[0].weight, key_before)
    assert pointers == [[4, 4], [0, 0]]  # 4 keys per step: each queue of 8 wraps around after 2 steps
    assert not torch.equal(moco.queue, queues_before[0]) and not torch.equal(moco.local_queue, queues_before[1])


@pytest.mark.slow
def test_the_shipped_prior_extractors_match_their_recorded_metrics():
    """Each shipped toy prior extractor is the file its JSON was written for (sha256), reproduces the JSON's
    held-out kNN mAP and region-map shares, and records the command, steps and losses of the row of QGNet's
    Tables V-VI it stands for."""
    import json

    from fsslib.methods.qgnet import TOY_PRIORS
    from fsslib.paths import CHECKPOINT_DIR
    from fsslib.pretrain.qgnet_prior.metrics import (HELD_OUT_SEED, HELD_OUT_STREAM, knn_map, pooled_features,
                                                     region_map_scores)
    from fsslib.pretrain.scenes import render_scenes
    from fsslib.pretrain.toy_resnet.model import multi_hot

    scenes = render_scenes(1000, HELD_OUT_SEED, HELD_OUT_STREAM)
    labels = multi_hot(scenes.masks)
    bridge = OnePass(load_toy_resnet())  # the same bridge on the same 300 scenes for every extractor: run once
    for name in TOY_PRIORS:
        recorded = json.loads((CHECKPOINT_DIR / f"toy_qgnet_prior_{name}.json").read_text())
        weights = CHECKPOINT_DIR / f"toy_qgnet_prior_{name}.pt"
        assert file_sha256(weights) == recorded["checkpoint"]["sha256"], name
        extractor = load_toy_resnet(weights)
        assert knn_map(pooled_features(extractor, scenes.images), labels) == pytest.approx(
            recorded["held_out"]["knn_map"]["this"], abs=1e-4), name
        assert region_map_scores(bridge, extractor, scenes.images[:300], scenes.masks[:300]) == pytest.approx(
            recorded["held_out"]["prior_region_map"], abs=1e-4), name
        assert recorded_recipe(recorded) == remade_recipe(name), name  # its command line makes it again
        assert {"knn_map_curve", "patch_object_share"} <= set(recorded), name
        if name != "slic_shorter":  # the shipped budget's doubling check: 12000 against 24000 steps
            half = recorded["plateau"]["half_the_budget"]
            assert half["knn_map_twice"] - half["knn_map"] == pytest.approx(half["difference"], abs=1e-4), name


class OnePass(torch.nn.Module):
    """``model``, whose output on the images it last read is given again when it reads the same images (a frozen
    model in eval mode gives the same output for the same input: one forward pass serves every caller)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.last = model, None

    def forward(self, images: torch.Tensor):
        if self.last is None or not torch.equal(self.last[0], images):
            self.last = (images, self.model(images))
        return self.last[1]


def recorded_recipe(recorded: dict) -> dict:
    """The settings and superpixels a prior extractor's JSON records, without the pretraining's run flags."""
    return {**recorded["settings"], "superpixels": recorded["superpixels"]}


def remade_recipe(name: str) -> dict:
    """What `python -m fsslib.pretrain toy-qgnet-prior` with :data:`TOY_PRIORS`' flags for ``name`` would train."""
    import dataclasses

    from fsslib.methods.qgnet import remake_command
    from fsslib.pretrain.qgnet_prior.cli import build_parser
    from fsslib.pretrain.command import settings_from

    flags = remake_command(name).split()[4:]  # after `python -m fsslib.pretrain toy-qgnet-prior`
    settings = dataclasses.asdict(settings_from(build_parser().parse_args([*flags, "--out", "x.pt"]), PriorSettings))
    uses_patches = settings["losses"] != "global"  # the global loss alone computes no superpixels
    return {**settings, "superpixels": TOY_SUPERPIXELS[settings["patches"]] if uses_patches else None}


def test_the_pretraining_command_without_flags_is_the_shipped_slic_extractor_s_recipe():
    """The defaults are the shipped SLIC extractor's recipe; each other shipped extractor changes one flag."""
    import json

    from fsslib.methods.qgnet import TOY_PRIORS, remake_command
    from fsslib.paths import CHECKPOINT_DIR

    assert remake_command("slic") == "python -m fsslib.pretrain toy-qgnet-prior"
    for name in TOY_PRIORS:
        recorded = json.loads((CHECKPOINT_DIR / f"toy_qgnet_prior_{name}.json").read_text())
        assert recorded_recipe(recorded) == remade_recipe(name), name


def test_pretraining_at_stride_32_gives_an_extractor_used_at_stride_8(tmp_path):
    """train_stride=32: the encoders train strided (layer4 2 x 2 at 64 px), as MoCo trains ResNet-50; the shipped
    weights load into the dilated network QGNet uses (8 x 8), where the curve and held-out metrics are measured."""
    from fsslib.pretrain.qgnet_prior.train import as_used

    strided = ToyResNet(output_stride=32)
    assert strided(torch.rand(2, 3, 64, 64))["layer4"].shape == (2, 192, 2, 2)
    used = as_used(strided)
    assert used is not strided and used(torch.rand(2, 3, 64, 64))["layer4"].shape == (2, 192, 8, 8)
    torch.testing.assert_close(used.layer4.conv1.weight, strided.layer4.conv1.weight)
    dilated = ToyResNet()
    assert as_used(dilated) is dilated
    settings = PriorSettings(steps=2, pool_size=24, batch_size=8, queue_size=16, local_queue_size=16, key_chunks=2,
                             eval_every=2, curve_scenes=40, train_stride=32)
    metadata = train_prior_extractor(tmp_path / "prior.pt", settings, cache=tmp_path, progress=False, workers=1,
                                     n_eval_images=40)
    assert "output_stride=32" in metadata["model"] and metadata["settings"]["train_stride"] == 32
    assert load_toy_resnet(tmp_path / "prior.pt")(torch.rand(1, 3, 64, 64))["layer4"].shape == (1, 192, 8, 8)
    with pytest.raises(UnknownNameError, match="stride"):  # refused before 8000 scenes are rendered
        train_prior_extractor(tmp_path / "other.pt", PriorSettings(train_stride=16), progress=False)
