"""DINO's ViT (paper-tier loading, the toy DINO) and the toy DINO's self-distillation, by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsslib.errors import CheckpointError, UnknownNameError
from fsslib.models.vit import PAPER_DINO, TOY_DINO, VisionTransformer, VitConfig, last_block_taps, load_dino
from fsslib.pretrain import PRETRAINERS
from fsslib.pretrain.scenes import object_centric_scene, render_scenes
from fsslib.pretrain.toy_dino.dino import DinoHead, DinoLoss, teacher_momentum, update_teacher
from fsslib.pretrain.toy_dino.metrics import cell_labels, grouping_iou
from fsslib.pretrain.toy_dino.train import DinoSettings, train_toy_dino

TINY = VitConfig(32, 8, 16, 2, 2)


def dino_state_dict_keys(depth: int) -> set[str]:
    """The keys of facebookresearch/dino's vision_transformer.py ViT (head removed)."""
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    for i in range(depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"}
    return keys


def test_the_vit_has_dino_s_parameter_names_and_loads_a_dino_file(tmp_path):
    model = VisionTransformer(TINY)
    assert set(model.state_dict()) == dino_state_dict_keys(TINY.depth)
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "dino.pth")
    PAPER_DINO["tiny_test"] = ("dino.pth", TINY)
    try:
        loaded = load_dino("tiny_test", tmp_path / "dino.pth")
    finally:
        del PAPER_DINO["tiny_test"]
    images = torch.rand(2, 3, 32, 40)
    torch.testing.assert_close(loaded(images), model.eval()(images))


def test_missing_or_unknown_dino_weights_fail_with_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain"):
        load_dino("dino_vitb16", tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="toy-dino"):
        load_dino("toy-dino", tmp_path / "absent.pt")
    with pytest.raises(UnknownNameError, match="dino_vits8"):
        load_dino("dino_vitl14")
    (tmp_path / "other.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_dino("toy-dino", tmp_path / "other.pth")


def test_last_block_taps_are_the_last_block_s_qkv_and_class_attention():
    torch.manual_seed(0)
    model = VisionTransformer(TINY).eval()
    images = torch.rand(2, 3, 32, 32)
    taps = last_block_taps(model, images)
    x, grid = model.embed(images)
    x = model.blocks[0](x)
    block = model.blocks[1]
    qkv = block.attn.qkv(block.norm1(x))  # (B, 1+N, 3C): q, k, v with heads concatenated
    q, k, v = qkv.chunk(3, dim=-1)
    torch.testing.assert_close(taps.values, v[:, 1:])
    torch.testing.assert_close(taps.keys, k[:, 1:])
    head_q, head_k = q.unflatten(-1, (2, 8)), k.unflatten(-1, (2, 8))  # (B, T, heads, 8)
    logits = torch.einsum("bhd,bthd->bht", head_q[:, 0], head_k) / math.sqrt(8)  # class token's query
    torch.testing.assert_close(taps.cls_attention, logits.softmax(-1)[:, :, 1:])
    assert grid == (4, 4) and taps.as_map(taps.values).shape == (2, 16, 4, 4)
    out = F.scaled_dot_product_attention(*(t.unflatten(-1, (2, 8)).transpose(1, 2) for t in (q, k, v)))  # by heads
    mid = x + block.attn.proj(out.transpose(1, 2).flatten(2))
    torch.testing.assert_close(block(x), mid + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(mid)))))


def test_dino_loss_by_hand_and_the_centre_update():
    torch.manual_seed(0)
    batch, views, dim = 3, 4, 5
    student, teacher = torch.randn(views * batch, dim), torch.randn(2 * batch, dim)
    loss = DinoLoss(dim, student_temperature=0.1, teacher_temperature=0.04, center_momentum=0.9)
    loss.center.fill_(0.3)
    value = loss(student, teacher, views)
    targets = F.softmax((teacher - 0.3) / 0.04, dim=-1).chunk(2)
    log_p = F.log_softmax(student / 0.1, dim=-1).chunk(views)
    pairs = [-(targets[i] * log_p[v]).sum(-1).mean() for i in range(2) for v in range(views) if v != i]
    torch.testing.assert_close(value, sum(pairs) / len(pairs))
    torch.testing.assert_close(loss.center, 0.9 * 0.3 + 0.1 * teacher.mean(0, keepdim=True))


def test_head_ends_in_unit_norm_rows_and_the_teacher_follows_the_student_by_ema():
    head = DinoHead(8, 12, hidden_dim=16, bottleneck_dim=4)
    with torch.no_grad():
        head.last_weight.mul_(7.0)
    bottleneck = F.normalize(head.mlp(torch.ones(1, 8)), dim=-1)
    torch.testing.assert_close(head(torch.ones(1, 8)), bottleneck @ F.normalize(head.last_weight, dim=-1).T)
    student, teacher = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.9 * teacher.weight.detach() + 0.1 * student.weight.detach()
    update_teacher(student, teacher, 0.9)
    torch.testing.assert_close(teacher.weight, expected)
    assert teacher_momentum(0, 100) == pytest.approx(0.996) and teacher_momentum(100, 100) == pytest.approx(1.0)


def test_grouping_iou_by_hand():
    labels = torch.tensor([[1, 1, 0, 2]])  # two cells of class 1, background, one of class 2
    features = torch.tensor([[[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [-1.0, 0.0]]])
    scores = grouping_iou(features, labels, gammas=(0.5, -1.0))
    assert scores[0.5] == pytest.approx(1.0)  # each object cell's group is exactly its class's cells
    assert scores[-1.0] == pytest.approx((2 / 4 + 2 / 4 + 1 / 4) / 3)  # everything grouped
    mask = torch.zeros(1, 16, 16, dtype=torch.uint8).numpy()
    mask[0, :8, :8] = 3
    mask[0, 8:, :5] = 4  # 40 of 64 pixels: the majority
    mask[0, :8, 8:10] = 5  # a quarter of its cell: background has the majority
    mask[0, 8:, 8:11] = 6  # 24 pixels, 24 of class 7, 16 of background: no label holds half the cell
    mask[0, 8:, 11:14] = 7
    assert cell_labels(mask).tolist() == [[3, 0, 4, -1]]


def test_toy_dino_is_registered_and_tiny_training_writes_a_loadable_teacher(tmp_path):
    assert "toy-dino" in PRETRAINERS
    settings = DinoSettings(steps=2, pool_size=8, batch_size=4, local_views=2, out_dim=16, warmup_steps=1,
                            freeze_last_layer_steps=1)
    metadata = train_toy_dino(tmp_path / "dino.pt", settings, progress=False, n_eval_images=6)
    assert metadata["settings"]["steps"] == 2 and "git_commit" in metadata and "dino_values" in metadata["held_out"]["grouping_iou"]
    model = load_dino("toy-dino", tmp_path / "dino.pt")
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, TOY_DINO.width)


def test_object_centric_training_scenes_hold_one_large_object():
    from fsslib.pretrain.toy_dino.train import training_images

    plain = training_images(DinoSettings(pool_size=40, scenes="plain"))
    centric = training_images(DinoSettings(pool_size=40))  # the default, the shipped toy DINO's
    assert centric.shape == plain.shape == (40, 64, 64, 3) and not (centric == plain).all()
    masks = render_scenes(40, 0, 95, draw=lambda rng, _: object_centric_scene(rng, 64)).masks
    assert all(len(set(mask.flatten().tolist()) - {0}) == 1 for mask in masks)  # one class per scene
    assert (masks > 0).mean() > 2 * (render_scenes(40, 0, 95).masks > 0).mean()
    with pytest.raises(UnknownNameError, match="object_centric"):
        training_images(DinoSettings(pool_size=4, scenes="imagenet"))


def test_found_seed_coarse_background_and_loss_by_hand():
    from fsslib.models.vit import LastBlockTaps
    from fsslib.pretrain.toy_found import background_seed, coarse_background, found_loss, head_weights

    attention = torch.tensor([[[0.5, 0.1, 0.4], [0.2, 0.3, 0.5]]])  # (B=1, heads=2, N=3); mean 1/3
    share = torch.tensor([2 / 3, 1 / 3]) + 1e-10  # Q_h: share of patches above the mean
    beta = torch.log(share.sum() / share)  # CroW: the sparser head weighs more
    torch.testing.assert_close(head_weights(attention)[0], beta)
    weighted = (attention[0] * beta[:, None]).sum(0)
    assert background_seed(attention).tolist() == [int(weighted.argmin())]
    keys = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0], [0.5, 1.0, 1.0, 0.2]]])  # 2 heads x 2 dims
    taps = LastBlockTaps(keys, keys, keys, attention, (1, 3))
    scaled = F.normalize((keys[0].view(3, 2, 2) * beta[None, :, None]).flatten(1), dim=-1)
    cosines = scaled @ scaled[int(weighted.argmin())]
    assert coarse_background(taps, tau=0.3)[0].tolist() == (cosines > 0.3).tolist()
    logits = torch.tensor([[[[2.0, -1.0, 0.5]]]])  # (B, 1, h, w)
    background = torch.tensor([[[[False, True, True]]]])
    own = torch.tensor([[[[1.0, 0.0, 1.0]]]])
    bce = F.binary_cross_entropy_with_logits
    torch.testing.assert_close(found_loss(logits, background, step=3),
                               1.5 * bce(logits, own) + bce(logits, torch.tensor([[[[1.0, 0.0, 0.0]]]])))
    torch.testing.assert_close(found_loss(logits, background, step=100), 1.5 * bce(logits, own) + 4 * bce(logits, own))


def test_tiny_found_training_writes_a_loadable_background_teacher(tmp_path):
    from fsslib.pretrain.toy_found import FoundSettings, load_found, train_toy_found
    from fsslib.pretrain.toy_found.train import evaluate_checkpoint

    assert "toy-found" in PRETRAINERS
    torch.save({"backbone": VisionTransformer(TOY_DINO).state_dict()}, tmp_path / "dino.pt")
    settings = FoundSettings(steps=3, pool_size=10, batch_size=4, dino=str(tmp_path / "dino.pt"))
    metadata = train_toy_found(tmp_path / "found.pt", settings, progress=False, n_eval_images=8)
    scores = metadata["held_out"]["foreground_iou"]
    assert set(scores) == {"found_head", "coarse_masks", "all_foreground"} and 0 < scores["all_foreground"] < 1
    dino, head = load_found(tmp_path / "found.pt")
    assert head(torch.zeros(1, TOY_DINO.width, 8, 8)).shape == (1, 1, 8, 8)
    assert evaluate_checkpoint(tmp_path / "found.pt", n_images=8)["foreground_iou"] == scores
    with pytest.raises(CheckpointError, match="toy-found"):
        load_found(tmp_path / "absent.pt")
    torch.save({"backbone": VisionTransformer(TOY_DINO).state_dict()}, tmp_path / "dino.pt")  # a re-made teacher
    with pytest.raises(CheckpointError, match="sha256"):
        load_found(tmp_path / "found.pt")


def test_found_release_loads_fsslib_s_head_from_the_official_decoder_file(tmp_path, monkeypatch):
    from fsslib.pretrain.toy_found import load_found_release

    decoder = torch.nn.Conv2d(384, 1, 1)  # valeoai/FOUND model.py: decoder on DINO ViT-S/8's keys
    torch.save({"decoder": decoder.state_dict()}, tmp_path / "decoder_weights.pt")
    dino, head = load_found_release(tmp_path / "decoder_weights.pt", dino_checkpoint="random")
    assert dino.config.patch_size == 8 and dino.config.width == 384
    keys = torch.randn(2, 384, 4, 4)
    torch.testing.assert_close(head(keys), decoder(keys))
    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "offline"))
    with pytest.raises(CheckpointError, match="valeoai/FOUND"):
        load_found_release()
    torch.save({"model": decoder.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no FOUND decoder"):
        load_found_release(tmp_path / "other.pt", dino_checkpoint="random")


def test_the_shipped_toy_teachers_and_heads_match_their_recorded_metrics():
    """The three shipped files load with their teachers (sha256 checks) and reproduce their JSONs' held-out metrics."""
    import json

    from fsslib.paths import CHECKPOINT_DIR
    from fsslib.pretrain.clip_dinoiser_heads.train import evaluate_checkpoint as evaluate_heads
    from fsslib.pretrain.toy_dino.metrics import acceptance_metrics
    from fsslib.pretrain.toy_found.train import evaluate_checkpoint as evaluate_found

    def recorded(name: str) -> dict:
        return json.loads((CHECKPOINT_DIR / f"{name}.json").read_text())["held_out"]

    assert acceptance_metrics() == recorded("toy_dino")
    assert evaluate_found(CHECKPOINT_DIR / "toy_found.pt") == recorded("toy_found")
    assert evaluate_heads(CHECKPOINT_DIR / "toy_clip_dinoiser_heads.pt") == recorded("toy_clip_dinoiser_heads")
