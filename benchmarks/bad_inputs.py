"""An independent campaign of bad inputs against every ``advfeatures`` command.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bad_inputs.py [--only FAMILY] [--list]

Generates a thousand-odd distinct bad inputs — bad numbers for every numeric option of every
command, bad ``--set`` values and config files, bad data folders and arrays, bad model and dataset
files (truncated, foreign, wrong shapes, crafted pickles that would write a marker file), bad
output folders — runs each in-process through click's CliRunner (torch is imported once) and
classifies it:

* ``traceback``: an exception escaped, or click's bare ``Aborted!``;
* ``messy``: exit 2 but not one error line at the end;
* ``wrong``: exit 0 with a non-finite number or an accuracy outside [0, 1] in a JSON written, or
  exit 0 on an input that is bad beyond doubt (NaN, an unreadable file...);
* ``poisoned``: the failed run left something under its output that makes the corrected command fail;
* ``code``: a crafted pickle's marker file appeared;
* ``hang``: a bad input still running after the per-case limit (it should fail at the door);
* ``ok``: exit 0 with valid output, or exit 2 with one line;
* ``unjudged``: a plausible (maybe valid) input whose run outlasted the limit: a slow valid run.

It prints the counts per class and family, and lists every failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BAD_CLASSES = ("traceback", "messy", "wrong", "poisoned", "code", "hang")


@dataclass
class Case:
    family: str
    command: str
    args: list[str]
    bad: bool = True  # bad beyond doubt: exit 0 is a silently wrong result
    out: Path | None = None  # where the command writes (checked for finite JSON; reused by the corrected run)
    fix: list[str] | None = None  # the corrected command for the poisoned-folder check
    name: str = ""


@dataclass
class Outcome:
    case: Case
    verdict: str
    detail: str = ""
    seconds: float = 0.0


MARKER_NAME = "PWNED"


class _Evil:
    """A pickle that, if ever unpickled, writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- valid tiny inputs, made once --------------------------------------------------------------
def make_fixtures(root: Path) -> dict[str, Path]:
    import torch
    from click.testing import CliRunner

    from advfeatures.cli import main
    from advfeatures.data import load_digits
    from advfeatures.models import build_model, save_model

    train, _ = load_digits()
    torch.manual_seed(0)
    f: dict[str, Path] = {}
    f["model"] = root / "digits.safetensors"
    save_model(build_model("mlp", train.image_shape, train.num_classes, hidden=[8]), f["model"])
    f["model28"] = root / "m28.safetensors"
    save_model(build_model("mlp", (1, 28, 28), 10, hidden=[8]), f["model28"])
    f["model3c"] = root / "m3c.safetensors"
    save_model(build_model("mlp", (3, 8, 8), 10, hidden=[8]), f["model3c"])
    f["state"] = root / "state.pt"
    torch.save(build_model("mlp", train.image_shape, train.num_classes, hidden=[8]).state_dict(), f["state"])
    f["d_rand"] = root / "d_rand"
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", "construct", "--kind", "d_rand", "--model", str(f["model"]),
                                    "--n", "12", "--shard-size", "6", "--steps", "1", "--out", str(f["d_rand"])])
    assert res.exit_code == 0, res.output
    f["npz"] = root / "ok.npz"
    rng = np.random.default_rng(0)
    np.savez(f["npz"], images=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), labels=np.arange(60) % 3)
    f["toml"] = root / "ok.toml"
    f["toml"].write_text("epochs = 1\nbatch_size = 16\n")
    return f


# ---- bad files -----------------------------------------------------------------------------------
def bad_model_files(root: Path, f: dict[str, Path], marker: Path) -> dict[str, tuple[Path, bool]]:
    """name -> (path, bad beyond doubt)."""
    import torch
    from safetensors.torch import save_file

    d = root / "bad-models"
    d.mkdir()
    good = f["model"].read_bytes()
    out: dict[str, tuple[Path, bool]] = {}

    def put(name: str, data: bytes) -> None:
        (d / name).write_bytes(data)
        out[name] = (d / name, True)

    put("empty.safetensors", b"")
    put("truncated-half.safetensors", good[: len(good) // 2])
    put("truncated-header.safetensors", good[:5])
    put("random.safetensors", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)))
    put("json.safetensors", b'{"a": 1}')
    put("huge-header.safetensors", (2**62).to_bytes(8, "little") + b"{}")
    put("header-not-json.safetensors", (20).to_bytes(8, "little") + b"not json at all!!!!!")
    put("text.pt", b"hello, not a checkpoint\n")
    put("zip.pt", _zip_bytes())
    put("evil-pickle.pt", pickle.dumps(_Evil(marker)))
    put("evil-pickle.pth", pickle.dumps({"model": _Evil(marker)}))
    buf = root / "evil-torch.pt"
    torch.save({"w": _Evil(marker)}, buf)  # torch's zip format holding a crafted pickle
    out["evil-torch.pt"] = (buf, True)
    save_file({"nothing": torch.zeros(3)}, str(d / "wrong-keys.safetensors"))
    out["wrong-keys.safetensors"] = (d / "wrong-keys.safetensors", True)
    from safetensors.torch import load_file

    tensors = load_file(str(f["model"]))
    from safetensors import safe_open

    with safe_open(str(f["model"]), framework="pt") as fh:
        meta = fh.metadata()
    save_file({k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in tensors.items()}, str(d / "wrong-shapes.safetensors"),
              metadata=meta)
    out["wrong-shapes.safetensors"] = (d / "wrong-shapes.safetensors", True)
    save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()},
              str(d / "nan-weights.safetensors"), metadata=meta)
    out["nan-weights.safetensors"] = (d / "nan-weights.safetensors", True)
    save_file({k: torch.full_like(v, float("inf")) if v.is_floating_point() else v for k, v in tensors.items()},
              str(d / "inf-weights.safetensors"), metadata=meta)
    out["inf-weights.safetensors"] = (d / "inf-weights.safetensors", True)
    save_file(tensors, str(d / "no-metadata.safetensors"))
    out["no-metadata.safetensors"] = (d / "no-metadata.safetensors", True)
    bad_meta = dict(meta or {})
    for k in list(bad_meta):
        bad_meta[k] = "{not json"
    save_file(tensors, str(d / "bad-metadata.safetensors"), metadata=bad_meta)
    out["bad-metadata.safetensors"] = (d / "bad-metadata.safetensors", True)
    torch.save([1, 2, 3], d / "list.pt")
    out["list.pt"] = (d / "list.pt", True)
    torch.save({"model": "not weights"}, d / "dict-str.pt")
    out["dict-str.pt"] = (d / "dict-str.pt", True)
    (d / "a-folder.safetensors").mkdir()
    out["a-folder.safetensors"] = (d / "a-folder.safetensors", True)
    out["missing.safetensors"] = (d / "missing.safetensors", True)
    out["model28-on-digits"] = (f["model28"], True)
    out["model3c-on-digits"] = (f["model3c"], True)
    out["state-dict-no-arch"] = (f["state"], False)  # may be refused (no architecture) or read with --arch
    loop = d / "loop.safetensors"
    os.symlink(loop, loop)
    out["symlink-loop.safetensors"] = (loop, True)
    return out


def _zip_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"garbage")
    return buf.getvalue()


def bad_data(root: Path) -> dict[str, Path]:
    """Bad values for ``--data``: folders and arrays."""
    from PIL import Image

    d = root / "bad-data"
    d.mkdir()
    out: dict[str, Path] = {}
    rng = np.random.default_rng(2)

    def folder(name: str) -> Path:
        p = d / name
        p.mkdir()
        out[name] = p
        return p

    folder("empty-folder")
    p = folder("empty-class")
    (p / "a").mkdir()
    (p / "b").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(p / "a" / f"{i}.png")
    p = folder("mixed-sizes")
    for c in ("a", "b"):
        (p / c).mkdir()
        for i, s in enumerate((8, 9, 12, 8)):
            Image.fromarray(rng.integers(0, 256, (s, s), dtype=np.uint8)).save(p / c / f"{i}.png")
    p = folder("non-images")
    for c in ("a", "b"):
        (p / c).mkdir()
        for i in range(3):
            (p / c / f"{i}.png").write_text("this is not a png")
    p = folder("one-class")
    (p / "a").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(p / "a" / f"{i}.png")
    p = folder("symlink-loop")
    (p / "a").mkdir()
    os.symlink(p / "a", p / "a" / "again")
    os.symlink(p / "loop", p / "loop")
    p = folder("truncated-png")
    for c in ("a", "b"):
        (p / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(p / c / f"{i}.png")
            data = (p / c / f"{i}.png").read_bytes()
            (p / c / f"{i}.png").write_bytes(data[: len(data) // 2])
    p = folder("mixed-modes")
    for c in ("a", "b"):
        (p / c).mkdir()
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(p / c / "g.png")
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(p / c / "rgb.png")
        Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)).save(p / c / "rgba.png")

    def npz(name: str, **arrays) -> None:
        np.savez(d / name, **arrays)
        out[name] = d / name

    u8 = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    lab = np.arange(40) % 4
    npz("nan-images.npz", images=np.full((40, 8, 8), np.nan, dtype=np.float32), labels=lab)
    npz("inf-images.npz", images=np.full((40, 8, 8), np.inf, dtype=np.float32), labels=lab)
    npz("out-of-range.npz", images=rng.normal(0, 50, (40, 8, 8)).astype(np.float32), labels=lab)
    npz("float-labels.npz", images=u8, labels=lab + 0.5)
    npz("negative-labels.npz", images=u8, labels=lab - 2)
    npz("huge-labels.npz", images=u8, labels=lab * 10**12)
    npz("length-mismatch.npz", images=u8, labels=lab[:30])
    npz("no-labels.npz", images=u8)
    npz("wrong-keys.npz", pixels=u8, classes_of=lab)  # x/y are accepted names, these are not
    npz("zero-images.npz", images=u8[:0], labels=lab[:0])
    npz("one-image.npz", images=u8[:1], labels=lab[:1])
    npz("one-dim-images.npz", images=u8.reshape(40, -1)[:, 0], labels=lab)
    npz("five-dim.npz", images=u8.reshape(40, 1, 1, 8, 8), labels=lab)
    npz("huge-channels.npz", images=rng.integers(0, 256, (40, 8, 8, 300), dtype=np.uint8), labels=lab)
    npz("object-array.npz", images=np.array([None] * 40, dtype=object), labels=lab)
    npz("string-labels.npz", images=u8, labels=np.array(["a", "b"] * 20))
    npz("bool-images.npz", images=u8 > 128, labels=lab)
    npz("2d-labels.npz", images=u8, labels=np.stack([lab, lab], 1))
    for name, data in (("truncated.npz", (d / "nan-images.npz").read_bytes()[:100]), ("garbage.npz", b"\x00" * 300),
                       ("text.npz", b"images,labels\n1,2\n")):
        (d / name).write_bytes(data)
        out[name] = d / name
    (d / "renamed-json.npy").write_text('{"images": []}')
    out["renamed-json.npy"] = d / "renamed-json.npy"
    out["missing-path"] = d / "no-such-thing"
    return out


def bad_constructed(root: Path, f: dict[str, Path]) -> dict[str, Path]:
    """Bad values for ``--constructed`` / ``--d-rand``: damaged copies of a finished D_rand."""
    import torch
    from safetensors.torch import load_file, save_file

    d = root / "bad-constructed"
    d.mkdir()
    out: dict[str, Path] = {}

    def copy(name: str) -> Path:
        p = d / name
        shutil.copytree(f["d_rand"], p)
        out[name] = p
        return p

    p = copy("no-manifest")
    (p / "manifest.json").unlink()
    p = copy("manifest-garbage")
    (p / "manifest.json").write_text("{{{{")
    p = copy("manifest-list")
    (p / "manifest.json").write_text("[1, 2]")
    p = copy("manifest-escape")
    m = json.loads((p / "manifest.json").read_text())
    m["shards"][0]["file"] = "../../etc/passwd"
    (p / "manifest.json").write_text(json.dumps(m))
    p = copy("shard-truncated")
    s = p / "shard-00000.safetensors"
    s.write_bytes(s.read_bytes()[:200])
    p = copy("shard-missing")
    (p / "shard-00001.safetensors").unlink()
    p = copy("shard-swapped")
    a, b = p / "shard-00000.safetensors", p / "shard-00001.safetensors"
    ta, tb = a.read_bytes(), b.read_bytes()
    a.write_bytes(tb)
    b.write_bytes(ta)
    for name, change in (("images-out-of-range", lambda t: {**t, "images": t["images"] * 5 - 2}),
                         ("images-nan", lambda t: {**t, "images": t["images"] * float("nan")}),
                         ("labels-float", lambda t: {**t, "labels": t["labels"].float() + 0.5}),
                         ("labels-huge", lambda t: {**t, "labels": t["labels"] + 1000}),
                         ("no-labels", lambda t: {k: v for k, v in t.items() if k != "labels"})):
        p = copy(name)
        from advfeatures.storage import file_sha256

        m = json.loads((p / "manifest.json").read_text())
        for i, shard in enumerate(m["shards"]):
            sp = p / shard["file"]
            save_file({k: v.contiguous() for k, v in change(load_file(str(sp))).items()}, str(sp))
            shard["sha256"] = file_sha256(sp)  # the manifest re-signed: the contents themselves are bad
        (p / "manifest.json").write_text(json.dumps(m))
    p = d / "empty-folder"
    p.mkdir()
    out["empty-folder"] = p
    (d / "a-file").write_text("x")
    out["a-file"] = d / "a-file"
    out["missing"] = d / "missing"
    del torch
    return out


def bad_configs(root: Path) -> dict[str, Path]:
    d = root / "bad-configs"
    d.mkdir()
    texts = {
        "empty.toml": "", "invalid.toml": "epochs = = 3\n", "invalid.json": '{"epochs": ', "list.json": "[1, 2, 3]",
        "string.json": '"epochs"', "nan.json": '{"epochs": NaN}', "inf.toml": "lr = inf\n", "nan.toml": "lr = nan\n",
        "neg.toml": "epochs = -3\n", "zero-batch.toml": "batch_size = 0\n", "huge.toml": "epochs = 100000000000000000000\n",
        "float-epochs.toml": "epochs = 2.5\n", "string-lr.toml": 'lr = "fast"\n', "unknown-key.toml": "colour = 3\n",
        "nested-unknown.toml": "[adversary]\nflavour = 1\n", "deep.json": "[" * 100000 + "]" * 100000,
        "deep.toml": "a = " + "[" * 5000 + "]" * 5000 + "\n", "bool-lr.toml": "lr = true\n",
        "milestones.toml": "milestones = [2.0]\n", "optimizer.toml": 'optimizer = "rmsprop"\n',
        "table-for-number.toml": "[lr]\nx = 1\n", "wd-inf.toml": "weight_decay = inf\n", "momentum.toml": "momentum = 7\n",
        "other.yaml": "epochs: 3\n", "null.json": "null",
    }
    out = {}
    for name, text in texts.items():
        (d / name).write_text(text)
        out[name] = d / name
    (d / "latin1.toml").write_bytes("epochs = 1 # caf\xe9\n".encode("latin-1"))
    out["latin1.toml"] = d / "latin1.toml"
    (d / "binary.json").write_bytes(bytes(range(256)))
    out["binary.json"] = d / "binary.json"
    (d / "a-folder.toml").mkdir()
    out["a-folder.toml"] = d / "a-folder.toml"
    out["missing.toml"] = d / "missing.toml"
    return out


# ---- the commands, each with tiny valid arguments -----------------------------------------------
TINY_REPRODUCE = ["--set", "standard.epochs=1", "--set", "adversarial.epochs=1", "--set", "train_d_r.epochs=1",
                  "--set", "train_d_nr.epochs=1", "--set", "train_d_rand.epochs=1", "--set", "train_d_det.epochs=1",
                  "--set", "construction.matching.steps=3", "--set", "construction.relabel.steps=2",
                  "--set", "evaluation.worst_case.steps=3", "--set", "evaluation.worst_case.square_queries=20",
                  "--set", "evaluation.sanity.enabled=false", "--set", "extras.transfer=false",
                  "--set", "extras.distillation=false", "--set", "extras.inversion=false", "--set", "extras.leakage=false",
                  "--set", "evaluation.test_limit=40", "--set", "train_limit=200", "--device", "cpu", "--no-estimate"]

# commands whose valid run takes long: only inputs that must fail at the door are tried on them
SLOW = {"reproduce", "defences", "planted"}


def base_args(command: str, f: dict[str, Path], out: Path) -> list[str]:
    m, dr = str(f["model"]), str(f["d_rand"])
    return {
        "reproduce": ["--out", str(out), *TINY_REPRODUCE],
        "train": ["--arch", "mlp:hidden=8", "--dataset", "digits", "--n", "32", "--epochs", "1", "--out", str(out / "m.safetensors")],
        "attack": ["--model", m, "--n", "8", "--attack", "pgd", "--steps", "2", "--out", str(out / "a.json")],
        "evaluate": ["--model", m, "--n", "8", "--eps", "0.5", "--steps", "2", "--queries", "10", "--out", str(out / "e.json")],
        "construct": ["--kind", "d_rand", "--model", m, "--n", "8", "--shard-size", "4", "--steps", "1", "--out", str(out)],
        "export": ["--constructed", dr, "--format", "npz", "--out", str(out / "x.npz")],
        "invert": ["--model", m, "--n", "2", "--steps", "2", "--out", str(out)],
        "visualize": ["--model", m, "--num", "2", "--steps", "2", "--out", str(out)],
        "generate": ["--model", m, "--per-class", "1", "--steps", "2", "--out", str(out)],
        "saliency": ["--model", m, "--n", "2", "--out", str(out)],
        "transfer": ["--model", m, "--n-train", "20", "--n-test", "10", "--epochs", "1", "--out", str(out)],
        "planted": ["--quick", "--out", str(out)],
        "leakage": ["--constructed", dr, "--eps", "0.5", "--out", str(out / "l.json")],
        "distill": ["--arch", "mlp:hidden=8", "--teacher", m, "--epochs", "1", "--teacher-epochs", "1", "--out", str(out)],
        "transferability": ["--source", m, "--d-rand", dr, "--arch", "mlp:hidden=8", "--epochs", "1", "--steps", "2",
                            "--n-attack", "8", "--out", str(out)],
        "certify": ["--method", "ibp", "--model", m, "--n", "8", "--eps", "0.01", "--out", str(out / "c.json")],
        "physical": ["--model", m, "--n", "8", "--eps", "0.1", "--eot-samples", "2", "--out", str(out / "p.json")],
        "defences": ["--out", str(out)],
        "theory": ["--quick", "--out", str(out)],
    }[command]


def with_option(args: list[str], opt: str, value: str | None) -> list[str]:
    """``args`` with ``opt`` set to ``value`` (replaced where present; None removes it)."""
    args = list(args)
    if opt in args:
        i = args.index(opt)
        del args[i:i + 2]
    return args + ([opt, value] if value is not None else [])


BAD_FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e308", "1e400", "abc", "", "-0.0", "1,5", "0x10"]
BAD_INTS = ["nan", "inf", "-1", "0", "1.5", "1e3", "99999999999999999999999", "abc", "", "-9223372036854775809"]
# a value that the option may well accept: exit 0 is then no wrong result
MAYBE_VALID = {"0", "-0.0", "1e3", "0x10", "1e308", "99999999999999999999999"}


def numeric_cases(f, tmp: Path) -> list[Case]:
    import click

    from advfeatures.cli import COMMANDS, main

    ctx = click.Context(main)
    cases = []
    for command in COMMANDS:
        cmd = main.get_command(ctx, command)
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag:
                continue
            kind = type(p.type).__name__
            values = BAD_FLOATS if kind in ("Finite", "FloatParamType", "FloatRange") else BAD_INTS if kind in (
                "Whole", "IntParamType", "IntRange") else None
            if values is None:
                continue
            for v in values:
                if command in SLOW and v in MAYBE_VALID:
                    continue
                out = tmp / "out" / f"{command}-{p.name}-{len(cases)}"
                base = base_args(command, f, out)
                cases.append(Case("numbers", command, [command, *with_option(base, p.opts[0], v)], bad=v not in MAYBE_VALID,
                                  out=out, fix=[command, *base], name=f"{p.opts[0]}={v!r}"))
    # the global --threads
    for v in ["0", "-1", "nan", "abc", "99999999999999"]:
        out = tmp / "out" / f"threads-{v}"
        cases.append(Case("numbers", "train", ["--threads", v, "train", *base_args("train", f, out)], bad=v != "99999999999999",
                          out=out, name=f"--threads={v}"))
    return cases


SET_VALUES = ["nan", "inf", "-inf", "-1", "0", "1e400", '"abc"', "[]", "{}", "null", "true", "[1,", "1e308", '"nan"']
TRAIN_KEYS = ["epochs", "batch_size", "lr", "momentum", "weight_decay", "gamma", "crop_padding", "milestones", "seed",
              "optimizer", "objective", "adversary.eps", "adversary.steps", "adversary.norm", "adversary.step_size",
              "defence", "no_such_key", "adversary.no_such"]
REPRODUCE_KEYS = ["standard.lr", "standard.epochs", "adversarial.adversary.eps", "train_limit", "evaluation.test_limit",
                  "evaluation.batch_size", "construction.matching.steps", "construction.relabel.eps", "construction.shard_size",
                  "evaluation.attacks", "evaluation.margin_se", "model.arch", "seed", "threads", "no_such.key"]
DEFENCE_KEYS = ["epochs", "n_train", "eps", "no_such_key", "lr"]


def set_cases(f, tmp: Path) -> list[Case]:
    cases = []
    for command, keys in (("train", TRAIN_KEYS), ("reproduce", REPRODUCE_KEYS), ("defences", DEFENCE_KEYS)):
        for key in keys:
            for v in SET_VALUES:
                if command != "train" and v in ("0", "1e308", "true", "null") and "no_such" not in key:
                    continue  # may be valid and slow
                out = tmp / "out" / f"set-{command}-{len(cases)}"
                base = base_args(command, f, out)
                plausible = (v in ("0", "1e308", "true", "null", "[]") and key in ("crop_padding", "seed", "milestones", "momentum",
                                                                                   "weight_decay", "adversary.step_size", "threads")
                             or (key, v) == ("defence", "{}"))  # {}: the defaults
                cases.append(Case("set", command, [command, *base, "--set", f"{key}={v}"], bad=not plausible, out=out,
                                  fix=[command, *base], name=f"--set {key}={v}"))
        for text in ["noequals", "=1", "epochs=", "a..b=1", ".=2", "epochs==1", "epochs.x=1", "\x00=1"]:
            out = tmp / "out" / f"set-{command}-{len(cases)}"
            base = base_args(command, f, out)
            cases.append(Case("set", command, [command, *base, "--set", text], out=out, fix=[command, *base],
                              name=f"--set {text!r}"))
    return cases


def config_cases(f, tmp: Path, configs: dict[str, Path]) -> list[Case]:
    cases = []
    for command in ("train", "reproduce"):
        for name, path in configs.items():
            out = tmp / "out" / f"cfg-{command}-{len(cases)}"
            base = base_args(command, f, out)
            bad = name not in ("empty.toml",)
            if command == "reproduce" and not bad:
                continue
            cases.append(Case("config", command, [command, *base, "--config", str(path)], bad=bad, out=out,
                              fix=[command, *base], name=name))
    return cases


DATA_COMMANDS = ["train", "attack", "evaluate", "construct", "export", "invert", "visualize", "saliency", "certify",
                 "physical", "leakage", "generate", "transfer", "distill", "transferability", "reproduce"]


def data_cases(f, tmp: Path, data: dict[str, Path]) -> list[Case]:
    cases = []
    for command in DATA_COMMANDS:
        for name, path in data.items():
            out = tmp / "out" / f"data-{command}-{len(cases)}"
            base = base_args(command, f, out)
            if command == "export":
                base = with_option(base, "--constructed", None)
            if command == "leakage":
                base = with_option(base, "--constructed", None) + ["--constructed", str(f["d_rand"])]
            args = [command, *base, "--data", str(path)]
            # one-class / mixed-modes folders may be usable; everything else is bad
            bad = name not in ("mixed-modes", "one-image.npz", "one-class", "huge-labels.npz", "negative-labels.npz",
                               "mixed-sizes", "bool-images.npz", "five-dim.npz")
            cases.append(Case("data", command, args, bad=bad, out=out, name=name))
    return cases


MODEL_OPTIONS = {"attack": "--model", "evaluate": "--model", "construct": "--model", "invert": "--model",
                 "visualize": "--model", "generate": "--model", "saliency": "--model", "transfer": "--model",
                 "certify": "--model", "physical": "--model", "distill": "--teacher", "transferability": "--source",
                 "train": "--model", "reproduce": "--robust-model"}


def model_cases(f, tmp: Path, models: dict[str, tuple[Path, bool]], marker: Path) -> list[Case]:
    cases = []
    for command, opt in MODEL_OPTIONS.items():
        for name, (path, bad) in models.items():
            out = tmp / "out" / f"model-{command}-{len(cases)}"
            base = base_args(command, f, out)
            if command == "train":
                base = with_option(base, "--arch", None)
            cases.append(Case("model", command, [command, *with_option(base, opt, str(path))], bad=bad, out=out,
                              fix=[command, *base] if command != "train" else None, name=name))
    # architecture strings
    for arch in ["mlp:hidden=0", "mlp:hidden=-4", "cnn:width=0", "cnn:width=nan", "nosuch", "os:system", "mlp:evil=1",
                 "mlp:hidden=[1e12]", "builtins:eval", "subprocess:Popen", "cnn:width=1e400", "", ":", "mlp:hidden=abc",
                 "resnet18:num_classes=-1", "mlp:hidden=[8]:x"]:
        for command in ("train", "distill", "transferability"):
            out = tmp / "out" / f"arch-{command}-{len(cases)}"
            base = base_args(command, f, out)
            opt = "--arch"
            cases.append(Case("model", command, [command, *with_option(base, opt, arch)], out=out, name=f"--arch {arch!r}"))
    for kw in ['{"hidden": 0}', '{"evil": 1}', "[1]", "{", '"x"', '{"hidden": NaN}', '{"hidden": [1e400]}', "null"]:
        out = tmp / "out" / f"kwargs-{len(cases)}"
        base = base_args("train", f, out)
        cases.append(Case("model", "train", ["train", *base, "--arch-kwargs", kw], out=out, name=f"--arch-kwargs {kw}"))
    return cases


CONSTRUCTED_OPTIONS = {"leakage": "--constructed", "export": "--constructed", "transferability": "--d-rand"}


def constructed_cases(f, tmp: Path, constructed: dict[str, Path]) -> list[Case]:
    cases = []
    for command, opt in CONSTRUCTED_OPTIONS.items():
        for name, path in constructed.items():
            out = tmp / "out" / f"constructed-{command}-{len(cases)}"
            base = base_args(command, f, out)
            cases.append(Case("constructed", command, [command, *with_option(base, opt, str(path))], out=out,
                              fix=[command, *base], name=name))
    # a train on a damaged construction, through --data
    for name, path in constructed.items():
        out = tmp / "out" / f"constructed-train-{len(cases)}"
        cases.append(Case("constructed", "train", ["train", *base_args("train", f, out), "--data", str(path)], out=out,
                          name=name))
    return cases


def output_cases(f, tmp: Path) -> list[Case]:
    from advfeatures.cli import COMMANDS

    cases = []
    for command in COMMANDS:
        if command in SLOW and command != "reproduce":
            continue
        # a file where the command's folder (or file's parent folder) should be
        blocker = tmp / "out" / f"blocker-{command}"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("I am a file")
        base = base_args(command, f, blocker)
        cases.append(Case("output", command, [command, *base], out=None, name="a file where a folder is expected"))
        deeper = blocker / "sub"
        cases.append(Case("output", command, [command, *base_args(command, f, deeper)], out=None,
                          name="a file above the output folder"))
        # the output option itself given an existing folder where a file is expected
        folder_as_file = tmp / "out" / f"dir-{command}"
        folder_as_file.mkdir(parents=True, exist_ok=True)
        args = base_args(command, f, folder_as_file)
        if "--out" in args:
            i = args.index("--out")
            args[i + 1] = str(folder_as_file)
            cases.append(Case("output", command, [command, *args], bad=False, out=None, name="--out an existing folder"))
            cases.append(Case("output", command, [command, *with_option(args, "--out", "")], out=None, name="--out ''"))
            cases.append(Case("output", command, [command, *with_option(args, "--out", "\x00bad")], out=None,
                              name="--out with a NUL"))
    # a folder holding another run
    holder = tmp / "out" / "holds-d_rand"
    shutil.copytree(f["d_rand"], holder)
    base = base_args("construct", f, holder)
    cases.append(Case("output", "construct", ["construct", *with_option(base, "--seed", "7")], out=None,
                      name="construct into a folder holding another construction"))
    holder2 = tmp / "out" / "holds-partial"
    shutil.copytree(f["d_rand"], holder2)
    (holder2 / "manifest.json").unlink()
    cases.append(Case("output", "construct", ["construct", *base_args("construct", f, holder2)], out=None,
                      name="construct into a folder holding part of another construction"))
    return cases


def value_cases(f, tmp: Path) -> list[Case]:
    """Bad values for options that take lists, names or choices."""
    cases = []
    texts = {
        ("evaluate", "--attacks"): ["", "nosuch", "apgd,,", ",", "apgd,nosuch", " ", " , ", ",apgd", "apgd-ce"],
        ("certify", "--radii"): ["", "a,b", "-1", "nan", "inf", "1e400", ",", " , ", "0,,0.5", "0.5,"],
        ("visualize", "--coordinates"): ["", "-1", "abc", "99999", "nan", "1.5", ",", " , ", "0,,5", "1e9"],
        ("saliency", "--methods"): ["", "nosuch", ",", " , ", "gradient,,", "gradient,nosuch"],
        ("transfer", "--modes"): ["", "nosuch", ",", " , ", "fixed-feature,,"],
        ("reproduce", "--seeds"): ["", "a", "1-", "5-1", "0,0", "-1", "0-99999999", "nan"],
        ("reproduce", "--preset"): ["", "nosuch", "../x"],
        ("train", "--preset"): ["", "nosuch"],
        ("reproduce", "--dataset"): ["", "nosuch"],
        ("train", "--layer"): ["nosuch"],
        ("construct", "--layer"): ["nosuch", ""],
        ("invert", "--layer"): ["nosuch"],
    }
    # empty items beside a valid one are dropped by design (cli.options.parse_list: "a, b," is a, b), so exit 0 is right
    lenient = {"apgd,,", ",apgd", "0,,0.5", "0.5,", "0,,5", "gradient,,", "fixed-feature,,"}
    for (command, opt), values in texts.items():
        for v in values:
            out = tmp / "out" / f"value-{command}-{len(cases)}"
            base = base_args(command, f, out)
            if command == "evaluate" and opt == "--attacks":
                base = with_option(base, "--version", "custom")  # --attacks alone is refused before its list is read
            if command == "construct" and opt == "--layer":
                base = with_option(base, "--kind", "d_r")
            if command == "train" and opt == "--layer":
                base = with_option(base, "--arch", None) + ["--model", str(f["model"])]
            cases.append(Case("values", command, [command, *with_option(base, opt, v)], bad=v not in lenient, out=out,
                              name=f"{opt}={v!r}"))
    # data roots that are not datasets
    for command in ("train", "attack", "reproduce"):
        for root in [str(tmp), "/dev/null", "/nonexistent"]:
            out = tmp / "out" / f"root-{command}-{len(cases)}"
            base = base_args(command, f, out)
            cases.append(Case("values", command, [command, *base, "--dataset", "mnist", "--data-root", root], out=out,
                              name=f"--dataset mnist --data-root {root}"))
    return cases


# ---- running and judging -------------------------------------------------------------------------
def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"non-finite {name}")

    return json.loads(text, parse_constant=refuse)


def _meaningless(obj, where="") -> str:
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{where} = {obj}"
    if isinstance(obj, (int, float)) and not isinstance(obj, bool) and where.rsplit(".", 1)[-1].endswith("accuracy") and "_z" not in where and not 0 <= obj <= 1:
        return f"{where} = {obj} (an accuracy outside [0, 1])"
    if isinstance(obj, dict):
        for k, v in obj.items():
            if found := _meaningless(v, f"{where}.{k}"):
                return found
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            if found := _meaningless(v, f"{where}[{i}]"):
                return found
    return ""


def _invoke(args: list[str]):
    from click.testing import CliRunner

    from advfeatures.cli import main

    return CliRunner().invoke(main, ["--quiet", "--threads", "1", *args] if args[0] != "--threads" else ["--quiet", *args],
                              catch_exceptions=True)


class CaseTimeout(BaseException):
    """A case that ran past its time (a bad input should fail fast, a tiny valid one finish fast)."""


def _alarm(signum, frame):
    raise CaseTimeout()


def _invoke_within(args: list[str], limit: float):
    """``_invoke(args)``, or None when it runs past ``limit`` seconds."""
    import signal

    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        res = _invoke(args)
    except CaseTimeout:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return None if isinstance(res.exception, CaseTimeout) else res


def judge(case: Case, marker: Path, limit: float = 45.0) -> Outcome:
    start = time.perf_counter()
    res = _invoke_within(case.args, limit)
    seconds = time.perf_counter() - start
    if res is None:  # a bad input must fail fast; a plausible one may just be a slow valid run
        return Outcome(case, "hang" if case.bad else "unjudged", f"still running after {limit:.0f} s", limit)
    exc = res.exception
    if marker.exists():
        marker.unlink()
        return Outcome(case, "code", "a crafted pickle's marker file was written", seconds)
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip().splitlines()
        return Outcome(case, "traceback", f"{type(exc).__name__}: {str(exc)[:160]} | {tb[-3].strip() if len(tb) > 2 else ''}",
                       seconds)
    if "Traceback" in res.output or "Aborted!" in res.output or res.exit_code not in (0, 2):
        return Outcome(case, "traceback", f"exit {res.exit_code}: {res.output.strip()[-200:]}", seconds)
    if res.exit_code == 2:
        lines = [line for line in res.output.splitlines() if line.strip()]
        errors = [line for line in lines if line.lower().startswith("error: ")]
        if not (len(errors) == 1 and lines[-1] == errors[0]):
            return Outcome(case, "messy", repr(res.output[-300:]), seconds)
        left = case.out is not None and case.out.exists() and any(p.is_file() for p in (
            [case.out] if case.out.is_file() else case.out.rglob("*")))
        if case.fix is not None and left and case.command not in ("defences", "planted"):  # those have no tiny run
            again = _invoke_within(case.fix, limit)
            if again is None:
                return Outcome(case, "hang", f"the corrected run still running after {limit:.0f} s", seconds)
            if again.exit_code != 0:
                return Outcome(case, "poisoned", f"the corrected run: {again.output.strip()[-200:]}", seconds)
        return Outcome(case, "ok", errors[0][:200], seconds)
    # exit 0
    if case.out is not None and case.out.exists():
        files = [case.out] if case.out.is_file() else list(case.out.rglob("*.json"))
        for p in files:
            if p.suffix != ".json" or not p.is_file():
                continue
            try:
                found = _meaningless(_strict(p.read_text(encoding="utf-8")))
            except ValueError as e:
                found = str(e)
            if found:
                return Outcome(case, "wrong", f"{p.name}: {found}", seconds)
    if case.bad:
        return Outcome(case, "wrong", f"exit 0 on a bad input: {res.output.strip()[-200:]}", seconds)
    return Outcome(case, "ok", "exit 0, valid output", seconds)


def build_cases(tmp: Path) -> tuple[list[Case], Path]:
    marker = tmp / MARKER_NAME
    f = make_fixtures(tmp)
    cases = [*numeric_cases(f, tmp), *set_cases(f, tmp), *config_cases(f, tmp, bad_configs(tmp)),
             *data_cases(f, tmp, bad_data(tmp)), *model_cases(f, tmp, bad_model_files(tmp, f, marker), marker),
             *constructed_cases(f, tmp, bad_constructed(tmp, f)), *output_cases(f, tmp), *value_cases(f, tmp)]
    # distinct inputs only
    seen, unique = set(), []
    for c in cases:
        key = (c.command, tuple(a if not a.startswith(str(tmp / "out")) else "OUT" for a in c.args))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique, marker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="run one family (numbers, set, config, data, model, constructed, output, values)")
    parser.add_argument("--command", default=None, help="run one command's cases")
    parser.add_argument("--list", action="store_true", help="list the cases, run none")
    parser.add_argument("--json", default=None, help="write every outcome here")
    opts = parser.parse_args()
    import logging

    import torch

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    began = time.perf_counter()
    here = Path.cwd()
    (tmp / "cwd").mkdir()
    os.chdir(tmp / "cwd")  # what a valid run writes by default lands here, not in the checkout
    try:
        cases, marker = build_cases(tmp)
        cases = [c for c in cases if (opts.only is None or c.family == opts.only) and (opts.command is None or c.command == opts.command)]
        print(f"{len(cases)} distinct bad inputs over {len({c.command for c in cases})} commands", flush=True)
        if opts.list:
            for c in cases:
                print(f"{c.family:12s} {c.command:16s} {c.name}")
            return 0
        outcomes = []
        for i, case in enumerate(cases):
            o = judge(case, marker)
            outcomes.append(o)
            if o.verdict in BAD_CLASSES:
                print(f"  [{o.verdict}] {case.family}/{case.command} {case.name}: {o.detail}", flush=True)
            if (i + 1) % 100 == 0:
                print(f"... {i + 1}/{len(cases)} ({time.perf_counter() - began:.0f} s)", flush=True)
    finally:
        os.chdir(here)
        shutil.rmtree(tmp, ignore_errors=True)
    counts = Counter(o.verdict for o in outcomes)
    by_family: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        by_family[o.case.family][o.verdict] += 1
    print(f"\n{len(outcomes)} cases in {time.perf_counter() - began:.0f} s")
    print("verdict counts: " + ", ".join(f"{k}={counts.get(k, 0)}" for k in (*BAD_CLASSES, "ok", "unjudged")))
    for fam, c in sorted(by_family.items()):
        print(f"  {fam:12s} " + ", ".join(f"{k}={c.get(k, 0)}" for k in (*BAD_CLASSES, "ok", "unjudged")))
    slow = sorted(outcomes, key=lambda o: -o.seconds)[:5]
    print("slowest: " + "; ".join(f"{o.case.command} {o.case.name} {o.seconds:.1f}s" for o in slow))
    if opts.json:
        Path(opts.json).write_text(json.dumps([{"family": o.case.family, "command": o.case.command, "name": o.case.name,
                                                "verdict": o.verdict, "detail": o.detail} for o in outcomes], indent=1))
    return 1 if any(counts.get(k) for k in BAD_CLASSES) else 0


if __name__ == "__main__":
    sys.exit(main())
