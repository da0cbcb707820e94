"""The allocator's share of a CPU step: the same forward+backward passes under glibc's default malloc
thresholds, under ``GLIBC_TUNABLES``, and under :func:`advfeatures.distributed.tune_allocator`
(``mallopt`` from inside the process), each in a fresh process, alternated.

    python benchmarks/allocator.py --model cnn --batch-size 256

Run as a child (``--child MODE``) it prints one JSON line: CPU and wall milliseconds per pass, and
minor page faults per pass (the page-fault storms glibc's default mmap threshold causes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODES = ("default", "GLIBC_TUNABLES", "mallopt")


def child(mode: str, model_name: str, batch: int, passes: int, reps: int) -> dict:
    import torch
    import torch.nn.functional as F

    from advfeatures.distributed import allocator_settings, tune_allocator
    from advfeatures.models import build_model

    if mode == "mallopt":
        tune_allocator()
    torch.set_num_threads(1)
    shape = {"cnn": (1, 28, 28), "resnet18": (3, 32, 32)}[model_name]
    torch.manual_seed(0)
    model = build_model(model_name, shape, 10).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g)

    def step():
        xx = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xx), y, reduction="none").sum(), xx)
        return grad

    step()
    cpu, wall, faults = [], [], []
    for _ in range(reps):
        f0, c0, w0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
        for _ in range(passes):
            step()
        cpu.append((time.process_time() - c0) / passes * 1e3)
        wall.append((time.perf_counter() - w0) / passes * 1e3)
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / passes)
    return {"mode": mode, "ms_cpu_per_pass": min(cpu), "ms_wall_per_pass": min(wall), "minor_faults_per_pass": statistics.median(faults),
            "allocator": allocator_settings()}


def compare(model_name: str, batch: int, passes: int, reps: int, alternations: int) -> dict:
    from advfeatures.distributed import RECOMMENDED_GLIBC_TUNABLES

    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for _ in range(alternations):
        for mode in MODES:
            env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
            env["OMP_NUM_THREADS"] = "1"
            if mode == "GLIBC_TUNABLES":
                env["GLIBC_TUNABLES"] = RECOMMENDED_GLIBC_TUNABLES
            if mode == "default":
                env["ADVFEATURES_MALLOC"] = "default"
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--model", model_name, "--batch-size", str(batch),
                                  "--passes", str(passes), "--reps", str(reps)], capture_output=True, text=True, env=env, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {m: {"ms_cpu_per_pass": round(min(r["ms_cpu_per_pass"] for r in rs), 1),
                   "ms_wall_per_pass": round(min(r["ms_wall_per_pass"] for r in rs), 1),
                   "minor_faults_per_pass": round(statistics.median(r["minor_faults_per_pass"] for r in rs))} for m, rs in runs.items()}
    return {"model": model_name, "batch_size": batch, "passes": passes, "reps": reps, "alternations": alternations,
            "summary": summary, "runs": runs}


def print_summary(res: dict) -> None:
    print(f"allocator: {res['model']} batch {res['batch_size']}, forward+backward w.r.t. the input (best of "
          f"{res['alternations']} processes × {res['reps']} repetitions of {res['passes']} passes)")
    for mode, s in res["summary"].items():
        print(f"  {mode:15s} {s['ms_cpu_per_pass']:7.1f} ms CPU/pass  {s['ms_wall_per_pass']:7.1f} ms wall/pass  "
              f"{s['minor_faults_per_pass']:7d} minor page faults/pass")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", choices=MODES)
    p.add_argument("--model", default="cnn", choices=["cnn", "resnet18"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--alternations", type=int, default=2)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.batch_size, args.passes, args.reps)))
        return
    print_summary(compare(args.model, args.batch_size, args.passes, args.reps, args.alternations))


if __name__ == "__main__":
    main()
