"""Training and inference speed at paper resolution (473 x 473) with random weights, on CUDA.

    python benchmarks/paper_train_step.py                  # PFENet and PI-CLIP(PFENet), bf16 autocast and fp32
    python benchmarks/paper_train_step.py --methods pfenet --batch-size 8

Paper tier models (ResNet-50 backbone, open_clip ViT-B/16 for PI-CLIP) with random
weights, so nothing needs downloading; the batches are fabricated episodes (a centred
square as every mask). A training step is what ``fsslib.train`` runs per batch: forward
under ``fsslib.device.autocast``, the method's loss, backward, optimiser step. Peak
memory is the CUDA allocator's peak over the timed steps. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from fsslib.config import make_config
from fsslib.device import autocast
from fsslib.methods import build_method
from fsslib.train import make_optimizer
from piclip_priors import fabricated_batch


def measure(method: str, batch_size: int, shots: int, amp: bool, steps: int, warmup: int) -> dict[str, float]:
    """Training steps/s, inference episodes/s and peak training memory (MB) of one method."""
    device = torch.device("cuda")
    options = {"clip_pretrained": None} if method == "piclip" else {}
    cfg = make_config(method=method, preset="paper", shots=shots, batch_size=batch_size, amp=amp,
                      backbone_weights="random", options=options)
    model = build_method(cfg).to(device)
    optimizer = make_optimizer(cfg, model)
    batch = fabricated_batch(batch_size, shots, cfg.image_size, device)

    def train_step() -> None:
        with autocast(device, amp):
            loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    for _ in range(warmup):
        train_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    torch.cuda.synchronize()
    train_rate = steps / (time.perf_counter() - start)
    peak_mb = torch.cuda.max_memory_allocated() / 2**20

    model.eval()
    with torch.no_grad(), autocast(device, amp):  # no inference_mode: PI-CLIP's GradCAM needs autograd
        for _ in range(warmup):
            model(batch)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            model(batch)
        torch.cuda.synchronize()
    eval_rate = steps * batch_size / (time.perf_counter() - start)
    return {"train_steps_per_s": train_rate, "eval_episodes_per_s": eval_rate, "peak_train_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["pfenet", "piclip"])
    parser.add_argument("--batch-size", type=int, default=4, help="episodes per step (PFENet's PASCAL recipe: 4)")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per row")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("paper_train_step.py measures the paper tier on a GPU; no CUDA device is available here.")
    print(f"Paper tier, random weights, {args.shots}-shot, 473x473, {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}\n")
    print("| method | precision | batch | train steps/s | train episodes/s | eval episodes/s | peak train MB |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods:
        for amp in (True, False):
            result = measure(method, args.batch_size, args.shots, amp, args.steps, args.warmup)
            print(f"| {method} | {'bf16 autocast' if amp else 'fp32'} | {args.batch_size} | "
                  f"{result['train_steps_per_s']:.2f} | {result['train_steps_per_s'] * args.batch_size:.1f} | "
                  f"{result['eval_episodes_per_s']:.1f} | {result['peak_train_mb']:.0f} |")
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
