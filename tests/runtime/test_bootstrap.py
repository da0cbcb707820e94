"""scripts/bootstrap.sh passes ADVFEATURES_TORCH_INDEX to pip as --index-url, for torch alone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, **env: str) -> list[list[str]]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls.log"
    fake = venv / "bin" / "python"  # records each pip call instead of installing
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{log}"\n')
    fake.chmod(0o755)
    (venv / ".advfeatures-installed").unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "ADVFEATURES_TORCH_INDEX"}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh")], env={**base, "ADVFEATURES_VENV": str(venv), **env},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    calls = [line.split() for line in log.read_text().splitlines()]
    # the torch and package installs; the optional robustness install (interop tests) comes after them
    return [c for c in calls if "install" in c and "robustness==1.2.1.post2" not in c]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_torch_index_is_passed_to_the_torch_install_only(tmp_path):
    url = "https://download.pytorch.org/whl/cpu"
    torch_call, package_call = _run(tmp_path, ADVFEATURES_TORCH_INDEX=url)
    assert torch_call[-1] == "torch==2.13.0" and torch_call[torch_call.index("--index-url") + 1] == url
    assert "--index-url" not in package_call and package_call[-1].endswith("[test]")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_without_the_variable_pip_configuration_decides(tmp_path):
    torch_call, package_call = _run(tmp_path)
    assert "--index-url" not in torch_call and torch_call[-1] == "torch==2.13.0"
