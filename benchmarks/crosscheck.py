"""Our attacks side by side with independent implementations, on the same fixed models and images.

Not a CI test: torchattacks, IBM ART and Foolbox are not dependencies. Install them beside torch
2.13.0 without their dependencies (never torchvision)::

    pip install --no-deps torchattacks adversarial-robustness-toolbox foolbox eagerpy six
    python benchmarks/crosscheck.py                  # digits, L2 ε = 0.5, 360 test images
    python benchmarks/crosscheck.py --quick          # 120 images, smaller budgets

Two digits CNNs are trained once with fixed seeds (``advfeatures.train``; cached under ``--cache``):
a standard one and one adversarially trained with L2 PGD (ε = 1.0, 7 steps, the digits preset's
recipe). For each attack the table gives each implementation's robust accuracy (correct on x and
on x_adv, x_adv inside the ball and the box), and, paired with ours, the points only it breaks and
the points only ours breaks; ``!`` marks an implementation stronger than ours by more than two
standard errors of the paired difference (√(b + c)). Minimal-norm attacks (CW-L2, DeepFool) give
the median L2 norm of their successful perturbations, their success rate, the median over every
correctly classified point with a failure counted as ∞, and, paired with ours, the points only
each breaks and, where both do, which finds the smaller perturbation; and the compute each spent:
the images its attack sent through the model per test image, forward and backward (counted by
:class:`PassCounter` around the model, so that a row at equal compute can be read off).

Foolbox's ``zoo`` imports GitPython and requests; both are stubbed here (the zoo is never used).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

from advfeatures.attacks import APGD, APGDT, CWL2, FAB, FABT, PGD, DeepFool, Square
from advfeatures.data import load_digits
from advfeatures.evaluate import predict
from advfeatures.models import build_model, load_model, save_model
from advfeatures.threats import L2Ball
from advfeatures.train import AdversaryConfig, TrainConfig, train_model


# --- the fixed models ---------------------------------------------------------------------------
def digits_models(cache: Path) -> dict[str, torch.nn.Module]:
    """The standard and the adversarially trained digits CNN (trained once, then loaded)."""
    cache.mkdir(parents=True, exist_ok=True)
    train, _ = load_digits()
    out = {}
    for name, adversary in (("standard", None), ("robust", AdversaryConfig(norm="L2", eps=1.0, steps=7))):
        path = cache / f"digits-cnn-{name}.safetensors"
        if not path.exists():
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = build_model("cnn", (1, 8, 8), 10, width=16, hidden=64)
            cfg = TrainConfig(epochs=30, batch_size=64, lr=0.05, crop_padding=1, flip=False, adversary=adversary, seed=0)
            train_model(model, train, cfg, desc=name)
            save_model(model.eval(), path)
        out[name] = load_model(path).eval()
        for p in out[name].parameters():
            p.requires_grad_(False)
    return out


def test_images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, test = load_digits()
    test = test.head(n)
    return test.images, test.labels


# --- scoring ------------------------------------------------------------------------------------
def broken(model, x, y, x_adv, eps: float) -> torch.Tensor:
    """Per point: correct on x, and x_adv (inside the L2 ball and the box) misclassified."""
    x_adv = x_adv.to(x.dtype)
    inside = ((x_adv - x).flatten(1).norm(dim=1) <= eps * (1 + 1e-4) + 1e-6) & (x_adv.flatten(1).amin(1) >= 0) \
        & (x_adv.flatten(1).amax(1) <= 1)
    return (predict(model, x) == y) & (predict(model, x_adv) != y) & inside


def minimal(model, x, y, x_adv) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per point: (success, L2 norm of the perturbation), and how many successes are the all-black image.

    Success = correct on x and x_adv misclassified, except where x_adv is the all-black image (x not):
    Foolbox's C&W starts its best-so-far at zeros and returns that image where it never found an
    adversarial example, which the digits models misclassify; those are counted apart, as failures."""
    x_adv = x_adv.to(x.dtype)
    black = (x_adv.flatten(1).abs().amax(1) == 0) & (x.flatten(1).abs().amax(1) > 0)
    hit = (predict(model, x) == y) & (predict(model, x_adv) != y)
    return hit & ~black, (x_adv - x).flatten(1).norm(dim=1), int((hit & black).sum())


def minimal_row(ok, hit, norms, black, ref) -> str:
    """Median of the successes, success rate, median over every correct point (a failure counting as
    ∞, so a higher success rate cannot hide behind a smaller median), and, paired with the first row:
    the points only it / only the first row breaks, and on the points both break, how many it finds a
    perturbation smaller by more than 1% / larger by more than 1%."""
    med = f"{float(norms[hit].median()):.3f}" if bool(hit.any()) else "—"
    rate = f"{int(hit.sum()) / max(1, int(ok.sum())):.1%}" + (f" (+{black} all-black)" if black else "")
    inf_med = float(torch.where(hit, norms, torch.inf)[ok].median()) if bool(ok.any()) else math.nan
    if ref is None:
        return f"{med} | {rate} | {inf_med:.3f} | — | —"
    ref_hit, ref_norms = ref
    both = hit & ref_hit
    smaller = int((norms[both] < 0.99 * ref_norms[both]).sum())
    larger = int((norms[both] > 1.01 * ref_norms[both]).sum())
    return f"{med} | {rate} | {inf_med:.3f} | {int((hit & ~ref_hit).sum())} / {int((ref_hit & ~hit).sum())} | " \
           f"{smaller} / {larger} of {int(both.sum())}"


class PassCounter(torch.nn.Module):
    """The model, counting the images it sees: forward passes, and backward passes through its output
    (a hook on the logits, so each ``backward``/``autograd.grad`` through them counts its batch once;
    ART's ``class_gradient`` runs one backward per distinct class in the batch, and each is counted);
    ``calls`` lists every call as (rows, whether grad was enabled), for ``ensemble_profile.py``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.forward_images = 0
        self.backward_images = 0
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x):
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        out = self.model(x)
        self.forward_images += x.shape[0]
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def _count_backward(self, grad):
        self.backward_images += grad.shape[0]


class VolumeUniformL2(L2Ball):
    """Our L2 random start before the fix: a point uniform in the ball's volume (radius ε·U^(1/d))."""

    def random_start(self, x0, generator=None):
        d = x0[0].numel()
        direction = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        radius = self.eps * torch.rand((x0.shape[0],), generator=generator, dtype=x0.dtype).pow(1.0 / d)
        return (x0 + direction * radius.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def ours_pgd_old_start(eps, steps, alpha, seed):
    attack = PGD(norm="L2", eps=eps, steps=steps, step_size=alpha, random_start=True, early_stop=True, seed=seed)
    attack.threat = VolumeUniformL2(eps)
    return attack


# --- the other libraries ------------------------------------------------------------------------
def _foolbox():
    # foolbox.zoo imports GitPython and requests at import time; the zoo is never used here
    sys.modules.setdefault("git", types.SimpleNamespace(Repo=None))
    sys.modules.setdefault("requests", types.SimpleNamespace(get=None))
    import foolbox

    return foolbox


def _art_classifier(model, shape):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape, nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


def implementations(eps: float, *, pgd_steps: int, iters: int, queries: int, cw_steps: int, seed: int):
    """{attack: [(implementation, fn(model, x, y) -> x_adv)]}; ours first in every row."""
    alpha = 2.5 * eps / pgd_steps
    rows: dict[str, list[tuple[str, Callable]]] = {}

    def ta(name, **kw):
        def run(model, x, y):
            import torchattacks

            return getattr(torchattacks, name)(model, **kw)(x, y)
        return run

    def art(factory):
        def run(model, x, y):
            import numpy as np

            attack = factory(_art_classifier(model, tuple(x.shape[1:])))
            return torch.from_numpy(np.asarray(attack.generate(x=x.numpy(), y=y.numpy()), dtype=np.float32))
        return run

    def fb(factory, epsilons):
        def run(model, x, y):
            foolbox = _foolbox()
            fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0))
            _, clipped, _ = factory(foolbox)(fmodel, x, y, epsilons=epsilons)
            return clipped
        return run

    def ours(attack):
        return lambda model, x, y: attack(model, x, y)

    from art.attacks import evasion as ae  # noqa: F401  (fails early if ART is missing)

    rows[f"PGD-{pgd_steps}, random start"] = [
        ("ours (before: start uniform in volume)", ours(ours_pgd_old_start(eps, pgd_steps, alpha, seed))),
        ("ours (start radius uniform)", ours(PGD(norm="L2", eps=eps, steps=pgd_steps, step_size=alpha, random_start=True,
                                                  early_stop=True, seed=seed))),
        ("torchattacks PGDL2", ta("PGDL2", eps=eps, alpha=alpha, steps=pgd_steps, random_start=True)),
        ("ART PGD", art(lambda c: ae.ProjectedGradientDescent(c, norm=2, eps=eps, eps_step=alpha, max_iter=pgd_steps,
                                                              num_random_init=1, batch_size=512, verbose=False))),
        ("Foolbox L2PGD", fb(lambda f: f.attacks.L2PGD(abs_stepsize=alpha, steps=pgd_steps, random_start=True), eps)),
    ]
    rows[f"PGD-{pgd_steps}, no random start"] = [
        ("ours (default: from x)", ours(PGD(norm="L2", eps=eps, steps=pgd_steps, step_size=alpha, early_stop=True, seed=seed))),
        ("torchattacks PGDL2", ta("PGDL2", eps=eps, alpha=alpha, steps=pgd_steps, random_start=False)),
        ("ART PGD", art(lambda c: ae.ProjectedGradientDescent(c, norm=2, eps=eps, eps_step=alpha, max_iter=pgd_steps,
                                                              num_random_init=0, batch_size=512, verbose=False))),
        ("Foolbox L2PGD", fb(lambda f: f.attacks.L2PGD(abs_stepsize=alpha, steps=pgd_steps, random_start=False), eps)),
    ]
    rows[f"APGD-CE-{iters}"] = [
        ("ours", ours(APGD(norm="L2", eps=eps, steps=iters, loss="ce", seed=seed))),
        ("torchattacks APGD", ta("APGD", norm="L2", eps=eps, steps=iters, loss="ce", n_restarts=1, seed=seed)),
        ("ART AutoPGD", art(lambda c: ae.AutoProjectedGradientDescent(c, norm=2, eps=eps, eps_step=2 * eps, max_iter=iters,
                                                                       nb_random_init=1, loss_type="cross_entropy",
                                                                       batch_size=512, verbose=False))),
    ]
    rows[f"APGD-T-{iters} (9 targets)"] = [
        ("ours", ours(APGDT(norm="L2", eps=eps, steps=iters, seed=seed))),
        ("torchattacks APGDT", ta("APGDT", norm="L2", eps=eps, steps=iters, n_restarts=1, n_classes=10, seed=seed)),
    ]
    rows[f"FAB-{iters}"] = [
        ("ours", ours(FAB(norm="L2", eps=eps, steps=iters, seed=seed))),
        ("torchattacks FAB", ta("FAB", norm="L2", eps=eps, steps=iters, n_restarts=1, multi_targeted=False, n_classes=10,
                                seed=seed)),
    ]
    rows[f"FAB-T-{iters} (9 targets)"] = [
        ("ours", ours(FABT(norm="L2", eps=eps, steps=iters, seed=seed))),
        ("torchattacks FAB multi-targeted", ta("FAB", norm="L2", eps=eps, steps=iters, n_restarts=1, multi_targeted=True,
                                               n_classes=10, seed=seed)),
    ]
    rows[f"Square-{queries}"] = [
        ("ours", ours(Square(norm="L2", eps=eps, max_queries=queries, seed=seed))),
        ("torchattacks Square", ta("Square", norm="L2", eps=eps, n_queries=queries, n_restarts=1, p_init=0.8, seed=seed)),
        ("ART Square", art(lambda c: ae.SquareAttack(c, norm=2, eps=eps, max_iter=queries, p_init=0.8, nb_restarts=1,
                                                     batch_size=512, verbose=False))),
    ]
    minimal_rows = {
        f"CW-L2 ({cw_steps} steps × 5 searches)": [
            ("ours", ours(CWL2(steps=cw_steps, search_steps=5, initial_const=1.0, lr=0.01, seed=seed))),
            # ART's line search spends about 6x our forward passes (and 18x our backward passes) at the
            # same nominal steps; these two rows are ours at about ART's forward passes, and ours at our
            # passes with a larger step (Adam moves each coordinate of w by about lr per step)
            (f"ours, {6 * cw_steps} steps per search", ours(CWL2(steps=6 * cw_steps, search_steps=5, initial_const=1.0,
                                                                  lr=0.01, seed=seed))),
            ("ours, lr 0.1", ours(CWL2(steps=cw_steps, search_steps=5, initial_const=1.0, lr=0.1, seed=seed))),
            ("torchattacks CW (c = 1, no search)", ta("CW", c=1.0, kappa=0.0, steps=cw_steps * 5, lr=0.01)),
            ("ART C&W L2", art(lambda c: ae.CarliniL2Method(c, confidence=0.0, learning_rate=0.01, binary_search_steps=5,
                                                            max_iter=cw_steps, initial_const=1.0, batch_size=512,
                                                            verbose=False))),
            # and ART at about our forward passes (~6 per iteration): its success is not bought by passes
            (f"ART C&W L2, {max(1, cw_steps // 6)} steps per search",
             art(lambda c: ae.CarliniL2Method(c, confidence=0.0, learning_rate=0.01, binary_search_steps=5,
                                              max_iter=max(1, cw_steps // 6), initial_const=1.0, batch_size=512,
                                              verbose=False))),
            ("Foolbox L2CW", fb(lambda f: f.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=cw_steps,
                                                                          stepsize=0.01, initial_const=1.0), None)),
        ],
        "DeepFool-50 (overshoot 0.02)": [
            ("ours", ours(DeepFool(norm="L2", steps=50, overshoot=0.02, seed=seed))),
            ("torchattacks DeepFool", ta("DeepFool", steps=50, overshoot=0.02)),
            ("ART DeepFool", art(lambda c: ae.DeepFool(c, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=512,
                                                       verbose=False))),
            ("Foolbox L2DeepFool", fb(lambda f: f.attacks.L2DeepFoolAttack(steps=50, overshoot=0.02, candidates=10), None)),
        ],
    }
    return rows, minimal_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=360)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--quick", action="store_true", help="120 images; 50 iterations, 500 queries, 50 CW steps")
    parser.add_argument("--models", default="standard,robust")
    parser.add_argument("--skip", default="", help="comma-separated substrings of implementations to leave out")
    parser.add_argument("--only", default="", help="comma-separated substrings of attacks to run (e.g. DeepFool)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "advfeatures-bench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cw-steps", type=int, default=None, help="Adam steps per C&W binary-search step (100; --quick 50)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, iters, queries, cw_steps = (120, 50, 500, 50) if args.quick else (args.n, 100, 1000, 100)
    cw_steps = args.cw_steps or cw_steps
    models = digits_models(args.cache)
    x, y = test_images(n)
    rows, minimal_rows = implementations(args.eps, pgd_steps=50, iters=iters, queries=queries, cw_steps=cw_steps,
                                         seed=args.seed)
    skip = [s for s in args.skip.split(",") if s]
    only = [s for s in args.only.split(",") if s]
    if only:
        rows = {a: i for a, i in rows.items() if any(s in a for s in only)}
        minimal_rows = {a: i for a, i in minimal_rows.items() if any(s in a for s in only)}
    print(f"digits, {x.shape[0]} test images, L2 ε = {args.eps}; torch threads 1; load average {os.getloadavg()[0]:.1f}")
    for name in args.models.split(","):
        model = models[name]
        clean = float((predict(model, x) == y).float().mean())
        print(f"\n## {name} model (clean accuracy {clean:.1%})\n")
        print("| attack | implementation | robust accuracy | only it breaks / only ours breaks | seconds |")
        print("|---|---|---|---|---|")
        for attack, impls in rows.items():
            ref = None
            for impl, fn in impls:
                if any(s in impl for s in skip):
                    continue
                start = time.perf_counter()
                try:
                    b = broken(model, x, y, fn(model, x.clone(), y.clone()).detach(), args.eps)
                except Exception as exc:  # another library's API or dependency: report it, keep going
                    print(f"| {attack} | {impl} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]} | | |")
                    continue
                sec = time.perf_counter() - start
                acc = 1 - float(b.float().sum()) / x.shape[0] - (1 - clean)
                if ref is None:
                    ref, pair = b, "—"
                else:
                    only_it, only_ours = int((b & ~ref).sum()), int((ref & ~b).sum())
                    flag = " !" if only_it - only_ours > 2 * math.sqrt(max(1, only_it + only_ours)) else ""
                    pair = f"{only_it} / {only_ours}{flag}"
                print(f"| {attack} | {impl} | {acc:.1%} | {pair} | {sec:.1f} |", flush=True)
        print("\n| minimal-norm attack | implementation | median L2 of successes | success rate | median L2, failures = ∞ "
              "| only it / only first row succeeds | both succeed: it >1% smaller / >1% larger "
              "| model passes per image, forward / backward | seconds |")
        print("|---|---|---|---|---|---|---|---|---|")
        ok = predict(model, x) == y
        for attack, impls in minimal_rows.items():
            ref = None
            for impl, fn in impls:
                if any(s in impl for s in skip):
                    continue
                counter = PassCounter(model).eval()
                start = time.perf_counter()
                try:
                    hit, norms, black = minimal(model, x, y, fn(counter, x.clone(), y.clone()).detach())
                except Exception as exc:
                    print(f"| {attack} | {impl} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]} | | | | | |")
                    continue
                sec = time.perf_counter() - start
                passes = f"{counter.forward_images / x.shape[0]:.0f} / {counter.backward_images / x.shape[0]:.0f}"
                print(f"| {attack} | {impl} | {minimal_row(ok, hit, norms, black, ref)} | {passes} | {sec:.1f} |", flush=True)
                if ref is None:
                    ref = hit, norms
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
