#!/usr/bin/env bash
# Download, here (where pip reaches a package index), the wheels the GPU check carries to a GPU
# machine that has torch but not fedsim's other dependencies: bash benchmarks/gpu_wheels.sh
# (benchmarks/wheels/ is git-ignored; copy it to the GPU machine with the checkout).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../.venv/bin/activate"
version() { python -c "from importlib.metadata import version; print(version('$1'))"; }
mkdir -p "$here/wheels"
for package in flwr nibabel nilearn opacus tomli-w iterators pycryptodome cryptography; do
  pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --dest "$here/wheels" \
    "$package==$(version "$package")"
done
du -sh "$here/wheels"
