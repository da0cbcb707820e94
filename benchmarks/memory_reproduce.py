"""Peak memory of a whole ``advfeatures reproduce`` run on data read from disk, at two sizes.

    python benchmarks/memory_reproduce.py                      # 10 000 and 100 000 images
    python benchmarks/memory_reproduce.py --sizes 2000 20000   # quicker

The sibling of ``memory_construct.py`` (which measures D_rand construction and training alone):
this one runs the pipeline end to end: the data digest, standard and adversarial training, the
four constructions, training on each, the single attacks, the worst-case ensemble, the sanity
checks, the extras (inversion, leakage audit, distillation control, transfer on the first 2000) and
the report.
Each size is N seeded 3×32×32 uint8 noise images in ``images.npy`` + ``labels.npy`` (split 80/20,
so the test set grows with N too), read with ``data_stream=true`` (a batch at a time from disk),
and the run is one fresh process through ``launch.py``. The preset is digits' with everything made
tiny (an MLP with one hidden layer of 32, one epoch per model, one step per attack/construction)
so that it takes minutes: the point is what grows with N, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memory_construct import measure, write_source  # noqa: E402

TINY = {
    "threads": 1,
    "data_stream": True,
    "model.arch": "mlp",
    "model.kwargs": {"hidden": [32]},
    **{f"{stage}.epochs": 1 for stage in ("standard", "adversarial", "train_d_r", "train_d_nr", "train_d_rand", "train_d_det")},
    **{f"{stage}.batch_size": 256 for stage in ("standard", "adversarial", "train_d_r", "train_d_nr", "train_d_rand", "train_d_det")},
    "adversarial.adversary.steps": 1,
    "construction.matching.steps": 1,
    "construction.relabel.steps": 1,
    "construction.batch_size": 500,
    "construction.shard_size": 5000,
    "evaluation.attacks": [{"attack": "pgd", "norm": "L2", "eps": 0.5, "steps": 1}],
    "evaluation.batch_size": 500,
    "evaluation.worst_case": {"steps": 1, "n_target_classes": 1, "square_queries": 2},
    "evaluation.sanity": {"steps": 1, "square_queries": 2, "test_limit": None},
    "extras.transfer_train_limit": 2000,  # the transfer extra trains its architectures on the first 2000 (time only)
}


def overrides(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        out += ["--set", f"{key}={json.dumps(value)}"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--workdir", type=Path, default=None, help="where to write data and runs (default: a temporary folder, removed)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE", help="one more setting (repeatable)")
    args = p.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="memory-reproduce-"))
    results = []
    try:
        for n in args.sizes:
            data = work / f"n{n}"
            write_source(data, n)
            run = work / f"run-{n}"
            cmd = [sys.executable, "-m", "advfeatures.cli", "reproduce", "--data", str(data), "--preset", "digits",
                   "--out", str(run), "--no-estimate", "--quiet", *overrides(TINY)]
            for extra in args.extra:
                cmd += ["--set", extra]
            res = measure(cmd)
            try:  # the run's own record of its peak after each step: which step, if any, grows with N
                steps = json.loads((run / "results.json").read_text())["timing"]["steps"]
                res["peak_rss_mib_after_step"] = {k: v.get("peak_rss_mib_after") for k, v in steps.items()}
            except (OSError, ValueError, KeyError):
                pass
            results.append({"images": n, **res})
            print(f"reproduce {n:>7d} images  peak RSS {res.get('peak_rss_mib', float('nan')):7.1f} MiB  "
                  f"wall {res.get('wall_seconds', float('nan')):6.1f} s  exit {res.get('exit_code')}", flush=True)
            if res.get("exit_code") != 0:
                print(res.get("stderr_tail", ""), flush=True)
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(run, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ok = [r for r in results if r.get("exit_code") == 0]
    if len(ok) >= 2:
        lo, hi = ok[0], ok[-1]
        print(f"reproduce: peak RSS {lo['peak_rss_mib']:.0f} MiB ({lo['images']} images) → {hi['peak_rss_mib']:.0f} MiB "
              f"({hi['images']} images): ratio {hi['peak_rss_mib'] / lo['peak_rss_mib']:.3f}", flush=True)
        for step, peak in hi.get("peak_rss_mib_after_step", {}).items():
            before = lo.get("peak_rss_mib_after_step", {}).get(step)
            print(f"  peak after {step:24s} {before} → {peak} MiB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
