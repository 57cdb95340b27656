#!/usr/bin/env bash
# GPU check (issue 12): on a machine with CUDA, run the test suite's device tests (marker `cuda`), then time
# one training batch of every method on every network of the paper and write the table to $OUT
# (default gpu_check.md); under 10 minutes on one GPU. On a CPU-only machine it says so and skips both.
#   scripts/gpu_check.sh [OUT]
set -u
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check.md}"
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device here (torch $(python -c 'import torch; print(torch.__version__)')):" \
         "skipping the device tests and the per-method GPU timing"
    python -m pytest -q -m cuda tests/ -p no:cacheprovider 2>&1 | tail -1
    exit 0
fi
python -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
status=0
timeout 120 python -m pytest -q -m cuda tests/ -p no:cacheprovider || status=$?
timeout 450 python scripts/gpu_check.py --out "$OUT" --timeout 50 || status=$?
exit $status
