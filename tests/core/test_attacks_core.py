import pytest
import torch
import torch.nn.functional as F

from advfeatures.attacks import FGSM, PGD, eval_mode, optimize_inputs
from advfeatures.errors import AdvFeaturesError
from advfeatures.models import build_model
from advfeatures.threats import L2Ball, flat_norm


def test_fgsm_matches_closed_form_on_affine(affine):
    x = torch.full((4, 1, 4, 4), 0.5)
    y = torch.tensor([0, 1, 2, 0])
    eps = 0.1
    w = affine.lin.weight.detach()
    # ∇ₓ CE = Wᵀ(softmax − onehot); sign of it
    p = F.softmax(affine(x), 1)
    grad = (p - F.one_hot(y, 3).float()) @ w
    expected = (x.flatten(1) + eps * grad.sign()).clamp(0, 1).view_as(x)
    assert torch.allclose(FGSM(eps=eps)(affine, x, y), expected)


def test_l2_pgd_on_affine_reaches_the_minimal_perturbation(affine):
    """For two classes of an affine model the minimal L2 perturbation is margin / ‖w_y − w_t‖."""
    torch.manual_seed(0)
    x = torch.full((1, 1, 4, 4), 0.5)
    logits = affine(x)
    y = logits.argmax(1)
    w, b = affine.lin.weight.detach(), affine.lin.bias.detach()
    t = logits.argsort(1, descending=True)[:, 1]
    margins = (logits[0, y] - logits[0, t]).item()
    dist = margins / (w[y] - w[t]).norm().item()
    below = PGD(norm="L2", eps=dist * 0.95, steps=100, step_size=dist / 20)(affine, x, y, target=t, return_result=True)
    above = PGD(norm="L2", eps=dist * 1.05, steps=100, step_size=dist / 20)(affine, x, y, target=t, return_result=True)
    assert not below.success.any() and above.success.all()
    assert b is not None


def test_attack_leaves_parameters_and_modes_alone(digits):
    train, _ = digits
    model = build_model("cnn", train.image_shape, 10, width=8, hidden=16)
    model.train()
    model.head.eval()  # mixed modes must come back as they were
    for p in model.parameters():
        p.grad = None
    x, y = train.images[:8], train.labels[:8]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    PGD(norm="Linf", eps=0.1, steps=3)(model, x, y)
    assert model.training and not model.head.training
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics untouched (eval mode)


def test_attack_does_not_touch_global_rng(digits):
    train, _ = digits
    model = build_model("mlp", train.image_shape, 10, hidden=(16,))
    state = torch.random.get_rng_state()
    PGD(norm="L2", eps=0.5, steps=2, restarts=2)(model, train.images[:4], train.labels[:4], target="random")
    assert torch.equal(state, torch.random.get_rng_state())


def test_same_seed_same_result_and_output_contract(digits):
    train, _ = digits
    model = build_model("mlp", train.image_shape, 10, hidden=(16,))
    x, y = train.images[:6], train.labels[:6]
    a = PGD(norm="L2", eps=0.5, steps=3, seed=3)(model, x, y)
    b = PGD(norm="L2", eps=0.5, steps=3, seed=3)(model, x, y)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype and not a.requires_grad


def test_restarts_never_weaker(digits):
    train, _ = digits
    torch.manual_seed(0)
    model = build_model("mlp", train.image_shape, 10, hidden=(32,))
    x, y = train.images[:64], train.labels[:64]
    one = PGD(norm="L2", eps=0.3, steps=5, seed=1)(model, x, y, return_result=True)
    many = PGD(norm="L2", eps=0.3, steps=5, restarts=4, seed=1)(model, x, y, return_result=True)
    assert many.success.sum() >= one.success.sum()


def test_targets_random_least_likely_and_explicit(digits):
    train, _ = digits
    model = build_model("mlp", train.image_shape, 10, hidden=(16,))
    x, y = train.images[:20], train.labels[:20]
    r = PGD(norm="L2", eps=0.5, steps=2)(model, x, y, target="random", return_result=True)
    assert (r.target != y).all()
    with torch.no_grad():
        ll = model(x).argmin(1)
    r = PGD(norm="L2", eps=0.5, steps=2)(model, x, y, target="least_likely", return_result=True)
    assert torch.equal(r.target, ll)
    t = (y + 3) % 10
    r = PGD(norm="L2", eps=0.5, steps=2)(model, x, y, target=t, return_result=True)
    assert torch.equal(r.target, t)


@pytest.mark.parametrize("kwargs, call, match", [
    (dict(eps=-0.1), {}, "eps"),
    (dict(eps=0.1, steps=0), {}, "steps"),
    (dict(eps=0.1), {"y": torch.tensor([0, 11])}, "labels must lie"),
    (dict(eps=0.1), {"x": torch.full((2, 1, 8, 8), 1.5)}, r"\[0, 1\]"),
    (dict(eps=0.1), {"y": torch.tensor([0, 1, 2])}, "one entry per image"),
    (dict(eps=0.1), {"x": torch.rand(2, 64)}, "NCHW"),
    (dict(eps=0.1), {"target": "sideways"}, "target mode"),
])
def test_bad_arguments_are_refused(kwargs, call, match):
    model = build_model("mlp", (1, 8, 8), 10, hidden=(8,))
    args = {"x": torch.rand(2, 1, 8, 8), "y": torch.tensor([0, 1])}
    target = call.pop("target", None)
    args.update(call)
    with pytest.raises(AdvFeaturesError, match=match):
        PGD(**kwargs)(model, args["x"], args["y"], target=target)


def test_optimize_inputs_minimises_a_quadratic():
    """Unbounded L2 steps on ‖x − c‖² reach c (inside the box) — the construction loop's engine."""
    c = torch.full((3, 1, 4, 4), 0.3)
    res = optimize_inputs(lambda x: (x - c).flatten(1).pow(2).sum(1), torch.full_like(c, 0.9), threat=L2Ball(float("inf")),
                          steps=200, step_size=0.02, maximize=False)
    assert flat_norm(res.x - c, 2).max() < 0.03
    assert res.loss.max() < 1e-3


def test_eval_mode_restores(digits):
    model = build_model("cnn", (1, 8, 8), 10, width=4, hidden=8)
    model.train()
    with eval_mode(model):
        assert not model.training
    assert model.training
