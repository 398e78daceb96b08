#!/usr/bin/env bash
# Every benchmark of issue 5, on an otherwise idle machine (the reports record the load and the CPU time
# other processes used; numbers taken beside other work are not comparable). Usage:
#   benchmarks/run_all.sh [cpu|cuda] [extra note]
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${1:-cpu}"
NOTE="${2:-}"
export PYTHONPATH="${PYTHONPATH:-.}"
# Time vs people for every preset (random weights; forced-N), the optimised path. One process per preset and
# per variant: the CPU peak-memory figure is the RSS growth of the process, which memory kept by the
# allocator from an earlier, larger run would hide.
for PRESET in fcpose_r50_fpn fcpose_r101_fpn fcpose_dla34_rt fcpose_r18_tiny; do
  python benchmarks/bench_people.py --presets "$PRESET" --device "$DEVICE" --variants optimized --note "$NOTE"
done
# R-50: before (reference path), bf16/fp16 autocast where the CPU has native kernels, NCHW vs channels-last.
VARIANTS=reference,nchw
python -c "from fcpose.precision import cpu_supports; import sys; sys.exit(not cpu_supports('bf16'))" \
  && VARIANTS="$VARIANTS,bf16"
[ "$DEVICE" = cuda ] && VARIANTS="reference,bf16,fp16"
for VARIANT in ${VARIANTS//,/ }; do
  python benchmarks/bench_people.py --presets fcpose_r50_fpn --device "$DEVICE" --variants "$VARIANT" --note "$NOTE"
done
# The official R-50 architecture with the golden checkpoint on a real image (when ../shared is there):
# 'auto' = the normal threshold and NMS.
GOLDEN=../shared/golden/adelaidet_fcpose/model_r50_fp16.pth
if [ -f "$GOLDEN" ]; then
  python benchmarks/bench_people.py --presets fcpose_r50_official --weights "$GOLDEN" --device "$DEVICE" \
    --image ../shared/data/coco_tiny/000000000785.jpg --persons auto,1,20,50 --runs 10 --note "$NOTE"
fi
# onnxruntime vs eager PyTorch (CPU).
[ "$DEVICE" = cpu ] && python benchmarks/bench_onnx.py --note "$NOTE"
# bf16 accuracy: outputs of bf16 autocast against fp32.
python benchmarks/bf16_deviation.py --note "$NOTE" || true
python benchmarks/plot_people.py
