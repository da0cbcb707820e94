"""The worst-case ensemble's time: ours with active sets, ours without, and torchattacks' AutoAttack.

Same fixed digits CNNs as ``crosscheck.py`` (a standard one, where most points fall within a few
steps, and an adversarially trained one), same test images, AutoAttack's standard version
(APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets, Square with 5 000 queries; 100 iterations,
1 restart). torchattacks' ``AutoAttack`` class leaves APGD, APGD-T and FAB at their own default of
10 steps, so it runs twice: as shipped, and as the same members with 100 steps; and ours also runs
with 10 steps, for the like-for-like ratio with the shipped class. Each is timed by the wall clock and by this process's CPU time (one torch
thread; on a shared machine the CPU clock is the steadier figure), in rotating order over
``--rounds`` rounds; the table gives medians and the ratios measured in the same run::

    pip install --no-deps torchattacks
    python benchmarks/ensemble_speed.py              # 360 images, 2 rounds
    python benchmarks/ensemble_speed.py --quick      # 120 images, 1 round

Where the time goes, member by member against torchattacks' same member on the same points, with
the model's calls counted and priced as bare passes: ``benchmarks/ensemble_profile.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

from advfeatures.evaluate import predict, standard_members, worst_case_evaluation
from crosscheck import broken, digits_models, test_images  # the same models and images


def ours(early_stop: bool, steps: int = 100, queries: int = 5000, batch_rows: int | None = None):
    """Our standard ensemble; ``batch_rows`` (APGD-T's and FAB-T's rows per stacked batch of targets)
    left at the members' default when None."""
    def run(model, x, y, eps, seed):
        kwargs = {"norm": "L2", "eps": eps, "early_stop": early_stop, "seed": seed, "steps": steps, "square_queries": queries}
        members = None
        if batch_rows is not None:
            members = [dataclasses.replace(m, attack=dataclasses.replace(m.attack, batch_rows=batch_rows))
                       if hasattr(m.attack, "batch_rows") else m for m in standard_members(model, x, **kwargs)]
        report = worst_case_evaluation(model, x, y, version="standard" if members is None else "custom",
                                       members=members, batch_size=500, **kwargs)
        return report["x_adv"]
    return run


def torchattacks_autoattack(model, x, y, eps, seed):
    import torchattacks

    return torchattacks.AutoAttack(model, norm="L2", eps=eps, version="standard", n_classes=10, seed=seed)(x, y)


def torchattacks_members(steps: int = 100, queries: int = 5000):
    """torchattacks' four AutoAttack members at ``steps`` iterations and ``queries`` Square queries,
    run one after the other on the points still robust (its ``MultiAttack``)."""
    def run(model, x, y, eps, seed):
        import torchattacks
        from torchattacks.wrappers.multiattack import MultiAttack

        common = {"eps": eps, "norm": "L2", "n_restarts": 1, "steps": steps}
        members = [torchattacks.APGD(model, loss="ce", seed=seed, **common),
                   torchattacks.APGDT(model, n_classes=10, seed=seed, **common),
                   torchattacks.FAB(model, multi_targeted=True, n_classes=10, seed=seed, **common),
                   torchattacks.Square(model, eps=eps, norm="L2", n_queries=queries, n_restarts=1, seed=seed)]
        return MultiAttack(members)(x, y)
    return run


#: torchattacks' AutoAttack with AutoAttack's published 100 iterations: its ``AutoAttack`` class
#: leaves APGD, APGD-T and FAB at their own default of 10 steps.
torchattacks_autoattack_100 = torchattacks_members(100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=360)
    parser.add_argument("--eps", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", default="standard,robust")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--skip", default="", help="comma-separated substrings of contenders to leave out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, rounds = (120, 1) if args.quick else (args.n, args.rounds)
    from pathlib import Path

    models = digits_models(Path(args.cache) if args.cache else Path(os.environ.get("TMPDIR", "/tmp")) / "advfeatures-bench")
    x, y = test_images(n)
    contenders = {"ours (active sets)": ours(True), "ours (no active sets)": ours(False),
                  "ours (active sets, 10 steps as torchattacks' AutoAttack)": ours(True, steps=10),
                  "torchattacks AutoAttack": torchattacks_autoattack,
                  "torchattacks AutoAttack members at 100 steps": torchattacks_autoattack_100}
    contenders = {k: v for k, v in contenders.items() if not any(s in k for s in args.skip.split(",") if s)}
    print(f"digits, {n} test images, L2 ε = {args.eps}, AutoAttack standard; torch threads 1; "
          f"load average {os.getloadavg()[0]:.1f}; {rounds} round(s)")
    for name in args.models.split(","):
        model = models[name]
        clean = float((predict(model, x) == y).float().mean())
        wall: dict[str, list[float]] = {k: [] for k in contenders}
        cpu: dict[str, list[float]] = {k: [] for k in contenders}
        acc: dict[str, float] = {}
        order = list(contenders)
        for r in range(rounds):
            for k in order[r % len(order):] + order[: r % len(order)]:
                w0, c0 = time.perf_counter(), time.process_time()
                x_adv = contenders[k](model, x.clone(), y.clone(), args.eps, 0)
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)
                acc[k] = clean - float(broken(model, x, y, x_adv.detach(), args.eps).float().sum()) / n
        ref_w, ref_c = statistics.median(wall["torchattacks AutoAttack"]), statistics.median(cpu["torchattacks AutoAttack"])
        print(f"\n## {name} model (clean accuracy {clean:.1%})\n")
        print("| ensemble | robust accuracy | CPU s | wall s | speed-up vs torchattacks (CPU / wall) |")
        print("|---|---|---|---|---|")
        for k in contenders:
            c, w = statistics.median(cpu[k]), statistics.median(wall[k])
            print(f"| {k} | {acc[k]:.1%} | {c:.1f} | {w:.1f} | {ref_c / c:.2f}× / {ref_w / w:.2f}× |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
