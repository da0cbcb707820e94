"""MI-FGSM, DI-FGSM and APGD ride the one loop (``optimize_inputs`` with an update object): their
outputs are bit-identical to the hand-written loops they replaced, kept here as references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advfeatures.attacks import APGD, APGDT, DIFGSM, MIFGSM, GaussianNoise
from advfeatures.attacks.apgd import checkpoints
from advfeatures.attacks.losses import LOSSES, cross_entropy, dlr, dlr_targeted
from advfeatures.attacks.momentum import input_diversity
from advfeatures.models import MLP
from advfeatures.threats import flat_norm, make_threat


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_mifgsm(model, x, y, target, *, norm, eps, steps, step_size, momentum, diversity_prob, resize_rate=1.1,
                     loss="ce", seed=0):
    """The hand-written MI-FGSM loop (Dong et al.'s Algorithm 1, with Xie et al.'s input diversity)."""
    threat, gen = make_threat(norm, eps), _generator(seed)  # on the CPU the size and coin generators are one
    sign, ref = (1.0, y) if target is None else (-1.0, target)
    g, x_adv = torch.zeros_like(x), x
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        seen = input_diversity(x_adv, prob=diversity_prob, resize_rate=resize_rate, size_generator=gen, coin_generator=gen)
        (grad,) = torch.autograd.grad((sign * LOSSES[loss](model(seen), ref)).sum(), x_adv)
        with torch.no_grad():
            g = momentum * g + grad / flat_norm(grad, 1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x_adv = threat.project(threat.step(x_adv.detach(), g, step_size), x)
    return x_adv.detach()


def reference_apgd_run(model, x0, y, target, judge, *, threat, steps, loss, targeted_loss, rho, momentum, random_start,
                       early_stop, eot_iter, gen, compact=True):
    """The hand-written APGD run (Croce & Hein's Algorithm 1) with its own active set."""
    view, n = (-1, 1, 1, 1), x0.shape[0]
    marks = checkpoints(steps)

    def loss_fn(rows):
        if target is None:
            return lambda z: {"ce": cross_entropy, "dlr": dlr}[loss](z, y[rows])
        if targeted_loss == "dlr":
            return lambda z: dlr_targeted(z, y[rows], target[rows])
        return lambda z: -cross_entropy(z, target[rows])

    def evaluate(x, rows):
        x = x.detach().requires_grad_(True)
        fn, total, grad = loss_fn(rows), 0, 0
        for _ in range(eot_iter):
            logits = model(x)
            value = fn(logits)
            (g,) = torch.autograd.grad(value.sum(), x)
            total, grad = total + value.detach(), grad + g
        pred = logits.detach().argmax(1)
        ok = (pred != y[rows]) if judge is None else (pred == judge[rows])
        return total / eot_iter, grad / eot_iter, ok

    x = threat.random_start(x0, gen) if random_start else x0
    rows = torch.arange(n)
    out_x, out_found = x0.clone(), torch.zeros(n, dtype=torch.bool)
    out_loss = torch.full((n,), -math.inf)
    eta = torch.full((n,), (1.0 if threat.norm == "L1" else 2.0) * threat.eps)
    value, grad, ok = evaluate(x, rows)
    s = {"x0": x0, "x": x, "x_max": x, "f_max": value, "grad_max": grad, "x_adv": x, "found": ok, "grad": grad, "eta": eta,
         "x_prev": x, "loss_prev": value, "increases": torch.zeros_like(value), "halved_last": torch.zeros_like(ok),
         "f_max_last": value, "rows": rows}

    def retire(done):
        r = s["rows"][done]
        out_x[r] = torch.where(s["found"][done].view(view), s["x_adv"][done], s["x_max"][done])
        out_found[r], out_loss[r] = s["found"][done], s["f_max"][done]
        if compact:
            for key in s:
                s[key] = s[key][~done]

    for k in range(steps):
        if early_stop and compact and bool(s["found"].any()):
            retire(s["found"])
            if s["rows"].numel() == 0:
                break
        x, a = s["x"], 1.0 if k == 0 else momentum
        with torch.no_grad():
            z = threat.project(threat.step(x, s["grad"], s["eta"]), s["x0"])
            x_new = threat.project(x + a * (z - x) + (1 - a) * (x - s["x_prev"]), s["x0"])
            if early_stop and not compact:
                x_new = torch.where(s["found"].view(view), x, x_new)
            s["x_prev"], x = x, x_new
        value, grad, ok = evaluate(x, s["rows"])
        with torch.no_grad():
            if early_stop and not compact:
                frozen = s["found"]
                value, grad, ok = (torch.where(frozen.view(view) if v.ndim > 1 else frozen, old, v)
                                   for v, old in ((value, s["loss_prev"]), (grad, s["grad"]), (ok, frozen)))
            s["increases"] += (value > s["loss_prev"]).to(value.dtype)
            s["loss_prev"] = value
            better = value > s["f_max"]
            s["x_max"] = torch.where(better.view(view), x, s["x_max"])
            s["grad_max"] = torch.where(better.view(view), grad, s["grad_max"])
            s["f_max"] = torch.where(better, value, s["f_max"])
            s["x_adv"] = torch.where((ok & ~s["found"]).view(view) if early_stop else ok.view(view), x, s["x_adv"])
            s["found"] = s["found"] | ok
            span = marks.get(k + 1)
            if span is not None:
                halve = (s["increases"] < rho * span) | (~s["halved_last"] & (s["f_max"] <= s["f_max_last"]))
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                x = torch.where(halve.view(view), s["x_max"], x)
                grad = torch.where(halve.view(view), s["grad_max"], grad)
                s["loss_prev"] = torch.where(halve, s["f_max"], s["loss_prev"])
                s["halved_last"], s["f_max_last"] = halve, s["f_max"]
                s["increases"].zero_()
            s["x"], s["grad"] = x, grad
    if s["rows"].numel():
        retire(torch.ones_like(s["rows"], dtype=torch.bool))
    return out_x, out_found, out_loss


def reference_apgd(model, x, y, target=None, *, norm, eps, steps, loss="ce", targeted_loss="dlr", rho=0.75, momentum=0.75,
                   random_start=True, restarts=1, early_stop=True, eot_iter=1, seed=0, num_targets=None, compact=True):
    """APGD (``num_targets=None``) or APGD-T over the reference run: each run on the points still robust."""
    threat, gen = make_threat(norm, eps), _generator(seed)
    if num_targets is None or target is not None:
        targets, judge = [target] * restarts, target
    else:
        with torch.no_grad():
            ranked = model(x).argsort(1, descending=True)
        targets = [ranked[:, j] for j in range(1, min(num_targets, ranked.shape[1] - 1) + 1) for _ in range(restarts)]
        judge = None
    best, best_loss = x.clone(), torch.full((x.shape[0],), -math.inf)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool)
    for t in targets:
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        x_i, ok, value = reference_apgd_run(model, x[idx], y[idx], None if t is None else t[idx],
                                            None if judge is None else judge[idx], threat=threat, steps=steps, loss=loss,
                                            targeted_loss=targeted_loss, rho=rho, momentum=momentum,
                                            random_start=random_start, early_stop=early_stop, eot_iter=eot_iter, gen=gen,
                                            compact=compact)
        keep = ok | (value > best_loss[idx])
        best[idx] = torch.where(keep.view(-1, 1, 1, 1), x_i, best[idx])
        best_loss[idx] = torch.where(keep, value, best_loss[idx])
        fooled[idx] = ok
    return best


def _model(noise: float | None = None) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = MLP((1, 8, 8), 10, hidden=(16,))
    if noise is None:
        return net.eval()
    noisy = nn.Sequential(GaussianNoise(noise, seed=5), net).eval()
    noisy.num_classes = 10  # so that the attack's class count draws no noise
    return noisy


@pytest.fixture(scope="module")
def batch():
    g = _generator(0)
    x = torch.rand(12, 1, 8, 8, generator=g)
    with torch.no_grad():
        return x, _model()(x).argmax(1)  # every point starts correctly classified


MOMENTUM_CASES = [
    dict(norm="Linf", eps=0.2, steps=6, momentum=1.0, diversity_prob=0.0),
    dict(norm="Linf", eps=0.2, steps=6, momentum=0.7, diversity_prob=0.5, seed=4),
    dict(norm="L2", eps=1.0, steps=5, momentum=1.0, diversity_prob=1.0, resize_rate=1.3, seed=2),
    dict(norm="L2", eps=1.0, steps=5, momentum=0.5, diversity_prob=0.0, loss="margin"),
]


@pytest.mark.parametrize("case", range(len(MOMENTUM_CASES)))
@pytest.mark.parametrize("targeted", [False, True])
def test_mifgsm_on_the_loop_equals_the_hand_written_loop(batch, case, targeted):
    x, y = batch
    kw = MOMENTUM_CASES[case]
    target = (y + 3) % 10 if targeted else None
    step_size = kw["eps"] / kw["steps"]
    expected = reference_mifgsm(_model(), x, y, target, step_size=step_size, **kw)
    assert torch.equal(MIFGSM(**kw)(_model(), x, y, target=target), expected)


def test_difgsm_on_the_loop_equals_the_hand_written_loop(batch):
    x, y = batch
    expected = reference_mifgsm(_model(), x, y, None, norm="Linf", eps=0.2, steps=6, step_size=0.2 / 6, momentum=0.0,
                                diversity_prob=0.5, seed=7)
    assert torch.equal(DIFGSM(eps=0.2, steps=6, seed=7)(_model(), x, y), expected)


APGD_CASES = [
    dict(norm="Linf", eps=0.03, steps=20),
    dict(norm="Linf", eps=0.03, steps=20, early_stop=False, restarts=2),
    dict(norm="L2", eps=0.24, steps=25, loss="dlr", seed=3),
    dict(norm="L2", eps=0.24, steps=12, early_stop=False, random_start=False, momentum=1.0, rho=0.5),
    dict(norm="L1", eps=1.2, steps=15, seed=1),
]


@pytest.mark.parametrize("case", range(len(APGD_CASES)))
@pytest.mark.parametrize("compact", [True, False])
def test_apgd_on_the_loop_equals_the_hand_written_loop(batch, case, compact, monkeypatch):
    x, y = batch
    kw = APGD_CASES[case]
    monkeypatch.setattr(APGD, "_compact", compact)
    out = APGD(batch_rows=1, **kw)(_model(), x, y)  # restarts one after the other, as the reference runs them
    assert torch.equal(out, reference_apgd(_model(), x, y, compact=compact, **kw))
    assert 0 < int((_model()(out).argmax(1) != y).sum()) < len(y)  # a case where some points fall and some stand


@pytest.mark.parametrize("targeted_loss", ["dlr", "ce"])
def test_targeted_apgd_and_apgd_t_equal_the_hand_written_loop(batch, targeted_loss):
    x, y = batch
    kw = dict(norm="L2", eps=0.3, steps=10, targeted_loss=targeted_loss, seed=2)
    target = (y + 1) % 10
    assert torch.equal(APGD(**kw)(_model(), x, y, target=target), reference_apgd(_model(), x, y, target, **kw))
    got = APGDT(num_targets=3, restarts=2, batch_rows=1, **kw)(_model(), x, y)
    assert torch.equal(got, reference_apgd(_model(), x, y, num_targets=3, restarts=2, **kw))


def test_apgd_t_with_its_runs_in_one_batch_equals_the_hand_written_run_on_the_stacked_rows(batch):
    """Without the active set the batched sweep is the reference run on every run's rows stacked,
    then per example its first run that fooled it, else its run of highest loss."""
    x, y = batch
    kw = dict(norm="L2", eps=0.3, steps=10, seed=2)
    got = APGDT(num_targets=3, restarts=2, early_stop=False, **kw)(_model(), x, y)
    with torch.no_grad():
        ranked = _model()(x).argsort(1, descending=True)
    runs = [ranked[:, j] for j in (1, 2, 3) for _ in range(2)]
    k, n = len(runs), x.shape[0]
    xs, ok, value = reference_apgd_run(_model(), x.repeat(k, 1, 1, 1), y.repeat(k), torch.cat(runs), None,
                                       threat=make_threat("L2", 0.3), steps=10, loss="ce", targeted_loss="dlr",
                                       rho=0.75, momentum=0.75, random_start=True, early_stop=False, eot_iter=1,
                                       gen=_generator(2))
    ok, value, xs = ok.view(k, n), value.view(k, n), xs.view(k, n, *x.shape[1:])
    pick = torch.where(ok.any(0), ok.float().argmax(0), value.argmax(0))
    assert torch.equal(got, xs[pick, torch.arange(n)])
    fooled = _model()(got).argmax(1) != y
    assert 0 < int(fooled.sum()) < n and bool((pick > 0).any())  # some examples take a later run's point


@pytest.mark.parametrize("early_stop", [True, False])
def test_apgd_t_breaks_the_same_points_with_its_runs_batched_or_one_by_one(batch, early_stop):
    """Without random starts every run is deterministic, so stacking the runs changes no trajectory."""
    x, y = batch
    kw = dict(norm="L2", eps=0.3, steps=10, random_start=False, num_targets=4, early_stop=early_stop)
    one_by_one = APGDT(batch_rows=1, **kw)(_model(), x, y)
    stacked = APGDT(**kw)(_model(), x, y)
    fooled = _model()(stacked).argmax(1) != y
    assert torch.equal(fooled, _model()(one_by_one).argmax(1) != y)
    assert 0 < int(fooled.sum()) < len(y)


def test_apgd_with_eot_on_a_randomised_model_equals_the_hand_written_loop(batch):
    x, y = batch
    kw = dict(norm="Linf", eps=0.03, steps=8, eot_iter=3, seed=1)
    assert torch.equal(APGD(**kw)(_model(noise=0.05), x, y), reference_apgd(_model(noise=0.05), x, y, **kw))
