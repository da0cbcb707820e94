"""The speed options side by side: the same forward+backward passes (w.r.t. the input) with the model
eager, channels-last, compiled, compiled + channels-last, and under bf16 autocast, in interleaved
rounds; with how far each option's logits and input gradient are from the eager ones (they must agree
up to float rounding; bf16 up to bf16 rounding).

The small CNN's max-pools see many exact ties (windows of ReLU zeros, about a third of the first
pool's windows on random inputs), and each implementation routes the gradient of a tie to a
different, equally valid, pixel; so its gradients are compared by the share of pixels that differ
as well as by the largest difference."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from advfeatures.distributed import accelerate, compile_available
from advfeatures.models import build_model

CONFIGS = {
    "eager": {},
    "channels-last": {"channels_last": True},
    "compile": {"compile": True},
    "compile+channels-last": {"compile": True, "channels_last": True},
    "bf16": {"bf16": True},
}


def compare(name: str, shape: tuple[int, int, int], batch: int, device: torch.device, *, passes: int = 5, rounds: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    can_compile, why = compile_available()
    models = {}
    for label, opts in CONFIGS.items():
        if opts.get("compile") and not can_compile:
            continue
        torch.manual_seed(0)  # the same weights in every configuration
        models[label] = accelerate(build_model(name, shape, 10).to(device), device=device, **opts).eval()

    def grad_of(model, *, with_logits: bool = False):
        xx = x.detach().requires_grad_(True)
        logits = model(xx)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="none").sum(), xx)
        return (logits.detach(), grad) if with_logits else grad

    compile_seconds = {}
    ref_logits, ref_grad = grad_of(models["eager"], with_logits=True)
    agreement = {}
    for label, model in models.items():  # warm-up (and compilation) + agreement with eager
        start = time.perf_counter()
        logits, grad = grad_of(model, with_logits=True)
        if "compile" in label:
            compile_seconds[label] = round(time.perf_counter() - start, 1)
        scale = ref_grad.abs().max().clamp_min(1e-30)
        agreement[label] = {
            "max_rel_logit_diff": float((logits - ref_logits).abs().max() / ref_logits.abs().max().clamp_min(1e-30)),
            "max_rel_grad_diff": float((grad - ref_grad).abs().max() / scale),
            "share_of_grad_pixels_differing": float(((grad - ref_grad).abs() > 1e-4 * scale).float().mean()),
        }
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(rounds):
        labels = list(models)
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            start = time.process_time() if device.type == "cpu" else time.perf_counter()
            for _ in range(passes):
                grad_of(models[label])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[label].append(((time.process_time() if device.type == "cpu" else time.perf_counter()) - start) / passes)
    eager = statistics.median(times["eager"])
    rows = {label: {"ms_per_pass": round(statistics.median(t) * 1e3, 1), "speedup_vs_eager": round(eager / statistics.median(t), 3),
                    **agreement[label]} for label, t in times.items()}
    return {"model": name, "batch_size": batch, "device": str(device), "clock": "process CPU" if device.type == "cpu" else "wall",
            "passes": passes, "rounds": rounds, "configs": rows, "compile_seconds": compile_seconds,
            "compile_unavailable": None if can_compile else why}


def print_summary(res: dict) -> None:
    print(f"speed options: {res['model']} batch {res['batch_size']} on {res['device']} ({res['clock']} time, median of "
          f"{res['rounds']} rounds × {res['passes']} forward+backward passes)")
    for label, r in res["configs"].items():
        print(f"  {label:22s} {r['ms_per_pass']:8.1f} ms/pass  ×{r['speedup_vs_eager']:.2f}  vs eager: logits "
              f"{r['max_rel_logit_diff']:.1e}, input gradient {r['max_rel_grad_diff']:.1e} "
              f"({100 * r['share_of_grad_pixels_differing']:.2f}% of pixels differ)")
    if res["compile_seconds"]:
        print(f"  first-call compile time: {res['compile_seconds']}")
    if res["compile_unavailable"]:
        print(f"  compile skipped: {res['compile_unavailable']}")
