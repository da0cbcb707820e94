"""benchmarks/gpu_check.sh runs end to end on the CPU with tiny models (--cpu-smoke), so the GPU
check cannot rot before a GPU is at hand; every section reports a number or says why not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", "--out", str(out), *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text())


def test_cpu_smoke_measures_every_section(tmp_path):
    text, res = _run(tmp_path)
    assert set(res["models"]) == {"resnet18", "resnet50"}
    for rows in res["models"].values():
        assert set(rows) == {"eager", "bf16", "channels-last", "bf16+channels-last", "compile"}
        assert "skipped" in rows["compile"]  # not built in the smoke run, and it says why
        for opt in ("channels-last", "bf16+channels-last"):  # not applied on a CPU (oneDNN heap corruption)
            assert "channels-last is not applied on a CPU" in rows[opt]["skipped"], (opt, rows[opt])
        for opt in ("eager", "bf16"):
            r = rows[opt]
            assert "error" not in r, (opt, r)
            for key in ("ms_per_pass", "pgd_ratio", "d_r_ratio", "adv_train_ratio"):
                assert r[key] > 0, (opt, key, r)
    assert res["cuda_graphs"] == {"skipped": "CUDA graphs need a GPU"}
    hours = res["paper_d_r_extrapolated_hours"]
    assert hours["images"] == 50_000 and hours["steps"] == 1_000 and set(hours["hours"]) >= {"eager", "bf16"}
    for heading in ("resnet18 at batch", "resnet50 at batch", "CUDA graphs", "extrapolated", "CPU SMOKE"):
        assert heading in text


def test_a_spent_budget_skips_sections_and_still_reports(tmp_path):
    text, res = _run(tmp_path, "--budget-s", "0")
    assert all("time budget" in r["skipped"] for rows in res["models"].values() for o, r in rows.items() if o != "compile")
    assert res["paper_d_r_extrapolated_hours"]["hours"] == {} and "done in" in text
