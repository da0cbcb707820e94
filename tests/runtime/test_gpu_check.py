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
    for heading in ("resnet18 at batch", "resnet50 at batch", "CUDA graphs", "extrapolated", "CPU SMOKE", "worst-case ensemble"):
        assert heading in text
    _check_ensemble(res["ensemble"])


def _check_ensemble(ens: dict) -> None:
    """torchattacks is no dependency: where it is missing the section says so; where it is there,
    every run has a time and a robust accuracy, and the speed-up is their ratio."""
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        assert "torchattacks is not importable" in ens["skipped"], ens
        return
    assert "error" not in ens and "skipped" not in ens, ens
    runs = ens["runs"]
    assert set(runs) == {"ours, 2 steps", "torchattacks members, 2 steps", "ours, 2 steps, batch_rows 4"}
    for r in runs.values():
        assert r["seconds"] > 0 and 0.0 <= r["robust_accuracy"] <= 1.0
    assert ens["speedup"]["2 steps"] == pytest.approx(runs["torchattacks members, 2 steps"]["seconds"]
                                                      / runs["ours, 2 steps"]["seconds"], rel=0.01)
    assert ens["speedup"]["2 steps, batch_rows 4"] == pytest.approx(runs["torchattacks members, 2 steps"]["seconds"]
                                                                    / runs["ours, 2 steps, batch_rows 4"]["seconds"], rel=0.01)


def test_sections_runs_one_section_alone(tmp_path):
    text, res = _run(tmp_path, "--sections", "ensemble")
    assert all(rows == {} for rows in res["models"].values()) and "cuda_graphs" not in res
    assert "resnet18 at batch" not in text and "worst-case ensemble" in text
    _check_ensemble(res["ensemble"])


def test_an_unknown_section_is_one_line(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", "--sections", "options,graph"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "unknown section 'graph'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_spent_budget_skips_sections_and_still_reports(tmp_path):
    text, res = _run(tmp_path, "--budget-s", "0")
    assert all("time budget" in r["skipped"] for rows in res["models"].values() for o, r in rows.items() if o != "compile")
    assert res["paper_d_r_extrapolated_hours"]["hours"] == {} and "done in" in text


def test_without_torchattacks_the_ensemble_says_so(tmp_path):
    blocker = tmp_path / "block" / "torchattacks"  # an import that fails, as where torchattacks is not installed
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('not installed')\n")
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(blocker.parent)}
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu-smoke", "--sections", "ensemble", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "torchattacks is not importable" in json.loads(out.read_text())["ensemble"]["skipped"]
