#!/usr/bin/env bash
# Run the GPU benchmark on a machine without network access.
#
#   bash benchmarks/run_gpu.sh [extra bench_gpu.py arguments]
#
# Installs the wheels carried in benchmarks/wheels/ (liger-kernel 0.8.5, cut-cross-entropy
# 25.1.1, array-api-compat; fetched beforehand with
#   pip download liger-kernel==0.8.5 cut-cross-entropy==25.1.1 array-api-compat \
#       --no-deps -d benchmarks/wheels
# ) without their dependencies, then runs benchmarks/bench_gpu.py with its results and log
# in $OUT (benchmarks/results when OUT is unset).
set -u
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT="${OUT:-benchmarks/results}"
export OUT
mkdir -p "$OUT"
shopt -s nullglob
wheels=(benchmarks/wheels/*.whl)
if ((${#wheels[@]})); then
    "$PYTHON" -m pip install --no-deps --no-index --quiet "${wheels[@]}" \
        || echo "run_gpu.sh: some wheels did not install; their methods will read unavailable"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export SCIPY_ARRAY_API=1
"$PYTHON" - <<'PY' | tee "$OUT/bench_gpu_env.txt"
import importlib, platform
import torch
print("python", platform.python_version(), "torch", torch.__version__,
      "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
for name in ("triton", "liger_kernel", "cut_cross_entropy", "sklearn", "scipy", "numpy", "array_api_compat"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "unavailable:", exc)
PY
timeout 480 "$PYTHON" benchmarks/bench_gpu.py "$@" 2>&1 | tee "$OUT/bench_gpu.log"
exit "${PIPESTATUS[0]}"
