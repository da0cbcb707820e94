"""Fixtures of the multi-process, device and speed-option tests: a tiny model file, a helper that
runs a command under ``torchrun`` with two CPU processes (gloo), and a torch.compile cache under
``tmp_path``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture
def inductor_cache(monkeypatch):
    """Precompiled headers in torch.compile's cache folder (``TORCHINDUCTOR_CACHE_DIR``, which the
    suite's conftest points into pytest's basetemp). Torch 2.13 puts them under the default folder
    in the temp dir whatever that variable says (``codecache._HEADER_DIR``, fixed at import), so
    those two paths are redirected here."""
    import torch._inductor.codecache as codecache  # (imports torch._dynamo, which makes the cache folder)

    cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    for name, sub in (("_HEADER_DIR", "precompiled_headers"), ("_HEADER_LOCK_DIR", "precompiled_headers/locks")):
        if hasattr(codecache, name):
            monkeypatch.setattr(codecache, name, str(cache / sub))
    return cache


def run_torchrun(args: list[str], *, log_dir: Path, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node NPROC --log-dir LOG_DIR ARGS`` (a free port, one
    thread per process). Without ``--log-dir`` torchrun makes a ``torchelastic_*`` folder in the
    system temp dir on every launch and never removes it; the tests give it one under ``tmp_path``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--log-dir", str(log_dir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert proc.returncode == 0, (f"torchrun failed ({proc.returncode}, logs in {log_dir}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
