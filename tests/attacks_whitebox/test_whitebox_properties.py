"""Invariants every white-box attack keeps, whatever the input: outputs are images of the same
shape in [0, 1] and inside the threat model's ball; parameters and modes are left alone."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.attacks import APGD, APGDT, CWL2, MIFGSM, CWLinf
from advfeatures.attacks.momentum import input_diversity
from advfeatures.attacks.registry import ATTACK_NAMES, REGISTRY
from advfeatures.threats import flat_norm

from .conftest import registry_attack, takes

WITH_EPS = sorted(n for n in ATTACK_NAMES if takes(n, "eps"))  # fixed-budget attacks: the ball invariant
WITHOUT_EPS = sorted(n for n in ATTACK_NAMES if not takes(n, "eps"))  # minimal-norm and spatial attacks


def images(seed: int, n: int = 4) -> torch.Tensor:
    """Random 8×8 images with some pixels exactly at 0 and at 1, where the box binds."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    u = torch.rand(n, 1, 8, 8, generator=g)
    return torch.where(u < 0.2, torch.zeros_like(x), torch.where(u > 0.9, torch.ones_like(x), x))


def check_image_batch(x_adv: torch.Tensor, x: torch.Tensor) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("name", WITH_EPS)
@settings(max_examples=4, deadline=None)
@given(eps=st.floats(0.01, 0.6), seed=st.integers(0, 2**16), norm_index=st.integers(0, 2))
def test_outputs_stay_in_the_ball_and_the_box(untrained_mlp, name, eps, seed, norm_index):
    norms = REGISTRY[name].norms
    norm = norms[norm_index % len(norms)]
    if norm != "Linf":
        eps *= 4  # a comparable ball in L2 / L1 for 64 pixels
    x = images(seed)
    y = torch.arange(4) % 10
    x_adv = registry_attack(name, norm=norm, eps=eps, seed=seed % 7)(untrained_mlp, x, y)
    check_image_batch(x_adv, x)
    p = {"Linf": math.inf, "L2": 2.0, "L1": 1.0}[norm]
    assert (flat_norm(x_adv - x, p) <= eps * (1 + 1e-5) + 1e-6).all()


@pytest.mark.parametrize("name", WITHOUT_EPS)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_attacks_without_a_budget_return_images_in_the_box(untrained_mlp, name, seed):
    x = images(seed)
    y = untrained_mlp(x).argmax(1).detach()
    res = registry_attack(name)(untrained_mlp, x, y, return_result=True)
    check_image_batch(res.x_adv, x)
    # an example the attack did not fool comes back unchanged (up to CW's tanh rounding)
    if name in ("cw-l2", "lbfgs"):
        assert (res.norms["L2"][~res.success] < 1e-4).all()


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_parameters_untouched_and_modes_restored(name):
    from advfeatures.models import MLP

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MLP((1, 8, 8), 10, hidden=(16,))
    model.train()
    model.features[0].eval()  # a mixed state, to be restored as it was
    modes = [m.training for m in model.modules()]
    before = [p.detach().clone() for p in model.parameters()]
    x = images(1)
    registry_attack(name)(model, x, torch.tensor([0, 1, 2, 3]))
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("make", [lambda: APGD(eps=0.1, steps=5), lambda: MIFGSM(eps=0.1, diversity_prob=0.5),
                                  lambda: APGDT(eps=0.1, steps=4, num_targets=2)])
def test_same_seed_same_result_other_seed_other_result(untrained_mlp, make):
    x, y = images(2), torch.tensor([1, 2, 3, 4])
    a, b = make()(untrained_mlp, x, y), make()(untrained_mlp, x, y)
    assert torch.equal(a, b)
    other = make()
    other.seed = 1
    assert not torch.equal(a, other(untrained_mlp, x, y))


def test_input_diversity_resizes_pads_and_keeps_the_shape():
    x = images(3, n=64)
    kw = dict(resize_rate=1.1, size_generator=torch.Generator().manual_seed(0), coin_generator=torch.Generator().manual_seed(0))
    assert input_diversity(x, prob=0.0, **kw) is x
    always = input_diversity(x, prob=1.0, **kw)
    assert always.shape == x.shape
    assert not torch.equal(always, x)
    half = input_diversity(x, prob=0.5, **kw)
    kept = (half == x).flatten(1).all(1)
    assert 10 < int(kept.sum()) < 54  # about half the examples are transformed, per example
    # same generators, same transform
    again = input_diversity(x, prob=1.0, resize_rate=1.1, size_generator=torch.Generator().manual_seed(0),
                            coin_generator=torch.Generator().manual_seed(0))
    assert torch.equal(always, again)


BATCH_INDEPENDENT = {  # deterministic attacks whose per-example work must not see the rest of the batch
    **{n: (lambda n=n: registry_attack(n)) for n in ATTACK_NAMES if REGISTRY[n].batch_independent},
    # and settings that make the others deterministic and per-example
    "mifgsm_l2": lambda: MIFGSM(norm="L2", eps=0.5, steps=5),
    "cw_linf": lambda: CWLinf(eps=0.1, steps=5, random_start=False),
    "apgd": lambda: APGD(eps=0.1, steps=12, random_start=False),
    "apgd_l2_dlr": lambda: APGD(norm="L2", eps=0.5, steps=12, loss="dlr", random_start=False),
    "apgd_t": lambda: APGDT(eps=0.1, steps=6, num_targets=3, random_start=False),
    "cw_l2": lambda: CWL2(steps=20, search_steps=3, initial_const=1.0, abort_early=False),
}


@pytest.mark.parametrize("name", sorted(BATCH_INDEPENDENT))
def test_each_example_is_attacked_as_if_alone(untrained_mlp, name):
    # per-example step sizes, normalisations, stopping and searches: a batch gives the same answer
    # as its halves (batch-level L1 normalisation or a shared step size would break this)
    x = images(4, n=6)
    x[:3] = x[:3] * 0.2  # very different gradient sizes in the two halves
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    whole = BATCH_INDEPENDENT[name]()(untrained_mlp, x, y)
    halves = torch.cat([BATCH_INDEPENDENT[name]()(untrained_mlp, x[:3], y[:3]),
                        BATCH_INDEPENDENT[name]()(untrained_mlp, x[3:], y[3:])])
    assert torch.allclose(whole, halves, atol=1e-5)


def test_mifgsm_accumulates_l1_normalised_gradients_with_decay(untrained_mlp):
    x, y = images(5), torch.tensor([3, 1, 4, 1])
    eps, steps, mu = 0.2, 3, 0.7
    g, x_adv = torch.zeros_like(x), x.clone()
    for _ in range(steps):  # Dong et al.'s Algorithm 1, written out
        xr = x_adv.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(untrained_mlp(xr), y, reduction="sum"), xr)
        g = mu * g + grad / grad.abs().flatten(1).sum(1).view(-1, 1, 1, 1)
        x_adv = torch.min(torch.max(x_adv + eps / steps * g.sign(), x - eps), x + eps).clamp(0, 1)
    out = MIFGSM(eps=eps, steps=steps, momentum=mu)(untrained_mlp, x, y)
    assert torch.allclose(out, x_adv, atol=1e-6)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_works_the_same_inside_a_no_grad_block(untrained_mlp, name):
    x, y = images(6), torch.tensor([2, 7, 1, 8])
    expected = registry_attack(name)(untrained_mlp, x, y)
    with torch.no_grad():
        assert torch.equal(registry_attack(name)(untrained_mlp, x, y), expected)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_works_the_same_inside_an_inference_mode_block(untrained_mlp, name):
    """Evaluation code often runs under ``torch.inference_mode()``, where no gradient can be taken
    and the tensors made are inference tensors; the gradient attacks used to fail there with
    "element 0 of tensors does not require grad"."""
    x, y = images(6), torch.tensor([2, 7, 1, 8])
    expected = registry_attack(name)(untrained_mlp, x, y)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()  # inference tensors
        got = registry_attack(name)(untrained_mlp, xi, yi)
    assert torch.equal(got, expected)
