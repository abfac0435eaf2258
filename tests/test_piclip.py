"""PI-CLIP: VTP / VVP / PIR equations on hand-checkable tensors, plug-in into PFENet, tiers."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsslib import train
from fsslib.clip import block_taps, gradcam, load_clip
from fsslib.config import make_config
from fsslib.errors import UnknownNameError
from fsslib.methods import build_method
from fsslib.blocks import COSINE_EPS
from fsslib.methods.piclip import VARIANTS
from fsslib.methods.piclip.priors import (
    PriorInputError,
    box_mask,
    refine_prior,
    refine_with_attention,
    refinement_matrix,
    sinkhorn_normalise,
    visual_text_prior,
    visual_visual_prior,
    vtp_prompt_table,
)
from tests.test_pfenet import fabricated_batch


# --------------------------------------------------------------------------- PIR (Eqs. 9-11)


def test_sinkhorn_divides_columns_then_rows():
    attention = torch.tensor([[[1.0, 3.0], [1.0, 1.0]]])
    # columns sums (2, 4) -> [[0.5, 0.75], [0.5, 0.25]]; then rows sums (1.25, 0.75)
    expected = torch.tensor([[[0.4, 0.6], [2 / 3, 1 / 3]]])
    normalised = sinkhorn_normalise(attention)
    assert torch.allclose(normalised, expected)
    assert torch.allclose(normalised.sum(-1), torch.ones(1, 2))


def test_refinement_matrix_is_max_of_d_and_d_dt():
    d = torch.tensor([[0.4, 0.6], [2 / 3, 1 / 3]])
    d_dt = d @ d.T  # [[0.52, 0.4667], [0.4667, 0.5556]]
    refinement = refinement_matrix(torch.tensor([[[1.0, 3.0], [1.0, 1.0]]]))
    assert torch.allclose(refinement[0], torch.maximum(d, d_dt))
    assert refinement[0, 0, 0].item() == pytest.approx(0.52) and refinement[0, 1, 1].item() == pytest.approx(5 / 9)
    squared = refinement_matrix(torch.tensor([[[1.0, 3.0], [1.0, 1.0]]]), squarings=1)  # official code's R @ R
    assert torch.allclose(squared[0], refinement[0] @ refinement[0])


def test_box_mask_is_the_union_of_component_boxes():
    prior = torch.zeros(1, 6, 6)
    prior[0, 0, 0] = prior[0, 1, 1] = 1.0  # one diagonal (8-connected) component -> box rows 0-1, cols 0-1
    prior[0, 4, 5] = 0.5  # a second component above 0.4 * max
    prior[0, 3, 2] = 0.3  # below the threshold
    expected = torch.zeros(1, 6, 6)
    expected[0, 0:2, 0:2] = 1.0
    expected[0, 4, 5] = 1.0
    assert torch.equal(box_mask(prior), expected)
    assert torch.equal(box_mask(torch.zeros(2, 3, 3)), torch.zeros(2, 3, 3))


def test_refine_prior_with_identity_is_min_max_of_the_boxed_prior():
    prior = torch.tensor([[[0.2, 1.0], [0.5, 0.1]]])
    boxes = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    refined = refine_prior(prior, torch.eye(4)[None], boxes)
    boxed = torch.tensor([0.2, 1.0, 0.0, 0.1])
    assert torch.allclose(refined.flatten(), (boxed - 0.0) / (1.0 + COSINE_EPS))
    mixing = torch.ones(1, 4, 4)  # every target position receives the sum of the boxed prior
    assert torch.equal(refine_prior(prior, mixing, boxes), torch.zeros(1, 2, 2))
    with pytest.raises(PriorInputError):
        refine_prior(prior, torch.eye(3)[None], boxes)


def test_several_priors_refine_at_once_as_each_alone():
    torch.manual_seed(0)
    priors, boxes = torch.rand(2, 5, 3, 3), (torch.rand(2, 3, 3) > 0.3).float()
    refinement = refinement_matrix(torch.softmax(torch.randn(2, 9, 9), dim=-1))
    each = torch.stack([refine_prior(priors[:, c], refinement, boxes) for c in range(5)], dim=1)
    torch.testing.assert_close(refine_prior(priors, refinement, boxes), each)
    with pytest.raises(PriorInputError, match=r"\(B, h, w\) or \(B, C, h, w\)(.|\n)*flatten"):
        refine_prior(priors[:, None], refinement, boxes)  # (B, blocks, shots, h, w) unflattened


def test_refine_with_attention_chains_eqs_9_to_11():
    torch.manual_seed(0)
    prior, attention = torch.rand(2, 3, 3), torch.softmax(torch.randn(2, 9, 9), dim=-1)
    expected = refine_prior(prior, refinement_matrix(attention), box_mask(prior))
    assert torch.allclose(refine_with_attention(prior, attention), expected)
    other_boxes = refine_with_attention(prior, attention, box_source=torch.zeros(2, 3, 3))
    assert torch.equal(other_boxes, torch.zeros(2, 3, 3))  # an empty box mask removes every source position


# --------------------------------------------------------------------------- VVP (Eqs. 5-8)


def test_vvp_masks_support_takes_max_and_min_max_scales():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # query tokens (1, 0), (0, 1)
    support = torch.tensor([[1.0, 0.5], [0.0, 1.0]]).T.reshape(1, 1, 2, 1, 2)  # (1, 0.5), (0, 1)
    only_first = torch.tensor([[[[1, 0]]]])  # (B, K, H, W) mask over the two support tokens
    both = torch.tensor([[[[1, 1]]]])
    masked = visual_visual_prior(query, support, only_first)  # raw maxima: 0.894, 0.447
    assert masked.shape == (1, 1, 1, 2)
    assert masked.flatten().tolist() == pytest.approx([(0.4472) / (0.4472 + COSINE_EPS), 0.0], abs=1e-4)
    unmasked = visual_visual_prior(query, support, both)  # raw maxima: 0.894, 1.0 -> second is the max
    assert unmasked.flatten().tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    with pytest.raises(PriorInputError):
        visual_visual_prior(query, support[:, :, :1], only_first)
    raw = visual_visual_prior(query, support, only_first, min_max=False)  # the official code skips Eq. 8
    assert raw.flatten().tolist() == pytest.approx([0.8944, 0.4472], abs=1e-4)


def test_raw_vvp_option_reaches_the_priors_and_leaves_the_vtp():
    episodes = fabricated_batch().one_way()
    scaled, raw = piclip().prior.clip_priors(episodes), piclip(vvp_min_max=False).prior.clip_priors(episodes)
    assert torch.equal(scaled["vtp"], raw["vtp"]) and raw["vvp"].max() <= 1 + 1e-6
    assert not torch.allclose(raw["vvp"], scaled["vvp"])
    low = raw["vvp"].amin((-2, -1), keepdim=True)
    assert torch.allclose(scaled["vvp"], (raw["vvp"] - low) / (raw["vvp"].amax((-2, -1), keepdim=True) - low + COSINE_EPS),
                          atol=1e-5)


def test_vvp_keeps_one_map_per_shot():
    query = torch.rand(2, 4, 3, 3)
    support = torch.rand(2, 3, 4, 3, 3)
    masks = (torch.rand(2, 3, 6, 6) > 0.3).long()
    together = visual_visual_prior(query, support, masks)  # (B, K, h, w)
    assert together.shape == (2, 3, 3, 3)
    for shot in range(3):
        alone = visual_visual_prior(query, support[:, shot : shot + 1], masks[:, shot : shot + 1])
        assert torch.allclose(together[:, shot], alone[:, 0])


# --------------------------------------------------------------------------- VTP (Eqs. 1-4)


@pytest.fixture(scope="module")
def toy_bundle():
    return load_clip("toy-vit")


def test_gradcam_equals_the_analytic_gradient_of_a_linear_score(toy_bundle):
    torch.manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    direction = torch.randn(toy_bundle.visual.transformer.width)
    # score = sum_i <t_i, v>: dS/dt_i = v everywhere, so w = v (Eq. 3) and P_i = ReLU(<t_i, v>) (Eq. 4)
    maps = gradcam(toy_bundle, images, lambda tokens: (tokens @ direction).sum(dim=1))
    with torch.no_grad():
        last = toy_bundle.num_blocks - 1
        tokens = block_taps(toy_bundle, images, [last], with_attention=False).tokens[last]  # (B, N, C)
    expected = torch.relu(tokens @ direction).view(3, 8, 8)
    assert torch.allclose(maps, expected, atol=1e-4)


def test_vtp_prompt_table_paper_and_official_prompts():
    target, non_target = torch.eye(4)[:3], torch.eye(4)[1:]  # 3 classes, D = 4
    prompts, valid = vtp_prompt_table(target, non_target, torch.tensor([0, 2]))
    assert prompts.shape == (2, 2, 4) and valid.all()
    assert torch.equal(prompts[1], torch.stack([target[2], non_target[2]]))
    prompts, valid = vtp_prompt_table(target, non_target, torch.tensor([0, 2]), present_indices=[[0, 1, 2], [2]])
    assert prompts.shape == (2, 6, 4) and valid.sum(1).tolist() == [6, 2]
    assert torch.equal(prompts[0], torch.stack([target[0], non_target[0], target[1], target[2], non_target[1], non_target[2]]))


def test_vtp_text_tables_hold_the_official_prompts_of_each_class():
    """The official PI-CLIP encodes "a photo of {}." (fg_text_features) and "a photo without {}." (bg_text_features)
    for every class (vangjin/PI-CLIP, model/PI_CLIP.py, zeroshot_classifier with one template each); a table row is
    those two prompts of its class, each row encoded alone (so a resumed run fills it with the same numbers)."""
    from fsslib.clip.text import prompt_embeddings

    official = {"fg": "a photo of {}.", "bg": "a photo without {}."}  # transcribed from model/PI_CLIP.py
    model = piclip().prior
    model.encode_class_prompts([2, 0])
    for row in (0, 2):
        name = model.class_names[row]
        expected = prompt_embeddings(model.bundle, [official["fg"].format(name), official["bg"].format(name)])
        torch.testing.assert_close(torch.stack([model.target_text[row], model.non_target_text[row]]), expected,
                                   rtol=0, atol=0)
    assert model.encoded_rows == {0, 2} and not model.target_text[1].any()


def test_vtp_is_batched_and_matches_a_per_image_autograd_reference(toy_bundle):
    torch.manual_seed(1)
    images = torch.rand(3, 3, 64, 64)
    prompts = torch.nn.functional.normalize(torch.randn(3, 2, toy_bundle.embed_dim), dim=-1)
    tau = toy_bundle.logit_temperature
    batched = visual_text_prior(toy_bundle, images, prompts, temperature=tau)
    assert batched.shape == (3, 8, 8) and batched.min() >= 0 and batched.max() <= 1
    visual = toy_bundle.visual
    for index in range(3):  # reference: explicit Eqs. 1-4 for one image, as the official per-image loop
        with torch.no_grad():
            last = toy_bundle.num_blocks - 1
            tokens = block_taps(toy_bundle, images[index : index + 1], [last], with_attention=False).tokens[last]
        tokens = tokens.clone().requires_grad_(True)  # F_q (1, N, C)
        v_q = (visual.ln_post(tokens) @ visual.proj).mean(dim=1)  # Eq. 1
        logits = torch.nn.functional.normalize(v_q, dim=-1) @ prompts[index].T / tau  # Eq. 2
        s_f = torch.softmax(logits, dim=-1)[0, 0]
        (gradient,) = torch.autograd.grad(s_f, tokens)
        weights = gradient[0].mean(dim=0)  # Eq. 3
        cam = torch.relu(tokens[0].detach() @ weights)  # Eq. 4
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
        assert torch.allclose(batched[index].flatten(), cam, atol=1e-4)


# --------------------------------------------------------------------------- PI-CLIP(PFENet)


def piclip(shots: int = 1, **options):
    torch.manual_seed(0)
    return build_method(make_config(method="piclip", backbone_weights="random", shots=shots, options=options)).eval()


def test_priors_replace_only_the_prior_channels():
    torch.manual_seed(0)
    baseline = build_method(make_config(method="pfenet", backbone_weights="random")).eval()
    model = piclip()
    shared = {k: v for k, v in baseline.state_dict().items() if not k.startswith("decoder.init_merge")}
    model.load_state_dict(shared, strict=False)
    model.backbone.load_state_dict(baseline.backbone.state_dict())  # the frozen backbone is not in the state dict
    captured = {}
    for name, net in (("pfenet", baseline), ("piclip", model)):
        net.decoder.register_forward_hook(lambda module, inputs, output, name=name: captured.__setitem__(name, inputs))
        net(fabricated_batch().inputs())
    (query_a, prototype_a, prior_a), (query_b, prototype_b, prior_b) = captured["pfenet"], captured["piclip"]
    assert torch.equal(query_a, query_b) and torch.equal(prototype_a, prototype_b)
    assert prior_a.shape == (2, 1, 8, 8) and prior_b.shape == (2, 4, 8, 8)  # [refined VTP x 2, VVP last block, one before]
    assert not any(k.startswith(("bundle", "backbone")) or "clip" in k for k in model.state_dict())  # frozen models stay out


def official_query_merge_priors(model, batch, shots: int) -> torch.Tensor:
    """vangjin/PI-CLIP's ``cat([img_cam * 10, clip_similarity * 10])``, built from the maps by hand.

    ``img_cam = vtp.repeat(1, 2, 1, 1)``; ``clip_similarity = cat([similarity1, similarity2])`` with
    similarity1 the last block's VVP of each shot and similarity2 the one before's; each resized
    (bilinear, aligned corners) to the CNN's feature map first.
    """
    priors = model.prior.clip_priors(batch.one_way())
    last, before = model.prior.bundle.num_blocks - 1, model.prior.bundle.num_blocks - 2
    rows = {block: i for i, block in enumerate(model.prior.vvp_blocks)}
    similarity1 = torch.cat([priors["vvp"][:, rows[last], shot, None] for shot in range(shots)], dim=1)
    similarity2 = torch.cat([priors["vvp"][:, rows[before], shot, None] for shot in range(shots)], dim=1)

    def resize(x):
        return F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=True)

    img_cam = resize(priors["vtp_refined"][:, None]).repeat(1, 2, 1, 1)
    clip_similarity = resize(torch.cat([similarity1, similarity2], dim=1))
    return torch.cat([img_cam * 10, clip_similarity * 10], dim=1)


@pytest.mark.parametrize("shots", [1, 2])
def test_decoder_priors_are_the_official_query_merge_channels(shots):
    """The layout of the maps the decoder reads: which map, block and shot fills each channel, resized and scaled as
    the official ``query_merge`` input. The maps themselves are checked against their equations and the official
    code by the VTP, VVP and PIR tests above."""
    model = piclip(shots=shots)
    batch = fabricated_batch(shots=shots)
    levels = model.backbone_levels(batch.query_images)
    prior = model.prior(batch.one_way(), levels, {}, model.backbone)
    assert prior.shape == (2, 2 + 2 * shots, 8, 8)
    torch.testing.assert_close(prior, official_query_merge_priors(model, batch, shots), atol=1e-5, rtol=1e-5)
    with pytest.raises(PriorInputError):
        model.prior(fabricated_batch(shots=3 - shots).one_way(), levels, {}, model.backbone)


def test_paper_layout_options_give_eq_5_and_one_unscaled_vtp():
    batch = fabricated_batch()
    official, paper = piclip(), piclip(vtp_channels=1, prior_scale=1.0, vvp_blocks=[-2, -1])
    levels = official.backbone_levels(batch.query_images)
    scaled = official.prior(batch.one_way(), levels, {}, official.backbone)
    plain = paper.prior(batch.one_way(), levels, {}, paper.backbone)
    assert plain.shape == (2, 3, 8, 8) and plain.min() >= 0 and plain.max() <= 1
    torch.testing.assert_close(plain[:, 0] * 10, scaled[:, 0])  # the same VTP, unscaled and once
    torch.testing.assert_close(plain[:, [2, 1]] * 10, scaled[:, 2:])  # the VVP blocks in the other order


@pytest.mark.parametrize("variant, channels", [("vtp", 2), ("vvp", 2), ("no_pir", 4), ("pir_vv", 4), ("pir_both", 4)])
def test_ablation_variants(variant, channels):
    cfg = make_config(method="piclip", variant=variant, backbone_weights="random")
    assert cfg.options["priors"] == VARIANTS[variant]["priors"]
    model = build_method(cfg).eval()
    batch = fabricated_batch()
    prior = model.prior(batch.one_way(), model.backbone_levels(batch.query_images), {}, model.backbone)
    assert prior.shape == (2, channels, 8, 8) and prior.min() >= 0 and prior.max() <= 10  # priors in [0, 1], x 10
    if variant == "no_pir":
        assert torch.allclose(prior[:, 0] / 10, model.prior.clip_priors(batch.one_way())["vtp"], atol=1e-6)


def test_official_support_image_masking_only_changes_the_vvp():
    batch = fabricated_batch()
    episodes = batch.one_way()
    eq_5, official = piclip(vvp_mask_support_image=False).prior.clip_priors(episodes), piclip().prior.clip_priors(episodes)
    assert torch.equal(eq_5["vtp"], official["vtp"]) and not torch.allclose(eq_5["vvp"], official["vvp"])
    blank = piclip(vvp_mask_support_image=True).prior._mask_images(torch.ones(1, 3, 4, 4), torch.zeros(1, 4, 4))
    assert torch.allclose(blank[0, :, 0, 0], torch.tensor(load_clip("toy-vit").mean))


@pytest.mark.parametrize("activation", ["last_block_output", "last_block_ln_1"])
def test_the_query_passes_through_clip_once_and_the_vtp_is_unchanged(activation, monkeypatch):
    """The VTP's GradCAM starts from the query's recorded taps (the default VVP blocks -1 and -2 hold the block it
    needs): equal bit for bit to the GradCAM that runs the tower itself, which the model no longer calls."""
    import importlib

    gradcam_module = importlib.import_module("fsslib.clip.gradcam")  # the package's `gradcam` is the function
    batch = fabricated_batch().one_way()
    model = piclip(vtp_activation=activation).prior
    model.encode_class_prompts((batch.class_ids - 1).tolist())
    prompts, valid = vtp_prompt_table(model.target_text, model.non_target_text, batch.class_ids - 1)
    separate = visual_text_prior(model.bundle, model._clip_input(batch.query_images), prompts, valid,
                                 temperature=model.vtp_temperature, activation=activation)
    monkeypatch.setattr(gradcam_module, "_vit_embed", lambda *args: pytest.fail("GradCAM ran the CLIP tower again"))
    assert torch.equal(model.clip_priors(batch)["vtp"], separate)


def test_official_label_reading_vtp_uses_the_query_classes():
    batch = fabricated_batch()
    batch.query_classes = [[1, 7], [2, 4, 9]]  # the episode classes (1, 2) plus other classes in each query
    default, official = piclip(), piclip(vtp_prompts="present_classes")
    levels = default.backbone_levels(batch.query_images)
    expected = official.prior.clip_priors(batch.one_way(), present_indices=[[0, 6], [1, 3, 8]])["vtp_refined"]
    prior = official.prior(batch.one_way(), levels, {}, official.backbone)
    assert torch.allclose(prior[:, 0] / 10, F.interpolate(expected[:, None], size=(8, 8), mode="bilinear",
                                                          align_corners=True)[:, 0], atol=1e-6)
    assert not torch.allclose(prior[:, 0], default.prior(batch.one_way(), levels, {}, default.backbone)[:, 0])


def test_bad_options_raise_with_a_fix():
    with pytest.raises(UnknownNameError, match="vtp"):
        piclip(priors=["vtp", "text"])
    with pytest.raises(UnknownNameError, match="ln_2"):
        piclip(vtp_activation="ln_2")
    with pytest.raises(UnknownNameError, match="present_classes"):
        piclip(vtp_prompts="all")


@pytest.mark.slow
def test_toy_training_smoke(tiny_cfg):
    summary = train.run(tiny_cfg(method="piclip", backbone_weights="random"))
    (record,) = summary["history"]
    assert summary["best_val_miou"] == record["val_miou"] and math.isfinite(record["train_loss"])


def test_paper_tier_shapes_with_random_vit_b16_and_resnet50(paper_models):
    torch.manual_seed(0)
    cfg = make_config(method="piclip", preset="paper", benchmark="coco", backbone_weights="random",
                      options={"clip_pretrained": None})
    assert cfg.epochs == 30 and cfg.options["vtp_temperature"] == 0.01 and cfg.lr == 0.0025
    model = build_method(cfg).eval()
    assert model.prior.target_text.shape == (80, 512) and model.prior.pir_blocks == list(range(4, 12))
    assert model.prior.vvp_blocks == [11, 10]  # blocks 12 and 11 of ViT-B/16, in the official code's order
    batch = fabricated_batch(batch_size=1, size=473)
    priors = model.prior.clip_priors(batch.one_way())  # 473 x 473 -> 29 x 29 tokens
    assert priors["vvp"].shape == (1, 2, 1, 29, 29) and priors["vtp_refined"].shape == (1, 29, 29)
    assert len(model.prior.encoded_rows) == 1  # only the episode's class was encoded
    model.prior.clip_priors = lambda batch, present_indices=None: priors  # reuse them: one ViT-B/16 pass is enough
    feature_map = {"layer3": torch.zeros(1, 1024, 60, 60)}  # ResNet-50 at 473 (tested in test_pfenet.py)
    assert model.prior(batch.one_way(), feature_map, {}, model.backbone).shape == (1, 4, 60, 60)


def test_prior_mass_by_region_splits_each_query_by_the_target_s_shape_and_fill():
    import numpy as np

    from fsslib.data.episodes import EpisodeDataset
    from fsslib.data.toyworld import class_attributes
    from fsslib.engine import open_source
    from fsslib.methods.piclip import prior_mass_by_region
    from fsslib.methods.piclip.quality import REGIONS, _regions

    cfg = make_config(method="piclip", fold=0)
    episodes = EpisodeDataset(open_source(cfg, "test"), 0, 1, cfg.image_size, 6, 0)
    for index in range(6):  # the regions are disjoint, the target's is the episode's mask, the others share its fill or shape
        query, _, (class_id,) = episodes.sample_names(index)
        label = episodes.source.load(query)[1]
        regions = _regions(label, class_id)
        assert not (sum(regions[r].astype(int) for r in REGIONS) > 1).any()
        assert np.array_equal(regions["target"], label == class_id) and regions["target"].any()
        for region, kind in (("same fill", 1), ("same shape", 0)):
            assert all(class_attributes(int(c))[kind] == class_attributes(class_id)[kind] and c != class_id
                       for c in np.unique(label[regions[region]]))
    mass = prior_mass_by_region(build_method(cfg), episodes, batch_size=4)
    assert mass["episodes"]["target"] == 6 and set(mass) >= {"pfenet", "vtp", "vtp_refined"}
    priors = [p for p in mass if p != "episodes" and not p.endswith(" / target")]
    assert all(0 <= mass[p][r] <= 1 for p in priors for r in REGIONS if mass["episodes"][r])  # priors lie in [0, 1]
    assert all(mass[f"{p} / target"]["target"] == pytest.approx(1.0) for p in priors)  # the target against itself
    from fsslib.errors import FsslibError

    with pytest.raises(FsslibError, match="PI-CLIP's CLIP priors.*PFENet with MaskedSupportPrior"):  # not a deep trace
        prior_mass_by_region(build_method(make_config(method="pfenet", fold=0)), episodes)


def test_the_cnn_can_see_the_support_blanked_as_the_official_hdmnet_extractor_does():
    """``mask_support_cnn``: the ResNet sees the support outside its mask as ImageNet's mean colour (0 once
    normalised); the queries and the default (PFENet's whole support) are unchanged."""
    from fsslib.blocks import blank_outside_masks
    from fsslib.models.backbones import IMAGENET_MEAN

    batch = fabricated_batch().one_way()
    default, official = piclip(), piclip(mask_support_cnn=True)
    official.backbone.load_state_dict(default.backbone.state_dict())
    (query_a, support_a), (query_b, support_b) = default.episode_levels(batch), official.episode_levels(batch)
    torch.testing.assert_close(query_a["layer3"], query_b["layer3"])
    blanked = blank_outside_masks(batch.support_images.flatten(0, 1), batch.support_masks.flatten(0, 1), IMAGENET_MEAN)
    torch.testing.assert_close(support_b["layer3"], default.backbone_levels(blanked)["layer3"])
    assert not torch.allclose(support_a["layer3"], support_b["layer3"])
    outside = (batch.support_masks.flatten(0, 1) != 1).unsqueeze(1).expand_as(blanked)
    torch.testing.assert_close(official.backbone.normalise(blanked)[outside], torch.zeros(int(outside.sum())))
