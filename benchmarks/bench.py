"""Speed benchmarks: each workload's throughput as a ratio to the hardware limit measured in the same run.

    python benchmarks/bench.py                 # both models at batch 256, then the digits reproduce
    python benchmarks/bench.py --quick         # the small CNN only, 2 rounds, short D_R loop, no reproduce
    python benchmarks/bench.py --fashion-drand # also: peak memory of D_rand on all of Fashion-MNIST

The limit is the raw forward+backward throughput (w.r.t. the input) of the same model and batch.
Every round runs every workload once, in a rotated order, each right next to its own measurement
of the limit (limit first in even rounds, second in odd ones), so that the slow spells of a shared
machine fall on both sides of a ratio alike; both wall-clock and process-CPU seconds are taken. A
workload's ratio is ``limit seconds / workload seconds`` for the same amount of work, per round;
the table shows the median over rounds. Goals: attacks and the D_R loop ≥ 0.95; adversarial training ≥ 1/1.05, i.e. an
epoch within 5% of (steps + 1) standard-training epochs.

The allocator settings, thread count, machine, load average and the CPU share the other processes
took are printed and stored with the results (``--out``, JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import allocator
import options
from machine import LoadMeter, machine_info, peak_rss_mib
from workloads import Workload, attack_workloads, forward_passes, limit_passes, loop_overhead, make_batch, train_workloads

from advfeatures.distributed import RECOMMENDED_GLIBC_TUNABLES, accelerate, resolve_device, tune_allocator
from advfeatures.models import build_model
from advfeatures.progress import set_progress_enabled

MODELS = {"cnn": (1, 28, 28), "resnet18": (3, 32, 32)}
ATTACK_GOAL, TRAIN_GOAL = 0.95, 1 / 1.05


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c


def _parse_per_model(value: str, model: str) -> int:
    """``"10"`` or ``"cnn=200,resnet18=10"`` → the number for ``model``."""
    if "=" not in value:
        return int(value)
    table = dict(item.split("=", 1) for item in value.split(","))
    return int(table.get(model, table.get("default", "10")))


def bench_model(name: str, args, device: torch.device) -> dict:
    shape = MODELS[name]
    torch.manual_seed(0)  # benchmark script only: fixed initialisation of the timed models

    def factory():
        return accelerate(build_model(name, shape, 10).to(device), compile=args.compile, bf16=args.bf16,
                          channels_last=args.channels_last, device=device)

    model = factory().eval()
    x, y = make_batch(shape, args.batch_size, 10, device)
    k = args.steps
    dr_steps = _parse_per_model(args.dr_steps, name)
    rounds = _parse_per_model(args.rounds, name)
    measured = attack_workloads(model, x, y, steps=k, dr_steps=dr_steps, keep_best_rows=not args.no_keep_best)
    # each workload's reference: the limit doing as many forward+backward passes as the workload
    # needs, plus (timed apart) the forward-only passes it needs; for training, a standard epoch
    refs: dict[str, tuple[Workload, float, Workload | None]] = {}
    for w in measured:
        fb, f = w.passes
        limit = Workload(f"limit×{fb}", limit_passes(model, x, y, fb), (fb, 0), "limit", f"{fb} forward+backward passes w.r.t. the input")
        extra = Workload(f"forward×{f}", forward_passes(model, x, f), (0, f), "limit", f"{f} forward passes") if f else None
        refs[w.name] = (limit, 1.0, extra)
    if not args.no_train:
        std, adv = train_workloads(factory, shape, 10, batch=args.batch_size, batches=args.train_batches, steps=args.train_steps,
                                   device=device, train_kwargs={})
        measured.append(adv)
        refs[adv.name] = (std, float(args.train_steps + 1), None)

    print(f"\n== {name} {shape} batch {args.batch_size}, {rounds} rounds, attacks {k} steps, D_R loop {dr_steps} steps ==",
          flush=True)
    warm = LoadMeter().start()
    for w in measured:  # warm-up: allocator pools, oneDNN primitives, compiled graphs
        w.run()
    for ref, _, extra in refs.values():
        ref.run()
        if extra is not None:
            extra.run()
    print(f"warm-up {warm.stop()['seconds']:.1f}s", flush=True)

    # Each workload is timed right next to its reference (the reference first in even rounds and
    # second in odd ones), and the workloads' order rotates from round to round, so that a slow
    # spell of the shared machine falls on both sides of a ratio alike.
    t_w: dict[str, list[tuple[float, float]]] = {w.name: [] for w in measured}
    t_ref: dict[str, list[tuple[float, float]]] = {w.name: [] for w in measured}
    t_extra: dict[str, list[tuple[float, float]]] = {w.name: [] for w in measured}
    loads = []
    for r in range(rounds):
        meter = LoadMeter().start()
        for w in measured[r % len(measured):] + measured[: r % len(measured)]:
            ref, _, extra = refs[w.name]
            if r % 2 == 0:
                t_ref[w.name].append(timed(ref.run, device))
                t_w[w.name].append(timed(w.run, device))
            else:
                t_w[w.name].append(timed(w.run, device))
                t_ref[w.name].append(timed(ref.run, device))
            t_extra[w.name].append(timed(extra.run, device) if extra is not None else (0.0, 0.0))
        load = meter.stop()
        loads.append(load)
        print(f"round {r + 1}: {load['seconds']:.0f}s, other processes used {load.get('other_processes_cores', '?')} cores, "
              f"load average {load['loadavg_1min']}", flush=True)

    rows = []
    for w in measured:
        ref, scale, extra = refs[w.name]
        tw, tr, te = t_w[w.name], t_ref[w.name], t_extra[w.name]
        plain = {c: [scale * a[c] / b[c] for a, b in zip(tr, tw)] for c in (0, 1)}
        needed = {c: [(scale * a[c] + e[c]) / b[c] for a, e, b in zip(tr, te, tw)] for c in (0, 1)}
        # best of rounds: contention only ever adds time, so each side's fastest round is its cleanest
        best = {c: (scale * min(a[c] for a in tr) + min(e[c] for e in te)) / min(b[c] for b in tw) for c in (0, 1)}
        goal = TRAIN_GOAL if w.kind == "train" else ATTACK_GOAL
        row = {
            "workload": w.name, "note": w.note, "reference": f"{ref.name}" + (f" × {scale:g}" if scale != 1 else "")
            + (f" + {extra.name}" if extra else ""), "passes": {"forward_backward": w.passes[0], "forward": w.passes[1]},
            "seconds_wall": [round(t[0], 4) for t in tw], "seconds_cpu": [round(t[1], 4) for t in tw],
            "reference_seconds_wall": [round(t[0], 4) for t in tr], "reference_seconds_cpu": [round(t[1], 4) for t in tr],
            "extra_forward_seconds_cpu": [round(t[1], 4) for t in te],
            "ratio_cpu": statistics.median(plain[1]), "ratio_wall": statistics.median(plain[0]),
            "ratio_cpu_needed_passes": statistics.median(needed[1]), "ratio_wall_needed_passes": statistics.median(needed[0]),
            "ratio_cpu_needed_passes_best_of_rounds": best[1], "ratio_wall_needed_passes_best_of_rounds": best[0],
            "ratio_cpu_per_round": [round(v, 4) for v in plain[1]], "ratio_cpu_needed_passes_per_round": [round(v, 4) for v in needed[1]],
            "goal": round(goal, 4),
        }
        row["meets_goal"] = row["ratio_cpu_needed_passes"] >= goal
        rows.append(row)
    _print_table(rows)
    fb_cpu = statistics.median(t[1] / refs["pgd-linf"][0].passes[0] for t in t_ref["pgd-linf"])
    fb_wall = statistics.median(t[0] / refs["pgd-linf"][0].passes[0] for t in t_ref["pgd-linf"])
    print(f"limit: {args.batch_size / fb_wall:.0f} images/s forward+backward (wall), {fb_cpu * 1e3:.0f} ms CPU per pass", flush=True)
    overhead = print_overhead(shape, args.batch_size, device, k, fb_cpu * 1e3)
    return {"model": name, "input_shape": list(shape), "batch_size": args.batch_size, "steps": k, "dr_steps": dr_steps,
            "train": {"batches": args.train_batches, "adversary_steps": args.train_steps} if not args.no_train else None,
            "rounds": rounds, "limit_images_per_s_wall": round(args.batch_size / fb_wall, 1),
            "limit_ms_cpu_per_pass": round(fb_cpu * 1e3, 2), "loop_overhead_ms_per_step": overhead, "workloads": rows, "load": loads, "peak_rss_mib": peak_rss_mib()}


def print_overhead(shape, batch: int, device: torch.device, steps: int, fb_ms: float | None) -> dict[str, float]:
    """The loops' own cost per step (on a near-free model), and the ratio it allows at most."""
    overhead = loop_overhead(shape, batch, device, steps=steps)
    parts = ", ".join(f"{k} {v:.2f}" for k, v in overhead.items())
    line = f"loop overhead outside the model (near-free model, CPU ms per step): {parts}"
    if fb_ms:
        worst = max(overhead.values())
        line += f"; against {fb_ms:.0f} ms per pass that bounds the ratio at ≥ {fb_ms / (fb_ms + max(worst, 0.0)):.4f}"
    print(line, flush=True)
    return overhead


def _print_table(rows: list[dict]) -> None:
    print("ratio = reference time / workload time for the same work; median over rounds (and the best rounds)")
    head = ["workload", "reference", "vs fwd+bwd: cpu", "wall", "| vs needed passes: cpu", "wall", "best", "| goal", "ok",
            "per-round cpu (needed passes)"]
    cells = [[r["workload"], r["reference"], f"{r['ratio_cpu']:.3f}", f"{r['ratio_wall']:.3f}", f"| {r['ratio_cpu_needed_passes']:.3f}",
              f"{r['ratio_wall_needed_passes']:.3f}", f"{r['ratio_cpu_needed_passes_best_of_rounds']:.3f}", f"| ≥{r['goal']:.3f}",
              "yes" if r["meets_goal"] else "NO", " ".join(f"{v:.3f}" for v in r["ratio_cpu_needed_passes_per_round"])] for r in rows]
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(len(head))]
    for c in [head, *cells]:
        print("  ".join(str(v).ljust(wd) for v, wd in zip(c, widths)).rstrip())


def _cli_has(command: str) -> bool:
    probe = subprocess.run([sys.executable, "-m", "advfeatures.cli", command, "--help"], capture_output=True, text=True, check=False)
    return probe.returncode == 0


def child_env(args) -> dict:
    """The environment of timed child processes: ours, with the allocator settings that
    ``reproduce.sh`` gives the tool (unless --default-malloc or the user set their own)."""
    env = dict(os.environ)
    if not args.default_malloc:
        env.setdefault("GLIBC_TUNABLES", RECOMMENDED_GLIBC_TUNABLES)
    return env


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` to completion through ``launch.py``: its wall time, CPU time and peak resident
    memory (``getrusage(RUSAGE_CHILDREN)`` in the small launcher, so that this process's own memory
    does not count; see launch.py), and the other load on the machine meanwhile."""
    meter = LoadMeter().start()
    launcher = [sys.executable, str(Path(__file__).with_name("launch.py")), "--"]
    proc = subprocess.Popen(launcher + cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        tail = (tail + [line.decode(errors="replace").rstrip()])[-25:]
    proc.wait()
    load = meter.stop()
    try:
        measured = json.loads(tail.pop())
    except (IndexError, json.JSONDecodeError):
        measured = {"exit_code": proc.returncode, "wall_seconds": load["seconds"], "cpu_seconds": None, "peak_rss_mib": None}
    env_note = {k: (env or os.environ).get(k) for k in ("GLIBC_TUNABLES", "OMP_NUM_THREADS")}
    return {"command": " ".join(cmd), "environment": env_note, **measured,
            "other_processes_cores": load.get("other_processes_cores"), "loadavg_1min": load["loadavg_1min"], "output_tail": tail}


def bench_reproduce(preset: str, args) -> dict:
    if not _cli_has("reproduce"):
        msg = "skipped: `advfeatures reproduce` does not exist yet"
        print(f"\n== reproduce --preset {preset} ==\n{msg}", flush=True)
        return {"preset": preset, "skipped": msg}
    out = Path(tempfile.mkdtemp(prefix=f"bench-reproduce-{preset}-"))
    try:
        cmd = [sys.executable, "-m", "advfeatures.cli", "--quiet", "reproduce", "--preset", preset, "--out", str(out / "run"),
               "--device", args.device]
        print(f"\n== reproduce --preset {preset} ==\n{' '.join(cmd)}", flush=True)
        res = run_child(cmd, child_env(args))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"exit {res['exit_code']}: {res['wall_seconds']:.0f} s wall, {res['cpu_seconds']:.0f} s CPU, peak RSS "
          f"{res['peak_rss_mib']:.0f} MiB, other processes used {res['other_processes_cores']} cores", flush=True)
    if res["exit_code"] != 0:
        print("\n".join(res["output_tail"]), flush=True)
    return {"preset": preset, **res}


def bench_fashion_drand(args) -> dict:
    """Peak memory of building D_rand from all 60 000 Fashion-MNIST training images with a small
    (untrained) CNN and few PGD steps, through ``advfeatures construct``; with a 10 000-image run
    beside it to show that memory does not grow with the number of shards."""
    from advfeatures.data.loaders import FASHION_MNIST_DIR
    from advfeatures.models import save_model

    if not FASHION_MNIST_DIR.is_dir() or not _cli_has("construct"):
        msg = f"skipped: needs {FASHION_MNIST_DIR} and `advfeatures construct`"
        print(f"\n== Fashion-MNIST D_rand ==\n{msg}", flush=True)
        return {"skipped": msg}
    work = Path(tempfile.mkdtemp(prefix="bench-fashion-drand-"))
    results = []
    try:
        torch.manual_seed(0)
        model_path = work / "cnn.safetensors"
        save_model(build_model("cnn", (1, 28, 28), 10), model_path)
        for n in args.fashion_counts:
            cmd = [sys.executable, "-m", "advfeatures.cli", "--quiet", "construct", "--kind", "d_rand", "--model", str(model_path),
                   "--dataset", "fashion-mnist", "--out", str(work / f"d_rand-{n}"), "--steps", str(args.fashion_steps),
                   "--step-size", "0.1", "--eps", "0.5", "--shard-size", "5000", "--batch-size", "500", "--n", str(n),
                   "--device", args.device]
            print(f"\n== Fashion-MNIST D_rand, {n} images ==\n{' '.join(cmd)}", flush=True)
            res = run_child(cmd, child_env(args))
            print(f"exit {res['exit_code']}: {res['wall_seconds']:.0f} s wall, peak RSS {res['peak_rss_mib']:.0f} MiB, "
                  f"other processes used {res['other_processes_cores']} cores", flush=True)
            if res["exit_code"] != 0:
                print("\n".join(res["output_tail"]), flush=True)
            results.append({"images": n, **res})
        # what the process holds before constructing anything: interpreter, torch, model, the source dataset
        baseline = ("import advfeatures.cli, torch; from advfeatures.data import load_dataset; "
                    f"from advfeatures.models import load_model; load_model({str(model_path)!r}); "
                    "t, _ = load_dataset('fashion-mnist')")
        base = run_child([sys.executable, "-c", baseline], child_env(args))
        print(f"baseline (imports, model, Fashion-MNIST loaded as float32): peak RSS {base['peak_rss_mib']:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    shard_mib = 5000 * 28 * 28 * 4 / 2**20
    return {"runs": results, "baseline_peak_rss_mib": base["peak_rss_mib"], "shard_images_mib": round(shard_mib, 1),
            "steps": args.fashion_steps, "shard_size": 5000, "batch_size": 500}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cnn,resnet18", help="comma-separated: cnn (1×28×28), resnet18 (3×32×32)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="attack steps (and passes of the limit)")
    p.add_argument("--dr-steps", default="cnn=200,resnet18=10",
                   help="representation-matching steps: N, or per model (default: the presets' 200 on the CNN; 10 on ResNet-18 for time)")
    p.add_argument("--train-steps", type=int, default=7, help="PGD steps of adversarial training (the paper's 7)")
    p.add_argument("--train-batches", type=int, default=2, help="batches in the benchmarked training epoch")
    p.add_argument("--rounds", default="cnn=5,resnet18=3", help="rounds: N, or per model")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadiest on a shared machine)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model (limit included)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (limit included)")
    p.add_argument("--channels-last", action="store_true", help="channels-last weights and inputs (limit included)")
    p.add_argument("--default-malloc", action="store_true", help="keep glibc's default allocator thresholds")
    p.add_argument("--no-keep-best", action="store_true", help="skip the keep-best PGD row")
    p.add_argument("--no-train", action="store_true", help="skip the training workloads")
    p.add_argument("--no-allocator", action="store_true", help="skip the default-vs-tuned allocator comparison")
    p.add_argument("--speed-options", default="cnn",
                   help="models on which to compare eager / channels-last / compile / bf16 ('none' to skip)")
    p.add_argument("--reproduce", default="digits", help="preset of the full reproduce to time ('none' to skip)")
    p.add_argument("--fashion-drand", action="store_true", help="measure D_rand on all of Fashion-MNIST (memory)")
    p.add_argument("--fashion-counts", type=lambda s: [int(v) for v in s.split(",")], default=[10000, 60000])
    p.add_argument("--fashion-steps", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="cnn only, 2 rounds, no reproduce")
    p.add_argument("--overhead-only", action="store_true", help="only the loops' own cost per step (seconds, low noise)")
    p.add_argument("--out", type=Path, default=None, help="write all results as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.rounds, args.reproduce, args.dr_steps, args.no_allocator = "cnn", "2", "none", "10", True
        args.speed_options = "none"
    if args.overhead_only:
        args.reproduce, args.no_allocator, args.speed_options, args.fashion_drand = "none", True, "none", False
    logging.basicConfig(level=logging.WARNING)
    set_progress_enabled(False)
    torch.set_num_threads(args.threads)
    tuned = None if args.default_malloc else tune_allocator()
    device = resolve_device(args.device)
    info = machine_info(device)
    print("machine:", json.dumps(info), flush=True)
    if tuned is None and not args.default_malloc and "GLIBC_TUNABLES" not in os.environ:
        print("note: allocator thresholds could not be tuned here (not glibc?)", flush=True)
    started = LoadMeter().start()
    results: dict = {"machine": info, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "models": []}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in MODELS:
            p.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        if args.overhead_only:
            print(f"\n== {name} {MODELS[name]} batch {args.batch_size} ==", flush=True)
            results.setdefault("loop_overhead", {})[name] = print_overhead(MODELS[name], args.batch_size, device, args.steps, None)
            continue
        results["models"].append(bench_model(name, args, device))
    if args.speed_options != "none":
        results["speed_options"] = []
        for name in [m.strip() for m in args.speed_options.split(",") if m.strip()]:
            print(flush=True)
            res = options.compare(name, MODELS[name], args.batch_size, device)
            options.print_summary(res)
            results["speed_options"].append(res)
    if not args.no_allocator:
        print(flush=True)
        results["allocator"] = allocator.compare("cnn", args.batch_size, passes=5, reps=3, alternations=2)
        allocator.print_summary(results["allocator"])
    if args.reproduce != "none":
        results["reproduce"] = bench_reproduce(args.reproduce, args)
    if args.fashion_drand:
        results["fashion_drand"] = bench_fashion_drand(args)
    results["load_overall"] = started.stop()
    print(f"\noverall: {json.dumps(results['load_overall'])}", flush=True)
    if args.out:
        from advfeatures.storage import write_json_atomic

        write_json_atomic(args.out, results)
        print(f"wrote {args.out}")
    failed = [r["workload"] for m in results["models"] for r in m["workloads"] if not r["meets_goal"]]
    if failed:
        print(f"below goal: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
