"""Faults of a run rather than of its arguments: a training that diverges with every loss finite,
a D_rand folder used with data it was not built from, and a disk that fills up mid-write."""

from __future__ import annotations

import errno
import os
import resource
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advfeatures.cli import main

from .conftest import check_promise


# ---- divergence with finite losses ----------------------------------------------------------------
@pytest.mark.parametrize("optimizer, lr", [("sgd", 30.0), ("adam", 1e6)])
def test_a_finite_but_exploding_loss_stops_training_in_one_line(digits_split, optimizer, lr):
    from advfeatures.errors import ConfigError
    from advfeatures.models import build_model
    from advfeatures.train import TrainConfig, train_model

    train, _ = digits_split
    torch.manual_seed(0)
    model = build_model("mlp", train.image_shape, train.num_classes)
    with pytest.raises(ConfigError, match=r"training diverged in epoch 1 .*lr="):
        train_model(model, train.head(256), TrainConfig(epochs=2, batch_size=32, lr=lr, optimizer=optimizer))


def test_exploded_weights_with_a_calm_loss_are_divergence(digits_split):
    from advfeatures.errors import ConfigError
    from advfeatures.models import build_model
    from advfeatures.train import TrainConfig, _check_not_diverged, _weight_norm

    train, _ = digits_split
    model = build_model("mlp", train.image_shape, train.num_classes, hidden=[16])
    start = _weight_norm(model)
    cfg = TrainConfig(lr=1e30)
    _check_not_diverged(model, {"epoch": 1, "loss": 2.3}, 2.3, start, cfg, "train")  # as trained: fine
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e5)
    with pytest.raises(ConfigError, match="weights' norm went from .* lr=1e\\+30"):
        _check_not_diverged(model, {"epoch": 1, "loss": 2.3}, 2.3, start, cfg, "train")


def test_the_digits_presets_training_stages_do_not_trip_the_divergence_check(tmp_path):
    for stage in ("standard", "adversarial"):
        res = check_promise(["train", "--arch", "mlp:hidden=32", "--dataset", "digits", "--stage", stage, "--set",
                             "epochs=3", "--out", str(tmp_path / f"{stage}.safetensors")])
        assert res.exit_code == 0, res.output


# ---- transferability: D_rand and the data must agree -------------------------------------------
def _npz(path: Path, shape: tuple[int, int], classes: int, n: int) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (n, *shape), dtype=np.uint8), labels=np.arange(n) % classes)
    return path


def test_transferability_refuses_a_d_rand_of_other_images_or_classes(tmp_path, files):
    from advfeatures.models import build_model, save_model

    # a 28×28 model and 28×28 data, but D_rand of 8×8 digits
    data28 = _npz(tmp_path / "x28.npz", (28, 28), 10, 200)
    res = check_promise(["transferability", "--source", str(files["model28"]), "--d-rand", str(files["d_rand"]), "--data",
                         str(data28), "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path / "t1")])
    assert res.exit_code == 2 and "(1, 8, 8)" in res.output and "(1, 28, 28)" in res.output, res.output
    # 8×8 images of 12 classes and a 12-class model: D_rand's labels (0..9) fit, its class count does not
    data12 = _npz(tmp_path / "x12.npz", (8, 8), 12, 240)
    save_model(build_model("mlp", (1, 8, 8), 12, hidden=[8]), tmp_path / "m12.safetensors")
    res = check_promise(["transferability", "--source", str(tmp_path / "m12.safetensors"), "--d-rand", str(files["d_rand"]),
                         "--data", str(data12), "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path / "t2")])
    assert res.exit_code == 2 and "10 classes" in res.output and "12" in res.output, res.output
    assert not (tmp_path / "t1").exists() and not (tmp_path / "t2").exists()


# ---- a full disk mid-write ---------------------------------------------------------------------
@contextmanager
def _file_size_limit(limit: int):
    """Within the block, no file of this process can grow past ``limit`` bytes: a write past it fails
    with EFBIG (Python ignores SIGXFSZ), as a full disk fails one with ENOSPC, half-way through."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _disk_full_line(res) -> None:
    assert res.exit_code == 2 and isinstance(res.exception, (SystemExit, type(None))), res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: the disk is full or a file size limit was reached"), res.output


def _nothing_half_written(folder: Path) -> None:
    assert not list(folder.rglob("*.tmp")), "a half-written temporary file was left behind"


@pytest.mark.parametrize("what", ["construction shard", "training checkpoint"])
def test_a_write_failing_half_way_leaves_nothing_trusted_and_the_rerun_succeeds(tmp_path, files, what):
    from .test_interruption import _same_tensors

    if what == "construction shard":  # shards of 200 8×8 float images (51 kB); construct.json is ~2 kB
        args = ["construct", "--kind", "d_rand", "--model", str(files["model"]), "--n", "400", "--shard-size", "200",
                "--steps", "1", "--out"]
        outputs = ["manifest.json", "shard-00000.safetensors", "shard-00001.safetensors"]
    else:  # the checkpoint of a 64-32-10 MLP with momentum (~20 kB) is the first file past the limit
        args = ["train", "--arch", "mlp:hidden=32", "--dataset", "digits", "--n", "64", "--epochs", "2", "--out"]
        outputs = ["m.safetensors", "m.json"]
    clean, full = tmp_path / "clean", tmp_path / "full"
    where = (lambda root: root / "out") if what == "construction shard" else (lambda root: root)
    target = (lambda root: str(root / "out")) if what == "construction shard" else (lambda root: str(root / "m.safetensors"))
    assert check_promise([*args, target(clean)]).exit_code == 0
    with _file_size_limit(8 * 1024):
        res = CliRunner().invoke(main, ["--quiet", "--threads", "1", *args, target(full)])
    _disk_full_line(res)
    root = where(full)
    _nothing_half_written(root)
    assert not any((root / o).exists() for o in outputs)  # nothing a rerun would take as finished
    assert not list(root.glob(".*.ckpt")) and not list(root.glob("shard-*"))
    assert check_promise([*args, target(full)]).exit_code == 0
    for o in outputs:
        if o.endswith(".safetensors"):
            _same_tensors(where(clean) / o, root / o)
        elif o == "manifest.json":
            assert (where(clean) / o).read_bytes() == (root / o).read_bytes()


def test_a_result_json_failing_half_way_with_enospc_is_one_line_and_the_rerun_matches(tmp_path, monkeypatch):
    """A full disk (ENOSPC) half-way through the summary JSON: one line naming the disk, no JSON and
    no temporary file left, and the rerun writes what a clean run writes."""
    import json

    args = ["train", "--arch", "mlp:hidden=8", "--dataset", "digits", "--n", "64", "--epochs", "1", "--out"]
    clean = check_promise([*args, str(tmp_path / "clean" / "m.safetensors")])
    assert clean.exit_code == 0
    real = Path.write_text

    def half_then_enospc(self, text, *a, **kw):
        if self.name.startswith(".m.json."):
            real(self, text[: len(text) // 2], *a, **kw)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, text, *a, **kw)

    out = tmp_path / "full" / "m.safetensors"
    monkeypatch.setattr(Path, "write_text", half_then_enospc)
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", *args, str(out)])
    monkeypatch.undo()
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert res.output.strip().splitlines()[-1].startswith("error: the disk is full"), res.output
    assert not (out.parent / "m.json").exists()
    _nothing_half_written(out.parent)
    assert check_promise([*args, str(out)]).exit_code == 0
    a = json.loads((tmp_path / "clean" / "m.json").read_text())
    b = json.loads((out.parent / "m.json").read_text())
    assert a["history"] == b["history"] and a["test_accuracy"] == b["test_accuracy"]
