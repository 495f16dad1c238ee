#!/usr/bin/env bash
# The GPU check, for a GPU machine where nothing can be installed from the network:
#   bash benchmarks/gpu_check.sh OUT_DIR
# The Python packages fedsim needs beyond that machine's image (see benchmarks/gpu_wheels.sh, run
# where pip can download) come as wheels in benchmarks/wheels/ and are installed into OUT_DIR/site
# with --no-index. Everything else (torch with CUDA, numpy, pandas, scikit-learn, …) is the machine's.
set -euo pipefail
out="${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}"
here="$(cd "$(dirname "$0")/.." && pwd)"
site="$out/site"
python="${PYTHON:-python3}"  # the machine's Python with CUDA torch
mkdir -p "$site"
if compgen -G "$here/benchmarks/wheels/*.whl" > /dev/null; then
  "$python" -m pip install --quiet --no-index --no-deps --target "$site" "$here"/benchmarks/wheels/*.whl
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH="$here:$site:${PYTHONPATH:-}" FEDSIM_HOME="$out/home" \
  "$python" "$here/benchmarks/gpu_check.py" --out "$out" "${@:2}"
