#!/usr/bin/env bash
# One prepared GPU run: install offline, run the test suite (the CUDA tests run there),
# the GPU checks and the white-box benchmark on the GPU. Usage: bash benchmarks/gpu_check.sh [OUTDIR]
# array-api-compat travels as a wheel in .whl/ when the machine lacks it.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
nvidia-smi -L
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . -e adapters/torch -e adapters/http -e adapters/onnx 2>&1 | tail -2
export PYTHONUNBUFFERED=1
python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | tail -5 | tee "$OUT/pytest.txt"
python3 benchmarks/gpu_check.py "$OUT/gpu_check.json" 2>&1 | grep -v Warning | tee "$OUT/gpu_check.txt"
python3 benchmarks/whitebox.py --device cuda --json "$OUT/whitebox_gpu.json" 2>&1 | grep -v -i warn | tee "$OUT/whitebox_gpu.txt"
