"""The reproduce time estimate: pass counts from the configuration, times from given speeds
(known-answer arithmetic, no wall time), the attack stages' upper bound and assumption, the
printed line, the GPU warning, and the resized mnist preset."""

from __future__ import annotations

import pytest

from advfeatures.experiments.config import GPU_PRESETS, PRESETS, resolve_config
from advfeatures.experiments.estimate import (BROKEN_STEP_SHARE, ROBUST_SHARE, _shares, combine, count_passes, estimate_reproduce_time,
                                              format_estimate, gpu_warning, member_passes, sanity_passes, worst_case_passes)

ONE_ARCH = [{"name": "mlp", "kwargs": {"hidden": [8]}, "label": "m"}]
SPEEDS = {"train": 1e-3, "grad": 2e-4, "forward": 1e-5, "fab_step": 5e-4, "square_query": 2e-5}


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
    assert st["train_standard"] == {"train": 3000, "grad": 0, "forward": 0, "fab_step": 0, "square_query": 0, "approximate": False}
    assert st["train_adversarial"]["train"] == 2000 and st["train_adversarial"]["grad"] == 2 * 1000 * 7
    assert st["construct_d_r"]["grad"] == st["construct_d_nr"]["grad"] == 1000 * 100
    assert st["construct_d_rand"]["grad"] == st["construct_d_det"]["grad"] == 1000 * 25
    assert st["train_d_r"]["train"] == 4000
    # the digits suite: three 20-step PGDs and one FGSM, on each of six models (the upper bound:
    # no point broken); forwards: the clean check, then per PGD its last iterate and the check
    assert st["evaluate"]["grad"] == 6 * 200 * (20 + 20 + 20 + 1)
    assert st["evaluate"]["forward"] == 6 * 200 * (1 + 2 + 2 + 2 + 1)
    assert set(st) == {"train_standard", "train_adversarial", "construct_d_r", "construct_d_nr", "construct_d_rand",
                       "construct_d_det", "train_d_r", "train_d_nr", "train_d_rand", "train_d_det", "evaluate",
                       "worst_case", "sanity"}
    off = _small(**{"evaluation.worst_case.enabled": "false", "evaluation.sanity.enabled": "false"})
    assert "worst_case" not in count_passes(off, 1000, 200) and "sanity" not in count_passes(off, 1000, 200)


def test_limits_and_extras_are_counted():
    cfg = _small(**{"train_limit": 500, "evaluation.test_limit": 100, "extras.transfer": "true",
                    "extras.transfer_train_limit": 300, "standard.epochs": 2, "train_d_rand.epochs": 3})
    st = count_passes(cfg, n_train=1000, n_test=200, transfer_archs=ONE_ARCH)
    assert st["train_standard"]["train"] == 2 * 500
    assert st["extra_transfer"]["train@m"] == (2 + 3) * 300
    assert st["extra_distillation"]["approximate"] and not st["train_standard"]["approximate"]


# A small worst case and sanity check, counted by hand below: 10 APGD/FAB steps, 2 targets, 50 Square
# queries; the checks on the first 50 test images, 10 PGD steps, 40 Square queries.
SMALL_ATTACKS = {"evaluation.worst_case.steps": 10, "evaluation.worst_case.n_target_classes": 2,
                 "evaluation.worst_case.square_queries": 50, "evaluation.sanity.steps": 10,
                 "evaluation.sanity.square_queries": 40, "evaluation.sanity.test_limit": 50}


def test_worst_case_upper_bound_counts_every_member_on_every_point():
    cfg = _small(**SMALL_ATTACKS)  # digits: radii L2 0.5, L2 1.0, Linf 0.1
    per_image_radius = {  # the clean forward; APGD-CE; APGD-T over 2 targets; FAB-T over 2; Square
        "grad": 10 + 2 * 10, "fab_step": 2 * 10, "square_query": 50, "forward": 1 + (1 + 2) + (2 + 3) + 4 + 2}
    wc = worst_case_passes(cfg, 200)
    assert wc == {k: 3 * 200 * v for k, v in per_image_radius.items()}
    st = count_passes(cfg, 1000, 200)
    assert {k: st["worst_case"][k] for k in per_image_radius} == {k: 6 * 3 * 200 * v for k, v in per_image_radius.items()}
    assert member_passes("apgd-ce", steps=7, runs=5) == {"grad": 35, "forward": 7}
    assert member_passes("square", steps=7, queries=99) == {"square_query": 99, "forward": 2}
    # two classes: no targeted members; L1: five APGD-CE restarts, five targets at most, no Square
    assert worst_case_passes(cfg, 1, num_classes=2) == {"forward": 3 * (1 + 3 + 2), "grad": 3 * 10, "square_query": 3 * 50}
    l1 = _small(**{**SMALL_ATTACKS, "evaluation.attacks": '[{"attack": "pgd", "norm": "L1", "eps": 5.0, "steps": 10}]',
                   "evaluation.worst_case.n_target_classes": 9})
    assert worst_case_passes(l1, 1) == {"forward": 1 + (5 + 2) + (5 + 3) + 4, "grad": 5 * 10 + 5 * 10, "fab_step": 9 * 10}


def test_sanity_upper_bound_follows_the_checks():
    cfg = _small(**SMALL_ATTACKS)  # at L2 ε=1.0, the largest L2 radius; unbounded: √64 = 8 > 4ε
    n, pgds = 50, 2 + 4 + 1  # margin and CE PGD at ε, the curve at 0.25, 0.5, 2 and 4 ε, the unbounded one
    expected = {"forward": 3 * n + n + n + pgds * 2 * n + n,  # two calls and softmax; clean; FGSM; PGDs; Square
                "grad": n + n + pgds * 10 * n, "square_query": 40 * n}  # the gradient check; FGSM; PGDs
    assert sanity_passes(cfg, 200, shape=(1, 8, 8)) == expected
    assert count_passes(cfg, 1000, 200)["sanity"]["square_query"] == 6 * 40 * n
    # on 1×2×2 images the unbounded L2 radius is 2: only 0.25 and 0.5 ε stay on the curve
    assert sanity_passes(cfg, 200, shape=(1, 2, 2))["grad"] == n + n + (2 + 2 + 1) * 10 * n


def test_the_assumed_share_scales_only_what_the_active_sets_cut():
    assert _shares(1, True, 1.0) == _shares(4, False, 1.0) / 4 == 1.0
    assert _shares(1, True, ROBUST_SHARE) == pytest.approx(ROBUST_SHARE + (1 - ROBUST_SHARE) * BROKEN_STEP_SHARE)
    assert _shares(3, False, 0.2) == pytest.approx(0.6)
    cfg = _small(**SMALL_ATTACKS)
    r = 0.2
    first = r + (1 - r) * BROKEN_STEP_SHARE
    wc = worst_case_passes(cfg, 1, robust=r)  # APGD-CE on every point, the later members on the robust share
    assert wc["grad"] == pytest.approx(3 * (10 * first + 20 * r))
    assert wc["fab_step"] == pytest.approx(3 * 20 * r) and wc["square_query"] == pytest.approx(3 * 50 * r)
    assert wc["forward"] == pytest.approx(3 * (1 + 3 + r * (5 + 4 + 2)))
    upper, est = count_passes(cfg, 1000, 200), count_passes(cfg, 1000, 200, robust=ROBUST_SHARE)
    for stage in upper:
        assert all(est[stage][k] <= upper[stage][k] for k in SPEEDS)
        same = stage not in ("evaluate", "worst_case", "sanity")
        assert (est[stage] == upper[stage]) == same and est[stage]["approximate"] == (not same or stage == "extra_distillation")


def test_estimate_is_counts_times_speeds():
    cfg = _small(**{"extras.inversion": "false", "extras.distillation": "false", "extras.transfer": "false"})
    est = estimate_reproduce_time(cfg, "cpu", n_train=1000, n_test=200, per_image=SPEEDS, per_image_cpu={k: v / 2 for k, v in SPEEDS.items()})
    for name, robust in (("total_seconds", ROBUST_SHARE), ("upper_seconds", 1.0)):
        st = count_passes(cfg, 1000, 200, shape=(1, 8, 8), robust=robust)
        expected = sum(c[k] * v for c in st.values() for k, v in SPEEDS.items())
        assert est[name] == pytest.approx(expected, abs=0.1)
        if name == "total_seconds":
            assert est["idle_seconds"] == pytest.approx(expected / 2 / cfg.threads, abs=0.1)
    assert est["upper_seconds"] > est["total_seconds"] and est["robust_share"] == ROBUST_SHARE
    assert est["stages"]["construct_d_r"]["seconds"] == pytest.approx(1000 * 200 * 2e-4 + 2000 * 1e-5, abs=0.05)
    assert est["calibration_seconds"] == 0 and est["unmeasured"] == [] and est["gpu_warning"] is None
    assert combine({"s": {"train": 10, "grad": 0, "forward": 0, "approximate": False}}, {"train": 0.5}) == {"s": 5.0}
    partial = estimate_reproduce_time(cfg, "cpu", n_train=1000, n_test=200, per_image={"train": 1e-3, "grad": 2e-4, "forward": 1e-5})
    assert partial["unmeasured"] == ["fab_step", "square_query"]


def _est(total: float, upper: float, **more) -> dict:
    return {"total_seconds": total, "upper_seconds": upper, "robust_share": 0.15, "idle_seconds": None, "device": "cpu",
            "threads": 2, "load_average": 1.5, "images": {"train": 20000, "test": 5000}, "gpu_warning": None,
            "stages": {"worst_case": {"seconds": 600.0}, "construct_d_r": {"seconds": 300.0}, "sanity": {"seconds": 45.0},
                       "evaluate": {"seconds": 10.0}}, **more}


def test_the_line_gives_the_estimate_its_bound_and_its_assumption():
    line = format_estimate(_est(1500.0, 7200.0, idle_seconds=1200.0))
    assert line == ("estimated time: 25 min (up to 2.0 h if no point is broken) on cpu, 2 threads, about 20 min with the machine "
                    "to itself, for 20000 training / 5000 test images (longest: worst_case 10 min, construct_d_r 5 min, "
                    "sanity 45 s; attacks assumed to leave 15% of points robust; calibrated from timed passes here, load average 1.5)")
    same = format_estimate(_est(1500.0, 1510.0))  # no attack stage to speak of: no bound, no assumption
    assert "up to" not in same and "assumed" not in same and same.startswith("estimated time: 25 min on cpu, 2 threads, for")
    real = format_estimate(estimate_reproduce_time(_small(), "cpu", n_train=1000, n_test=200, per_image=SPEEDS))
    assert real.startswith("estimated time:") and "\n" not in real and "if no point is broken" in real


def test_calibration_runs_on_the_tiny_digits_model():
    cfg = _small(**{"extras.transfer": "false"})
    est = estimate_reproduce_time(cfg, "cpu")
    assert est["total_seconds"] > 0 and est["calibration_seconds"] > 0
    assert set(est["per_image_seconds"]) == set(SPEEDS) and all(v > 0 for v in est["per_image_seconds"].values())
    assert est["unmeasured"] == [] and est["upper_seconds"] >= est["total_seconds"]


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


def test_the_line_counts_threads_in_english():
    assert ", 1 thread," in format_estimate(_est(1500.0, 1510.0, threads=1))
    assert ", 2 threads," in format_estimate(_est(1500.0, 1510.0, threads=2))


def test_the_gpu_warning_states_the_runs_own_size_and_estimate():
    cfg, _ = resolve_config("cifar10", overrides=["train_limit=1000", "construction.matching.steps=50",
                                                   "standard.epochs=3", "adversarial.epochs=4"])
    msg = gpu_warning(cfg, "cpu", n_train=50000, seconds=7200)
    assert "4 epochs and 50 matching steps on 1 000 training images" in msg and "about 2.0 h (estimated)" in msg, msg
    assert "150 epochs" not in msg and "days" not in msg and "\n" not in msg
    full = gpu_warning(resolve_config("cifar10")[0], "cpu")
    assert "150 epochs and 1000 matching steps on 50 000 training images" in full, full
