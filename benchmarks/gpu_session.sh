#!/usr/bin/env bash
# The paper tier's speed on one GPU in one call (about 9 minutes of an H100 or H200):
#   1. benchmarks/gpu_speed.py: PFENet, PI-CLIP, BAM and HDMNet: the fp32 row, --compile's
#      regions as CUDA graphs and alone, and --profile (the eager levers alone ran on an H200 already:
#      benchmarks/results/gpu_speed_h200.md);
#   2. fsslib with --compile against the official PFENet and HDMNet, bf16 autocast, alternated steps;
#   3. the paper tier's training loader on the machine's CPU cores (8 and 16 workers): can it feed the faster steps?
#   4. QGNet's prior pretraining (python -m fsslib.pretrain qgnet-prior): its step's images per second and GPU-hours,
#      and its loader on the machine's cores (about a minute together).
#
#   OFFICIAL=/path/with/PFENet/and/HDMNet OUT=/path/for/reports bash benchmarks/gpu_session.sh
#
# OFFICIAL holds checkouts of dvlab-research/PFENet and Pbihao/HDMNet (their model/, util/ and config/ folders
# suffice; HDMNet's also needs einops). Each script writes its Markdown report (--out, with the command, the
# machine and the commit) to OUT (default benchmarks/results/gpu_session/) when it ends, and its printed lines to
# a .txt beside it as they are made, so a call stopped at its time limit keeps what it measured.
set -uo pipefail
cd "$(dirname "$0")/.."
OFFICIAL=${OFFICIAL:-.official}
OUT=${OUT:-benchmarks/results/gpu_session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 benchmarks/gpu_speed.py --methods hdmnet bam piclip pfenet --levers today fp32 compile_graphs compile \
    --profile --budget-s "${GPU_SPEED_BUDGET_S:-300}" --out "$OUT/gpu_speed.md" 2>&1 | tee "$OUT/gpu_speed.txt"
for method in pfenet hdmnet; do
    script=benchmarks/official_speed.py folder=PFENet
    [ "$method" = hdmnet ] && script=benchmarks/official_hdmnet_speed.py folder=HDMNet
    python3 "$script" --official "$OFFICIAL/$folder" --precisions bf16 --compile --out "$OUT/official_$method.md" 2>&1 \
        | tee "$OUT/official_$method.txt"
done
STEP_TIMES=benchmarks/results/gpu_speed_h200.md  # this GPU's own step times where gpu_speed.py wrote them above
[ -f "$OUT/gpu_speed.md" ] && STEP_TIMES="$OUT/gpu_speed.md"
python3 benchmarks/paper_loader.py --workers 8 16 --episodes 400 --runs 1 --moved-on cuda --step-times "$STEP_TIMES" \
    --out "$OUT/paper_loader.md" 2>&1 | tee "$OUT/paper_loader.txt"
python3 benchmarks/qgnet_prior_step.py --steps 20 --out "$OUT/qgnet_prior_step.md" 2>&1 \
    | tee "$OUT/qgnet_prior_step.txt"
python3 benchmarks/qgnet_prior_loader.py --workers 8 16 --images 256 --superpixel-workers 16 --runs 1 \
    --out "$OUT/qgnet_prior_loader.md" 2>&1 | tee "$OUT/qgnet_prior_loader.txt"
