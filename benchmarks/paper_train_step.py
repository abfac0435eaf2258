"""Training and inference speed of every trained method at its paper resolution with random weights, on CUDA.

    python benchmarks/paper_train_step.py                  # every trained method, bf16 autocast and fp32
    python benchmarks/paper_train_step.py --methods pfenet --batch-size 8
    python benchmarks/paper_train_step.py --device cpu --image-size 65 --steps 1 --warmup 0   # a smoke run

Paper tier models with random weights (each method's ResNet-50 backbone, its BatchNorm statistics calibrated;
open_clip ViT-B/16 for PI-CLIP and CLIP-DINOiser and RN50 for LFSS, random CLIP-DINOiser heads in the official
release's format, a random prior extractor for QGNet, a random frozen base learner for BAM, HDMNet and PI-CLIP on
them), so nothing needs downloading; each method at its paper preset's input size (PFENet, PI-CLIP, QGNet, BAM,
HDMNet, the prototype baseline: 473; LFSS: 400; CLIP-DINOiser: 448). The batches are fabricated 1-way
episodes of PASCAL-5i fold 0's classes (a centred square as every mask). A training step is what
``fsslib.train`` runs per batch: forward under ``fsslib.device.autocast``, the method's loss, backward,
optimiser step. Peak memory is the CUDA allocator's peak over the timed training steps. The FLOPs of one
training step (forward and backward, ``torch.utils.flop_counter``: matrix products and convolutions) over its
time give the share of the GPU's dense peak for that precision (:data:`PEAK_TFLOPS`, or ``--peak-tflops``),
where the GPU is known. Writes a Markdown report (``--out``, default ``benchmarks/results/paper_train_step_<gpu>.md``,
each of ``--runs`` a table; on the CPU it is printed only, unless ``--out`` names a file), and exits with an
error naming the rows whose training losses were not all finite (a diverged run times NaN arithmetic, not the
method).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from fsslib.config import make_config
from fsslib.data.benchmarks import get_benchmark
from fsslib.data.episodes import EpisodeBatch
from fsslib.device import autocast
from fsslib.methods import build_method
from fsslib.train import make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_report_options, command_line, default_report, run_tables, write_report  # noqa: E402

RANDOM_CLIP = {"clip_pretrained": None}
RANDOM_BASE_LEARNER = {"base_learner": "random"}
METHODS = {  # method: (variant, options replacing the paper's weights by random ones)
    "prototype": ("", {}),
    "pfenet": ("", {}),
    "piclip": ("", RANDOM_CLIP),
    "bam": ("", RANDOM_BASE_LEARNER),
    "hdmnet": ("", RANDOM_BASE_LEARNER),
    "piclip-bam": ("", {**RANDOM_CLIP, **RANDOM_BASE_LEARNER}),
    "piclip-hdmnet": ("", {**RANDOM_CLIP, **RANDOM_BASE_LEARNER}),
    "lfss": ("", RANDOM_CLIP),
    "qgnet": ("", {"prior_extractor": "random"}),
    "clip-dinoiser-support": ("trained_adapter", {**RANDOM_CLIP, "heads": "HEADS"}),
}


PEAK_TFLOPS = {  # dense peaks of the SXM parts, TFLOP/s: bf16 and TF32 on tensor cores, fp32 without them
    "H100": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0},
}


def peak_tflops(device_name: str, precision: str) -> float | None:
    """The dense peak of the named GPU for ``precision`` (:data:`PEAK_TFLOPS`), None for another device.

    A float32 step runs its products on TF32 tensor cores wherever torch allows it: cuDNN's convolutions do by
    default (``torch.backends.cudnn.allow_tf32``), matrix products only when asked. Then ``"fp32"`` reads the TF32
    peak, the largest rate such a step can reach: against the plain fp32 peak a convolutional step's share passed
    100% (142% for BAM on an H200)."""
    if precision == "fp32" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32):
        precision = "tf32"
    return next((peaks[precision] for gpu, peaks in PEAK_TFLOPS.items() if gpu in device_name), None)


def step_flops(step: Callable[[], None]) -> float:
    """The floating-point operations of one call of ``step`` (forward, backward: what the flop counter counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def random_heads(folder: Path) -> Path:
    """CLIP-DINOiser heads for ViT-B/16 in the official ``checkpoints/last.pt`` format, random."""
    path = folder / "last.pt"
    torch.save({"model_state_dict": {"obj_proj.weight": torch.randn(256, 768, 3, 3) * 0.01, "obj_proj.bias": torch.zeros(256),
                                     "bkg_decoder.weight": torch.randn(1, 768, 1, 1) * 0.01, "bkg_decoder.bias": torch.zeros(1)}},
               path)
    return path


def fabricated_batch(batch_size: int, shots: int, size: int, device: torch.device) -> EpisodeBatch:
    """1-way episodes of random images of PASCAL-5i fold 0's test classes, a centred square as every mask."""
    pascal = get_benchmark("pascal")
    class_ids = torch.tensor([pascal.fold_classes(0)[index % 5] for index in range(batch_size)])[:, None]  # (B, 1)
    masks = torch.zeros(batch_size, 1, shots, size, size, dtype=torch.long)
    masks[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    query_masks = masks[:, 0, 0].clone()  # (B, H, W)
    return EpisodeBatch(torch.rand(batch_size, 1, shots, 3, size, size), masks, torch.rand(batch_size, 3, size, size),
                        query_masks, list(query_masks), class_ids,
                        [[pascal.class_name(int(c))] for c in class_ids[:, 0]]).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method: str, batch_size: int, shots: int, amp: bool, steps: int, warmup: int, device: torch.device,
            heads: Path, image_size: int | None = None) -> dict[str, float]:
    """Training steps/s, inference episodes/s, peak training memory (MB), input size and whether every training
    loss was finite, of one method."""
    variant, options = METHODS[method]
    options = {key: str(heads) if value == "HEADS" else value for key, value in options.items()}
    cfg = make_config(method=method, preset="paper", variant=variant or None, shots=shots, batch_size=batch_size,
                      amp=amp, backbone_weights="random", options=options, image_size=image_size)
    model = build_method(cfg).to(device)
    optimizer = make_optimizer(cfg, model)
    batch = fabricated_batch(batch_size, shots, cfg.image_size, device)
    losses = []  # kept on the device: read once at the end, so that the timed steps do not wait for them

    def train_step() -> None:
        with autocast(device, amp):
            loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())

    model.train()
    for _ in range(warmup):
        train_step()
    flops = step_flops(train_step)  # one more untimed step, counted
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    synchronize(device)
    train_rate = steps / (time.perf_counter() - start)
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")

    model.eval()
    with torch.no_grad(), autocast(device, amp):  # no inference_mode: PI-CLIP's GradCAM needs autograd
        for _ in range(warmup):
            model(batch.inputs())
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            model(batch.inputs())
        synchronize(device)
    eval_rate = steps * batch_size / (time.perf_counter() - start)
    return {"train_steps_per_s": train_rate, "eval_episodes_per_s": eval_rate, "peak_train_mb": peak_mb, "step_flops": flops,
            "image_size": cfg.image_size, "finite_losses": bool(torch.isfinite(torch.stack(losses)).all())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=4, help="episodes per step (PFENet's PASCAL recipe: 4)")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per row")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    parser.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke run)")
    parser.add_argument("--image-size", type=int, default=None, help="replace the paper sizes (a smoke run)")
    parser.add_argument("--peak-tflops", type=float, nargs=2, metavar=("BF16", "FP32"), default=None,
                        help="the GPU's dense peaks, TFLOP/s, when it is not in PEAK_TFLOPS (H100, H200)")
    add_report_options(parser, "benchmarks/results/paper_train_step_<the GPU>.md; printed only on the CPU")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("paper_train_step.py measures the paper tier on a GPU; no CUDA device is available here "
                         "(--device cpu --image-size 65 --steps 1 --warmup 0 runs it as a smoke test).")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = ["# Every trained method's paper-tier step", "",
             f"Made by `{command_line(__file__, argv)}`. Random weights, {args.shots}-shot, batches of "
             f"{args.batch_size} episodes, each method at its paper input size, on {name}. Timed window: "
             f"{args.steps} training steps per row after {args.warmup} untimed; evaluation: {args.steps} forward "
             f"passes of the batch after {args.warmup}. The module docstring says what a step is.", ""]
    header = ["method", "input", "precision", "batch", "train steps/s", "train episodes/s", "eval episodes/s",
              "peak train MB", "TFLOP / step", "share of peak"]
    diverged = []
    with tempfile.TemporaryDirectory() as folder:
        heads = random_heads(Path(folder))

        def rows() -> Iterator[list[str]]:
            for method in args.methods:
                for precision in args.precisions:
                    result = measure(method, args.batch_size, args.shots, precision == "bf16", args.steps,
                                     args.warmup, device, heads, args.image_size)
                    peak = (dict(zip(("bf16", "fp32"), args.peak_tflops))[precision] if args.peak_tflops
                            else peak_tflops(name, precision))
                    achieved = result["step_flops"] * result["train_steps_per_s"] / 1e12  # TFLOP/s
                    if not result["finite_losses"]:
                        diverged.append(f"{method} ({precision})")
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    yield [method, str(result["image_size"]), "bf16 autocast" if precision == "bf16" else "fp32",
                           str(args.batch_size), f"{result['train_steps_per_s']:.2f}",
                           f"{result['train_steps_per_s'] * args.batch_size:.1f}",
                           f"{result['eval_episodes_per_s']:.1f}", f"{result['peak_train_mb']:.0f}",
                           f"{result['step_flops'] / 1e12:.3f}",
                           "n/a" if peak is None else f"{100 * achieved / peak:.1f}%"]

        lines += run_tables(args.runs, header, rows)
    if diverged:
        raise SystemExit(f"training losses that are not finite (NaN or inf) in: {', '.join(sorted(set(diverged)))}; "
                         "those rows time a diverged run (no report written).")
    write_report(lines, args.out or default_report("paper_train_step", args.device), device=args.device, echo=False)


if __name__ == "__main__":
    main()
