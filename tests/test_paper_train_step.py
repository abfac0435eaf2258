"""The paper-tier speed benchmark's FLOP count and share of peak (benchmarks/paper_train_step.py); its timings
need a GPU and are not tested here."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "paper_train_step.py"
spec = importlib.util.spec_from_file_location("paper_train_step", SCRIPT)
paper_train_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_train_step)


def test_a_step_s_flops_count_the_forward_and_backward_products():
    layer = torch.nn.Linear(32, 16, bias=False)
    inputs = torch.randn(8, 32)

    def step() -> None:
        layer(inputs).sum().backward()

    # forward 2 N in out; backward: the weight's gradient only (the input needs none), 2 N in out
    assert paper_train_step.step_flops(step) == 2 * (2 * 8 * 32 * 16)


def test_the_peak_is_known_for_h100_and_h200_only():
    assert paper_train_step.peak_tflops("NVIDIA H200", "bf16") == 989.0
    assert paper_train_step.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 67.0
    assert paper_train_step.peak_tflops("CPU", "bf16") is None
