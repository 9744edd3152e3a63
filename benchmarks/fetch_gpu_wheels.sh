#!/usr/bin/env bash
# Download the Python wheels that benchmarks/gpu_check.sh needs on the lent NVIDIA H200 machine into .whl/
# (run it here, in the repository root, where pip reaches PyPI; that machine reaches nothing).
#
# That machine has Python 3.12 with jax 0.11.2 (CUDA 13), torch, numpy, pandas, scipy, scikit-learn,
# scikit-image, pillow, h5py, ml-dtypes, absl-py, rich, pyyaml, attrs, packaging and typing-extensions
# (/work/.library/device/KINDS.md), but not Keras, its namex and optree, nor jsonschema and its
# referencing, rpds-py and jsonschema-specifications (lokiml validates experiment parameters with it).
# Versions: those of requirements.txt. Only cp312 manylinux x86_64 (or pure-Python) wheels, no dependencies.
#
# Usage:  bash benchmarks/fetch_gpu_wheels.sh [DEST]     (DEST defaults to .whl, which git ignores)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PIP=${PIP:-python3 -m pip}
mkdir -p "$DEST"
EXCLUDE=$(git rev-parse --git-path info/exclude 2>/dev/null || true)
if [ "$DEST" = .whl ] && [ -n "$EXCLUDE" ] && ! grep -qxF '/.whl/' "$EXCLUDE" 2>/dev/null; then
    mkdir -p "$(dirname "$EXCLUDE")" && echo '/.whl/' >> "$EXCLUDE"
fi

pin() {  # the version requirements.txt pins for $1 (names compared case- and _/- insensitively)
    local version
    version=$(awk -F'==' -v want="$1" '
        function norm(s) { s = tolower(s); gsub(/_/, "-", s); return s }
        NF == 2 && norm($1) == norm(want) { print $2 }' requirements.txt)
    [ -n "$version" ] || { echo "fetch_gpu_wheels.sh: $1 is not pinned in requirements.txt" >&2; exit 1; }
    echo "$version"
}

specs=()
for name in keras namex optree jsonschema referencing rpds-py jsonschema-specifications; do
    specs+=("$name==$(pin "$name")")
done
rm -f "$DEST"/*.whl
$PIP download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DEST" "${specs[@]}"
ls -l "$DEST"
echo "$(ls "$DEST"/*.whl | wc -l) wheels in $DEST: ${specs[*]}"
