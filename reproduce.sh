#!/usr/bin/env bash
# The main job: reproduce Ilyas et al. 2019 on the embedded digits dataset (sets itself up first).
# Extra arguments go to `advfeatures reproduce` (e.g. --preset fashion-mnist, --out DIR, --quiet).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/bootstrap.sh"
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824}"
exec "${ADVFEATURES_VENV:-$root/.venv}/bin/advfeatures" reproduce "$@"
