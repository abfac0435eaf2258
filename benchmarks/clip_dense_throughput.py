"""Throughput of MaskCLIP dense features (images/s), written as a Markdown report (``--out``; each run a table).

Rows:
* CPU, toy size (64 x 64): the toy CLIP checkpoints when they exist
  (``fsslib/checkpoints/toy_clip_{vit,rn}.pt``), else a tiny random ViT.
* CUDA, paper size (473 x 473): random-weight ViT-B/16 and RN50, under bf16 autocast and
  in fp32, when a GPU is available (with the CUDA allocator's peak memory).

    python benchmarks/clip_dense_throughput.py --threads 2 --batch-size 8 --iterations 10   # CUDA rows: 100 passes
    python benchmarks/clip_dense_throughput.py --runs 2 --out benchmarks/results/clip_dense_throughput_h200.md
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import open_clip
import torch
from open_clip.tokenizer import SimpleTokenizer

from fsslib import paths
from fsslib.clip import ClipBundle, bundle_from_model, load_clip, maskclip_features
from fsslib.clip.loading import TOY_CHECKPOINT_FILES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_report_options, command_line, default_report, run_tables, write_report  # noqa: E402

TINY_RANDOM_VIT = dict(
    embed_dim=64,
    vision_cfg=dict(image_size=64, patch_size=8, width=128, layers=4, head_width=32),
    text_cfg=dict(context_length=16, width=64, heads=2, layers=1),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default: 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass on CPU (default: 8)")
    parser.add_argument("--cuda-batch-size", type=int, default=16, help="images per forward pass on CUDA (default: 16)")
    parser.add_argument("--iterations", type=int, default=10, help="timed forward passes per CPU row (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forward passes per CPU row (default: 2)")
    parser.add_argument("--cuda-iterations", type=int, default=100, help="timed passes per CUDA row (default: 100)")
    parser.add_argument("--cuda-warmup", type=int, default=10, help="untimed passes per CUDA row (default: 10)")
    parser.add_argument("--toy-size", type=int, default=64, help="CPU image side in pixels (default: 64)")
    parser.add_argument("--cuda-size", type=int, default=473, help="CUDA image side in pixels (default: 473)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA rows even if a GPU is present")
    add_report_options(parser, "benchmarks/results/clip_dense_throughput_toy.md without a GPU, "
                               "clip_dense_throughput_<the GPU>.md with one")
    return parser.parse_args(argv)


def toy_bundles() -> list[tuple[str, ClipBundle]]:
    """The shipped toy checkpoints, or a tiny random ViT when none is trained yet."""
    bundles = [
        (name, load_clip(name))
        for name, filename in TOY_CHECKPOINT_FILES.items()
        if (paths.CHECKPOINT_DIR / filename).is_file()
    ]
    if not bundles:
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_RANDOM_VIT)
        bundles = [("tiny random ViT", bundle_from_model(model, SimpleTokenizer(context_length=16), name="tiny"))]
    return bundles


def images_per_second(
    bundle: ClipBundle, batch_size: int, size: int, iterations: int, warmup: int, autocast: bool
) -> float:
    """Images per second of ``maskclip_features`` on random images (B, 3, size, size)."""
    device = bundle.device
    images = torch.rand(batch_size, 3, size, size, device=device)  # (B, 3, H, W)
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else nullcontext()
    with torch.inference_mode(), precision:
        for _ in range(warmup):
            maskclip_features(bundle, images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            maskclip_features(bundle, images)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch_size * iterations / (time.perf_counter() - start)


def rows(args: argparse.Namespace) -> Iterator[list[str]]:
    """One run's rows: the toy models on the CPU, then (with a GPU) ViT-B/16 and RN50 in bf16 autocast and fp32."""
    for name, bundle in toy_bundles():
        rate = images_per_second(bundle, args.batch_size, args.toy_size, args.iterations, args.warmup, autocast=False)
        yield [name, f"CPU x{args.threads} threads", f"{args.toy_size}x{args.toy_size}", "fp32", str(args.batch_size),
               f"{rate:.1f}", "—"]
    if torch.cuda.is_available() and not args.no_cuda:
        for name in ("ViT-B-16", "RN50"):
            bundle = load_clip(name, device="cuda")
            for autocast in (True, False):
                torch.cuda.reset_peak_memory_stats()
                rate = images_per_second(bundle, args.cuda_batch_size, args.cuda_size, args.cuda_iterations,
                                         args.cuda_warmup, autocast=autocast)
                yield [f"{name} (random weights)", torch.cuda.get_device_name(), f"{args.cuda_size}x{args.cuda_size}",
                       "bf16 autocast" if autocast else "fp32", str(args.cuda_batch_size), f"{rate:.1f}",
                       f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"]
            del bundle
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and not args.no_cuda
    lines = ["# Throughput of MaskCLIP's dense features", "",
             f"Made by `{command_line(__file__, argv)}`. Images per second of `fsslib.clip.maskclip_features` on "
             f"random images: on the CPU ({args.iterations} timed passes after {args.warmup}), the toy CLIP models "
             "(a tiny random ViT where none is trained)"
             + (f"; on the GPU ({args.cuda_iterations} timed passes after {args.cuda_warmup}), ViT-B/16 and RN50 with "
                "random weights, with the CUDA allocator's peak memory" if cuda else "") + ".", ""]
    header = ["model", "device", "input", "precision", "batch", "images/s", "peak MB"]
    lines += run_tables(args.runs, header, lambda: rows(args))
    device = "cuda" if cuda else "cpu"
    write_report(lines, args.out or default_report("clip_dense_throughput", device, on_cpu="toy"), device=device,
                 echo=False)


if __name__ == "__main__":
    main()
