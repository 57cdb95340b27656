#!/usr/bin/env bash
# VNN-COMP run_instance.sh for veritrain: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
# Writes sat (with the re-checked counterexample), unsat, unknown or timeout to RESULTS_FILE.
# A file veritrain cannot read (parse error, unsupported operator) exits non-zero and writes no verdict.
set -euo pipefail
if [ "$#" -ne 6 ]; then
    echo "usage: $0 v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2
    exit 2
fi
PYTHON="${PYTHON:-python3}"
exec "$PYTHON" -m veritrain vnnlib --onnx "$3" --vnnlib "$4" --out "$5" --timeout "$6" --no-progress
