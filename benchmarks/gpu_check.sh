#!/usr/bin/env bash
# The GPU path in one call of at most ~8 minutes, on a machine with an NVIDIA GPU:
#   bash benchmarks/gpu_check.sh            (from the repository root)
# 1. set-up (.venv, the project, the data: Debian's package, else torchvision's download);
# 2. trainer-vs-DataLoader throughput on CUDA (benchmarks/throughput.py --device cuda);
# 3. a short cnn study on the GPU with two workers sharing it (--device cuda --jobs 2);
# 4. a report re-training its best trial on the GPU.
# Everything it writes goes to $OUT (default gpu-check/): CSVs, logs, the study and the report.
#
# On a machine with no network whose Python already holds CUDA's PyTorch, skip the set-up:
#   FMNIST_PY=python3 FMNIST_DATA_DIR=<folder with the four .gz files> bash benchmarks/gpu_check.sh
# (the project then runs from this checkout, with its other dependencies on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

if [ -n "${FMNIST_PY:-}" ]; then
  PY=$FMNIST_PY
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  FS=("$PY" -c 'from search.cli import entry; entry()')
  "${FS[@]}" data
else
  source scripts/setup.sh
  PY=.venv/bin/python
  FS=(.venv/bin/fmnist-search)
fi
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script checks the GPU path"
p = torch.cuda.get_device_properties(0)
print(f"CUDA device: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
PY

echo "== throughput (images/s, best of 2), CUDA"
timeout 150 "$PY" benchmarks/throughput.py --device cuda --train-limit 20000 \
  --out "$OUT/throughput_cuda.csv"

echo "== a cnn study of at most 2 minutes, two workers on one GPU"
timeout 200 "${FS[@]}" run --space cnn --device cuda --jobs 2 --trials 12 \
  --epochs 5 --timeout 120 --study gpu-check --storage "sqlite:///$OUT/gpu.db"
"${FS[@]}" studies --storage "sqlite:///$OUT/gpu.db"

echo "== report: re-train the best trial once on the GPU, score it on the test set"
timeout 120 "${FS[@]}" report --study gpu-check --storage "sqlite:///$OUT/gpu.db" \
  --top 1 --seeds 1 --epochs 5 --device cuda --out "$OUT/report"
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true
