#!/usr/bin/env bash
# Every benchmark of issue 5, on an otherwise idle machine (the reports record the load and the CPU time
# other processes used; numbers taken beside other work are not comparable). Usage:
#   benchmarks/run_all.sh [cpu|cuda] [extra note]
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${1:-cpu}"
NOTE="${2:-}"
export PYTHONPATH="${PYTHONPATH:-.}"
# Time vs people for every preset (random weights; forced-N), the optimised path.
python benchmarks/bench_people.py --device "$DEVICE" --variants optimized --note "$NOTE"
# R-50: before (reference path), bf16/fp16 autocast where the CPU has native kernels, NCHW vs channels-last.
VARIANTS=reference,nchw
python -c "from fcpose.inference.optimize import cpu_supports; import sys; sys.exit(not cpu_supports('bf16'))" \
  && VARIANTS="$VARIANTS,bf16"
[ "$DEVICE" = cuda ] && VARIANTS="reference,bf16,fp16"
python benchmarks/bench_people.py --presets fcpose_r50_fpn --device "$DEVICE" --variants "$VARIANTS" --note "$NOTE"
# onnxruntime vs eager PyTorch (CPU).
[ "$DEVICE" = cpu ] && python benchmarks/bench_onnx.py --note "$NOTE"
# bf16 accuracy: outputs of bf16 autocast against fp32.
python benchmarks/bf16_deviation.py --note "$NOTE" || true
python benchmarks/plot_people.py
