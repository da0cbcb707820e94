#!/usr/bin/env bash
# The GPU check (issue 14.4): PGD, the D_R loop and adversarial training on ResNet-18 and ResNet-50 at
# batch 512, eager vs bf16 vs channels-last vs torch.compile, as ratios to the model's own passes;
# CUDA graphs for the small CNN; the paper's CIFAR-10 D_R construction time extrapolated; our worst-case
# ensemble against torchattacks' AutoAttack on the digits CNN (where torchattacks is importable).
# Finishes within 8 minutes on one GPU (an internal budget of 420 s, and a hard stop at 470 s).
#
#   benchmarks/gpu_check.sh                          # on a GPU machine
#   benchmarks/gpu_check.sh --out gpu-check.json     # also the numbers as JSON, for RESULTS.md
#   benchmarks/gpu_check.sh --cpu-smoke              # seconds on a CPU, tiny models (the test runs this)
#   benchmarks/gpu_check.sh --sections ensemble      # one section alone (options, graphs, compile, ensemble)
#
# PYTHON picks the interpreter (default: the project's .venv, else python3); the sources under src/
# are used, so no install is needed beyond torch (and safetensors, tqdm, click of the package).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
limit="${ADVFEATURES_GPU_CHECK_TIMEOUT:-470}"
if command -v timeout >/dev/null 2>&1; then
  exec timeout --signal=INT --kill-after=10 "$limit" "$python" "$root/benchmarks/gpu_check.py" "$@"
fi
exec "$python" "$root/benchmarks/gpu_check.py" "$@"
