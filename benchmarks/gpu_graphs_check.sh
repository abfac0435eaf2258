#!/usr/bin/env bash
# CUDA graphs in evaluation, one method at a time, on a lent GPU (about 2 minutes a method, 8 in all): may the
# trainer offer them? For each of HDMNet, BAM, PI-CLIP and PFENet, gpu_speed.py's compile_graphs row with
# --check-compiled: its eval outputs against today's, three calls so that the graphs are replayed, then its training
# step timed. Each method runs in its own process, so that a failure cannot leave the graph trees' state to the next.
#
#   OUT=/path/for/reports bash benchmarks/gpu_graphs_check.sh
#
# Each call writes its Markdown report to OUT (default benchmarks/results/gpu_graphs_check/) when it ends, and its
# printed lines to a .txt beside it as they are made.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_graphs_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for method in hdmnet bam piclip pfenet; do
    python3 benchmarks/gpu_speed.py --methods "$method" --levers today fp32 compile_graphs --check-compiled \
        --steps 10 --warmup 3 --budget-s 300 --out "$OUT/graphs_$method.md" 2>&1 | tee "$OUT/graphs_$method.txt"
done
