"""Active sets: a point leaves the working batch once it is broken, and nothing else changes.

Each attack is run twice on the same fixed model and images: with its active set (the batch shrinks
as points fall) and without (every point stays in the batch until the last step, the broken ones
frozen, or, for APGD, FAB and the ensemble, the plain algorithm that keeps iterating them). The
points broken must be the same; where the frozen variant exists the outputs must be identical,
since points never interact and random draws are made for the whole batch before it is narrowed.
"""

from __future__ import annotations

import pytest
import torch

from advfeatures.attacks import APGD, APGDT, FABT, PGD, Square
from advfeatures.evaluate import worst_case_evaluation


def _fooled(model, x, y, x_adv):
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


@pytest.mark.parametrize("norm, eps", [("Linf", 0.05), ("L2", 0.5)])
def test_pgd_active_set_changes_nothing(mlp, batch, norm, eps, monkeypatch):
    x, y = batch
    attack = PGD(norm=norm, eps=eps, steps=20, restarts=2, early_stop=True, seed=3)
    on = attack(mlp, x, y)
    monkeypatch.setattr(PGD, "_compact", False)
    off = PGD(norm=norm, eps=eps, steps=20, restarts=2, early_stop=True, seed=3)(mlp, x, y)
    assert torch.allclose(on, off, atol=1e-6)
    fooled = _fooled(mlp, x, y, on)
    assert 0 < int(fooled.sum()) < len(y)
    # stopping at the first success never breaks fewer points than Madry's fixed-step PGD from the same starts
    plain = PGD(norm=norm, eps=eps, steps=20, restarts=2, seed=3)(mlp, x, y)
    assert (fooled | ~_fooled(mlp, x, y, plain)).all()


@pytest.mark.parametrize("cls", [APGD, APGDT])
def test_apgd_active_set_changes_nothing(mlp, batch, cls, monkeypatch):
    x, y = batch
    kwargs = {"norm": "L2", "eps": 0.8, "steps": 25, "seed": 1}
    on = cls(early_stop=True, **kwargs)(mlp, x, y)
    plain = cls(early_stop=False, **kwargs)(mlp, x, y)
    monkeypatch.setattr(APGD, "_compact", False)
    frozen = cls(early_stop=True, **kwargs)(mlp, x, y)
    assert torch.allclose(on, frozen, atol=1e-6)
    assert torch.equal(_fooled(mlp, x, y, on), _fooled(mlp, x, y, plain))
    assert 0 < int(_fooled(mlp, x, y, on).sum()) < len(y)


def test_fab_active_set_breaks_the_same_points(mlp, batch):
    x, y = batch
    on = FABT(norm="Linf", eps=0.08, steps=30, num_targets=3, early_stop=True)(mlp, x, y, return_result=True)
    off = FABT(norm="Linf", eps=0.08, steps=30, num_targets=3, early_stop=False)(mlp, x, y, return_result=True)
    assert torch.equal(on.success, off.success) and 0 < int(on.success.sum()) < len(y)


@pytest.mark.parametrize("norm, eps", [("Linf", 0.08), ("L2", 0.8)])
def test_square_active_set_changes_nothing(mlp, batch, norm, eps):
    x, y = batch
    on = Square(norm=norm, eps=eps, max_queries=150, early_stop=True, seed=2)(mlp, x, y, return_result=True)
    off = Square(norm=norm, eps=eps, max_queries=150, early_stop=False, seed=2)(mlp, x, y, return_result=True)
    assert torch.allclose(on.x_adv, off.x_adv, atol=1e-6) and torch.equal(on.queries, off.queries)
    assert 0 < int(on.success.sum()) < len(y)


def test_ensemble_active_sets_break_the_same_points(mlp, batch):
    x, y = batch
    kwargs = {"norm": "Linf", "eps": 0.06, "steps": 15, "n_target_classes": 3, "square_queries": 100}
    on = worst_case_evaluation(mlp, x, y, early_stop=True, **kwargs)
    off = worst_case_evaluation(mlp, x, y, early_stop=False, **kwargs)
    assert torch.equal(on["robust"], off["robust"])
    assert 0 < on["robust_accuracy"] < on["clean_accuracy"]
