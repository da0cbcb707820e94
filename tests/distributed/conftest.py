"""Fixtures of the multi-process, device and speed-option tests: a tiny model file, and a helper
that runs a command under ``torchrun`` with two CPU processes (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from advfeatures.models import build_model, save_model


@pytest.fixture(scope="session")
def mlp_file(tmp_path_factory):
    """An untrained MLP for 8×8 digits saved with save_model (its weights only need to be fixed)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("mlp", (1, 8, 8), 10, hidden=(32,))
    path = tmp_path_factory.mktemp("models") / "mlp.safetensors"
    save_model(model, path)
    return path


def run_torchrun(args: list[str], *, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node NPROC ARGS`` (a free port, one thread per process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc
