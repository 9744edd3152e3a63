#!/usr/bin/env bash
# The GPU check of issue 15: lokiml's own training and feature extraction with the JAX backend on a lent
# NVIDIA H200 (no TensorFlow there), within 8 minutes; figures to $OUT/gpu_check.json and $OUT/gpu_check.log.
# What it measures and how: benchmarks/gpu_check.py (module docstring); results: benchmarks/README.md.
#
# Before: bash benchmarks/fetch_gpu_wheels.sh   (here, where PyPI answers: Keras and the few packages missing
#         there, as wheels in .whl/; carry .whl with the call)
# There:  bash benchmarks/gpu_check.sh          (from the repository root)
# Here:   bash benchmarks/gpu_check.sh --smoke  (tiny sizes on the CPU; tests/unit/test_gpu_check.py runs it)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/site}

if [ "${1:-}" != "--smoke" ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        || { echo "gpu_check.sh: installing the wheels of .whl/ failed" | tee "$OUT/gpu_check.log"; exit 1; }
    export PYTHONPATH="$SITE:workflow/scripts${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="workflow/scripts${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=jax
export PYTHONUNBUFFERED=1
# Compiled programs are kept here: the resumed training reuses those of the killed one, and a rerun on the
# same (warm) machine skips every compile.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/lokiml_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0  # the small ones too: building a model compiles one per initializer
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}

# 430 s for the parts (gpu_check.py's own budget), a hard stop at 470 s whatever happens: 8 min in all with
# the install. The smoke mode on a (shared, 2-core) CPU: 840 s and 900 s.
LIMIT=470
[ "${1:-}" = "--smoke" ] && LIMIT=900
timeout -k 5 $LIMIT $PY benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "gpu_check.sh: stopped at $LIMIT s; $OUT/gpu_check.json holds what finished" | tee -a "$OUT/gpu_check.log"
exit "$rc"
