#!/usr/bin/env bash
# GPU check of the evaluation path: a few ViT-B training steps on synthetic clips, then
# extract-features (CUDA, bf16), a probe from the cache, and the cache-vs-re-encode benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_eval_check}"; mkdir -p "$OUT"
RUN=/tmp/gpu_eval_run
rm -rf "$RUN"
quiet() { "$@" 2>&1 | tr '\r' '\n' | grep -v -E '%\||it/s\]|clip/s\]' || true; }
quiet python3 -m jepactl pretrain --recipe mixed/baseline --run-dir "$RUN" --max-steps 10 \
  --set data.source=synth --set data.num_workers=12 --set train.log_every=5
quiet python3 -m jepactl extract-features "$RUN" --bench synth-shapes --limit 256 --batch-size 32
quiet python3 -m jepactl probe synth-shapes --run "$RUN" --epochs 20
cp "$RUN/probes/synth-shapes.json" "$OUT/"
quiet python3 -m jepactl bench probe "$RUN" --epochs 20 --limit 256 | tee "$OUT/bench_probe.txt"
