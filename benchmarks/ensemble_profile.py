"""Per member of the worst-case ensemble: ours against torchattacks' same member, on the same points.

The points each member sees are those our own ensemble hands it (APGD-CE: every correctly
classified image; APGD-T: those APGD-CE left robust; and so on), for the same step count. Each
member then runs twice on exactly those points, ours and torchattacks', and the table gives:

* process CPU seconds (one torch thread) and the points it broke;
* the model calls it made, with and without a gradient, and the rows they carried;
* "model s": what those calls cost as bare passes of the model (a forward under ``no_grad``, or a
  forward and a backward to the input), timed here at the same batch sizes; the rest of the CPU
  time is the attack's own bookkeeping;
* "fast s" (with ``--fast-layout``): the same calls priced on the fastest copy of the model we found
  on a CPU, with each BatchNorm folded into the convolution before it and the weights and inputs in
  channels-last. It is a price, not a run: it bounds what any attack code could reach on this
  model by cheaper passes alone.

At the end of each step count, the bounds: torchattacks' CPU time over all members divided by our
members' model seconds, the speed-up we would have if our attack code cost nothing.

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


def fast_layout(model: nn.Module) -> nn.Module:
    """A copy of the eval-mode ``model`` with each BatchNorm2d folded into the Conv2d that feeds it
    (traced with torch.fx) and weights in channels-last; inputs are made channels-last per call.
    Logits agree with ``model`` to float rounding (checked by the caller)."""
    import copy

    import torch.fx as fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    traced = fx.symbolic_trace(copy.deepcopy(model).eval())
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        conv = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(modules.get(node.target), nn.BatchNorm2d) and isinstance(conv, fx.Node) and conv.op == "call_module"
                and isinstance(modules.get(conv.target), nn.Conv2d) and len(conv.users) == 1):
            parent, _, leaf = conv.target.rpartition(".")
            setattr(traced.get_submodule(parent), leaf, fuse_conv_bn_eval(modules[conv.target], modules[node.target]))
            node.replace_all_uses_with(conv)
            traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    traced = traced.to(memory_format=torch.channels_last)

    class ChannelsLast(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.contiguous(memory_format=torch.channels_last))

    return ChannelsLast(traced).eval()


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
    parser.add_argument("--fast-layout", action="store_true", help="also price the calls on a BatchNorm-folded, "
                        "channels-last copy of the model (a bound, not a run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = digits_models(Path(os.environ.get("TMPDIR", "/tmp")) / "advfeatures-bench")
    x, y = test_images(args.n)
    print(f"load average {os.getloadavg()[0]:.1f}; torch threads 1; {args.n} images, L2 ε = {args.eps}")
    for mname in args.models.split(","):
        model = models[mname]
        sizes = [1, 2, 5, 10, 20, 40, 60, 100, 200, 360, 600, 1000]
        table = bare_cost(model, x, sizes)
        print(f"\n## {mname}: bare pass CPU ms (no grad / forward+backward): "
              + ", ".join(f"{n}: {1e3 * table[(n, False)]:.2f}/{1e3 * table[(n, True)]:.2f}" for n in sizes))
        fast_table = None
        if args.fast_layout:
            fast = fast_layout(model)
            with torch.no_grad():
                gap = (fast(x) - model(x)).abs().max().item()
            fast_table = bare_cost(fast, x, sizes)
            print(f"fast layout (BatchNorm folded, channels-last; logits within {gap:.1e} of the model's): "
                  + ", ".join(f"{n}: {1e3 * fast_table[(n, False)]:.2f}/{1e3 * fast_table[(n, True)]:.2f}" for n in sizes))
        for steps in (int(s) for s in args.steps.split(",")):
            robust = predict(model, x) == y
            members = {m.name: m for m in standard_members(model, x[:1], norm="L2", eps=args.eps, steps=steps)}
            print(f"\n### {steps} steps\n")
            print("| member | impl | points | broken | CPU s | calls (grad / no grad) | rows (grad / no grad) | model s | model share |"
                  + (" fast s |" if fast_table else ""))
            print("|---|---|---|---|---|---|---|---|---|" + ("---|" if fast_table else ""))
            sums = {"ours": 0.0, "torchattacks": 0.0, "model": 0.0, "fast": 0.0}
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
                    fs = model_seconds(counted.calls, fast_table) if fast_table else None
                    sums[impl] += cpu
                    if impl == "ours":
                        sums["model"] += ms
                        sums["fast"] += fs or 0.0
                    if name in args.members.split(","):
                        print(f"| {name} | {impl} | {idx.numel()} | {int(ok.sum())} | {cpu:.2f} | {len(g)} / {len(ng)} | "
                              f"{sum(g)} / {sum(ng)} | {ms:.2f} | {ms / cpu:.0%} |" + (f" {fs:.2f} |" if fast_table else ""),
                              flush=True)
                robust[fell] = False
            print(f"\nrobust accuracy after our members: {robust.float().mean():.1%}")
            if sums["torchattacks"] and sums["model"]:
                print(f"members' CPU s: ours {sums['ours']:.2f}, torchattacks {sums['torchattacks']:.2f} "
                      f"({sums['torchattacks'] / sums['ours']:.2f}×); bound if our attack code cost nothing: "
                      f"{sums['torchattacks'] / sums['model']:.2f}×"
                      + (f"; and on the fast layout too: {sums['torchattacks'] / sums['fast']:.2f}×" if fast_table else ""))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
