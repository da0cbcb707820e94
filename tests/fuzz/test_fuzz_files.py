"""Fuzzing every file format advfeatures reads: valid tiny files, then truncated, bit-flipped,
replaced by garbage, or crafted (pickles that would run code, headers that lie, nesting that
overflows the stack), each fed to the command that reads it.

The invariant is :func:`conftest.check_promise` (exit 0 with finite JSON, or exit 2 with one line);
where the input is certainly wrong (a tampered shard, a model for other images, a crafted pickle)
the command must refuse it (exit 2), and no crafted pickle may run its code. Each example works in
its own folder (``fresh_dir``), removed when the example ends.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import FUZZ, check_promise

class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a file that must never appear. The marker is a
    name inside the example's own folder, so no run shares it with another and none leaves it behind."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_pickle(marker: Path, wrapped_in: str = "plain") -> bytes:
    payload = {"model": _RunsCode(marker)} if wrapped_in == "dict" else _RunsCode(marker)
    return pickle.dumps(payload, protocol=2)


# --- a way to damage bytes -------------------------------------------------------------------
damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("flip"), st.floats(0, 1)),
    st.tuples(st.just("garbage"), st.binary(max_size=64)),
    st.tuples(st.just("empty"), st.none()),
    st.tuples(st.just("zeros"), st.integers(1, 64)),
)


def damaged(data: bytes, how) -> bytes:
    kind, arg = how
    if kind == "truncate":
        return data[: int(arg * (len(data) - 1))]
    if kind == "flip":
        i = min(len(data) - 1, int(arg * len(data)))
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    if kind == "garbage":
        return arg
    if kind == "zeros":
        return bytes(arg)
    return b""


# --- models ------------------------------------------------------------------------------------
@FUZZ
@given(how=damage)
def test_damaged_model_file(files, how, fresh_dir):
    with fresh_dir() as out:
        bad = out / "model.safetensors"
        bad.write_bytes(damaged(files["model"].read_bytes(), how))
        check_promise(["attack", "--model", str(bad), "--attack", "fgsm", "--eps", "0.1", "--n", "4",
                       "--out", str(out / "a.json")], folder=out)


@FUZZ
@given(how=damage, suffix=st.sampled_from([".pt", ".pth"]))
def test_damaged_state_dict(files, how, suffix, fresh_dir):
    with fresh_dir() as out:
        bad = out / f"state{suffix}"
        bad.write_bytes(damaged(files["state"].read_bytes(), how))
        check_promise(["attack", "--model", str(bad), "--arch", "mlp:hidden=8", "--attack", "fgsm", "--eps", "0.1", "--n", "4",
                       "--out", str(out / "a.json")], folder=out)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors", ".ckpt"])
@pytest.mark.parametrize("wrapped", ["plain", "dict"])
def test_crafted_pickle_model_never_runs(files, suffix, wrapped, tmp_path):
    import torch

    marker = tmp_path / "pickle-ran"
    for style in ("pickle", "torch"):
        bad = tmp_path / f"evil-{style}{suffix}"
        if style == "pickle":
            bad.write_bytes(crafted_pickle(marker, wrapped))
        else:
            torch.save({"model": _RunsCode(marker)} if wrapped == "dict" else _RunsCode(marker), bad)
        res = check_promise(["attack", "--model", str(bad), "--arch", "mlp:hidden=8", "--attack", "fgsm", "--eps", "0.1",
                             "--n", "4"], folder=tmp_path)
        assert res.exit_code == 2
        assert not marker.exists(), "a crafted pickle ran code"


def test_model_for_other_images_is_refused(files, idx_folder, tmp_path):
    out = tmp_path
    res = check_promise(["attack", "--model", str(files["model28"]), "--eps", "0.1", "--n", "4", "--out", str(out / "a.json")])
    assert res.exit_code == 2 and "(1, 28, 28)" in res.output and not (out / "a.json").exists()
    res = check_promise(["attack", "--model", str(files["model"]), "--dataset", "mnist", "--data-root", str(idx_folder),
                         "--eps", "0.1", "--n", "4"])
    assert res.exit_code == 2 and "(1, 8, 8)" in res.output
    for cmd in (["construct", "--kind", "d_rand", "--model", str(files["model28"]), "--n", "4", "--out", str(out / "c")],
                ["distill", "--teacher", str(files["model28"]), "--arch", "mlp:hidden=8", "--epochs", "1", "--out", str(out / "d")],
                ["transferability", "--source", str(files["model28"]), "--d-rand", str(files["d_rand"]), "--arch", "mlp:hidden=8",
                 "--epochs", "1", "--out", str(out / "t")],
                ["invert", "--model", str(files["model28"]), "--n", "2", "--steps", "1", "--out", str(out / "i")]):
        res = check_promise(cmd)
        assert res.exit_code == 2, (cmd, res.output)
    assert not (out / "c" / "construct.json").exists()


def test_reproduce_robust_model_for_other_images_is_refused(files, tmp_path):
    res = check_promise(["reproduce", "--robust-model", str(files["model28"]), "--out", str(tmp_path / "run"),
                         "--set", "standard.epochs=1"])
    assert res.exit_code == 2 and "28" in res.output


# --- idx (MNIST format) -----------------------------------------------------------------------
def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(">u1").tobytes()


@pytest.fixture(scope="session")
def idx_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 6)):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28))))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(np.arange(n) % 10))
    return folder


IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@FUZZ
@given(name=st.sampled_from(IDX_FILES), how=damage, gz=st.booleans())
def test_damaged_idx(idx_folder, name, how, gz, fresh_dir):
    with fresh_dir() as folder:
        root = folder / "idx"
        shutil.copytree(idx_folder, root)
        data = damaged((root / name).read_bytes(), how)
        if gz:
            (root / name).unlink()
            packed = gzip.compress((root / name).with_suffix("").name.encode() + data) if how[0] == "flip" else gzip.compress(data)
            (root / f"{name}.gz").write_bytes(damaged(packed, how) if how[0] == "truncate" else packed)
        else:
            (root / name).write_bytes(data)
        check_promise(["export", "--dataset", "mnist", "--data-root", str(root), "--format", "npz", "--out",
                       str(folder / "x.npz")], folder=folder)


def test_not_gzip_and_short_headers_are_one_line(idx_folder, tmp_path):
    root = tmp_path / "idx"
    shutil.copytree(idx_folder, root)
    (root / "train-images-idx3-ubyte").unlink()
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip")
    res = check_promise(["export", "--dataset", "mnist", "--data-root", str(root), "--format", "npz", "--out", str(root / "x.npz")])
    assert res.exit_code == 2 and "gzip" in res.output
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros((12, 28, 28))))[:-9])  # cut short
    assert check_promise(["export", "--dataset", "mnist", "--data-root", str(root), "--format", "npz",
                          "--out", str(root / "x.npz")]).exit_code == 2
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 3, 0, 0])))  # short header
    assert check_promise(["export", "--dataset", "mnist", "--data-root", str(root), "--format", "npz",
                          "--out", str(root / "x.npz")]).exit_code == 2


# --- CIFAR-10 batches -------------------------------------------------------------------------
def _cifar_folder(folder: Path, kind: str) -> Path:
    root = folder / "cifar"
    rng = np.random.default_rng(0)
    if kind == "bin":
        base = root / "cifar-10-batches-bin"
        base.mkdir(parents=True)
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            rows = np.concatenate([np.array([[1], [2]], np.uint8), rng.integers(0, 256, (2, 3072), dtype=np.uint8)], 1)
            (base / name).write_bytes(rows.tobytes())
    else:
        base = root / "cifar-10-batches-py"
        base.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [3, 4]}
            (base / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


CIFAR_CRAFTED = {
    "list": pickle.dumps([1, 2, 3], protocol=2),
    "wrong size": pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, protocol=2),
    "float data": pickle.dumps({b"data": np.zeros((2, 3072), np.float64), b"labels": [1, 2]}, protocol=2),
    "bad labels": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.5, 99]}, protocol=2),
    "few labels": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, protocol=2),
    "runs code": None,  # crafted_pickle(marker, "dict"), made in the example: it names that example's marker
}


@FUZZ
@given(kind=st.sampled_from(["bin", "py"]), name_index=st.integers(0, 5),
       how=st.one_of(damage, st.tuples(st.just("crafted"), st.sampled_from(sorted(CIFAR_CRAFTED)))))
def test_damaged_cifar_batch(kind, name_index, how, fresh_dir):
    with fresh_dir() as folder:
        marker = folder / "pickle-ran"
        root = _cifar_folder(folder, kind)
        base = next(root.iterdir())
        target = sorted(base.iterdir())[name_index]
        if how[0] == "crafted":
            target.write_bytes(CIFAR_CRAFTED[how[1]] or crafted_pickle(marker, "dict"))
        else:
            target.write_bytes(damaged(target.read_bytes(), how))
        res = check_promise(["export", "--dataset", "cifar10", "--data-root", str(root), "--format", "npz",
                             "--out", str(folder / "x.npz")], folder=folder)
        if how[0] == "crafted":
            assert res.exit_code == 2, res.output
        assert not marker.exists(), "a crafted pickle ran code"


# --- training checkpoints ---------------------------------------------------------------------
@FUZZ
@given(how=st.one_of(damage, st.tuples(st.just("crafted"), st.sampled_from(["plain", "dict"])),
                     st.tuples(st.just("foreign"), st.sampled_from(["list", "dict", "other model"]))))
def test_damaged_training_checkpoint(digits_split, how, fresh_dir):
    import torch

    from advfeatures.errors import AdvFeaturesError
    from advfeatures.models import build_model
    from advfeatures.train import TrainConfig, train_model

    train, _ = digits_split
    small = train.head(32)
    with fresh_dir() as folder:
        marker = folder / "pickle-ran"
        ckpt = folder / "run.ckpt"
        cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05)
        torch.manual_seed(0)
        train_model(build_model("mlp", small.image_shape, 10, hidden=[8]), small, TrainConfig(epochs=1, batch_size=16, lr=0.05),
                    checkpoint=ckpt)
        if how[0] == "crafted":
            ckpt.write_bytes(crafted_pickle(marker, how[1]))
        elif how[0] == "foreign":
            other = {"list": [1, 2], "dict": {"model": 3}, "other model": None}[how[1]]
            if other is None:
                state = torch.load(ckpt, weights_only=True)
                state["model"] = build_model("mlp", small.image_shape, 10, hidden=[5]).state_dict()
                other = state
            torch.save(other, ckpt)
        else:
            ckpt.write_bytes(damaged(ckpt.read_bytes(), how))
        try:
            train_model(build_model("mlp", small.image_shape, 10, hidden=[8]), small, cfg, checkpoint=ckpt)
        except AdvFeaturesError as exc:
            assert "\n" not in str(exc)
        else:  # only a flipped byte outside everything torch reads (and the weights' digest checks) may pass
            assert how[0] == "flip", f"a damaged checkpoint was accepted: {how}"
        assert not marker.exists(), "a crafted pickle ran code"


# --- constructions (manifest and shards) ------------------------------------------------------
def _json_mutation():
    values = st.sampled_from([None, -1, 0, 1e308, "x", [], {}, [{"file": "../../etc/passwd", "sha256": "0"}], True, 2**70])
    return st.tuples(st.sampled_from(["format", "count", "shards", "shards.0.file", "shards.0.sha256", "shards.1.count",
                                      "kind", "key", "summary"]), values)


def _set(obj, path: str, value):
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    last = keys[-1]
    if isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value


@FUZZ
@given(how=st.one_of(
    st.tuples(st.just("manifest bytes"), damage),
    st.tuples(st.just("manifest value"), _json_mutation()),
    st.tuples(st.just("manifest nesting"), st.integers(50, 5000)),
    st.tuples(st.just("shard bytes"), damage),
    st.tuples(st.just("swap shards"), st.none()),
    st.tuples(st.just("remove shard"), st.none()),
), command=st.sampled_from(["export", "leakage"]))
def test_damaged_construction(files, how, command, fresh_dir):
    with fresh_dir() as folder:
        c = folder / "d_rand"
        shutil.copytree(files["d_rand"], c)
        kind, arg = how
        manifest = c / "manifest.json"
        if kind == "manifest bytes":
            manifest.write_bytes(damaged(manifest.read_bytes(), arg))
        elif kind == "manifest value":
            m = json.loads(manifest.read_text())
            _set(m, *arg)
            manifest.write_text(json.dumps(m))
        elif kind == "manifest nesting":
            manifest.write_text("[" * arg + "]" * arg)
        elif kind == "shard bytes":
            p = c / "shard-00001.safetensors"
            p.write_bytes(damaged(p.read_bytes(), arg))
        elif kind == "swap shards":  # another shard's (valid) file in its place
            shutil.copy(c / "shard-00000.safetensors", c / "shard-00001.safetensors")
        else:
            (c / "shard-00001.safetensors").unlink()
        if command == "export":
            cmd = ["export", "--constructed", str(c), "--format", "npz", "--out", str(folder / "x.npz")]
        else:
            cmd = ["leakage", "--constructed", str(c), "--eps", "0.5", "--k", "2", "--out", str(folder / "l.json")]
        res = check_promise(cmd, folder=folder)
        if kind in ("swap shards", "remove shard", "manifest nesting") or (kind == "shard bytes" and arg[0] != "flip"):
            assert res.exit_code == 2, res.output


# --- configs ----------------------------------------------------------------------------------
CONFIG_TEXT = st.one_of(
    st.sampled_from(["", "{", "[]", "null", '{"epochs": NaN}', '{"lr": Infinity}', '{"epochs": 1e999}', '{"batch_size": -1}',
                     '{"epochs": 1.5}', '{"nope": 1}', '{"adversary": 3}', "epochs = nan", "lr = inf", "epochs = -1",
                     "crop_padding = -2", "[[[[", "epochs = 1\nepochs = 2", '{"lr": "fast"}', "weight_decay = nan"]),
    st.integers(100, 20000).map(lambda n: '{"a": ' * n + "1" + "}" * n),
    st.integers(100, 20000).map(lambda n: "a = " + "[" * n + "]" * n),
    st.text(max_size=40),
)


@FUZZ
@given(text=CONFIG_TEXT, suffix=st.sampled_from([".json", ".toml"]), raw=st.binary(max_size=16), use_raw=st.booleans())
def test_damaged_config_file(text, suffix, raw, use_raw, fresh_dir):
    with fresh_dir() as folder:
        cfg = folder / f"c{suffix}"
        cfg.write_bytes((b"\xff\xfe" + raw) if use_raw else text.encode("utf-8", "surrogatepass"))
        check_promise(["train", "--arch", "mlp:hidden=8", "--n", "32", "--epochs", "1", "--batch-size", "16", "--config", str(cfg),
                       "--out", str(folder / "m.safetensors")], folder=folder)


# --- your own data: npz / npy / image folders -------------------------------------------------
@FUZZ
@given(how=st.one_of(damage, st.sampled_from(["object", "nan", "float labels", "wrong count", "5d", "out of range", "empty"])),
       fmt=st.sampled_from(["npz", "npy"]))
def test_damaged_user_arrays(how, fmt, fresh_dir):
    with fresh_dir() as folder:
        rng = np.random.default_rng(0)
        x = rng.random((20, 1, 8, 8), dtype=np.float32)
        y = np.arange(20) % 4
        if how == "nan":
            x[0, 0, 0, 0] = np.nan
        elif how == "float labels":
            y = y + 0.5
        elif how == "wrong count":
            y = y[:5]
        elif how == "5d":
            x = x[None]
        elif how == "out of range":
            x = x * 7 - 3
        elif how == "empty":
            x, y = x[:0], y[:0]
        if fmt == "npz":
            path = folder / "d.npz"
            if how == "object":
                np.savez(path, images=np.array([object()] * 3, dtype=object), labels=y)
            else:
                np.savez(path, images=x, labels=y)
            if isinstance(how, tuple):
                path.write_bytes(damaged(path.read_bytes(), how))
        else:
            path = folder / "d"
            path.mkdir()
            if how == "object":
                np.save(path / "images.npy", np.array([object()] * 3, dtype=object), allow_pickle=True)
            else:
                np.save(path / "images.npy", x)
            np.save(path / "labels.npy", y)
            if isinstance(how, tuple):
                (path / "images.npy").write_bytes(damaged((path / "images.npy").read_bytes(), how))
        res = check_promise(["export", "--data", str(path), "--format", "npz", "--out", str(folder / "x.npz")], folder=folder)
        if how in ("object", "nan", "float labels", "wrong count", "out of range", "empty"):
            assert res.exit_code == 2, (how, res.output)


@FUZZ
@given(how=damage, which=st.integers(0, 5))
def test_damaged_image_folder(how, which, fresh_dir):
    from PIL import Image

    with fresh_dir() as folder:
        root = folder / "imgs"
        rng = np.random.default_rng(0)
        paths = []
        for c in ("cat", "dog"):
            (root / c).mkdir(parents=True)
            for i in range(3):
                p = root / c / f"{i}.png"
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(p)
                paths.append(p)
        paths[which].write_bytes(damaged(paths[which].read_bytes(), how))
        check_promise(["export", "--data", str(root), "--format", "npz", "--out", str(folder / "x.npz")], folder=folder)
