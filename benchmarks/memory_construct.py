"""Peak memory of D_rand construction (and of training) from a set larger than it needs to hold.

    python benchmarks/memory_construct.py                       # 10 000 and 100 000 images, D_rand + training
    python benchmarks/memory_construct.py --sizes 2000 20000 --no-train

Writes N synthetic 3×32×32 uint8 images (seeded noise) to ``images.npy`` + ``labels.npy`` and,
for each N and each way of holding the source, runs one fresh process through ``launch.py`` (so that
its peak resident memory is its own, see there):

* ``streamed``: the ``.npy`` read from disk a batch at a time (``read_npy(stream=True)``);
* ``uint8``: the images in memory as uint8 (how built-in uint8 sets are held now);
* ``float32``: the images in memory as float32 (how every set was held before).

D_rand is built with a tiny MLP (one hidden layer of 32) and 1 PGD step, batches of 500, shards of
5 000 images; training is one epoch of ``train_model`` (batch 256, crop + flip). The goal: the
streamed peak at 100 000 images within 10 % of the peak at 10 000.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_source(folder: Path, n: int, *, seed: int = 0, chunk: int = 10_000) -> None:
    """N seeded uint8 noise images as images.npy (written a chunk at a time) and labels.npy."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with open(folder / "images.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n, 3, 32, 32)})
        for lo in range(0, n, chunk):
            f.write(rng.integers(0, 256, (min(chunk, n - lo), 3, 32, 32), dtype=np.uint8).tobytes())
    np.save(folder / "labels.npy", rng.integers(0, 10, n).astype(np.int64))


def child(args: argparse.Namespace) -> int:
    """One measured job (runs inside the fresh process)."""
    import torch

    from advfeatures.construct import RelabelConfig, build_dataset
    from advfeatures.data import ImageDataset, read_npy
    from advfeatures.distributed import tune_allocator
    from advfeatures.models import build_model
    from advfeatures.train import TrainConfig, train_model

    tune_allocator()
    torch.set_num_threads(1)
    ds, _ = read_npy(args.data, stream=args.hold == "streamed")
    if args.hold == "float32":
        ds = ImageDataset(ds.images, ds.labels, ds.classes, ds.name)  # materialised as float32, as before
    torch.manual_seed(0)
    model = build_model("mlp", (3, 32, 32), 10, hidden=(32,))
    if args.job == "construct":
        build_dataset("d_rand", model, ds, args.out, relabel=RelabelConfig(eps=0.5, steps=1, step_size=0.1), seed=0,
                      batch_size=500, shard_size=5000)
    else:
        train_model(model, ds, TrainConfig(epochs=1, batch_size=256, lr=0.01, crop_padding=4, flip=True))
    return 0


def measure(cmd: list[str]) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "launch.py"), "--", *cmd], capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    try:
        res = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        res = {"exit_code": out.returncode}
    if res.get("exit_code") != 0:
        res["stderr_tail"] = out.stderr[-2000:]
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--holds", nargs="+", default=["streamed", "uint8", "float32"], choices=["streamed", "uint8", "float32"])
    p.add_argument("--no-train", action="store_true", help="measure the construction only")
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per measurement (peak RSS varies by tens of MiB)")
    p.add_argument("--workdir", type=Path, default=None, help="where to write the data (default: a temporary folder, removed)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", choices=["construct", "train"], help=argparse.SUPPRESS)
    p.add_argument("--hold", default="streamed", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.job = args.child
        return child(args)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="memory-construct-"))
    results = []
    try:
        jobs = ["construct"] + ([] if args.no_train else ["train"])
        for n in args.sizes:
            data = work / f"n{n}"
            write_source(data, n)
            for job in jobs:
                for hold in args.holds:
                    for rep in range(args.repeats):
                        out = work / f"d_rand-{n}-{hold}"
                        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", job, "--hold", hold, "--data", str(data),
                               "--out", str(out)]
                        res = measure(cmd)
                        shutil.rmtree(out, ignore_errors=True)
                        results.append({"job": job, "images": n, "hold": hold, "repeat": rep, **res})
                        print(f"{job:9s} {n:>7d} images  {hold:8s}  peak RSS {res.get('peak_rss_mib', float('nan')):7.1f} MiB  "
                              f"wall {res.get('wall_seconds', float('nan')):6.1f} s  exit {res.get('exit_code')}", flush=True)
                        if res.get("exit_code") != 0:
                            print(res.get("stderr_tail", ""), flush=True)
            shutil.rmtree(data, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    lo, hi = min(args.sizes), max(args.sizes)
    for job in ("construct", "train"):
        for hold in args.holds:
            peaks = {n: sorted(r["peak_rss_mib"] for r in results if r["job"] == job and r["hold"] == hold and r["images"] == n
                               and r.get("exit_code") == 0) for n in (lo, hi)}
            if peaks[lo] and peaks[hi]:
                med = {n: statistics.median(v) for n, v in peaks.items()}
                print(f"{job}, {hold}: median peak RSS {med[lo]:.0f} MiB ({lo} images, runs {peaks[lo]}) → {med[hi]:.0f} MiB "
                      f"({hi} images, runs {peaks[hi]}): ratio {med[hi] / med[lo]:.3f}" + (" (goal ≤ 1.10)" if hold == "streamed" else ""),
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
