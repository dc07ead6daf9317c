#!/usr/bin/env bash
# GPU check for the objectives: paper-size step time, peak memory and "no host sync inside a
# step" (CUDA sync debug mode) for the baseline and the costlier recipes. Writes to $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_step_time}"; mkdir -p "$OUT"
python3 -m jepactl bench step-time --device cuda --size paper --steps 10 --warmup 3 --check-syncs \
  mixed/fwm_hw_ld mixed/ld mixed/hw mixed/ac mixed/spectral mixed/amg \
  single/kin_l1 single/sigreg single/hamiltonian single/velgate 2>&1 | tee "$OUT/step_time.md"
