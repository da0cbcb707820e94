"""Devices, process-group helpers, the allocator, and the speed options (compile, bf16, channels-last)
that must change speed only."""

from __future__ import annotations

import pytest
import torch

from advfeatures import distributed
from advfeatures.attacks.pgd import PGD
from advfeatures.construct import MatchingConfig, match_representation
from advfeatures.distributed import accelerate, compile_available, init_distributed, resolve_device, unwrap
from advfeatures.errors import ConfigError
from advfeatures.models import build_model


def _batch(shape, n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def _model(name, shape, **kw):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model(name, shape, 10, **kw).eval()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")


def test_single_process_without_torchrun(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx, dev = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True) and dev.type == "cpu"
    assert distributed.rank() == 0 and distributed.world_size() == 1 and not distributed.is_distributed()
    distributed.barrier()  # nothing to wait for
    t = torch.ones(3)
    assert torch.equal(distributed.all_reduce_sum(t), torch.ones(3))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        init_distributed("cpu")


def test_allocator_tuning(monkeypatch):
    from advfeatures.runtime import allocator

    monkeypatch.setattr(allocator, "_TUNED", None)  # the state lives in advfeatures.runtime.allocator
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=1")
    assert distributed.tune_allocator() is None  # the user's own settings win
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("ADVFEATURES_MALLOC", "default")
    assert distributed.tune_allocator() is None
    monkeypatch.delenv("ADVFEATURES_MALLOC")
    settings = distributed.allocator_settings()
    assert {"libc", "GLIBC_TUNABLES", "LD_PRELOAD", "mallopt"} <= settings.keys()
    if "glibc" in settings["libc"]:
        assert distributed.tune_allocator() == {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30}
        assert "mmap_threshold=33554432" in distributed.allocator_settings()["mallopt"]


def test_accelerate_off_is_the_model_itself():
    m = _model("mlp", (1, 8, 8), hidden=(16,))
    assert accelerate(m) is m and unwrap(m) is m


def test_channels_last_is_not_applied_on_a_cpu(caplog):
    m = _model("cnn", (1, 8, 8), width=8, hidden=16)
    with caplog.at_level("WARNING"):
        fast = accelerate(m, channels_last=True, device="cpu")
    assert fast is m and all(p.is_contiguous() for p in m.parameters())
    from advfeatures.runtime import channels_last_usable

    assert channels_last_usable(True, "cuda") and not channels_last_usable(True, "cpu") and not channels_last_usable(False, "cuda")


def test_channels_last_changes_nothing_but_layout():
    """The wrapper a GPU gets (built directly here: :func:`accelerate` does not apply it on a CPU),
    in eval mode, where oneDNN's channels-last kernels run correctly on a CPU."""
    from advfeatures.runtime.speed import AcceleratedModel

    m = _model("cnn", (1, 8, 8), width=8, hidden=16)
    x, y = _batch((1, 8, 8))
    ref = m(x)
    m.to(memory_format=torch.channels_last)
    fast = AcceleratedModel(m, compile=False, bf16=False, channels_last=True, device_type="cpu")
    assert unwrap(fast) is m and fast.num_classes == 10 and hasattr(fast, "features") and fast.head is m.head
    torch.testing.assert_close(fast(x), ref, rtol=1e-5, atol=1e-5)
    a = PGD(norm="L2", eps=0.5, steps=3, seed=4)(m, x, y)
    b = PGD(norm="L2", eps=0.5, steps=3, seed=4)(fast, x, y)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_bf16_autocast_is_close_and_returns_float32():
    m = _model("mlp", (1, 8, 8), hidden=(32,))
    x, _ = _batch((1, 8, 8), n=64)
    fast = accelerate(m, bf16=True)
    out = fast(x)
    assert out.dtype == torch.float32
    ref = m(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 keeps ~3 significant digits
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9


def test_compiled_and_eager_pgd_agree():
    ok, why = compile_available()
    if not ok:
        pytest.skip(f"torch.compile cannot build kernels here: {why}")
    m = _model("mlp", (1, 8, 8), hidden=(32,))
    x, y = _batch((1, 8, 8))
    fast = accelerate(m, compile=True)
    for norm, eps in (("L2", 1.0), ("Linf", 0.1)):
        eager = PGD(norm=norm, eps=eps, steps=5, seed=7)(m, x, y, return_result=True)
        compiled = PGD(norm=norm, eps=eps, steps=5, seed=7)(fast, x, y, return_result=True)
        torch.testing.assert_close(compiled.x_adv, eager.x_adv, rtol=0, atol=1e-5)
        torch.testing.assert_close(compiled.loss, eager.loss, rtol=1e-5, atol=1e-5)
        assert torch.equal(compiled.success, eager.success)
        assert eager.success.float().mean() > 0.3  # the attack did something worth comparing
    # the representation-matching loop through the compiled representation, fake ReLU included
    start = x.roll(1, 0)
    a, da = match_representation(m, x, start, MatchingConfig(steps=4, step_size=0.5))
    b, db = match_representation(fast, x, start, MatchingConfig(steps=4, step_size=0.5))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(db, da, rtol=1e-5, atol=1e-5)
