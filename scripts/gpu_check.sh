#!/usr/bin/env bash
# GPU check for issue 2: 20 steps of mixed/baseline at paper size (ViT-B/16, 16x224x224,
# global batch 32, bf16) on synthetic data, on one GPU. Writes metrics to $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
run() {  # $1 = run dir, rest = extra args
  local dir=$1; shift
  rm -rf "$dir"
  python3 -m jepactl pretrain --recipe mixed/baseline --run-dir "$dir" --max-steps 20 \
    --set data.source=synth --set data.num_workers=12 --set train.log_every=5 "$@" 2>&1 \
    | tr '\r' '\n' | grep -v '%|' || true
}
run /tmp/gpu_bf16
cp /tmp/gpu_bf16/metrics.jsonl "$OUT/metrics_bf16.jsonl"
cat "$OUT/metrics_bf16.jsonl"
# Resume on GPU: 10 more steps from the checkpoint (continues, does not restart).
python3 -m jepactl pretrain --recipe mixed/baseline --run-dir /tmp/gpu_bf16 --max-steps 30 \
  --set data.source=synth --set data.num_workers=12 --set train.log_every=5 2>&1 \
  | tr '\r' '\n' | grep -v '%|' || true
tail -n 2 /tmp/gpu_bf16/metrics.jsonl
