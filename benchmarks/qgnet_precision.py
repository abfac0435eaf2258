"""QGNet's prior-extractor pretraining in float32 and in bf16 on the CPU, as a ratio measured in one run.

    python benchmarks/qgnet_precision.py    # -> benchmarks/results/qgnet_precision_toy.md

Times :func:`~fsslib.pretrain.qgnet_prior.train.train_prior_extractor` (global + local losses, batch 64) with
``precision="fp32"`` and ``"bf16"`` (the encoders under bf16 autocast, channels-last), alternating the two
``--repeats`` times so that both meet the same load; the learning curve is not counted
(:func:`qgnet_speed.pretraining_images_per_s`). What bf16 costs in kNN mAP is a training comparison, not a
timing: ``benchmarks/results/qgnet_prior_curves_toy.md``, docs/methods/qgnet.md.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from qgnet_speed import pretraining_images_per_s
from timing import write_report

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="pretraining steps timed per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per precision, alternated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeats):
            for precision in rates:
                rates[precision].append(pretraining_images_per_s("global_local", args.steps, Path(workdir), precision))
    fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
    ratios = [b / f for f, b in zip(rates["fp32"], rates["bf16"])]
    lines = [f"QGNet prior-extractor pretraining (global + local losses, batch 64), {args.threads} CPU thread(s), "
             f"{args.steps} steps per measurement, {args.repeats} measurements per precision alternated "
             "(`python benchmarks/qgnet_precision.py`).", "",
             "| precision | images/s (median) | seconds per step | measurements |", "|---|---|---|---|",
             f"| fp32 | {fp32:.1f} | {64 / fp32:.2f} | {', '.join(f'{r:.1f}' for r in rates['fp32'])} |",
             f"| bf16 (autocast, channels-last) | {bf16:.1f} | {64 / bf16:.2f} | {', '.join(f'{r:.1f}' for r in rates['bf16'])} |",
             "", f"bf16 / fp32: {statistics.median(ratios):.2f}x (median of the paired ratios "
                 f"{', '.join(f'{r:.2f}' for r in ratios)}). CPU: {_cpu()}."]
    write_report(lines, RESULTS / "qgnet_precision_toy.md")


def _cpu() -> str:
    """The CPU's model name and whether it has AVX-512 BF16 (what bf16 autocast runs fast on)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown")
    return f"{model}, {'with' if 'avx512_bf16' in info else 'without'} AVX-512 BF16"


if __name__ == "__main__":
    main()
