#!/usr/bin/env bash
# Run the test suite (sets itself up first). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/bootstrap.sh"
cd "$root"
exec "${ADVFEATURES_VENV:-$root/.venv}/bin/python" -m pytest -q "$@"
