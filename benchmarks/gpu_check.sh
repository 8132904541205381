#!/usr/bin/env bash
# GPU check of issue #17, one script, under 10 minutes on one GPU:
#   1. the `gpu` tests: both training stages under bf16 autocast, prediction, evaluation, Table 10
#      speed, Image-Cond, and `harness run --smoke` with two trials sharing one GPU (gpus: 0.5);
#   2. the throughput/memory benchmark of every study variant at the paper's shapes
#      (sage_vitb16, random weights, batch 32): stage-1/2 samples/s, pairs/s, peak GPU memory;
#   3. Table 10 through the harness on a paper-shaped synthetic root: FPS of Ours / Image-Cond.
# Without CUDA it says so and exits 0 (the gpu tests skip there too).
#   benchmarks/gpu_check.sh [OUT_DIR]      (default: a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device on this machine: skipped (python -m pytest -m gpu skips too)"
    exit 0
fi
OUT="${1:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$OUT"
started=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - started )) s)"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

step "1/3 gpu tests"
python -m pytest -q -m gpu -p no:cacheprovider tests/ 2>&1 | tee "$OUT/gpu_tests.txt"

step "2/3 throughput and peak memory per variant (sage_vitb16, random weights, batch 32)"
python benchmarks/make_random_clip.py "$OUT/random-vitb16.pt"
python benchmarks/bench_gpu.py --clip-checkpoint "$OUT/random-vitb16.pt" --json "$OUT/bench_gpu.json" \
    2>&1 | grep -v "No pretrained weights" | tee "$OUT/bench_gpu.txt"

step "3/3 Table 10 through the harness on a paper-shaped root"
harness data synth --shape paper --videos 8 --clip-checkpoint "$OUT/random-vitb16.pt" --out "$OUT/paper8" >/dev/null
harness run studies/table10_efficiency.yaml --smoke --data-root "$OUT/paper8" \
    --clip-checkpoint "$OUT/random-vitb16.pt" --run-dir "$OUT/runs" --results-dir "$OUT/results"
python - "$OUT/results" <<'PY'
import sys
from harness.results import read_results
rows = read_results(sys.argv[1], "table10_efficiency").filter(metric="fps")
fps = {(r["variant"], r["task"]): r["value"] for r in rows.to_dicts()}
for task in ("sgdet", "predcls"):
    ours, cond = fps.get(("Ours", task)), fps.get(("Image-Cond", task))
    if ours and cond:
        print(f"Table 10 {task}: Ours {ours:.1f} FPS, Image-Cond {cond:.1f} FPS, ratio {ours / cond:.1f}")
print("device:", rows["device"].unique().to_list())
PY
step "done: outputs in $OUT"
