#!/usr/bin/env bash
# VNN-COMP prepare_instance.sh for veritrain: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Nothing to prepare beyond checking that the files exist (veritrain reads them at run time).
set -euo pipefail
if [ "$#" -ne 4 ]; then
    echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2
    exit 2
fi
for f in "$3" "$4"; do
    [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done
