"""The runtime package: one configuration object, one function applying it, and a torch-free import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from advfeatures import distributed, runtime
from advfeatures.errors import ConfigError
from advfeatures.runtime import RuntimeConfig, apply_runtime, choose_threads, default_threads, using_threads
from advfeatures.runtime.device import check_device_name, resolve_device

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(runtime.__file__))))


def test_importing_runtime_and_building_a_config_does_not_import_torch():
    code = ("import sys, advfeatures.runtime as r; c = r.RuntimeConfig(device='cpu', threads=2).validate(); "
            "r.default_threads(); r.runtime_options(); assert 'torch' not in sys.modules, 'torch was imported'; print(r.DEFAULT_DEVICE)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "auto"


@pytest.mark.parametrize("cores, load, cap, expected", [
    (2, 0.0, None, 2),  # idle: every core
    (2, 0.4, None, 2),  # rounding: a light load takes no core
    (2, 1.0, None, 1),  # one core busy elsewhere: one thread
    (2, 7.0, None, 1),  # overloaded: never fewer than one
    (16, 3.0, 8, 8),  # never more than torch's own default (physical cores)
    (16, 12.4, 8, 4),
])
def test_thread_rule_takes_the_free_cores(cores, load, cap, expected):
    assert choose_threads(cores, load, cap) == expected


def test_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3


def test_apply_runtime_sets_threads_and_device():
    before = torch.get_num_threads()
    try:
        rt = apply_runtime(RuntimeConfig(device="cpu", threads=1, distributed=False))
        assert torch.get_num_threads() == 1 and rt.threads == 1 and rt.device == torch.device("cpu")
        assert rt.context.world_size == 1 and rt.as_dict()["device"] == "cpu"
        m = torch.nn.Linear(2, 2)
        assert rt.accelerate(m) is m  # every speed option off: the model itself
    finally:
        torch.set_num_threads(before)


def test_using_threads_restores():
    before = torch.get_num_threads()
    with using_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("cfg, match", [
    (RuntimeConfig(device="gpu"), "unknown device 'gpu'"),
    (RuntimeConfig(threads=0), "threads must be a whole number"),
    (RuntimeConfig(threads=True), "threads must be a whole number"),
])
def test_bad_configuration_is_one_clear_error(cfg, match):
    with pytest.raises(ConfigError, match=match):
        apply_runtime(cfg)


def test_devices():
    assert check_device_name("CUDA:1") == "cuda:1"
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_old_module_is_an_alias_of_the_new_one():
    for name in ("resolve_device", "init_distributed", "accelerate", "unwrap", "tune_allocator", "peak_rss_mib",
                 "barrier", "all_reduce_sum", "DistContext", "compile_available"):
        assert getattr(distributed, name) is getattr(runtime, name), name


def test_one_table_of_options_feeds_parser_and_checker():
    from advfeatures.runtime import runtime_options

    rows = {r["name"]: r for r in runtime_options()}
    assert set(rows) == {"device", "threads", "compile", "bf16", "channels_last", "tune_allocator", "distributed"}
    assert rows["device"]["default"] == "auto" and rows["threads"]["type"] is int and rows["bf16"]["option"] == "--bf16"
    assert rows["channels_last"]["option"] == "--channels-last" and all(r["help"] for r in rows.values())
    cfg = RuntimeConfig.from_options(device="cpu", threads=None, bf16=True)
    assert cfg == RuntimeConfig(device="cpu", bf16=True)
    with pytest.raises(ConfigError, match="unknown runtime option 'gpus'"):
        RuntimeConfig.from_options(gpus=2)
    with pytest.raises(ConfigError, match="threads"):
        RuntimeConfig.from_options(threads=-1)
