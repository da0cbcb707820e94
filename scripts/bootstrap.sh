#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install advfeatures with its test
# dependencies. The CPU build of torch is pinned and installed first: any other torch request pulls
# gigabytes of CUDA packages. Safe to run again: it only installs what is missing.
# Where torch comes from is left to pip's configuration, unless ADVFEATURES_TORCH_INDEX is set: then
# torch alone is installed with --index-url "$ADVFEATURES_TORCH_INDEX" (on a stock Linux set-up,
# https://download.pytorch.org/whl/cpu gives the CPU build; PyPI's Linux wheel is the CUDA one).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ADVFEATURES_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "advfeatures needs Python >= 3.11")'
  "$python" -m venv "$venv"
fi
stamp="$venv/.advfeatures-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  torch_index=()
  if [ -n "${ADVFEATURES_TORCH_INDEX:-}" ]; then torch_index=(--index-url "$ADVFEATURES_TORCH_INDEX"); fi
  "$venv/bin/python" -m pip install --quiet ${torch_index[@]+"${torch_index[@]}"} "torch==2.13.0"
  "$venv/bin/python" -m pip install --quiet -e "$root[test]"
  touch "$stamp"
fi
# MadryLab's `robustness` package, only for the interop tests (tests/models/test_robustness_interop.py):
# --no-deps, since its declared dependencies include torchvision and other heavy packages we never
# import. Optional: without a registry the install fails, the note says so and those tests skip.
if ! "$venv/bin/python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("robustness") is None)' 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --no-deps "robustness==1.2.1.post2" \
    || echo "note: could not install robustness==1.2.1.post2; its interop tests will skip"
fi
