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


class _OneLogit(nn.Module):
    """A binary classifier written the sigmoid way: one logit per image, (N, 1), or squeezed to (N,)."""

    def __init__(self, squeeze: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.squeeze = nn.Linear(36, 1), squeeze

    def forward(self, x):
        z = self.lin(x.flatten(1))
        return z.squeeze(1) if self.squeeze else z


@pytest.mark.parametrize("squeeze", [False, True])
def test_a_model_with_one_output_is_refused_in_one_line(squeeze):
    """One output per image is not one logit per class: argmax is always class 0, so the ensemble
    used to report accuracies silently (0 or 1 by the labels alone), and a squeezed (N,) output
    failed deep inside with an IndexError."""
    from advfeatures.errors import ModelError

    model = _OneLogit(squeeze)
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    y = torch.ones(4, dtype=torch.int64)
    calls = [lambda: worst_case_evaluation(model, x, y, norm="Linf", eps=0.1, steps=2, square_queries=2),
             lambda: worst_case_evaluation(model, x, y, norm="Linf", eps=0.1, members=[("apgd", APGD(eps=0.1, steps=2))]),
             lambda: APGD(eps=0.1, steps=2)(model, x, 0 * y), lambda: FAB(eps=0.1, steps=2)(model, x, 0 * y),
             lambda: Square(eps=0.1, max_queries=2)(model, x, 0 * y)]
    for call in calls:
        with pytest.raises(ModelError) as info:
            call()
        assert "\n" not in str(info.value) and "torch.cat" in str(info.value)


def test_ensemble_labels_outside_the_models_classes_are_refused():
    """Labels the model cannot output made every point clean-wrong, so no member ran and the
    ensemble reported 0% silently; float labels compared equal to the classes."""
    from advfeatures.errors import DataError

    model = _net()
    x, y = _images(model)
    for bad, fragment in ((torch.full_like(y, 7), "must lie in [0, 4]"), (y.float(), "integer class indices")):
        with pytest.raises(DataError) as info:
            worst_case_evaluation(model, x, bad, norm="Linf", eps=0.1, steps=2, square_queries=2)
        assert fragment in str(info.value) and "\n" not in str(info.value)


def _ball_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    d = delta.flatten(1).double()
    return d.abs().amax(1) if norm == "Linf" else torch.linalg.vector_norm(d, dim=1)


class _TrainModeNet(nn.Module):
    """BatchNorm and Dropout, handed over in training mode (as users often do after training)."""

    def __init__(self, c: int, h: int, w: int, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                  nn.Dropout(0.5), nn.Linear(4 * h * w, k))
        with torch.no_grad():  # running statistics that differ from a batch's own, so train mode would show
            self.body[1].running_mean.uniform_(-0.2, 0.2)
            self.body[1].running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.body(x)


_CASES = [  # (classes, (C, H, W), norm, eps, train-mode model, ensemble batch_size)
    (2, (1, 6, 10), "Linf", 0.03, False, 256),
    (3, (1, 6, 10), "L2", 0.3, False, 256),
    (3, (3, 5, 7), "Linf", 0.06, True, 3),
    (6, (3, 5, 7), "L2", 0.12, False, 5),
    (6, (1, 1, 12), "Linf", 0.04, True, 256),
]


@pytest.mark.parametrize("k, shape, norm, eps, train, batch_size", _CASES)
def test_standard_ensemble_invariants_on_edge_cases(k, shape, norm, eps, train, batch_size):
    """On few classes (2: no APGD-T or FAB-T; 3: targeted CE, fewer targets than 9), non-square and
    3-channel images, a model in training mode, and ensemble batches smaller than the set: robust
    accuracy never above clean, each member's non-increasing and run only on the points still
    robust, every broken point's x_adv a misclassified point of the ball and the box, the robust
    points' x_adv their clean image, the model's modes and parameters untouched, and the same points
    broken with the members' active sets as without."""
    model = _TrainModeNet(*shape, k) if train else _net(*shape, k=k)
    model.train(train)
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    x = torch.rand(10, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train(train)
    y[:2] = (y[:2] + 1) % k  # two clean mistakes
    kw = dict(norm=norm, eps=eps, steps=6, square_queries=25, batch_size=batch_size)
    report = worst_case_evaluation(model, x, y, **kw)
    names = [m["name"] for m in report["members"]]
    assert names == (["apgd-ce", "square"] if k == 2 else ["apgd-ce", "apgd-t", "fab-t", "square"])
    assert all(m.training == train for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(params + buffers, list(model.parameters()) + list(model.buffers())))
    model.eval()
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        fooled = model(report["x_adv"]).argmax(1) != y
    assert report["clean_accuracy"] == pytest.approx(float(clean.float().mean()))
    assert report["robust_accuracy"] <= report["clean_accuracy"]
    assert not (report["robust"] & ~clean).any()
    after = [m["robust_accuracy"] for m in report["members"]]
    assert after == sorted(after, reverse=True) and after[-1] == report["robust_accuracy"]
    assert [m["attacked"] for m in report["members"]] == [int(clean.sum())] + [round(a * len(y)) for a in after[:-1]]
    broken = clean & ~report["robust"]
    assert 0 < int(broken.sum()) < int(clean.sum())  # the case is not trivial either way
    assert fooled[broken].all()
    assert (_ball_norm(report["x_adv"] - x, norm) <= eps * (1 + 1e-4) + 1e-5).all()
    assert 0.0 <= float(report["x_adv"].min()) and float(report["x_adv"].max()) <= 1.0
    assert torch.equal(report["x_adv"][~broken], x[~broken])
    model.train(train)
    off = worst_case_evaluation(model, x, y, early_stop=False, **kw)
    assert torch.equal(off["robust"], report["robust"])


@pytest.mark.parametrize("norm, eps", [("Linf", 0.05), ("L2", 0.5)])
def test_ensemble_on_a_single_image_and_on_all_misclassified_points(norm, eps):
    model = _net(k=4)
    x, y = _images(model, n=5)
    one = worst_case_evaluation(model, x[:1], y[:1], norm=norm, eps=eps, steps=5, square_queries=20)
    assert one["n"] == 1 and one["clean_accuracy"] == 1.0 and one["members"][0]["attacked"] == 1
    wrong = worst_case_evaluation(model, x, (y + 1) % 4, norm=norm, eps=eps, steps=5, square_queries=20)
    assert wrong["clean_accuracy"] == wrong["robust_accuracy"] == 0.0
    assert all(m["attacked"] == 0 for m in wrong["members"]) and torch.equal(wrong["x_adv"], x)



def _report(model, x, y):
    return worst_case_evaluation(model, x, y, norm="Linf", eps=0.05, steps=4, n_target_classes=2, square_queries=10)


def test_ensemble_inside_inference_mode():
    """The same report inside ``torch.inference_mode()`` (the gradient members used to fail there)."""
    model = _net(k=4)
    x, y = _images(model)
    expected = _report(model, x, y)
    with torch.inference_mode():
        got = _report(model, x.clone(), y.clone())
    assert torch.equal(got["robust"], expected["robust"]) and torch.equal(got["x_adv"], expected["x_adv"])
    assert 0 < expected["robust_accuracy"] < expected["clean_accuracy"]


def test_ensemble_x_adv_has_no_autograd_history():
    """Images that require grad: ``x_adv`` was a clone of them, carrying their autograd graph."""
    model = _net(k=4)
    x, y = _images(model)
    got = _report(model, x.clone().requires_grad_(True), y)
    assert not got["x_adv"].requires_grad and got["x_adv"].grad_fn is None
    assert torch.equal(got["x_adv"], _report(model, x, y)["x_adv"])


@pytest.mark.parametrize("rows", [2, 7, 13])
@pytest.mark.parametrize("norm, eps", [("Linf", 0.03), ("L2", 0.3)])
def test_stacked_targets_with_batch_rows_below_the_points_or_not_a_multiple(rows, norm, eps):
    """``batch_rows`` = 2 (below the 7 points: one target at a time), 7 (one target's rows exactly)
    and 13 (one target and a partial second row block, so groups of 1 target, then of 2 as points
    fall): the same points as one target at a time, on a point already misclassified too (whose
    second-ranked class is its label); FAB-T minimal-norm returns the same examples."""
    model = _net(h=6, w=10, k=6)
    x, y = _images(model, n=7, h=6, w=10)
    y[0] = (y[0] + 1) % 6
    apgd = dict(norm=norm, eps=eps, steps=8, num_targets=5, random_start=False)
    one = APGDT(batch_rows=1, **apgd)(model, x, y, return_result=True)
    got = APGDT(batch_rows=rows, **apgd)(model, x, y, return_result=True)
    assert torch.equal(got.success, one.success) and 1 < int(one.success.sum()) < len(y)
    fab = dict(norm=norm, steps=8, num_targets=5)
    one = FABT(batch_rows=1, **fab)(model, x, y, return_result=True)
    got = FABT(batch_rows=rows, **fab)(model, x, y, return_result=True)
    assert torch.allclose(got.x_adv, one.x_adv, atol=1e-6)
    radius = float(one.norms[norm][1:].median())
    one = FABT(batch_rows=1, eps=radius, **fab)(model, x, y, return_result=True)
    got = FABT(batch_rows=rows, eps=radius, **fab)(model, x, y, return_result=True)
    assert torch.equal(got.success, one.success) and 1 < int(one.success.sum()) < len(y)


@pytest.mark.parametrize("h, w", [(20, 3), (3, 20), (40, 12), (6, 10), (8, 8)])
@pytest.mark.parametrize("c", [1, 3])
def test_square_l2_starts_on_the_sphere_on_non_square_images(h, w, c):
    """Square's L2 start tiles the image with pseudo-Gaussian squares; their side came from the
    height alone, so on a tall narrow image (20×3) no square fitted across the width and the attack
    started from the clean image (zero perturbation). The first query (``max_queries=1``) is the
    start: ‖δ‖₂ = ε wherever the box does not bind, on every shape."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 4))
    x = 0.3 + 0.4 * torch.rand(3, c, h, w, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    res = Square(norm="L2", eps=0.5, max_queries=1)(model, x, y, return_result=True)
    assert torch.allclose(res.norms["L2"], torch.full((3,), 0.5), atol=1e-5)
    assert float((res.x_adv != x).float().mean()) > 0.6  # most pixels perturbed (40×12: 2/3 before, 8×8: 77%)
