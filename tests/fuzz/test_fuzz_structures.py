"""Fuzzing the *structure* of valid-looking files, not their bytes: checkpoints with other dtypes,
renamed, missing or extra keys, wrapper dicts, nested containers, non-tensor values, shapes off by
one; our own model files whose metadata lies; arrays of other dtypes, byte orders, dimensions,
non-finite or out-of-range values, label counts and key sets.

Each example is read by the library's own reader (milliseconds: no command runs), and the oracle
is exact: the reader raises one line of our error family, or returns what the file holds (the
weights as float32, the images scaled to [0, 1], the labels); where the file is wrong beyond doubt
(an integer weight, a renamed key, a NaN pixel, one label too few) it must refuse.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from advfeatures.errors import AdvFeaturesError

from .conftest import FUZZ, check_promise

MORE = settings(FUZZ, max_examples=40)  # library calls of a few ms each


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, AdvFeaturesError), f"{type(exc).__name__}: {exc}"
    assert "\n" not in str(exc), str(exc)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


# --- checkpoints ---------------------------------------------------------------------------------
def _net():
    from advfeatures.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model("mlp", (1, 8, 8), 10, hidden=[8]).eval()


KEYS = ["features.1.weight", "features.1.bias", "head.weight", "head.bias"]
key_index = st.integers(0, len(KEYS) - 1)
CHANGE = st.one_of(
    st.tuples(st.just("dtype"), key_index, st.sampled_from(["float16", "bfloat16", "float64", "int8", "int64", "uint8", "bool",
                                                            "complex64"])),
    st.tuples(st.just("rename"), key_index, st.sampled_from(["x", "head.weigh", "HEAD.weight", "features.1.weight.", ""])),
    st.tuples(st.just("drop"), key_index, st.none()),
    st.tuples(st.just("extra"), st.sampled_from(["tensor", "int", "str", "none", "list"]), st.none()),
    st.tuples(st.just("value"), key_index, st.sampled_from(["int", "str", "list", "none", "ndarray", "dict", "0-d"])),
    st.tuples(st.just("shape"), key_index, st.sampled_from([-1, 1])),
    st.tuples(st.just("nonfinite"), key_index, st.sampled_from(["nan", "inf"])),
    st.tuples(st.just("layout"), key_index, st.sampled_from(["sparse", "meta", "strided view", "requires grad"])),
)
PREFIX = st.sampled_from(["", "", "module.", "_orig_mod.", "module._orig_mod.", "model.", "net."])
WRAP = st.lists(st.sampled_from(["model", "state_dict", "model_state_dict", "net", "ema", "state_dict_ema", "list", "tuple",
                                 "+epoch", "+optimizer", "+config", "+namespace"]), max_size=2)


def _changed(state: dict, truth: dict, change) -> bool:
    """Apply one change to ``state`` (keys as saved) and ``truth`` (what a load must give, by the
    model's key); True when the file is then wrong beyond doubt."""
    kind, i, arg = change
    key = KEYS[i] if isinstance(i, int) else None
    if kind == "extra":
        state["extra_entry"] = {"tensor": torch.zeros(2), "int": 3, "str": "x", "none": None, "list": [1, 2]}[i]
        return True
    if key not in state or not isinstance(state[key], torch.Tensor) or state[key].is_meta or state[key].layout != torch.strided:
        return False
    v = state[key]
    if kind == "dtype":  # wrong while not floating point (a second change may undo the first): see the test
        state[key] = truth[key] = v.to(getattr(torch, arg))
        return False
    if kind == "rename":
        state[arg] = state.pop(key)
        return True
    if kind == "drop":
        del state[key]
        return True
    if kind == "value":
        state[key] = {"int": 3, "str": "w", "list": [1.0, 2.0], "none": None, "ndarray": np.zeros(3), "dict": {"w": v},
                      "0-d": torch.tensor(1.0)}[arg]
        return True
    if kind == "shape":
        if v.ndim == 0:
            return False
        shape = list(v.shape)
        shape[0] += arg
        state[key] = truth[key] = torch.zeros(shape)
        return False  # wrong while the shape differs from the model's (a second change may undo the first): see the test
    if kind == "nonfinite":
        if not v.is_floating_point():
            return False
        w = v.clone()
        w.view(-1)[0] = float(arg)
        state[key] = w
        truth[key] = w.float()
        return False  # a load may give these weights: the commands refuse the model's non-finite outputs
    if arg in ("sparse", "meta"):
        state[key] = v.to_sparse() if arg == "sparse" else v.to("meta")
        return True
    if arg == "strided view" and v.ndim == 2:
        state[key] = v.t().contiguous().t()  # same values, not contiguous
    elif arg == "requires grad" and v.is_floating_point():
        state[key] = torch.nn.Parameter(v.clone())
    return False


def _wrapped(state: dict, wraps: list[str]):
    obj = state
    for w in wraps:
        if w == "list":
            obj = [obj]
        elif w == "tuple":
            obj = (obj, 1)
        elif w.startswith("+"):
            beside = {"+epoch": 7, "+optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
                      "+config": {"arch": "mlp"}, "+namespace": argparse.Namespace(lr=0.1)}[w]
            obj = {"model": obj, w[1:]: beside} if not isinstance(obj, dict) or not any(k in obj for k in KEYS) else \
                {"state_dict": obj, w[1:]: beside}
        else:
            obj = {w: obj}
    return obj


@MORE
@given(changes=st.lists(CHANGE, max_size=3), prefix=PREFIX, wraps=WRAP, safetensors=st.booleans())
def test_odd_checkpoints_load_exactly_or_are_refused(changes, prefix, wraps, safetensors, fresh_dir):
    from safetensors.torch import save_file

    from advfeatures.models import load_any_model

    net = _net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    truth = dict(state)
    wrong = False
    for change in changes:
        wrong |= _changed(state, truth, change)
    wrong |= any(truth[k].shape != v.shape or not truth[k].is_floating_point() for k, v in net.state_dict().items())
    state = {f"{prefix}{k}": v for k, v in state.items()}
    # nested containers, non-tensor beside the weights, a Namespace (a class: weights_only refuses it)
    wrong |= any(w in ("list", "tuple", "+namespace") for w in wraps)
    obj = _wrapped(state, wraps)
    with fresh_dir() as folder:
        flat = isinstance(obj, dict) and all(isinstance(v, torch.Tensor) and v.layout == torch.strided and not v.is_meta
                                             for v in obj.values())
        if safetensors and flat and obj:
            path = folder / "w.safetensors"
            save_file({k: v.detach().contiguous() for k, v in obj.items()}, str(path))
        else:
            path = folder / "w.pt"
            torch.save(obj, path)
        try:
            loaded = load_any_model(path, arch="mlp", arch_kwargs={"hidden": [8]}, in_shape=(1, 8, 8))
        except Exception as exc:  # noqa: BLE001 - the oracle: one line of ours
            _one_line(exc)
            return
    assert not wrong, f"a wrong checkpoint was loaded: {changes} {prefix!r} {wraps}"
    got = loaded.state_dict()
    for k, v in truth.items():
        assert got[k].dtype == torch.float32 and _same(got[k], v.float()), k


@FUZZ
@given(change=st.one_of(st.tuples(st.just("dtype"), key_index, st.sampled_from(["int8", "bool", "float16"])),
                        st.tuples(st.just("nonfinite"), key_index, st.sampled_from(["nan", "inf"])),
                        st.tuples(st.just("shape"), key_index, st.sampled_from([-1, 1]))),
       prefix=PREFIX, command=st.sampled_from(["attack", "construct"]))
def test_odd_checkpoints_through_the_cli(change, prefix, command, fresh_dir):
    """The same files given to a command: exit 2 with one line, or a finite result; a model with a
    NaN or infinite weight never gives one (its outputs are refused)."""
    net = _net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    wrong = _changed(state, dict(state), change) or change[0] == "shape" or change[2] in ("int8", "bool")
    with fresh_dir() as folder:
        torch.save({f"{prefix}{k}": v for k, v in state.items()}, folder / "w.pt")
        if command == "attack":
            cmd = ["attack", "--model", str(folder / "w.pt"), "--arch", "mlp:hidden=8", "--attack", "fgsm", "--eps", "0.1",
                   "--n", "4", "--out", str(folder / "a.json")]
        else:
            cmd = ["construct", "--kind", "d_rand", "--model", str(folder / "w.pt"), "--arch", "mlp:hidden=8", "--n", "4",
                   "--steps", "1", "--out", str(folder / "c")]
        res = check_promise(cmd, folder=folder)
        if wrong or change[0] == "nonfinite":
            assert res.exit_code == 2, (change, res.output)


# --- our own model files, their metadata lying -------------------------------------------------
ARCH = {"name": "mlp", "in_shape": [1, 8, 8], "num_classes": 10, "kwargs": {"hidden": [8]}}
META_VALUES = st.sampled_from([None, "mlp", "cnn", "nosuch", 0, 1, 11, -3, 10.0, 1e300, "ten", True, [], [8], [1, 8, 9], [1, 8],
                               {}, {"hidden": [8]}, {"hidden": "8"}, {"width": 4}, "os:system", [1, "a"], 2**70])


@MORE
@given(field=st.sampled_from(["name", "in_shape", "num_classes", "kwargs", "factory", "(drop)", "(not a dict)", "extra"]),
       value=META_VALUES, drop=st.sampled_from(["name", "in_shape", "num_classes", "kwargs"]), with_arch=st.booleans())
def test_our_model_file_with_lying_metadata(field, value, drop, with_arch, fresh_dir):
    from safetensors.torch import save_file

    from advfeatures.models import load_any_model

    net = _net()
    arch = dict(ARCH)
    extra = "{}"
    if field == "(drop)":
        del arch[drop]
    elif field == "(not a dict)":
        arch = value
    elif field == "factory":
        arch = {"factory": value if isinstance(value, str) and ":" in value else "os:system", "kwargs": value}
    elif field == "extra":
        extra = json.dumps(value)
    else:
        arch[field] = value
    with fresh_dir() as folder:
        path = folder / "m.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
                  metadata={"arch": json.dumps(arch), "extra": extra})
        try:
            loaded = load_any_model(path, arch="mlp" if with_arch and field != "factory" else
                                    ("_no_such_module_xyz:make" if with_arch else None), in_shape=(1, 8, 8))
        except Exception as exc:  # noqa: BLE001
            _one_line(exc)
            return
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x)), (field, value)
    assert isinstance(getattr(loaded, "extra", {}), dict)


# --- arrays --------------------------------------------------------------------------------------
N = 12


def _arrays(draw_spec):
    """(file members, expected (images NCHW float in [0, 1], labels) or None where wrong beyond doubt)."""
    layout, dtype, value, labels, keys = draw_spec
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (N, 3 if layout == "nhwc3" or layout == "nchw3" else 1, 6, 5)).astype(np.uint8)
    want_x = torch.from_numpy(base).float() / 255
    x = {"nchw1": base, "nchw3": base, "nhwc3": base.transpose(0, 2, 3, 1), "nhw": base[:, 0], "nhwc1": base.transpose(0, 2, 3, 1),
         "2d": base.reshape(N, -1), "5d": base[:, None], "empty axis": base[:, :, :0]}[layout]
    wrong = layout in ("2d", "5d", "empty axis")
    if dtype == "uint8":
        pass
    elif dtype in ("float16", "float32", "float64", ">f4", "<f8"):
        x = (x / 255).astype(dtype)
        want_x = torch.from_numpy(np.ascontiguousarray(base / 255).astype(dtype).astype(np.float32))
    else:
        x = x.astype(dtype)
        wrong = True
    if value != "plain" and x.size:
        x = x.copy()
        flat = x.reshape(-1)
        if np.issubdtype(x.dtype, np.floating):
            flat[0] = {"nan": np.nan, "inf": np.inf, "negative": -0.25, "above one": 1.5, "255": 255}[value]
            wrong = True
        elif value in ("negative", "above one") and x.dtype != np.uint8:
            wrong = True
    y = np.arange(N) % 3
    want_y = torch.from_numpy(y.astype(np.int64))
    y = {"int64": y, "int8": y.astype(np.int8), "uint8": y.astype(np.uint8), ">i4": y.astype(">i4"), "n by 1": y[:, None],
         "float": y.astype(np.float32), "half": y + 0.5, "negative": y - 1, "one short": y[:-1], "one more": np.append(y, 0),
         "one-hot": np.eye(3, dtype=np.int64)[y], "0-d": np.array(1), "names": np.array(["a", "b", "c"])[y],
         "huge": y * 10**12}[labels]
    wrong |= labels not in ("int64", "int8", "uint8", ">i4", "n by 1")
    members = {"images": ("images", "labels"), "x": ("x", "y"), "x_train": ("x_train", "y_train")}
    xk, yk = members[keys[0]]
    files = {xk: x, yk: y}
    if keys[1] == "half test":
        files["x_test"] = x
        wrong = True
    elif keys[1] == "test" and xk == "x_train":
        files["x_test"], files["y_test"] = x, y
    elif keys[1] == "junk":
        files["notes"] = np.array(["hello"])
    elif keys[1] == "classes short":
        files["classes"] = np.array(["a", "b"])
        wrong = True
    elif keys[1] == "classes":
        files["classes"] = np.array(["a", "b", "c"])
    elif keys[1] == "classes object":
        files["classes"] = np.array(["a", 2, None], dtype=object)
        wrong = True
    return files, None if wrong else (want_x, want_y)


ARRAY_SPEC = st.tuples(
    st.sampled_from(["nchw1", "nchw3", "nhwc3", "nhw", "nhwc1", "2d", "5d", "empty axis"]),
    st.sampled_from(["uint8", "float16", "float32", "float64", ">f4", "<f8", "int16", "bool", "complex64", "int64"]),
    st.sampled_from(["plain", "plain", "nan", "inf", "negative", "above one", "255"]),
    st.sampled_from(["int64", "int8", "uint8", ">i4", "n by 1", "float", "half", "negative", "one short", "one more", "one-hot",
                     "0-d", "names", "huge"]),
    st.tuples(st.sampled_from(["images", "x", "x_train"]), st.sampled_from(["", "test", "half test", "junk", "classes",
                                                                            "classes short", "classes object"])),
)


@settings(MORE, max_examples=80)
@given(spec=ARRAY_SPEC, fmt=st.sampled_from(["npz", "npz compressed", "npy"]))
def test_odd_arrays_read_exactly_or_are_refused(spec, fmt, fresh_dir):
    from advfeatures.data import read_data

    files, want = _arrays(spec)
    with fresh_dir() as folder:
        if fmt == "npy":
            path = folder / "arrays"
            path.mkdir()
            for k, v in files.items():
                np.save(path / f"{k}.npy", v, allow_pickle=v.dtype.hasobject)
        else:
            path = folder / "d.npz"
            (np.savez_compressed if fmt == "npz compressed" else np.savez)(path, allow_pickle=True, **files)
        try:
            train, test = read_data(path)
            x, y = train.images, train.labels
        except Exception as exc:  # noqa: BLE001
            _one_line(exc)
            return
    assert want is not None, f"wrong arrays were read: {spec} {fmt}"
    want_x, want_y = want
    assert x.dtype == torch.float32 and tuple(x.shape) == tuple(want_x.shape), (x.shape, want_x.shape)
    assert torch.equal(x, want_x) and torch.equal(y, want_y)
    assert (test is not None) == ("x_test" in files)


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00", b"garbage", "object"])
def test_a_bad_classes_npy_is_one_line(tmp_path, content):
    """Found by test_odd_arrays...: classes.npy beside images.npy/labels.npy was read with a bare
    np.load, so a truncated, garbage or object file ended in a ValueError traceback."""
    from advfeatures.data import read_data
    from advfeatures.errors import DataError

    np.save(tmp_path / "images.npy", np.zeros((6, 1, 4, 4), np.uint8))
    np.save(tmp_path / "labels.npy", np.arange(6) % 2)
    if content == "object":
        np.save(tmp_path / "classes.npy", np.array([object(), object()], dtype=object), allow_pickle=True)
    else:
        (tmp_path / "classes.npy").write_bytes(content)
    with pytest.raises(DataError, match="classes.npy") as info:
        read_data(tmp_path)
    _one_line(info.value)


@pytest.mark.parametrize("compressed", [False, True])
def test_big_endian_float_images_in_an_npz_are_read(tmp_path, compressed):
    """Found by test_odd_arrays...: float images saved big-endian (">f4", as from MATLAB or a
    network-order file) in an .npz ended in torch's "byte order different from the native" traceback."""
    from advfeatures.data import read_data

    x = np.random.default_rng(0).random((6, 1, 4, 4))
    (np.savez_compressed if compressed else np.savez)(tmp_path / "d.npz", images=x.astype(">f4"), labels=np.arange(6) % 2)
    train, _ = read_data(tmp_path / "d.npz")
    assert torch.equal(train.images, torch.from_numpy(x.astype(np.float32)))


@pytest.mark.parametrize("arch", [{**ARCH, "num_classes": "ten"}, {**ARCH, "kwargs": [1]}, {**ARCH, "kwargs": None},
                                  {**ARCH, "name": []}, {**ARCH, "num_classes": None}, {"factory": "m:f", "kwargs": [1]}],
                         ids=["classes str", "kwargs list", "kwargs null", "name list", "classes null", "factory kwargs list"])
def test_our_model_file_with_metadata_of_other_types_is_one_line(tmp_path, arch):
    """Found by test_our_model_file_with_lying_metadata: metadata values of another JSON type
    (a crafted or corrupt file) ended in TypeError tracebacks deep in build_model."""
    from safetensors.torch import save_file

    from advfeatures.errors import ModelError
    from advfeatures.models import load_any_model, load_model

    save_file({k: v.contiguous() for k, v in _net().state_dict().items()}, str(tmp_path / "m.safetensors"),
              metadata={"arch": json.dumps(arch), "extra": "{}"})
    with pytest.raises(ModelError) as info:
        if "factory" in arch:
            load_any_model(tmp_path / "m.safetensors", arch="_no_such_module_xyz:make")
        else:
            load_model(tmp_path / "m.safetensors")
    _one_line(info.value)


def test_our_model_file_whose_extra_is_not_an_object_is_refused(tmp_path):
    from safetensors.torch import save_file

    from advfeatures.errors import ModelError
    from advfeatures.models import load_model

    save_file({k: v.contiguous() for k, v in _net().state_dict().items()}, str(tmp_path / "m.safetensors"),
              metadata={"arch": json.dumps(ARCH), "extra": "[1]"})
    with pytest.raises(ModelError, match="not an advfeatures model file"):
        load_model(tmp_path / "m.safetensors")


# --- outputs over the command's own inputs -------------------------------------------------------
def _digest(path):
    import hashlib

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(str(p.relative_to(path.parent)).encode() + p.read_bytes() for p in files)).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, files):
    """A model, an .npz, a folder of .npy files, a config and a construction, each an input some
    command reads (copied: the commands below must leave them as they are)."""
    import shutil

    root = tmp_path_factory.mktemp("misuse")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8), np.arange(40) % 10
    np.savez(root / "d.npz", images=x, labels=y)
    (root / "arrays").mkdir()
    np.save(root / "arrays" / "images.npy", x)
    np.save(root / "arrays" / "labels.npy", y)
    shutil.copy(files["model"], root / "m.safetensors")
    shutil.copytree(files["d_rand"], root / "c")
    (root / "cfg.json").write_text('{"epochs": 1, "batch_size": 16}')
    return root


OVER = {  # out name -> which input it names (None: a fresh path)
    "m.safetensors": "m.safetensors", "d.npz": "d.npz", "arrays/images.npy": "arrays", "c/manifest.json": "c",
    "c/shard-00000.safetensors": "c", "cfg.safetensors": "cfg.json", "cfg.json": "cfg.json", "fresh.json": None,
}


@settings(FUZZ, max_examples=16)
@given(command=st.sampled_from(["attack", "train", "leakage", "export"]), out=st.sampled_from(sorted(OVER)),
       data=st.sampled_from(["d.npz", "arrays"]))
def test_an_out_over_the_commands_own_input_is_refused(inputs, command, out, data, fresh_dir):
    """`attack --out` on its --model replaced the model with JSON; `train --out` on its --data (or
    on a file inside a --data folder) replaced the data with a model; `leakage --out` on the
    construction's manifest.json replaced it with the audit. Every input stays as it was; a run
    whose --out names one is refused in one line."""
    root = inputs
    args = {
        "attack": ["attack", "--model", root / "m.safetensors", "--data", root / data, "--attack", "fgsm", "--eps", "0.1",
                   "--n", "4"],
        "train": ["train", "--arch", "mlp:hidden=8", "--data", root / data, "--config", root / "cfg.json"],
        "leakage": ["leakage", "--constructed", root / "c", "--eps", "0.5", "--k", "2"],
        "export": ["export", "--constructed", root / "c", "--format", "npz", "--overwrite"],
    }[command]
    reads = {"attack": {"m.safetensors", data}, "train": {data, "cfg.json"}, "leakage": {"c"}, "export": {"c"}}[command]
    before = {name: _digest(root / name) for name in reads}
    collides = OVER[out] in reads and (out != "cfg.safetensors" or command == "train")  # (train's summary: cfg.json)
    with fresh_dir() as folder:
        where = root / out if collides else folder / out  # the rest are fresh paths: nothing of the fixture is written over
        where.parent.mkdir(exist_ok=True)
        res = check_promise([*map(str, args), "--out", str(where)])  # (no JSON check: export may write an .npz named x.json)
    assert {name: _digest(root / name) for name in reads} == before, f"{command} --out {out} changed its input: {res.output}"
    if collides:
        assert res.exit_code == 2 and "an input of this command" in res.output, (command, out, res.output)


@pytest.mark.parametrize("case", ["attack over --model", "train over --data", "train over a .npy in --data",
                                  "train summary over --config", "leakage over the manifest"])
def test_out_over_an_input_is_refused_and_the_input_kept(tmp_path, files, case):
    import shutil

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (40, 1, 8, 8), dtype=np.uint8), labels=np.arange(40) % 10)
    (tmp_path / "arrays").mkdir()
    np.save(tmp_path / "arrays" / "images.npy", np.zeros((40, 1, 8, 8), np.uint8))
    np.save(tmp_path / "arrays" / "labels.npy", np.arange(40) % 10)
    shutil.copy(files["model"], tmp_path / "m.safetensors")
    shutil.copytree(files["d_rand"], tmp_path / "c")
    (tmp_path / "cfg.json").write_text('{"epochs": 1}')
    train = ["train", "--arch", "mlp:hidden=8", "--epochs", "1"]
    cmd, victim = {
        "attack over --model": (["attack", "--model", "m.safetensors", "--eps", "0.1", "--n", "4", "--out", "m.safetensors"],
                                "m.safetensors"),
        "train over --data": ([*train, "--data", "d.npz", "--out", "d.npz"], "d.npz"),
        "train over a .npy in --data": ([*train, "--data", "arrays", "--out", "arrays/images.npy"], "arrays"),
        "train summary over --config": ([*train, "--config", "cfg.json", "--out", "cfg.safetensors"], "cfg.json"),
        "leakage over the manifest": (["leakage", "--constructed", "c", "--eps", "0.5", "--k", "2", "--out", "c/manifest.json"],
                                      "c"),
    }[case]
    cmd = [str(tmp_path / a) if (tmp_path / a.split("/")[0]).exists() or a.endswith(".safetensors") else a for a in cmd]
    before = _digest(tmp_path / victim)
    res = check_promise(cmd)
    assert res.exit_code == 2 and "would overwrite" in res.output and "an input of this command" in res.output, res.output
    assert _digest(tmp_path / victim) == before
    if case == "train over --data":  # fine-tuning a model in place stays allowed
        shutil.copy(files["model"], tmp_path / "m.safetensors")
        res = check_promise([*train, "--model", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "m.safetensors")])
        assert res.exit_code == 0, res.output


# --- image-folder trees --------------------------------------------------------------------------
TREE = st.fixed_dictionaries({
    "layout": st.sampled_from(["flat", "flat", "split", "train only", "test adds a class", "test lacks a class"]),
    "counts": st.lists(st.sampled_from([1, 1, 2, 0]), min_size=1, max_size=3),  # images per class folder
    "modes": st.lists(st.sampled_from(["L", "L", "LA", "RGB", "RGBA"]), min_size=6, max_size=6),
    "odd": st.lists(st.sampled_from(["exif", "other size", "not an image", "nested", "hidden", "stray", "bmp", "upper case"]),
                    max_size=2),
})


def _write_tree(root, spec):
    """Writes the tree; returns the expected (classes, [(label, uint8 array (C?, H, W) upright)]) for
    the images read (train split, or the whole tree), or None where it must be refused."""
    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(len(spec["counts"]))]
    split = spec["layout"] != "flat"
    base = root / "train" if split else root
    wrong = any(n == 0 for n in spec["counts"]) or spec["layout"] in ("train only", "test adds a class")
    expected, k = [], 0
    for label, (name, count) in enumerate(zip(names, spec["counts"])):
        (base / name).mkdir(parents=True)
        for j in range(count):
            upright = rng.integers(0, 256, (6, 5), dtype=np.uint8)
            mode = spec["modes"][k % 6]
            k += 1
            img = Image.fromarray(upright, "L").convert(mode)
            stored, exif = img, None
            if "exif" in spec["odd"] and j == 0:  # stored turned, with the tag that turns it upright (6: 90° clockwise)
                stored = img.transpose(Image.Transpose.ROTATE_90)
                exif = Image.Exif()
                exif[0x0112] = 6
            stored.save(base / name / f"{j}.png", **({"exif": exif} if exif is not None else {}))
            expected.append((label, upright, mode))
    first = base / names[0]
    if "other size" in spec["odd"] and spec["counts"][0]:
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(first / "zz.png")
        wrong = True
    if "not an image" in spec["odd"] and spec["counts"][0]:
        (first / "zz.png").write_bytes(b"not a png")
        wrong = True
    if "nested" in spec["odd"]:
        (first / "sub").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((6, 5), np.uint8)).save(first / "sub" / "x.png")  # skipped, with a warning
    if "hidden" in spec["odd"]:
        (base / ".cache").mkdir()
        Image.fromarray(np.zeros((9, 9), np.uint8)).save(base / ".cache" / "x.png")
        (first / ".x.png").write_bytes(b"AppleDouble")
    if "stray" in spec["odd"]:
        (base / "README.txt").write_text("hello")
        (first / "Thumbs.db").write_bytes(b"\xd0\xcf")
    if "bmp" in spec["odd"]:
        Image.fromarray(np.zeros((9, 9), np.uint8)).save(first / "y.bmp")  # skipped, with a warning
    if "upper case" in spec["odd"] and spec["counts"][0]:
        (first / "0.png").rename(first / "0.PNG")
    if spec["layout"] in ("split", "test adds a class", "test lacks a class"):
        test_names = names + ["zz"] if spec["layout"] == "test adds a class" else names[:1] if spec["layout"] == \
            "test lacks a class" else names
        for name in test_names:
            (root / "test" / name).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(root / "test" / name / "t.png")
    colour = any(m in ("RGB", "RGBA") for _, _, m in expected)
    want = [(label, np.repeat(u[None], 3, 0) if colour else u[None]) for label, u, _ in expected]
    return None if wrong else (names, want, split)


@settings(MORE, max_examples=60)
@given(spec=TREE)
def test_odd_image_folder_trees_read_exactly_or_are_refused(spec, fresh_dir):
    from advfeatures.data import read_image_folder

    with fresh_dir() as folder:
        root = folder / "imgs"
        root.mkdir()
        want = _write_tree(root, spec)
        try:
            train, test = read_image_folder(root)
            x, y = train.images, train.labels
        except Exception as exc:  # noqa: BLE001
            _one_line(exc)
            assert want is None, f"a valid tree was refused: {spec}: {exc}"
            event("refused")
            return
    event("read")
    assert want is not None, f"a wrong tree was read: {spec}"
    names, images, split = want
    assert train.classes == names and (test is not None) == split
    assert y.tolist() == [label for label, _ in images]
    assert torch.equal(x, torch.stack([torch.from_numpy(a) for _, a in images]).float() / 255), spec


def test_a_symlink_loop_as_input_or_out_is_one_line(tmp_path):
    """The --out-over-input check resolves paths; a symlink loop made Path.resolve raise RuntimeError
    (Python 3.11), a traceback before the command could name the file."""
    loop = tmp_path / "loop.safetensors"
    os.symlink(loop, loop)
    for cmd in (["attack", "--model", str(loop), "--eps", "0.1", "--n", "4", "--out", str(tmp_path / "r.json")],
                ["attack", "--model", str(loop), "--eps", "0.1", "--n", "4", "--out", str(loop)]):
        res = check_promise(cmd)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
