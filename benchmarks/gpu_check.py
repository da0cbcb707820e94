"""The GPU check (issue 14, part 4): one prepared run that fits in 8 minutes on one GPU.

    benchmarks/gpu_check.sh                 # on a GPU machine: ResNet-18 and ResNet-50 at batch 512
    benchmarks/gpu_check.sh --cpu-smoke     # seconds on a CPU: tiny widths and sizes (the test runs this)
    benchmarks/gpu_check.sh --out gpu.json  # also write every number as JSON (for benchmarks/RESULTS.md)

For each model (ResNet-18, ResNet-50) and each speed option (eager, bf16, channels-last, bf16 +
channels-last, torch.compile), it times, in the same run and on the same batch:

* the limit: ``steps`` forward+backward passes w.r.t. the input (benchmarks/workloads.py);
* PGD (Linf, ``steps`` steps), the D_R loop (representation matching, ``steps`` steps) and one
  epoch of PGD adversarial training, each as a ratio to that limit (PGD and D_R: limit time /
  workload time for the same number of passes; training: (adversary steps + 1) standard epochs /
  one adversarial epoch), so a ratio near 1 means the method runs at the speed of the model's own
  passes with that option;
* the option's speed-up over eager (eager limit time / option limit time).

Then CUDA graphs for the small CNN (launch-bound on a GPU): a graphed forward+backward pass and a
graphed PGD step against eager ones; and the extrapolated wall time of the paper's CIFAR-10 D_R
construction (50 000 images × 1 000 matching steps, ResNet-50) with each option's measured D_R step.

Last, issue 14's ensemble goal on this device: our worst-case ensemble (AutoAttack's standard
version) against torchattacks' ``AutoAttack``, as shipped and with its members at 100 steps (ours
also with APGD-T's and FAB-T's nine targets in one batch, ``batch_rows`` 2 304), on
the standard digits CNN of ``crosscheck.py`` (360 test images, L2 ε = 0.5), as wall-time ratios
beside the robust accuracies. torchattacks is not a dependency: where it is not importable the
section says so (on a machine without network, carry its wheel: ``pip download --no-deps
torchattacks``, then ``pip install --no-deps --target DIR`` there and put DIR on ``PYTHONPATH``).

Every section is guarded: an option that fails (no compiler, no bf16, an out-of-memory) prints why
and the run goes on. A time budget (``--budget-s``, default 420 s) skips what would not fit, saying
so; compile sections run last because their first call compiles for a minute or more.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import attack_workloads, limit_passes, make_batch, train_workloads  # noqa: E402

from advfeatures.attacks.pgd import PGD  # noqa: E402
from advfeatures.models import build_model  # noqa: E402
from advfeatures.progress import set_progress_enabled  # noqa: E402
from advfeatures.runtime import CPU_CHANNELS_LAST, accelerate, compile_available, peak_gpu_mib, reset_peak_gpu, resolve_device  # noqa: E402

OPTIONS = {
    "eager": {},
    "bf16": {"bf16": True},
    "channels-last": {"channels_last": True},
    "bf16+channels-last": {"bf16": True, "channels_last": True},
    "compile": {"compile": True},
}
PAPER_DR = {"images": 50_000, "steps": 1_000, "model": "resnet50"}  # Ilyas et al.'s CIFAR-10 D_R


def settings(args) -> dict:
    if args.cpu_smoke:  # the same code paths on tiny models: the test runs this in seconds
        return {"device": "cpu", "shape": (3, 8, 8), "batch": 4, "steps": 2, "train_batches": 1, "train_steps": 1,
                "rounds": 1, "models": {"resnet18": {"width": 4}, "resnet50": {"width": 4}},
                "cnn": {"shape": (1, 8, 8), "kwargs": {"width": 4, "hidden": 8}, "batch": 4},
                # an untrained tiny CNN, 8 images, 2 steps, 20 queries: the code path, not the numbers
                "ensemble": {"n": 8, "steps": (2,), "queries": 20, "shipped": False, "trained": False, "batch_rows": 4},
                "skip": {"compile": "skipped in --cpu-smoke (compiling takes minutes on a CPU)"}}
    return {"device": args.device, "shape": (3, 32, 32), "batch": args.batch_size, "steps": args.steps,
            "train_batches": args.train_batches, "train_steps": args.train_steps, "rounds": args.rounds,
            "models": {"resnet18": {}, "resnet50": {}},
            "cnn": {"shape": (1, 28, 28), "kwargs": {"width": 32, "hidden": 128}, "batch": args.batch_size},
            # batch_rows 2304: APGD-T's and FAB-T's 9 targets in one batch for up to 256 points (the CPU's
            # best was the default, 256 rows; "on a GPU larger batches should pay" is measured here)
            "ensemble": {"n": 360, "steps": (100, 10), "queries": 5000, "shipped": True, "trained": True,
                         "batch_rows": 2304}, "skip": {}}


class Clock:
    def __init__(self, device: torch.device, budget_s: float) -> None:
        self.device, self.budget_s, self.start = device, budget_s, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def time(self, fn) -> float:
        """Wall seconds of one call, the GPU's queue drained on both sides."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t = time.perf_counter()
        fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t


def guarded(label: str, results: dict, fn):
    """Run one section; on failure record and print why, and go on."""
    try:
        results[label] = fn()
    except Exception as exc:  # noqa: BLE001 - a benchmark section must never end the run
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        results[label] = {"error": why}
        print(f"  {label}: FAILED ({why})", flush=True)
        if "--traceback" in sys.argv:
            traceback.print_exc()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return results[label]


def bench_option(name: str, kwargs: dict, opts: dict, s: dict, clock: Clock) -> dict:
    device = clock.device
    torch.manual_seed(0)  # benchmark only: the same weights under every option
    model = accelerate(build_model(name, s["shape"], 10, **kwargs).to(device), device=device, **opts).eval()
    x, y = make_batch(s["shape"], s["batch"], 10, device)
    k = s["steps"]
    limit = limit_passes(model, x, y, k)
    work = {w.name: w for w in attack_workloads(model, x, y, steps=k, dr_steps=k, keep_best_rows=False)}
    pgd, dr = work["pgd-linf"], work["d_r-matching"]
    std, adv = train_workloads(lambda: build_model(name, s["shape"], 10, **kwargs), s["shape"], 10, batch=s["batch"],
                               batches=s["train_batches"], steps=s["train_steps"], device=device, train_kwargs=opts)
    reset_peak_gpu(device)
    first = clock.time(limit)  # warm-up: cuDNN autotuning, compilation
    for w in (pgd, dr, std, adv):
        w.run()
    t = {key: [] for key in ("limit", "pgd", "dr", "std", "adv")}
    for r in range(s["rounds"]):  # each workload next to the limit, the order alternating by round
        pairs = [("pgd", pgd.run), ("dr", dr.run), ("std", std.run), ("adv", adv.run)]
        for key, fn in (pairs if r % 2 == 0 else pairs[::-1]):
            if key in ("pgd", "dr"):
                t["limit"].append(clock.time(limit))
            t[key].append(clock.time(fn))
    med = {key: statistics.median(v) for key, v in t.items()}
    return {
        "ms_per_pass": round(med["limit"] / k * 1e3, 3),
        "images_per_s": round(s["batch"] * k / med["limit"], 1),
        "first_call_s": round(first, 2),
        "pgd_ratio": round(med["limit"] / med["pgd"], 3),
        "d_r_ratio": round(med["limit"] / med["dr"], 3),
        "adv_train_ratio": round((s["train_steps"] + 1) * med["std"] / med["adv"], 3),
        "d_r_seconds_per_step": med["dr"] / k,
        "peak_gpu_mib": peak_gpu_mib(device),
    }


def print_model(name: str, rows: dict) -> None:
    eager = rows.get("eager", {}).get("ms_per_pass")
    print(f"  {'option':20s} {'ms/pass':>9s} {'img/s':>10s} {'vs eager':>9s} {'PGD':>6s} {'D_R':>6s} {'adv-train':>9s} {'peak GPU MiB':>12s}")
    for opt, r in rows.items():
        if "error" in r or "skipped" in r:
            print(f"  {opt:20s} {r.get('error') or r.get('skipped')}")
            continue
        speed = f"×{eager / r['ms_per_pass']:.2f}" if eager else "?"
        print(f"  {opt:20s} {r['ms_per_pass']:9.2f} {r['images_per_s']:10.0f} {speed:>9s} {r['pgd_ratio']:6.3f} "
              f"{r['d_r_ratio']:6.3f} {r['adv_train_ratio']:9.3f} {str(r['peak_gpu_mib']):>12s}", flush=True)


def cuda_graphs(s: dict, clock: Clock) -> dict:
    """The small CNN's forward+backward (w.r.t. the input) and one PGD step, eager and replayed
    from a captured CUDA graph (no kernel launches from Python)."""
    device = clock.device
    if device.type != "cuda":
        return {"skipped": "CUDA graphs need a GPU"}
    c = s["cnn"]
    torch.manual_seed(0)
    model = build_model("cnn", c["shape"], 10, **c["kwargs"]).to(device).eval()
    x, y = make_batch(c["shape"], c["batch"], 10, device)
    eps, alpha, k = 8 / 255, 2 / 255, max(s["steps"], 10)
    static_x = x.clone().requires_grad_(True)

    def grad_step():
        loss = F.cross_entropy(model(static_x), y, reduction="sum")
        return torch.autograd.grad(loss, static_x)[0]

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            grad_step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_grad = grad_step()

    def eager_passes():
        for _ in range(k):
            grad_step()

    def graphed_passes():
        for _ in range(k):
            graph.replay()

    def graphed_pgd():
        x_adv = x.clone()
        for _ in range(k):
            static_x.data.copy_(x_adv)
            graph.replay()
            x_adv = torch.min(torch.max(x_adv + alpha * static_grad.sign(), x - eps), x + eps).clamp_(0, 1)
        return x_adv

    pgd = PGD(norm="Linf", eps=eps, steps=k, step_size=alpha, keep_best=False)
    runs = {"eager_passes": eager_passes, "graphed_passes": graphed_passes, "graphed_pgd": graphed_pgd,
            "library_pgd": lambda: pgd(model, x, y)}
    for fn in runs.values():
        fn()
    t = {key: statistics.median(clock.time(fn) for _ in range(s["rounds"])) for key, fn in runs.items()}
    return {"batch": c["batch"], "steps": k, "ms_per_pass_eager": round(t["eager_passes"] / k * 1e3, 3),
            "ms_per_pass_graphed": round(t["graphed_passes"] / k * 1e3, 3),
            "graph_speedup": round(t["eager_passes"] / t["graphed_passes"], 3),
            "library_pgd_ratio_to_eager_limit": round(t["eager_passes"] / t["library_pgd"], 3),
            "graphed_pgd_ratio_to_graphed_limit": round(t["graphed_passes"] / t["graphed_pgd"], 3),
            "graphed_pgd_speedup_over_library_pgd": round(t["library_pgd"] / t["graphed_pgd"], 3)}


def extrapolate(rows: dict, batch: int) -> dict:
    """The paper's D_R construction (50 000 images × 1 000 steps) at each option's D_R step time."""
    out = {}
    for opt, r in rows.items():
        if "d_r_seconds_per_step" in r:
            batches = -(-PAPER_DR["images"] // batch)
            out[opt] = round(batches * PAPER_DR["steps"] * r["d_r_seconds_per_step"] / 3600, 2)
    return out


def ensemble(s: dict, clock: Clock) -> dict:
    """Our worst-case ensemble against torchattacks' AutoAttack on the standard digits CNN, on this
    device: wall seconds (the queue drained), robust accuracy, and our speed-up at equal settings."""
    try:
        import torchattacks  # noqa: F401 - only whether it is there
    except ImportError:
        return {"skipped": "torchattacks is not importable (pip install --no-deps torchattacks; without network, carry "
                           "its wheel)"}
    from crosscheck import broken, digits_models, test_images

    from advfeatures.evaluate import predict
    from ensemble_speed import ours, torchattacks_autoattack, torchattacks_members  # the same contenders as on the CPU

    e, device = s["ensemble"], clock.device
    if e["trained"]:  # trained on the CPU once (seconds), cached beside the other benchmarks' copy
        import os
        import tempfile

        model = digits_models(Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "advfeatures-bench")["standard"]
    else:
        torch.manual_seed(0)
        model = build_model("cnn", (1, 8, 8), 10, **s["cnn"]["kwargs"]).eval()
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = (t.to(device) for t in test_images(e["n"]))
    eps, q = 0.5, e["queries"]
    runs = {}
    for steps in e["steps"]:
        runs[f"ours, {steps} steps"] = ours(True, steps, q)
        runs[f"torchattacks members, {steps} steps"] = torchattacks_members(steps, q)
    wide = f"ours, {e['steps'][0]} steps, batch_rows {e['batch_rows']}"  # the targets' batch at its GPU size
    runs[wide] = ours(True, e["steps"][0], q, e["batch_rows"])
    if e["shipped"]:  # the class as shipped leaves APGD, APGD-T and FAB at their default of 10 steps
        runs["torchattacks AutoAttack as shipped"] = torchattacks_autoattack
    rows = {}
    clean = float((predict(model, x) == y).float().mean())
    for name, fn in runs.items():
        box = {}
        seconds = clock.time(lambda: box.setdefault("x_adv", fn(model, x.clone(), y.clone(), eps, 0)))
        fell = broken(model, x, y, box["x_adv"].detach().to(device), eps)  # correct, then misclassified in the ball and box
        rows[name] = {"seconds": round(seconds, 3), "robust_accuracy": round(clean - float(fell.float().mean()), 4)}
        print(f"  {name}: {seconds:.2f} s, robust accuracy {rows[name]['robust_accuracy']:.1%}", flush=True)
    speedups = {f"{steps} steps": round(rows[f"torchattacks members, {steps} steps"]["seconds"]
                                        / rows[f"ours, {steps} steps"]["seconds"], 3) for steps in e["steps"]}
    speedups[f"{e['steps'][0]} steps, batch_rows {e['batch_rows']}"] = round(
        rows[f"torchattacks members, {e['steps'][0]} steps"]["seconds"] / rows[wide]["seconds"], 3)
    if e["shipped"] and 10 in e["steps"]:
        speedups["10 steps vs the shipped class"] = round(rows["torchattacks AutoAttack as shipped"]["seconds"]
                                                          / rows["ours, 10 steps"]["seconds"], 3)
    return {"images": e["n"], "eps": eps, "queries": q, "runs": rows, "speedup": speedups}


COMPILE_NEEDS_S = 150  # seconds a compile section needs (compiling ResNet-50 forward, backward and training)
SECTIONS = ("options", "graphs", "compile", "ensemble")
ENSEMBLE_NEEDS_S = 90  # seconds the ensemble section needs on a GPU (digits CNN: training it, then four ensembles)


def run_section(model_name: str, opt: str, s: dict, clock: Clock, results: dict, args, can_compile: bool, why_not: str,
                needs_s: float = 0.0) -> None:
    rows = results["models"][model_name]
    if opt in s["skip"]:
        rows[opt] = {"skipped": s["skip"][opt]}
    elif opt == "compile" and not can_compile:
        rows[opt] = {"skipped": f"compile unavailable: {why_not}"}
    elif clock.left() <= needs_s:
        rows[opt] = {"skipped": f"time budget: {clock.left():.0f} s of {args.budget_s:.0f} s left, {needs_s:.0f} s needed"}
    elif OPTIONS[opt].get("channels_last") and clock.device.type == "cpu":
        rows[opt] = {"skipped": CPU_CHANNELS_LAST}  # accelerate() would run it as eager: say so instead
    else:
        print(f"{model_name} {opt} ... ({clock.elapsed():.0f} s so far)", flush=True)
        r = guarded(opt, rows, lambda: bench_option(model_name, s["models"][model_name], OPTIONS[opt], s, clock))
        if "error" not in r:
            print(f"  {model_name} {opt}: {r['ms_per_pass']:.2f} ms/pass, PGD {r['pgd_ratio']:.3f}, D_R {r['d_r_ratio']:.3f}, "
                  f"adv-train {r['adv_train_ratio']:.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny models and sizes on the CPU (seconds; what the test runs)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10, help="steps of PGD and of the D_R loop (and limit passes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-batches", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=3, help="PGD steps of adversarial training")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip sections that would start after this many seconds")
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    ap.add_argument("--traceback", action="store_true", help="print the traceback of a failing section")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, in this order whatever is given: {', '.join(SECTIONS)} (default: all)")
    args = ap.parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        ap.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}" if unknown
                 else f"--sections names none; choose from {', '.join(SECTIONS)}")
    s = settings(args)
    set_progress_enabled(False)
    device = resolve_device(s["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    clock = Clock(device, args.budget_s)
    can_compile, why_not = compile_available()
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
           "cpu_smoke": args.cpu_smoke, "batch": s["batch"], "steps": s["steps"], "rounds": s["rounds"]}
    print(f"gpu check: {env['gpu'] or 'CPU'} ({device}), torch {env['torch']}, CUDA {env['cuda']}, batch {s['batch']}, "
          f"{s['steps']} steps, {s['rounds']} rounds{' [CPU SMOKE: tiny models, numbers mean nothing]' if args.cpu_smoke else ''}",
          flush=True)
    results: dict = {"environment": env, "models": {m: {} for m in s["models"]}}
    try:
        if "options" in sections:
            for opt in (o for o in OPTIONS if o != "compile"):
                for model_name in s["models"]:
                    run_section(model_name, opt, s, clock, results, args, can_compile, why_not)
        if "graphs" in sections:
            print("\n== CUDA graphs, small CNN ==", flush=True)
            if clock.left() > 0:
                g = guarded("cuda_graphs", results, lambda: cuda_graphs(s, clock))
            else:
                g = results["cuda_graphs"] = {"skipped": "time budget spent"}
            print("  " + (g.get("skipped") or g.get("error") or ", ".join(f"{k} {v}" for k, v in g.items())), flush=True)
        if "compile" in sections:
            for model_name in s["models"]:  # late: a first compiled call takes a minute or more
                run_section(model_name, "compile", s, clock, results, args, can_compile, why_not, needs_s=COMPILE_NEEDS_S)
        if "ensemble" in sections:
            print("\n== worst-case ensemble against torchattacks' AutoAttack, digits CNN ==", flush=True)
            needs = 0.0 if args.cpu_smoke else ENSEMBLE_NEEDS_S
            if clock.left() > needs:
                g = guarded("ensemble", results, lambda: ensemble(s, clock))
            else:
                g = results["ensemble"] = {"skipped": f"time budget: {clock.left():.0f} s left, {needs:.0f} s needed "
                                                      "(it runs alone with --sections ensemble)"}
            print("  " + (g.get("skipped") or g.get("error") or ", ".join(f"{k} ×{v}" for k, v in g["speedup"].items())),
                  flush=True)
    except KeyboardInterrupt:  # the wrapper's hard time limit: report what was measured
        results["interrupted_after_s"] = round(clock.elapsed(), 1)
        print(f"\ninterrupted after {clock.elapsed():.0f} s; what was measured follows", flush=True)
    for model_name, rows in results["models"].items():
        if not rows:  # its sections were not asked for (--sections)
            continue
        print(f"\n== {model_name} at batch {s['batch']}: ratios to the model's own forward+backward passes "
              f"(PGD, D_R: limit/workload; adv-train: (steps+1) standard epochs / adversarial epoch) ==")
        print_model(model_name, rows)

    big = "resnet50"
    hours = extrapolate(results["models"].get(big, {}), s["batch"])
    results["paper_d_r_extrapolated_hours"] = {"model": big, "batch": s["batch"], **PAPER_DR, "hours": hours}
    print(f"\n== extrapolated: the paper's CIFAR-10 D_R ({PAPER_DR['images']} images × {PAPER_DR['steps']} steps, {big}, "
          f"batch {s['batch']}) ==")
    for opt, h in hours.items():
        print(f"  {opt:20s} {h:8.2f} h")
    if not hours:
        print("  no D_R step time measured for ResNet-50 " + ("(see above)" if "options" in sections else "(--sections without options)"))
    results["seconds"] = round(clock.elapsed(), 1)
    print(f"\ndone in {results['seconds']} s", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
