#!/usr/bin/env bash
# Build (or refresh) .venv at the repo root from requirements.lock, with this project installed editable.
# Idempotent: a second run with an unchanged lock only checks a stamp file.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin=$candidate; break; fi
  done
fi
"$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "error: Python 3.11 is required (found $("$python_bin" --version 2>&1)); set PYTHON=..." >&2; exit 1; }

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
# uv resolves from the package index only. pip would also read this machine's find-links, whose CPU-only
# torch 2.13.0+cpu cannot load PyPI's torchvision (operator torchvision::nms does not exist).
[ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q --disable-pip-version-check uv==0.13.8

stamp=".venv/.synced-$(sha256sum requirements.lock pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing locked dependencies into .venv (first run downloads ~5 GB) ..." >&2
  # Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (as on these machines) every process, Ray
  # workers included, would otherwise recompile torch, ray and mlflow from source, ~12 s each.
  .venv/bin/uv pip sync --quiet --compile-bytecode --python .venv/bin/python requirements.lock
  .venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps -e .
  rm -f .venv/.synced-*
  touch "$stamp"
fi
