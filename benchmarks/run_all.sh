#!/usr/bin/env bash
# Time vs people (bench_people.py) for every preset and variant, then the plot, on an otherwise idle machine
# (the reports record the load and the CPU time other processes used; numbers taken beside other work are not
# comparable). The other benchmarks are run one by one (benchmarks/README.md). Usage:
#   benchmarks/run_all.sh [cpu|cuda] [extra note]
#   benchmarks/run_all.sh --smoke      # the same commands, CI-sized, into $BENCH_OUT or a temporary folder
#                                      # (tests/test_benchmarks.py)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-.}"
PY="${PYTHON:-python}"
if [ "${1:-}" = --smoke ]; then
  SMOKE=1 DEVICE=cpu NOTE=smoke OUT="${BENCH_OUT:-$(mktemp -d)}" PRESETS=fcpose_r18_tiny R50=fcpose_r18_tiny
  SIZE=(--persons 1,2 --runs 1 --warmup 0 --size 64)
else
  SMOKE=0 DEVICE="${1:-cpu}" NOTE="${2:-}" OUT=benchmarks/results R50=fcpose_r50_fpn
  PRESETS="fcpose_r50_fpn fcpose_r101_fpn fcpose_dla34_rt fcpose_r18_tiny"
  SIZE=()
fi
bench() { "$PY" benchmarks/bench_people.py --device "$DEVICE" --note "$NOTE" --out-dir "$OUT" ${SIZE[@]+"${SIZE[@]}"} "$@"; }
# Every preset (random weights; forced-N), the optimised path. One process per preset and per variant: the CPU
# peak-memory figure is the RSS growth of the process, which memory kept by the allocator from an earlier,
# larger run would hide.
for PRESET in $PRESETS; do
  bench --presets "$PRESET" --variants optimized
done
# R-50: before (reference path), bf16/fp16 autocast where the CPU has native kernels, NCHW vs channels-last.
VARIANTS=reference,nchw
"$PY" -c "from fcpose.precision import cpu_supports; import sys; sys.exit(not cpu_supports('bf16'))" \
  && VARIANTS="$VARIANTS,bf16"
[ "$DEVICE" = cuda ] && VARIANTS="reference,bf16,fp16"
[ "$SMOKE" = 1 ] && VARIANTS=reference
for VARIANT in ${VARIANTS//,/ }; do
  bench --presets "$R50" --variants "$VARIANT"
done
# The official R-50 architecture with the golden checkpoint on a real image (when ../shared is there; not in the
# smoke run): 'auto' = the normal threshold and NMS.
GOLDEN=../shared/golden/adelaidet_fcpose/model_r50_fp16.pth
if [ "$SMOKE" = 0 ] && [ -f "$GOLDEN" ]; then
  bench --presets fcpose_r50_official --weights "$GOLDEN" --image ../shared/data/coco_tiny/000000000785.jpg \
    --persons auto,1,20,50 --runs 10
fi
"$PY" benchmarks/plot_people.py $(ls "$OUT"/people_*.json) --out "$OUT/people.png"
echo "reports in $OUT"
