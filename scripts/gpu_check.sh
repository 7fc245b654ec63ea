#!/usr/bin/env bash
# The GPU check of issue 20 (tests/benchmarks/gpu_check.py), as it runs on a lent single-GPU host.
#
#   scripts/gpu_check.sh OUT [gpu_check.py flags...]   # run it: every figure as JSON in OUT (<= 8 minutes)
#   scripts/gpu_check.sh --wheels                       # here, before: fetch the wheels that host lacks into .whl/
#
# The host's own python3 (PYTHON= to choose another) runs it; it needs neither Ray nor MLflow. The modules the
# check imports that the host lacks (a CUDA image with torch, torchvision, OpenCV, SciPy, timm but not
# albumentations or pycocotools) are installed from .whl/ at the repository's root, for CPython 3.12 on x86-64
# (PY_VERSION= for another), with the versions requirements.lock pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [[ "${1:-}" == "--wheels" ]]; then
    # albumentations and what it needs beyond a CUDA image's packages, and pycocotools: requirements.lock's pins.
    names="albumentations albucore pydantic pydantic-core annotated-types typing-inspection typing-extensions simsimd
           stringzilla pycocotools"
    pins=()
    for name in $names; do
        pin=$(grep -i "^${name}==" requirements.lock) || { echo "error: $name is not pinned in requirements.lock" >&2; exit 2; }
        pins+=("$pin")
    done
    mkdir -p .whl  # gitignored: a device run names it in carry
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
             manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "${PY_VERSION:-3.12}" --implementation cp \
        "${platforms[@]}" -d .whl "${pins[@]}"
    ls -l .whl
    exit 0
fi

if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: scripts/gpu_check.sh OUT [gpu_check.py flags]  |  scripts/gpu_check.sh --wheels" >&2
    exit 2
fi
out=$1
shift
export PYTHONUNBUFFERED=1
exec "$PYTHON" tests/benchmarks/gpu_check.py --out "$out" --wheels .whl tests/benchmarks/wheels "$@"
