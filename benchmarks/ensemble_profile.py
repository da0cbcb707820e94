"""Per member of the worst-case ensemble: ours against torchattacks' same member, on the same points.

The points each member sees are those our own ensemble hands it (APGD-CE: every correctly
classified image; APGD-T: those APGD-CE left robust; and so on), for the same step count. Each
member then runs twice on exactly those points, ours and torchattacks', and the table gives:

* process CPU seconds (one torch thread) and the points it broke;
* the model calls it made, with and without a gradient, and the rows they carried;
* "model s": what those calls cost as bare passes of the model (a forward under ``no_grad``, or a
  forward and a backward to the input), timed here at the same batch sizes; the rest of the CPU
  time is the attack's own bookkeeping.

Usage (same models and images as ``crosscheck.py``)::

    python benchmarks/ensemble_profile.py --models standard --steps 10,100
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advfeatures.evaluate import predict
from advfeatures.evaluate.ensemble import standard_members
from crosscheck import PassCounter, broken, digits_models, test_images


def bare_cost(model: nn.Module, x: torch.Tensor, sizes: list[int], repeats: int = 30) -> dict[tuple[int, bool], float]:
    """CPU seconds of one bare pass per (rows, grad) at ``sizes`` (rows cycled from ``x``)."""
    out = {}
    for n in sizes:
        xb = x[torch.arange(n) % x.shape[0]].clone()
        for grad in (False, True):
            for _ in range(3):  # warm up
                _pass(model, xb, grad)
            c0 = time.process_time()
            for _ in range(repeats):
                _pass(model, xb, grad)
            out[(n, grad)] = (time.process_time() - c0) / repeats
    return out


def _pass(model, xb, grad):
    if grad:
        with torch.enable_grad():
            xg = xb.detach().requires_grad_(True)
            torch.autograd.grad(model(xg).sum(), xg)
    else:
        with torch.no_grad():
            model(xb)


def model_seconds(calls, table) -> float:
    """The calls' cost as bare passes, interpolated in the batch size from ``table``."""
    total = 0.0
    for grad in (False, True):
        sizes = sorted(n for n, g in table if g == grad)
        costs = [table[(n, grad)] for n in sizes]
        rows = np.array([n for n, g in calls if g == grad], dtype=float)
        if rows.size:
            total += float(np.interp(rows, sizes, costs).sum())
    return total


def theirs(name: str, model, eps: float, steps: int):
    import torchattacks

    common = {"eps": eps, "norm": "L2", "n_restarts": 1, "steps": steps, "seed": 0}
    return {"apgd-ce": lambda: torchattacks.APGD(model, loss="ce", **common),
            "apgd-t": lambda: torchattacks.APGDT(model, n_classes=10, **common),
            "fab-t": lambda: torchattacks.FAB(model, multi_targeted=True, n_classes=10, **common),
            "square": lambda: torchattacks.Square(model, eps=eps, norm="L2", n_queries=5000, n_restarts=1, seed=0)}[name]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=360)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--models", default="standard")
    parser.add_argument("--steps", default="10,100")
    parser.add_argument("--members", default="apgd-ce,apgd-t,fab-t,square")
    parser.add_argument("--skip-theirs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = digits_models(Path(os.environ.get("TMPDIR", "/tmp")) / "advfeatures-bench")
    x, y = test_images(args.n)
    print(f"load average {os.getloadavg()[0]:.1f}; torch threads 1; {args.n} images, L2 ε = {args.eps}")
    for mname in args.models.split(","):
        model = models[mname]
        table = bare_cost(model, x, [1, 2, 5, 10, 20, 40, 60, 100, 200, 360, 600, 1000])
        print(f"\n## {mname}: bare pass CPU ms (no grad / forward+backward): "
              + ", ".join(f"{n}: {1e3 * table[(n, False)]:.2f}/{1e3 * table[(n, True)]:.2f}" for n in (1, 10, 53, 100, 360)
                          if (n, False) in table))
        for steps in (int(s) for s in args.steps.split(",")):
            robust = predict(model, x) == y
            members = {m.name: m for m in standard_members(model, x[:1], norm="L2", eps=args.eps, steps=steps)}
            print(f"\n### {steps} steps\n")
            print("| member | impl | points | broken | CPU s | calls (grad / no grad) | rows (grad / no grad) | model s | model share |")
            print("|---|---|---|---|---|---|---|---|---|")
            for name, member in members.items():
                idx = robust.nonzero().squeeze(1)
                xb, yb = x[idx], y[idx]
                for impl in ("ours", "torchattacks"):
                    if (impl == "torchattacks" and args.skip_theirs) or (name not in args.members.split(",") and impl != "ours"):
                        continue
                    counted = PassCounter(model)
                    c0 = time.process_time()
                    if impl == "ours":
                        x_adv = member.attack(counted, xb.clone(), yb.clone())
                    else:
                        x_adv = theirs(name, counted, args.eps, steps)(xb.clone(), yb.clone())
                    cpu = time.process_time() - c0
                    ok = broken(model, xb, yb, x_adv, args.eps)
                    if impl == "ours":
                        fell = idx[ok]  # the ensemble moves on with our member's survivors
                    g = [n for n, gr in counted.calls if gr]
                    ng = [n for n, gr in counted.calls if not gr]
                    ms = model_seconds(counted.calls, table)
                    if name in args.members.split(","):
                        print(f"| {name} | {impl} | {idx.numel()} | {int(ok.sum())} | {cpu:.2f} | {len(g)} / {len(ng)} | "
                              f"{sum(g)} / {sum(ng)} | {ms:.2f} | {ms / cpu:.0%} |", flush=True)
                robust[fell] = False
            print(f"\nrobust accuracy after our members: {robust.float().mean():.1%}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
