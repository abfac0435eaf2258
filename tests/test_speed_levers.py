"""The GPU speed levers, checked on the CPU: losses read once per epoch (the same log), the base-class lookup
and PI-CLIP's prompt table without host reads (the same values), HDMNet's self-attention through
``scaled_dot_product_attention`` (the same outputs and gradients), ``channels_last`` and ``compile`` (the same
training step). Their timings need a GPU: ``benchmarks/gpu_speed.py``."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fsslib import train
from fsslib.blocks.base_learner import base_class_index, base_class_table
from fsslib.methods.piclip.priors import vtp_prompt_table


def test_logged_losses_are_the_mean_of_each_step_s_item_bit_for_bit(tiny_cfg, tmp_path, monkeypatch):
    steps: list[float] = []
    forward = train.LossModule.forward

    def recorded(self, batch):
        loss = forward(self, batch)
        steps.append(loss.item())  # what the trainer read every step before
        return loss

    monkeypatch.setattr(train.LossModule, "forward", recorded)
    out = tmp_path / "two"
    train.run(tiny_cfg(method="prototype", epochs=2, episodes_per_epoch=16, val_episodes=4, batch_size=4, device="cpu",
                       out=str(out)))
    logged = [json.loads(line)["train_loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged == [float(np.mean(steps[:4])), float(np.mean(steps[4:]))]  # 4 steps an epoch, equal bit for bit



def test_the_trainer_applies_the_speed_settings_and_says_so(tiny_cfg, tmp_path):
    summary = train.run(tiny_cfg(method="prototype", epochs=1, episodes_per_epoch=8, val_episodes=4, batch_size=4,
                                 device="cpu", channels_last=True, fused_attention=True, out=str(tmp_path / "fast")))
    assert summary["speed_settings"] == {"fused_attention_layers": 0, "channels_last": True}  # no attention here

def test_epoch_mean_reads_bf16_and_float32_losses_as_item_does():
    losses = [torch.tensor(v, dtype=dtype) for v in (0.1, 1 / 3, 2.7) for dtype in (torch.float32, torch.bfloat16)]
    for dtype in (torch.float32, torch.bfloat16):
        kept = [loss for loss in losses if loss.dtype == dtype]
        assert train.epoch_mean(kept) == float(np.mean([loss.item() for loss in kept]))


def test_base_class_index_from_a_table_equals_the_lookup():
    base_ids = [1, 2, 3, 7, 9]
    ids = torch.tensor([[1], [4], [9], [12], [7]])
    expected = torch.tensor([[1], [0], [5], [0], [4]])
    assert torch.equal(base_class_index(ids, base_ids), expected)
    assert torch.equal(base_class_index(ids, base_class_table(base_ids)), expected)


def test_vtp_prompt_table_of_the_episode_classes_is_gathered_as_the_rows_were():
    target, non_target = torch.randn(5, 8), torch.randn(5, 8)
    prompts, valid = vtp_prompt_table(target, non_target, torch.tensor([3, 0, 3]))
    assert torch.equal(prompts, torch.stack([torch.stack([target[r], non_target[r]]) for r in (3, 0, 3)]))
    assert valid.shape == (3, 2) and bool(valid.all())


def test_fused_self_attention_equals_the_written_out_one_forward_and_backward(monkeypatch):
    import copy

    from fsslib.blocks.hierarchical import HierarchicalTransformer, TransformerSize
    from fsslib.speed import fused_attention

    torch.manual_seed(0)
    size = TransformerSize(16, (1, 2, 4), (4, 2, 1), (1, 3, 3), (1, 2, 2), 2, 2, 0.0)  # no dropout: both see the same
    plain = HierarchicalTransformer(size, guide_channels=2).train()
    fused = copy.deepcopy(plain)
    assert fused_attention(fused) == 9  # 2 self-attention layers and 1 matching layer per level (its cross-attention
    # stays written out)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    query, support = torch.randn(2, 16, 12, 12), torch.randn(2, 16, 12, 12)
    masks = (torch.rand(2, 48, 48) > 0.5).long()
    guide = torch.rand(2, 2, 12, 12)
    outputs = []
    for model in (plain, fused):
        inputs = [query.clone().requires_grad_(), support.clone().requires_grad_()]
        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
            logits, correlations = model(*inputs, masks, guide)
        (logits.square().mean() + sum(c.mean() for c in correlations)).backward()
        outputs.append((logits, correlations, [x.grad for x in inputs], [p.grad for p in model.parameters()]))
    (logits, correlations, input_grads, grads), (f_logits, f_correlations, f_input_grads, f_grads) = outputs
    assert len(calls) == 6  # the fused model's self-attention only
    # float32 rounding of another summation order (it grows with the thread count): 1e-5 apart, not bit for bit
    torch.testing.assert_close(f_logits, logits, rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(f_correlations + f_input_grads + f_grads, correlations + input_grads + grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def toy_batch(size: int = 64, batch_size: int = 2):
    """Two 1-way 1-shot toy episodes of random images, a centred square as every mask (class 1: a base class)."""
    from fsslib.data.episodes import EpisodeBatch

    generator = torch.Generator().manual_seed(1)
    masks = torch.zeros(batch_size, 1, 1, size, size, dtype=torch.long)
    masks[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    return EpisodeBatch(torch.rand(batch_size, 1, 1, 3, size, size, generator=generator), masks,
                        torch.rand(batch_size, 3, size, size, generator=generator), masks[:, 0, 0].clone(),
                        list(masks[:, 0, 0]), torch.ones(batch_size, 1, dtype=torch.long), [["solid circle"]] * batch_size)


def one_step(method: str, **speed) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss and the gradients of one toy training step of ``method`` (seeded: the same dropout). Gradients, not
    the updated weights: AdamW's first step moves each weight by about lr times the sign of its gradient, so a
    gradient near 0 would turn rounding into a difference of 2 lr."""
    from fsslib.config import make_config
    from fsslib.methods import build_method, method_options
    from fsslib.speed import apply_speed_settings

    torch.manual_seed(0)
    cfg = make_config(method=method, smoke=True, device="cpu",
                      options={"base_learner": "random"} if "base_learner" in method_options(method) else {})
    model = build_method(cfg)
    apply_speed_settings(model, **speed)
    model.train()
    loss = model.loss(toy_batch())
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_a_channels_last_step_equals_the_default_one():
    from fsslib.config import make_config
    from fsslib.methods import build_method
    from fsslib.speed import apply_speed_settings

    model = build_method(make_config(method="hdmnet", smoke=True, device="cpu", options={"base_learner": "random"}))
    done = apply_speed_settings(model, channels_last=True, fused=True)  # they took: the equality below is theirs
    assert done["fused_attention_layers"] > 0 and done["channels_last"]
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convolutions)
    loss, weights = one_step("hdmnet")
    fast_loss, fast_weights = one_step("hdmnet", channels_last=True, fused=True)
    torch.testing.assert_close(fast_loss, loss, rtol=1e-4, atol=1e-5)
    assert fast_weights.keys() == weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(fast_weights[name], value, rtol=1e-3, atol=1e-5, msg=lambda text, name=name: f"{name}: {text}")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FSSLIB_REHEARSAL"), reason="compiles with Inductor (minutes of CPU): "
                    "FSSLIB_REHEARSAL=1 runs it")
@pytest.mark.parametrize("method", ["pfenet", "piclip"])  # PI-CLIP: its CLIP's ViT blocks compiled too
def test_a_compiled_step_equals_the_eager_one(method, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    loss, weights = one_step(method)
    fast_loss, fast_weights = one_step(method, compile=True)
    torch.testing.assert_close(fast_loss, loss, rtol=1e-4, atol=1e-5)
    assert fast_weights.keys() == weights.keys()  # Module.compile keeps the names: checkpoints are unchanged
    for name, value in weights.items():
        torch.testing.assert_close(fast_weights[name], value, rtol=1e-3, atol=1e-5, msg=lambda text, name=name: f"{name}: {text}")


def test_compile_regions_hold_each_block_of_a_frozen_clip_vit_once():
    """PI-CLIP's priors run its frozen CLIP's ViT on the query and every support: each residual block is a region
    (one graph for blocks of one shape); a CLIP held under two names is compiled once; a ResNet CLIP (LFSS) adds none."""
    from fsslib.config import make_config
    from fsslib.methods import build_method
    from fsslib.speed import compiled_parts

    model = build_method(make_config(method="piclip", device="cpu"))
    clip = model.prior.clip
    model.prior.hold_frozen("again", clip)
    parts = dict(compiled_parts(model))
    blocks = [name for name in parts if ".visual.transformer.resblocks." in name]
    assert blocks == [f"prior.clip.visual.transformer.resblocks.{i}" for i in range(len(clip.visual.transformer.resblocks))]
    assert [parts[name] for name in blocks] == list(clip.visual.transformer.resblocks)
    assert {"backbone", "decoder"} <= parts.keys()
    assert not any("resblocks" in name for name, _ in compiled_parts(build_method(make_config(method="lfss", device="cpu"))))


def test_compile_regions_pass_torch_compile_s_mode_to_every_region(monkeypatch):
    """``compile_mode`` (the GPU benchmark's ``compile_graphs`` row: ``reduce-overhead``, CUDA graphs) reaches each
    region's ``Module.compile``; nothing compiles here (the call is recorded)."""
    from fsslib.config import make_config
    from fsslib.methods import build_method
    from fsslib.speed import apply_speed_settings, compiled_parts

    calls: list[tuple[int, dict]] = []

    def record(self, **options):
        calls.append((id(self), options))
        self._compiled_call_impl = self._call_impl  # as Module.compile leaves it, uncompiled

    monkeypatch.setattr(torch.nn.Module, "compile", record)
    model = build_method(make_config(method="pfenet", device="cpu"))
    done = apply_speed_settings(model, compile=True, compile_mode="reduce-overhead")
    assert done["compiled"] == [name for name, _ in compiled_parts(model)] and len(calls) == len(done["compiled"]) > 1
    assert {region for region, _ in calls} == {id(module) for _, module in compiled_parts(model)}
    assert all(options == {"mode": "reduce-overhead"} for _, options in calls)
    calls.clear()
    apply_speed_settings(model, compile=True)
    assert calls and all(options == {"mode": "default"} for _, options in calls)  # the trainer's --compile


def test_a_cuda_graph_region_returns_copies_of_its_outputs_in_evaluation_only():
    """Under CUDA graphs a region's outputs live in memory that its next replay may reuse: in evaluation (no
    gradient recorded) the region returns copies, made outside the graph; in training its own outputs. A stand-in
    for the compiled call returns one buffer, as a replayed graph does."""
    from fsslib.speed import clones_inference_outputs

    region = torch.nn.Identity()
    with pytest.raises(ValueError, match="call module.compile"):
        clones_inference_outputs(region)
    buffer = torch.ones(3, requires_grad=True)
    region._compiled_call_impl = lambda *inputs: (buffer, {"scores": buffer * 2})
    clones_inference_outputs(region)
    with torch.no_grad():
        features, extra = region(torch.zeros(3))
    assert features.data_ptr() != buffer.data_ptr() and torch.equal(features, buffer.detach())
    assert torch.equal(extra["scores"], buffer.detach() * 2)
    features, _ = region(torch.zeros(3))
    assert features is buffer
