"""Tests of the CLIP layer (fsslib.clip): loading, dense features, taps, text, GradCAM.

Tiny random-weight open_clip models do most checks; one test builds the paper-sized
ViT-B/16 (473 x 473 -> 29 x 29) and RN50 with random weights. Nothing is downloaded.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

import fsslib.clip.loading as loading
from fsslib.clip import (
    IMAGENET_TEMPLATES,
    MASKCLIP_SCENE_TEMPLATES,
    MASKCLIP_TEMPLATES,
    ClipInputError,
    block_taps,
    bundle_from_model,
    class_embeddings,
    clear_text_cache,
    cosine_logits,
    denoise_prompts,
    encode_image,
    find_cached_weights,
    gradcam,
    image_and_dense_embeddings,
    load_clip,
    maskclip_features,
    maskclip_features_and_keys,
    prepare_images,
    project_tokens,
    prompt_embeddings,
    resize_positional_embedding,
    segment_with_text,
    smooth_with_keys,
    softmax_score,
    toy,
)
from fsslib.errors import CheckpointError, UnknownNameError

CONTEXT = 16
TEXT_CFG = dict(context_length=CONTEXT, vocab_size=49408, width=32, heads=2, layers=1)
VIT_CFG = dict(embed_dim=32, vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=3, head_width=16),
               text_cfg=TEXT_CFG)
RN_CFG = dict(embed_dim=32, vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=8, head_width=16),
              text_cfg=TEXT_CFG)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one torch thread per test, restored after


def _tiny(cfg: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    with torch.no_grad():  # open_clip zero-inits some weights; randomise so every path matters
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer(context_length=CONTEXT)


@pytest.fixture(scope="module")
def vit(tokenizer):
    return bundle_from_model(_tiny(VIT_CFG, 0), tokenizer, name="tiny-vit")


@pytest.fixture(scope="module")
def rn(tokenizer):
    return bundle_from_model(_tiny(RN_CFG, 1), tokenizer, name="tiny-rn")


def _images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- open_clip internals we rely on


def test_open_clip_internals_are_pinned(vit, rn):
    visual = vit.visual
    assert isinstance(visual, VisionTransformer)
    assert visual.transformer.batch_first and visual.attn_pool is None and visual.pool_type == "tok"
    for name in ("conv1", "class_embedding", "positional_embedding", "patch_dropout", "ln_pre", "ln_post", "proj"):
        assert hasattr(visual, name), name
    assert callable(visual._pool) and tuple(visual.grid_size) == (4, 4)
    block = visual.transformer.resblocks[-1]
    assert type(block) is ResidualAttentionBlock
    assert isinstance(block.attn, nn.MultiheadAttention) and block.attn.batch_first
    assert block.attn.in_proj_weight.shape == (3 * 64, 64) and block.attn.num_heads == 4
    for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"):
        assert hasattr(block, name), name
    resnet = rn.visual
    assert isinstance(resnet, ModifiedResNet)
    for name in ("stem", "layer1", "layer2", "layer3", "layer4", "attnpool"):
        assert hasattr(resnet, name), name
    for name in ("q_proj", "k_proj", "v_proj", "c_proj", "positional_embedding", "num_heads"):
        assert hasattr(resnet.attnpool, name), name


def test_bundle_fields(vit, rn):
    assert (vit.kind, vit.patch_size, vit.image_size, vit.embed_dim, vit.num_blocks) == ("vit", 8, 32, 32, 3)
    assert (rn.kind, rn.patch_size, rn.image_size) == ("rn", 32, 64)
    assert not vit.model.training and not any(p.requires_grad for p in vit.model.parameters())
    tokens = vit.tokenizer(["a photo of a cat.", "a dog"])
    assert tokens.dtype == torch.long and tokens.shape == (2, CONTEXT)


# ---------------------------------------------------------------- taps and image encoding


def test_taps_reproduce_open_clip_exactly(vit):
    images = _images(2, 32, 32)
    pixels = prepare_images(vit, images)
    taps = block_taps(vit, images, blocks=[0, 1, -1])
    assert sorted(taps.tokens) == [0, 1, 2] and taps.grid == (4, 4)
    torch.testing.assert_close(taps.image_embedding, vit.model.encode_image(pixels), rtol=0, atol=0)
    reference = vit.visual.forward_intermediates(pixels, indices=[0, 1, 2], output_fmt="NLC", intermediates_only=True)
    for index, tokens in zip([0, 1, 2], reference["image_intermediates"]):
        torch.testing.assert_close(taps.tokens[index], tokens, rtol=0, atol=0)
        assert taps.token_map(index).shape == (2, 64, 4, 4)


def test_tapped_attention_matches_torch(vit):
    images = _images(2, 32, 32)
    taps = block_taps(vit, images, blocks=[1])
    x = vit.visual.ln_pre(
        torch.cat([vit.visual.class_embedding.expand(2, 1, -1),
                   vit.visual.conv1(prepare_images(vit, images)).flatten(2).transpose(1, 2)], 1)
        + vit.visual.positional_embedding
    )
    x = vit.visual.transformer.resblocks[0](x)
    block = vit.visual.transformer.resblocks[1]
    normed = block.ln_1(x)
    _, expected = block.attn(normed, normed, normed, need_weights=True, average_attn_weights=True)
    attention = taps.attentions[1]
    assert attention.shape == (2, 17, 17)
    torch.testing.assert_close(attention, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 17))
    without_cls = block_taps(vit, images, blocks=[-2], drop_cls=True)
    torch.testing.assert_close(without_cls.attentions[1], attention[:, 1:, 1:])
    torch.testing.assert_close(taps.mean_attention(), attention)


def test_rn_encode_image_matches_open_clip(rn):
    images = _images(2, 64, 64)
    torch.testing.assert_close(encode_image(rn, images), rn.model.encode_image(prepare_images(rn, images)))
    assert encode_image(rn, _images(1, 96, 160)).shape == (1, 32)


def test_positional_interpolation(vit):
    positions = vit.visual.positional_embedding  # (1 + 16, 64)
    assert resize_positional_embedding(positions, (4, 4), (4, 4)) is positions
    resized = resize_positional_embedding(positions, (4, 4), (5, 7))
    assert resized.shape == (1 + 35, 64)
    torch.testing.assert_close(resized[0], positions[0])  # class token kept
    constant = torch.ones(17, 3)
    torch.testing.assert_close(resize_positional_embedding(constant, (4, 4), (9, 6)), torch.ones(55, 3))
    state = {"visual.positional_embedding": positions.detach().clone()}  # open_clip's own resize, 4x4 -> 5x5
    target = open_clip.CLIP(**{**VIT_CFG, "vision_cfg": {**VIT_CFG["vision_cfg"], "image_size": 40}})
    open_clip.model.resize_pos_embed(state, target)
    expected = state["visual.positional_embedding"]
    torch.testing.assert_close(resize_positional_embedding(positions, (4, 4), (5, 5)), expected)
    taps = block_taps(vit, _images(1, 40, 56), blocks=[-1])  # any size runs: 5 x 7 tokens
    assert taps.grid == (5, 7) and taps.tokens[2].shape == (1, 35, 64)


# ---------------------------------------------------------------- MaskCLIP


def test_maskclip_vit_is_the_value_path(vit):
    """Reference: open_clip's own last block with attention forced onto the diagonal
    (each token attends to itself only) equals the value path out_proj(v(ln_1(x)))."""
    images = _images(2, 32, 32)
    features, keys = maskclip_features_and_keys(vit, images)
    assert features.shape == (2, 32, 4, 4) and keys.shape == (2, 64, 4, 4)
    pixels = prepare_images(vit, images)
    x = vit.visual.forward_intermediates(pixels, indices=[1], output_fmt="NLC", intermediates_only=True,
                                         output_extra_tokens=True)
    x = torch.cat([x["image_intermediates_prefix"][0], x["image_intermediates"][0]], dim=1)  # (2, 17, 64)
    diagonal_only = torch.full((17, 17), float("-inf")).fill_diagonal_(0.0)
    x = vit.visual.transformer.resblocks[-1](x, attn_mask=diagonal_only)
    expected = (vit.visual.ln_post(x[:, 1:]) @ vit.visual.proj).transpose(1, 2).reshape(2, 32, 4, 4)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    assert maskclip_features(vit, _images(1, 48, 40)).shape == (1, 32, 6, 5)


@pytest.mark.parametrize("kind", ["vit", "rn"])
def test_image_and_dense_embeddings_are_the_inference_functions_with_autograd(kind, vit, rn):
    bundle = {"vit": vit, "rn": rn}[kind]
    images = _images(2, bundle.image_size, bundle.image_size).requires_grad_(True)
    image, dense = image_and_dense_embeddings(bundle, images)  # (2, D), (2, N, D)
    with torch.no_grad():
        features = maskclip_features(bundle, images)  # (2, D, h, w)
        torch.testing.assert_close(image, encode_image(bundle, images))  # no_grad may take MHA's fast path
    torch.testing.assert_close(dense, features.flatten(2).transpose(1, 2))
    (gradient,) = torch.autograd.grad(image.sum() + dense.sum(), images)
    assert gradient.abs().sum() > 0


def test_maskclip_rn_is_value_then_c_proj(rn):
    images = _images(2, 64, 64)
    features, keys = maskclip_features_and_keys(rn, images)
    trunk = rn.visual.stem(prepare_images(rn, images))
    for stage in (rn.visual.layer1, rn.visual.layer2, rn.visual.layer3, rn.visual.layer4):
        trunk = stage(trunk)
    pool = rn.visual.attnpool
    per_position = trunk.permute(0, 2, 3, 1)  # (B, h, w, C)
    expected = pool.c_proj(pool.v_proj(per_position)).permute(0, 3, 1, 2)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(keys, pool.k_proj(per_position).permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert features.shape == (2, 32, 2, 2)


def test_segment_with_text_is_cosine(vit):
    images = _images(2, 32, 32)
    text = torch.randn(3, 32)
    logits = segment_with_text(vit, images, text)
    features = F.normalize(maskclip_features(vit, images), dim=1)
    expected = torch.einsum("bdhw,nd->bnhw", features, F.normalize(text, dim=-1))
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(cosine_logits(maskclip_features(vit, images), text), expected)
    assert logits.abs().max() <= 1 + 1e-5
    refined = segment_with_text(vit, images, text, prompt_denoising=0.5, key_smoothing=1.0)
    assert refined.shape == (2, 3, 4, 4) and torch.isfinite(refined).all()


def test_prompt_denoising_definition():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0] = 0.3  # class 0 wins everywhere
    logits[0, 1, 0, 0] = 0.31  # class 1 wins one position by a hair: softmax(100x) ~ 0.5
    logits[0, 2] = -0.5  # class 2 is never confident
    denoised = denoise_prompts(logits, threshold=0.5)
    probabilities = torch.softmax(logits / 0.01, dim=1).flatten(2).amax(-1)[0]
    for c in range(3):
        removed = bool(probabilities[c] < 0.5)
        assert torch.all(denoised[0, c] == -100.0) == removed
        if not removed:
            torch.testing.assert_close(denoised[0, c], logits[0, c])
    assert torch.all(denoised[0, 2] == -100.0) and torch.equal(denoised[0, 0], logits[0, 0])


def test_key_smoothing_definition():
    torch.manual_seed(0)
    logits, keys = torch.randn(2, 3, 2, 3), torch.randn(2, 5, 2, 3)
    probabilities = torch.softmax(logits / 0.01, dim=1).flatten(2).transpose(1, 2)  # (B, N, n)
    k = keys.flatten(2).transpose(1, 2)  # (B, N, C)
    cosine = F.cosine_similarity(k[:, :, None], k[:, None, :], dim=-1)  # (B, N, N)
    expected = (cosine @ probabilities).transpose(1, 2).reshape(2, 3, 2, 3)
    torch.testing.assert_close(smooth_with_keys(logits, keys, threshold=1.01), expected)
    kept = smooth_with_keys(logits, keys, threshold=0.0)  # no position below threshold: plain softmax
    torch.testing.assert_close(kept, torch.softmax(logits / 0.01, dim=1))
    by_position = F.normalize(k, dim=1)  # MaskCLIP's released code
    code_variant = ((by_position @ by_position.transpose(1, 2)) @ probabilities).transpose(1, 2).reshape(2, 3, 2, 3)
    torch.testing.assert_close(smooth_with_keys(logits, keys, 1.01, normalize_over="positions"), code_variant)


# ---------------------------------------------------------------- GradCAM


def test_gradcam_linear_score_is_analytic_and_batched(vit):
    torch.manual_seed(0)
    images = _images(3, 32, 32)
    direction = torch.randn(64)

    def linear_score(tokens):  # score_b = sum_i <a, token_bi>, so dS/dA = a everywhere
        return (tokens @ direction).sum(dim=1)

    maps = gradcam(vit, images, linear_score)
    tokens = block_taps(vit, images, blocks=[-1], with_attention=False).tokens[2]
    expected = torch.relu(tokens @ direction).reshape(3, 4, 4)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-5)
    text, targets = torch.randn(4, 32), torch.tensor([0, 2, 1])
    for activation in ("last_block_output", "last_block_ln_1"):
        batched = gradcam(vit, images, softmax_score(vit, text, targets), activation=activation)
        assert (batched >= 0).all() and batched.sum() > 0
        for b in range(3):
            single = gradcam(vit, images[b : b + 1], softmax_score(vit, text, int(targets[b])), activation=activation)
            torch.testing.assert_close(batched[b : b + 1], single, rtol=1e-4, atol=1e-7)
    scaled = gradcam(vit, images, linear_score, normalize=True)
    assert scaled.amax(dim=(1, 2)).allclose(torch.ones(3), atol=1e-4) and scaled.amin() >= 0


def test_gradcam_on_a_resnet_taps_layer4_and_pools_with_attention(rn):
    torch.manual_seed(0)
    images = _images(3, 64, 64)
    direction = torch.randn(256)
    maps = gradcam(rn, images, lambda tokens: (tokens @ direction).sum(dim=1))  # (3, 2, 2)
    with torch.no_grad():
        trunk = rn.visual.stem(prepare_images(rn, images))
        for stage in (rn.visual.layer1, rn.visual.layer2, rn.visual.layer3, rn.visual.layer4):
            trunk = stage(trunk)  # (3, C, 2, 2)
    torch.testing.assert_close(maps, torch.relu(torch.einsum("bchw,c->bhw", trunk, direction)), rtol=1e-5, atol=1e-5)
    text = torch.randn(2, 32)
    scores = softmax_score(rn, text, 0)(trunk.flatten(2).transpose(1, 2))  # the attention-pooled image token
    image = F.normalize(rn.model.encode_image(prepare_images(rn, images)), dim=-1)
    torch.testing.assert_close(scores, torch.softmax(image @ F.normalize(text, dim=-1).T / 0.01, dim=-1)[:, 0])
    assert gradcam(rn, images, softmax_score(rn, text, 1), normalize=True).amax() <= 1
    with pytest.raises(ClipInputError, match="only for ViTs"):
        gradcam(rn, images, softmax_score(rn, text, 0), activation="last_block_ln_1")
    with pytest.raises(ClipInputError, match="square"):
        gradcam(rn, _images(1, 64, 96), softmax_score(rn, text, 0))


def test_gradcam_from_recorded_taps_equals_the_gradcam_that_runs_the_tower(vit, monkeypatch):
    """Handed the block_taps of the same images, GradCAM starts from the recorded block (the last one, or the one
    before it for the official ln_1 layer): the maps are equal bit for bit and the tower does not run again."""
    import importlib

    gradcam_module = importlib.import_module("fsslib.clip.gradcam")  # the package's `gradcam` is the function

    torch.manual_seed(0)
    images = _images(3, 32, 32)
    text, targets = torch.randn(4, 32), torch.tensor([0, 2, 1])
    with torch.no_grad():  # as PI-CLIP records them
        taps = block_taps(vit, images, blocks=[-2, -1], with_attention=True, drop_cls=True)
    expected = {activation: gradcam(vit, images, softmax_score(vit, text, targets), activation=activation, normalize=True)
                for activation in ("last_block_output", "last_block_ln_1")}

    def tower_runs(*args, **kwargs):
        raise AssertionError("GradCAM ran the tower although it was given the taps")

    monkeypatch.setattr(gradcam_module, "_vit_embed", tower_runs)
    for activation, maps in expected.items():
        from_taps = gradcam(vit, images, softmax_score(vit, text, targets), activation=activation, normalize=True, taps=taps)
        assert torch.equal(from_taps, maps), activation
    last_only = block_taps(vit, images, blocks=[-1], with_attention=False)
    with pytest.raises(ClipInputError, match="the block before the last"):
        gradcam(vit, images, softmax_score(vit, text, targets), activation="last_block_ln_1", taps=last_only)
    with pytest.raises(ClipInputError, match="2 images, the batch 3"):
        two = block_taps(vit, images[:2], blocks=[-1], with_attention=False)
        gradcam(vit, images, softmax_score(vit, text, targets), taps=two)


def test_gradcam_rejects_bad_scores(vit):
    with pytest.raises(ClipInputError, match="one score per image"):
        gradcam(vit, _images(2, 32, 32), lambda tokens: tokens.sum())


def test_softmax_score_matches_piclip_equations(vit):
    tokens = torch.randn(2, 16, 64)
    text = torch.randn(2, 32)
    image = F.normalize(project_tokens(vit, tokens).mean(1), dim=-1)  # Eq. 1
    expected = torch.softmax(image @ F.normalize(text, dim=-1).T / 0.01, dim=-1)[:, 1]  # Eq. 2
    torch.testing.assert_close(softmax_score(vit, text, 1)(tokens), expected)


# ---------------------------------------------------------------- text


def test_templates():
    assert len(IMAGENET_TEMPLATES) == 80 and len(MASKCLIP_SCENE_TEMPLATES) == 5 and len(MASKCLIP_TEMPLATES) == 85
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert MASKCLIP_TEMPLATES[80:] == MASKCLIP_SCENE_TEMPLATES
    assert MASKCLIP_SCENE_TEMPLATES[0] == "there is a {} in the scene."
    assert all(template.count("{}") == 1 for template in MASKCLIP_TEMPLATES)


def test_class_embeddings_ensemble_batching_and_cache(vit, monkeypatch):
    clear_text_cache()
    names, templates = ["cat", "dog", "dining table"], ["a photo of a {}.", "a drawing of the {}.", "{}"]
    calls = []
    original = vit.model.encode_text
    monkeypatch.setattr(vit.model, "encode_text", lambda tokens: calls.append(len(tokens)) or original(tokens))
    embeddings = class_embeddings(vit, names, templates, batch_size=4)
    assert embeddings.shape == (3, 32) and calls == [4, 4, 1]  # 9 prompts in ceil(9 / 4) passes
    for c, name in enumerate(names):
        per_template = F.normalize(original(vit.tokenizer([t.format(name) for t in templates])), dim=-1)
        torch.testing.assert_close(embeddings[c], F.normalize(per_template.mean(0), dim=-1), rtol=1e-5, atol=1e-6)
    calls.clear()
    again = class_embeddings(vit, names, templates, batch_size=4)
    assert calls == [] and torch.equal(again, embeddings)
    again.zero_()  # callers get a copy
    assert torch.equal(class_embeddings(vit, names, templates), embeddings) and calls == []
    class_embeddings(vit, names[:2], templates)
    class_embeddings(vit, names, templates[:2])
    assert len(calls) == 2  # other names or templates: recomputed, one pass each
    default = class_embeddings(vit, ["cat"])
    assert calls[-1] == 85 and default.shape == (1, 32)


def test_prompt_embeddings(vit):
    prompts = ["a photo of cat.", "a photo without cat."]
    embeddings = prompt_embeddings(vit, prompts)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(embeddings[1], prompt_embeddings(vit, prompts[1:])[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ClipInputError, match="list"):
        prompt_embeddings(vit, "a photo of cat.")
    with pytest.raises(ClipInputError, match="placeholder"):
        class_embeddings(vit, ["cat"], ["a photo."])


# ---------------------------------------------------------------- loading


def _save_checkpoint(model: nn.Module, cfg: dict, path, image_size: int) -> None:
    torch.save({"model_cfg": cfg, "state_dict": model.state_dict(), "context_length": CONTEXT,
                "image_size": image_size, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, path)


def test_load_fsslib_checkpoint_by_path_and_toy_name(vit, tmp_path, monkeypatch):
    _save_checkpoint(vit.model, VIT_CFG, tmp_path / "toy_clip_vit.pt", 32)
    monkeypatch.setattr(loading.paths, "CHECKPOINT_DIR", tmp_path)
    for bundle in (load_clip(str(tmp_path / "toy_clip_vit.pt")), load_clip("toy-vit")):
        assert bundle.kind == "vit" and bundle.mean == (0.5, 0.5, 0.5) and bundle.image_size == 32
        assert not bundle.model.training
        tokens = bundle.tokenizer(["a photo of a cat."])
        assert tokens.dtype == torch.long and tokens.shape == (1, CONTEXT)
        torch.testing.assert_close(bundle.model.encode_text(tokens), vit.model.encode_text(tokens))
    with pytest.raises(CheckpointError, match="toy_clip_rn.pt"):
        load_clip("toy-rn")
    torch.save(vit.model.state_dict(), tmp_path / "weights_only.pt")
    with pytest.raises(CheckpointError, match="name the architecture"):
        load_clip(str(tmp_path / "weights_only.pt"))


@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_toy_format_checkpoint_with_word_vocabulary(arch, tmp_path, monkeypatch):
    """A checkpoint in the toy format (word vocabulary) goes through fsslib.clip.toy's
    builder and tokenizer; toy-rn has feature stride 8."""
    vocab = ["a", "photo", "of", "without", "red", "circle", "."]
    cfg = toy.default_model_cfg(arch, image_size=64, vocab_size=len(vocab) + 4, context_length=8)
    model = toy.build_toy_clip(cfg)
    torch.save({"model_cfg": cfg, "state_dict": model.state_dict(), "vocab": vocab, "context_length": 8,
                "image_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3}, tmp_path / f"toy_clip_{arch}.pt")
    monkeypatch.setattr(loading.paths, "CHECKPOINT_DIR", tmp_path)
    bundle = load_clip(f"toy-{arch}")
    assert isinstance(bundle.tokenizer, toy.WordTokenizer) and bundle.patch_size == 8 and bundle.model_cfg == cfg
    images = _images(2, 64, 64)
    torch.testing.assert_close(encode_image(bundle, images), bundle.model.encode_image(prepare_images(bundle, images)))
    assert maskclip_features(bundle, images).shape == (2, bundle.embed_dim, 8, 8)
    assert prompt_embeddings(bundle, ["a photo of red circle."]).shape == (1, bundle.embed_dim)
    with pytest.raises(ClipInputError, match=r"(?s)does not know the word\(s\) \['cat', 'zebra'\].*did you mean"):
        class_embeddings(bundle, ["zebra", "red cat"], ["a photo of {}."])  # would be <unk>: a clear error instead


@pytest.mark.parametrize("name", ["toy-vit", "toy-rn"])
def test_shipped_toy_checkpoints(name):
    path = loading.paths.CHECKPOINT_DIR / loading.TOY_CHECKPOINT_FILES[name]
    assert path.is_file(), f"{path.name} is shipped (tracked in git) and missing"
    bundle = load_clip(name)
    images = _images(2, bundle.image_size, bundle.image_size)
    features = maskclip_features(bundle, images)
    assert features.shape[:2] == (2, bundle.embed_dim)
    assert class_embeddings(bundle, ["square"], ["a {}"]).shape == (1, bundle.embed_dim)


def test_offline_error_never_touches_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "weights"))

    def forbidden(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_hf", forbidden)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", forbidden)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", forbidden)
    with pytest.raises(CheckpointError) as caught:
        load_clip("ViT-B-16", pretrained="openai")
    message = str(caught.value)
    assert "open_clip_model.safetensors" in message and "timm/vit_base_patch16_clip_224.openai" in message
    fetch = "on a connected machine run once:  python -m fsslib.fetch weights ViT-B-16/openai"
    assert caught.value.fix.startswith(fetch)
    assert "python -c \"import open_clip; print(open_clip.download_pretrained(" in caught.value.fix
    assert "checkpoint=PATH" in caught.value.fix and "never downloads" not in message
    with pytest.raises(CheckpointError, match="does not exist"):
        load_clip("ViT-B-16", pretrained="openai", checkpoint=tmp_path / "missing.safetensors")


def test_open_clip_name_with_tag_loads_from_cache_and_checkpoint(vit, tmp_path, monkeypatch):
    """End to end through open_clip: a tiny architecture registered under a test name with
    a fake tag, its weights placed in a fake Hugging Face cache; nothing is downloaded."""
    name = "fsslib-test-tiny-vit"
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, name, VIT_CFG)
    tag_cfg = {"url": "", "hf_hub": "fsslib/tiny-test/", "quick_gelu": True, "mean": (0.1, 0.2, 0.3),
               "std": (0.3, 0.2, 0.1)}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, name, {"openai": tag_cfg})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(CheckpointError, match="fsslib/tiny-test"):
        load_clip(name, pretrained="openai")
    snapshot = tmp_path / "hub" / "models--fsslib--tiny-test" / "snapshots" / "rev0"
    snapshot.mkdir(parents=True)
    torch.save(vit.model.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    for bundle in (load_clip(name, pretrained="openai"),
                   load_clip(name, pretrained="openai", checkpoint=snapshot / "open_clip_pytorch_model.bin")):
        assert bundle.mean == (0.1, 0.2, 0.3) and bundle.std == (0.3, 0.2, 0.1) and bundle.pretrained == "openai"
        assert isinstance(bundle.visual.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
        torch.testing.assert_close(bundle.visual.proj, vit.visual.proj)
        assert not bundle.model.training


def test_cached_weights_are_found_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "weights"))
    assert find_cached_weights("RN50", "openai") is None
    snapshot = tmp_path / "hub" / "models--timm--resnet50_clip.openai" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"")
    (tmp_path / "hub" / "models--timm--resnet50_clip.openai" / "refs").mkdir()
    (tmp_path / "hub" / "models--timm--resnet50_clip.openai" / "refs" / "main").write_text("abc123")
    assert find_cached_weights("RN50", "openai") == snapshot / "open_clip_pytorch_model.bin"
    (snapshot / "open_clip_model.safetensors").write_bytes(b"")
    assert find_cached_weights("RN50", "openai") == snapshot / "open_clip_model.safetensors"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "RN50_openai.pt").write_bytes(b"")
    assert find_cached_weights("RN50", "openai") == tmp_path / "weights" / "RN50_openai.pt"


def test_unknown_names():
    with pytest.raises(UnknownNameError, match="ViT-B-16"):
        load_clip("ViT-B-61")
    with pytest.raises(UnknownNameError, match="openai"):
        load_clip("ViT-B-16", pretrained="imagenet")


def test_bad_images_get_clear_errors(vit, rn):
    with pytest.raises(ClipInputError, match=r"\(B, 3, H, W\)"):
        maskclip_features(vit, torch.rand(3, 32, 32))
    with pytest.raises(ClipInputError, match="uint8"):
        maskclip_features(vit, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ClipInputError, match="outside"):
        maskclip_features(vit, 255 * torch.rand(1, 3, 32, 32))
    with pytest.raises(ClipInputError, match="smaller"):
        maskclip_features(rn, torch.rand(1, 3, 16, 64))
    with pytest.raises(ClipInputError, match="ViT"):
        block_taps(rn, torch.rand(1, 3, 64, 64), [0])
    with pytest.raises(ClipInputError, match="out of range"):
        block_taps(vit, torch.rand(1, 3, 32, 32), [3])
    with pytest.raises(ClipInputError, match="text embeddings"):
        segment_with_text(vit, torch.rand(1, 3, 32, 32), torch.randn(3, 7))


# ---------------------------------------------------------------- paper-sized plumbing


def test_paper_sized_models_random_weights(random_vit_b16, random_rn50_clip):
    """load_clip's random ViT-B/16 and RN50, as the session's fixtures build them once."""
    vit_b16 = random_vit_b16
    assert (vit_b16.kind, vit_b16.patch_size, vit_b16.image_size, vit_b16.embed_dim) == ("vit", 16, 224, 512)
    with torch.no_grad():
        features = maskclip_features(vit_b16, torch.rand(1, 3, 473, 473))
    assert features.shape == (1, 512, 29, 29)  # PI-CLIP: 473 / 16 -> 29 x 29 tokens
    rn50 = random_rn50_clip
    assert (rn50.kind, rn50.patch_size, rn50.embed_dim) == ("rn", 32, 1024)
    with torch.no_grad():
        features = maskclip_features(rn50, torch.rand(1, 3, 128, 160))
        logits = segment_with_text(rn50, torch.rand(1, 3, 128, 160), torch.randn(2, 1024))
    assert features.shape == (1, 1024, 4, 5) and logits.shape == (1, 2, 4, 5)
    assert math.isfinite(float(features.abs().sum()))
