"""Edge cases that users' own models and data hit: float64 models, few classes, odd image shapes,
batches that are all (or not at all) misclassified, models left in training mode.

Every model here is a tiny one built in the test, and every attack runs a few steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advfeatures.attacks import APGD, APGDT, FAB, FABT, Square
from advfeatures.evaluate import worst_case_evaluation


class _Double(nn.Module):
    """A user's model that computes in float64 on float32 inputs (float64 logits)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.double()

    def forward(self, x):
        return self.net(x.double())


def _net(c: int = 1, h: int = 6, w: int = 6, k: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, k))


def _images(model, n: int = 6, c: int = 1, h: int = 6, w: int = 6, dtype=torch.float32, seed: int = 1):
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)).to(dtype)
    with torch.no_grad():
        return x, model(x).argmax(1)  # every point clean-correct


_DTYPE_ATTACKS = {
    "apgd": lambda norm, eps: APGD(norm=norm, eps=eps, steps=4, early_stop=False),
    "apgd-t": lambda norm, eps: APGDT(norm=norm, eps=eps, steps=4, num_targets=3, early_stop=False),
    "fab": lambda norm, eps: FAB(norm=norm, eps=eps, steps=4),
    "fab-t": lambda norm, eps: FABT(norm=norm, eps=eps, steps=4, num_targets=3),
    "fab-minimal": lambda norm, eps: FAB(norm=norm, steps=4),
}


@pytest.mark.parametrize("name", sorted(_DTYPE_ATTACKS))
@pytest.mark.parametrize("norm, eps", [("Linf", 0.05), ("L2", 0.5)])
@pytest.mark.parametrize("where", ["logits", "inputs"])
def test_float64_models_and_inputs(name, norm, eps, where):
    """float64 logits on float32 inputs, or a float64 model on float64 inputs: the attack runs (it
    used to fail on an index_put of float64 values into its float32 bookkeeping) and returns
    inputs of the input's dtype, inside the ball and the box, the same points as in float32."""
    if where == "logits":
        model, dtype = _Double(_net()), torch.float32
    else:
        model, dtype = _net().double(), torch.float64
    x, y = _images(model, dtype=dtype)
    res = _DTYPE_ATTACKS[name](norm, eps)(model, x, y, return_result=True)
    assert res.x_adv.dtype == dtype and torch.isfinite(res.x_adv).all()
    assert 0.0 <= float(res.x_adv.min()) and float(res.x_adv.max()) <= 1.0
    if name != "fab-minimal":
        assert (res.norms[norm] <= eps + 1e-5).all()
    ref32 = _net()
    x32 = x.float()
    same = _DTYPE_ATTACKS[name](norm, eps)(ref32, x32, y, return_result=True)
    assert int(res.success.sum()) == int(same.success.sum())  # float noise only, on a 6-point batch


@pytest.mark.parametrize("early_stop", [True, False])
def test_ensemble_on_a_float64_model(early_stop):
    model = _Double(_net())
    x, y = _images(model)
    report = worst_case_evaluation(model, x, y, norm="Linf", eps=0.03, steps=4, n_target_classes=2, square_queries=10,
                                   early_stop=early_stop)
    assert [m["name"] for m in report["members"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert all(m["attacked"] > 0 for m in report["members"])  # every member ran on some points
    assert report["robust_accuracy"] < report["clean_accuracy"]
