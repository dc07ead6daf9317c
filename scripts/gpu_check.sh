#!/usr/bin/env bash
# GPU check of the step (issue 25), in one prepared run of about 6-8 minutes on one H100:
#  1. bench pretrain at the paper's size (ViT-B/16, 16 x 224 x 224, global batch 32, bf16) for
#     mixed/baseline and mixed/fwm_hw_ld, eager and compiled (train.compile's way), with fused
#     AdamW and the foreach EMA that CUDA steps use; MFU against the measured bf16 ceiling;
#  2. 8 steps of a real compiled pretrain (masks with lengths: fixed): its log's compile lines;
#  3. the probe-from-cache vs re-encode ratio at the paper's size (an untrained ViT-B run).
# Every figure goes to $OUT/gpu_check.json (and the Markdown tables to $OUT/*.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu_check}"; mkdir -p "$OUT"
quiet() { "$@" 2>&1 | tr '\r' '\n' | grep -v -E '%\||it/s\]|clip/s\]|step/s\]' || true; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"

# 1. eager and compiled steps, interleaved, one process
quiet python3 -m jepactl bench pretrain --size paper --device cuda --compile both \
  --recipe mixed/baseline --recipe mixed/fwm_hw_ld --steps 5 --rounds 3 --warmup 3 \
  --loader-steps 0 --json "$OUT/bench_pretrain.json" | tee "$OUT/bench_pretrain.md"

# 2. a real compiled run: one compile, zero graph breaks, no recompiles in its log
RUN=/tmp/gpu_compiled_run; rm -rf "$RUN"
quiet python3 -m jepactl pretrain --recipe mixed/baseline --run-dir "$RUN" --max-steps 8 \
  --set data.source=synth --set data.num_workers=12 --set train.log_every=4 \
  --set train.compile=true --set masks.0.lengths=fixed --set masks.1.lengths=fixed
cp "$RUN/log.txt" "$OUT/compiled_run_log.txt"; cat "$OUT/compiled_run_log.txt"

# 3. probe from the token cache vs re-encoding every epoch, paper-size encoder
PROBE=/tmp/gpu_probe_run; rm -rf "$PROBE"
quiet python3 -m jepactl pretrain --recipe mixed/baseline --run-dir "$PROBE" --max-steps 0 \
  --set data.source=synth
python3 - "$PROBE" "$OUT" <<'EOF'
import json, sys, time
from pathlib import Path
from jepactl.bench import probe_cache_vs_reencode

run, out = Path(sys.argv[1]), Path(sys.argv[2])
probe = probe_cache_vs_reencode(run, "synth-shapes", 20, 256, device="cuda")
bench = json.loads((out / "bench_pretrain.json").read_text())
log = (out / "compiled_run_log.txt").read_text().splitlines()
rows = {(r["recipe"], r["compiled"]): r for r in bench["recipes"]}
summary = {
    "date": time.strftime("%Y-%m-%d"),
    "bench_pretrain": bench,
    "compiled_vs_eager": {
        name: rows[(name, True)]["ms_per_step"] / rows[(name, False)]["ms_per_step"]
        for name in ("mixed/baseline", "mixed/fwm_hw_ld")
    },
    "fwm_hw_ld_vs_baseline": {
        mode: rows[("mixed/fwm_hw_ld", c)]["ms_per_step"] / rows[("mixed/baseline", c)]["ms_per_step"]
        for mode, c in (("eager", False), ("compiled", True))
    },
    "mfu": {f"{r['recipe']} {'compiled' if r['compiled'] else 'eager'}": r["mfu"] for r in bench["recipes"]},
    "compiled_run_log": [line for line in log if "compile" in line],
    "probe_cache_vs_reencode": probe,
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({k: summary[k] for k in ("compiled_vs_eager", "fwm_hw_ld_vs_baseline", "mfu")}, indent=1))
EOF
