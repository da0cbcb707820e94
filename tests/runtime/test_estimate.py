"""The reproduce time estimate: pass counts from the configuration, times from given speeds
(known-answer arithmetic, no wall time), the GPU warning, and the resized mnist preset."""

from __future__ import annotations

import pytest

from advfeatures.experiments.config import GPU_PRESETS, PRESETS, resolve_config
from advfeatures.experiments.estimate import combine, count_passes, estimate_reproduce_time, format_estimate, gpu_warning

ONE_ARCH = [{"name": "mlp", "kwargs": {"hidden": [8]}, "label": "m"}]


def _small(**sets):
    overrides = [f"{k}={v}" for k, v in sets.items()]
    cfg, _ = resolve_config("digits", overrides=overrides)
    return cfg


def test_pass_counts_follow_the_configuration():
    cfg = _small(**{"standard.epochs": 3, "adversarial.epochs": 2, "adversarial.adversary.steps": 7,
                    "construction.matching.steps": 100, "construction.relabel.steps": 25,
                    "train_d_r.epochs": 4, "extras.inversion": "false", "extras.distillation": "false",
                    "extras.transfer": "false"})
    st = count_passes(cfg, n_train=1000, n_test=200)
    assert st["train_standard"] == {"train": 3000, "grad": 0, "forward": 0, "approximate": False}
    assert st["train_adversarial"]["train"] == 2000 and st["train_adversarial"]["grad"] == 2 * 1000 * 7
    assert st["construct_d_r"]["grad"] == st["construct_d_nr"]["grad"] == 1000 * 100
    assert st["construct_d_rand"]["grad"] == st["construct_d_det"]["grad"] == 1000 * 25
    assert st["train_d_r"]["train"] == 4000
    # the digits suite: three 20-step PGDs and one FGSM, on each of six models
    assert st["evaluate"]["grad"] == 6 * 200 * (20 + 20 + 20 + 1)
    assert set(st) == {"train_standard", "train_adversarial", "construct_d_r", "construct_d_nr", "construct_d_rand",
                       "construct_d_det", "train_d_r", "train_d_nr", "train_d_rand", "train_d_det", "evaluate"}


def test_limits_and_extras_are_counted():
    cfg = _small(**{"train_limit": 500, "evaluation.test_limit": 100, "extras.transfer": "true",
                    "extras.transfer_train_limit": 300, "standard.epochs": 2, "train_d_rand.epochs": 3})
    st = count_passes(cfg, n_train=1000, n_test=200, transfer_archs=ONE_ARCH)
    assert st["train_standard"]["train"] == 2 * 500
    assert st["extra_transfer"]["train@m"] == (2 + 3) * 300
    assert st["extra_distillation"]["approximate"] and not st["train_standard"]["approximate"]


def test_estimate_is_counts_times_speeds():
    cfg = _small(**{"extras.inversion": "false", "extras.distillation": "false", "extras.transfer": "false"})
    speeds = {"train": 1e-3, "grad": 2e-4, "forward": 1e-5}
    est = estimate_reproduce_time(cfg, "cpu", n_train=1000, n_test=200, per_image=speeds, per_image_cpu={k: v / 2 for k, v in speeds.items()})
    st = count_passes(cfg, 1000, 200)
    expected = sum(c["train"] * 1e-3 + c["grad"] * 2e-4 + c["forward"] * 1e-5 for c in st.values())
    assert est["total_seconds"] == pytest.approx(expected, abs=0.1)
    assert est["idle_seconds"] == pytest.approx(expected / 2 / cfg.threads, abs=0.1)
    assert est["stages"]["construct_d_r"]["seconds"] == pytest.approx(1000 * 200 * 2e-4 + 2000 * 1e-5, abs=0.05)
    assert est["calibration_seconds"] == 0 and est["unmeasured"] == [] and est["gpu_warning"] is None
    assert combine({"s": {"train": 10, "grad": 0, "forward": 0, "approximate": False}}, {"train": 0.5}) == {"s": 5.0}
    line = format_estimate(est)
    assert line.startswith("estimated time:") and "\n" not in line


def test_calibration_runs_on_the_tiny_digits_model():
    cfg = _small(**{"extras.transfer": "false"})
    est = estimate_reproduce_time(cfg, "cpu")
    assert est["total_seconds"] > 0 and est["calibration_seconds"] > 0
    assert set(est["per_image_seconds"]) == {"train", "grad", "forward"} and all(v > 0 for v in est["per_image_seconds"].values())


def test_a_gpu_preset_on_a_cpu_says_so_up_front():
    cfg, _ = resolve_config("cifar10")
    assert "cifar10" in GPU_PRESETS
    msg = gpu_warning(cfg, "cpu")
    assert msg and "needs a GPU" in msg and "--device cuda" in msg and "\n" not in msg
    assert gpu_warning(cfg, "cuda") is None
    assert gpu_warning(resolve_config("digits")[0], "cpu") is None


def test_mnist_is_sized_like_fashion_mnist():
    mnist, fashion = resolve_config("mnist")[0], resolve_config("fashion-mnist")[0]
    for cfg in (mnist, fashion):  # what makes fashion-mnist finish on a 2-core CPU
        assert cfg.model.kwargs["width"] == 8 and cfg.standard.epochs == 8 and cfg.threads == 2
        assert cfg.construction.matching.steps == 100 and cfg.construction.relabel.steps == 25
        assert cfg.evaluation.test_limit == 5000
    work = [sum(c["train"] + c["grad"] for c in count_passes(cfg, 60000, 10000).values()) for cfg in (mnist, fashion)]
    assert work[0] == pytest.approx(work[1], rel=0.01)
    assert "mnist" not in GPU_PRESETS and PRESETS["mnist"]["model"]["kwargs"]["width"] == 8
