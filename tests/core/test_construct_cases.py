"""Construction and export as users will run them: --layer, few classes, foreign data, file modes."""

from __future__ import annotations

import json
import logging
import os
import stat

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advfeatures.cli import main
from advfeatures.models import build_model, save_model


def _cli(*args):
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", *map(str, args)], catch_exceptions=True)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_model(build_model("cnn", (1, 8, 8), 10, width=4), root / "cnn.safetensors")
    save_model(build_model("mlp", (1, 8, 8), 10, hidden=[8]), root / "mlp.safetensors")
    save_model(build_model("mlp", (1, 8, 8), 2, hidden=[8]), root / "two.safetensors")
    return root


def test_layer_option_reaches_the_construction_and_its_manifest(models, tmp_path):
    """`construct --layer` read g at the layer (the loader wrapped the model) but the manifest said
    layer null and fake_relu true: the wrapper's PenultimateReLU (after features.5) was switched,
    which does not shape g there."""
    res = _cli("construct", "--kind", "d_r", "--model", models / "cnn.safetensors", "--layer", "features.5", "--n", 5,
               "--steps", 2, "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    matching = json.loads((tmp_path / "a" / "manifest.json").read_text())["config"]["matching"]
    assert matching["layer"] == "features.5" and matching["fake_relu"] is False
    # the same construction from Python, reading g at that layer, gives the same images
    from advfeatures.construct import MatchingConfig, build_dataset, load_constructed
    from advfeatures.data import load_digits
    from advfeatures.models import load_model

    train, _ = load_digits()
    build_dataset("d_r", load_model(models / "cnn.safetensors"), train.head(5), tmp_path / "b", layer="features.5",
                  matching=MatchingConfig(steps=2), batch_size=500, shard_size=5000)
    a, _ = load_constructed(tmp_path / "a", classes=train.classes)
    b, _ = load_constructed(tmp_path / "b", classes=train.classes)
    assert torch.equal(a.images, b.images)
    # d_rand / d_det attack the logits: a --layer there would be ignored, so it is refused
    res = _cli("construct", "--kind", "d_rand", "--model", models / "cnn.safetensors", "--layer", "features.5", "--n", 4,
               "--steps", 1, "--out", tmp_path / "c")
    assert res.exit_code == 2 and "drop --layer" in res.output and not (tmp_path / "c").exists()


def test_per_class_share_counts_every_target_class(models, tmp_path):
    """The per-class success share is by target class, but its length came from the largest
    *source* label: the first 3 digits (labels 0, 1, 2) under D_det target 1, 2, 3 and class 3 was
    left out."""
    from advfeatures.construct import RelabelConfig, build_dataset
    from advfeatures.data import load_digits
    from advfeatures.models import load_model

    train, _ = load_digits()
    src = train.subset(torch.cat([(train.labels == c).nonzero()[:1].flatten() for c in (0, 1, 2)]))
    assert src.labels.tolist() == [0, 1, 2]
    m = build_dataset("d_det", load_model(models / "mlp.safetensors"), src, tmp_path / "d",
                      relabel=RelabelConfig(eps=0.5, steps=1))
    share = m["summary"]["per_class_share"]
    assert len(share) == 10 and share[0] is None and all(s is not None for s in share[1:4]) and share[4:] == [None] * 6


def test_two_classes_make_d_rand_and_d_det_one_set_and_say_so(models, tmp_path, caplog):
    """With 2 classes t is forced to 1 − y: D_rand and D_det coincide, which the log and the
    manifest now say; with 1 class there is no target, a one-line error (before: torch's
    "random_ expects 'from' to be less than 'to'")."""
    from advfeatures.construct import RelabelConfig, build_dataset, load_constructed
    from advfeatures.data import ImageDataset
    from advfeatures.errors import ConfigError
    from advfeatures.models import load_model

    g = torch.Generator().manual_seed(0)
    src = ImageDataset(torch.rand(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 0, 1, 1, 0]), ["cat", "dog"], "pets")
    model = load_model(models / "two.safetensors")
    cfg = RelabelConfig(eps=0.5, steps=2)
    with caplog.at_level(logging.WARNING):
        m_rand = build_dataset("d_rand", model, src, tmp_path / "rand", relabel=cfg)
    assert "D_rand and D_det are the same set" in caplog.text and "D_rand and D_det are the same set" in m_rand["summary"]["note"]
    build_dataset("d_det", model, src, tmp_path / "det", relabel=cfg)
    rand, _ = load_constructed(tmp_path / "rand", classes=src.classes)
    det, _ = load_constructed(tmp_path / "det", classes=src.classes)
    assert torch.equal(rand.labels, 1 - src.labels) and torch.equal(rand.labels, det.labels) and torch.equal(rand.images, det.images)
    one = ImageDataset(src.images, torch.zeros(6, dtype=torch.int64), ["cat"], "cats")
    with pytest.raises(ConfigError, match="needs at least 2 classes"):
        build_dataset("d_rand", model, one, tmp_path / "one", relabel=cfg)
    assert not list((tmp_path / "one").glob("shard-*"))


@pytest.mark.parametrize("umask", [0o077, 0o022, 0o002])
def test_shards_and_exports_get_the_modes_the_umask_gives(models, tmp_path, umask):
    """Every file and folder a construction or an export writes has ``0o666/0o777 & ~umask``
    (before: the npy, madrylab and imagefolder exports' folder stayed mkdtemp's private 0700)."""
    old = os.umask(umask)
    try:
        res = _cli("construct", "--kind", "d_rand", "--model", models / "mlp.safetensors", "--n", 5, "--steps", 1,
                   "--shard-size", 3, "--out", tmp_path / "c")
        assert res.exit_code == 0, res.output
        for fmt in ("imagefolder", "npz", "npy", "madrylab"):
            # an image folder cannot hold the classes 5 images lack: export the whole digits set as PNGs
            src = ["--constructed", tmp_path / "c"] if fmt != "imagefolder" else ["--split", "train"]
            res = _cli("export", *src, "--format", fmt, "--out", tmp_path / f"e-{fmt}")
            assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    paths = [tmp_path / "c", *(tmp_path / "c").rglob("*"), *(p for f in tmp_path.glob("e-*") for p in (f, *f.rglob("*")))]
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in paths}
    want = {k: (0o777 if (tmp_path / k).is_dir() else 0o666) & ~umask for k in modes}
    assert modes == want and len(modes) > 12


def test_export_of_a_construction_beside_other_data_is_refused(models, tmp_path, caplog):
    """`export --constructed` takes the class names from --dataset / --data; the default digits
    beside a construction of other images wrote that set with digits' names (before: exit 0)."""
    res = _cli("construct", "--kind", "d_rand", "--model", models / "mlp.safetensors", "--n", 4, "--steps", 1,
               "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    g = torch.Generator().manual_seed(0)
    np.savez(tmp_path / "big.npz", images=torch.randint(0, 256, (60, 1, 12, 12), generator=g, dtype=torch.uint8).numpy(),
             labels=np.arange(60) % 10)
    res = _cli("export", "--constructed", tmp_path / "c", "--data", tmp_path / "big.npz", "--format", "npz", "--out", tmp_path / "o.npz")
    assert res.exit_code == 2 and "built from digits-train with (1, 8, 8) images" in res.output, res.output
    assert not (tmp_path / "o.npz").exists()
    # the same shape under another name: written, with a warning naming both
    np.savez(tmp_path / "same.npz", images=torch.randint(0, 256, (60, 1, 8, 8), generator=g, dtype=torch.uint8).numpy(),
             labels=np.arange(60) % 10)
    with caplog.at_level(logging.WARNING):
        res = _cli("export", "--constructed", tmp_path / "c", "--data", tmp_path / "same.npz", "--format", "npz",
                   "--out", tmp_path / "o.npz")
    assert res.exit_code == 0 and "built from digits-train, not same-train" in caplog.text


@pytest.mark.parametrize("fmt", ["imagefolder", "npz", "npy", "madrylab"])
def test_a_construction_exported_reads_back_the_same(models, tmp_path, fmt):
    """Every format, read back by our own readers: the same labels and class names and the same
    images (exactly, or within the 0.5/255 of PNG's rounding, which the command states)."""
    from advfeatures.construct import load_constructed
    from advfeatures.data import load_digits, read_data

    train, _ = load_digits()
    n = 40  # enough images that every digit is a target (an image folder holds no empty class)
    res = _cli("construct", "--kind", "d_det", "--model", models / "mlp.safetensors", "--n", n, "--steps", 2,
               "--shard-size", 15, "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    built, _ = load_constructed(tmp_path / "c", classes=train.classes)
    out = tmp_path / ("o.npz" if fmt == "npz" else "o")
    res = _cli("export", "--constructed", tmp_path / "c", "--format", fmt, "--out", out)
    assert res.exit_code == 0, res.output
    assert ("at most 0.5/255 off" in res.output) == (fmt == "imagefolder")
    got, test = read_data(out)
    assert test is None and len(got) == n
    x, y = got.images, got.labels
    if fmt == "imagefolder":  # listed class by class; info["files"] (named by position) gives the order back
        order = torch.tensor(np.argsort([int(f.split("/")[-1][:-4]) for f in got.info["files"]]))
        x, y = x[order], y[order]
        assert float((x - built.images).abs().max()) <= 0.5 / 255 + 1e-7
    else:
        assert torch.equal(x, built.images)
    assert torch.equal(y, built.labels)
    if fmt != "madrylab":  # MadryLab's layout holds no class names
        assert got.classes == train.classes


def test_data_changed_in_place_is_not_reused_or_mixed(models, tmp_path):
    """The settings named the data by its path only: a --data file rewritten between two runs gave
    "already holds this construction", and an interrupted one resumed with shards of both."""
    from advfeatures.data import load_digits

    train, _ = load_digits()
    x = train.images[:20].mul(255).round().to(torch.uint8).numpy()
    np.savez(tmp_path / "d.npz", images=x, labels=train.labels[:20].numpy() % 2)
    cmd = ["construct", "--kind", "d_det", "--model", models / "two.safetensors", "--data", tmp_path / "d.npz", "--n", 8,
           "--shard-size", 4, "--steps", 1, "--out", tmp_path / "c"]
    assert _cli(*cmd).exit_code == 0
    np.savez(tmp_path / "d.npz", images=255 - x, labels=train.labels[:20].numpy() % 2)
    res = _cli(*cmd)
    assert res.exit_code == 2 and "holds a different construction" in res.output, res.output
    (tmp_path / "c" / "manifest.json").unlink()
    (tmp_path / "c" / "shard-00001.safetensors").unlink()
    res = _cli(*cmd)
    assert res.exit_code == 2 and "part of a different construction" in res.output, res.output
    assert not (tmp_path / "c" / "shard-00001.safetensors").exists()


def test_python_build_with_other_settings_is_refused_not_relabelled(models, tmp_path):
    """build_dataset without a key wrote unkeyed shards: a second call with other settings (steps,
    eps) kept them and wrote a manifest claiming its own settings over images made with the first."""
    from advfeatures.construct import RelabelConfig, build_dataset, load_constructed
    from advfeatures.data import load_digits
    from advfeatures.errors import DataError
    from advfeatures.models import load_model

    train, _ = load_digits()
    src, model = train.head(8), load_model(models / "mlp.safetensors")
    kw = dict(shard_size=4, seed=3)
    build_dataset("d_rand", model, src, tmp_path / "c", relabel=RelabelConfig(steps=1), **kw)
    first, _ = load_constructed(tmp_path / "c", classes=train.classes)
    with pytest.raises(DataError, match="belongs to another construction"):
        build_dataset("d_rand", model, src, tmp_path / "c", relabel=RelabelConfig(steps=5, eps=2.0), **kw)
    with pytest.raises(DataError, match="belongs to another construction"):
        build_dataset("d_rand", model, train.head(9).subset(torch.arange(1, 9)), tmp_path / "c",
                      relabel=RelabelConfig(steps=1), **kw)
    # the same settings again: the shards are kept (resumed), the set is the same
    (tmp_path / "c" / "shard-00001.safetensors").unlink()
    m = build_dataset("d_rand", model, src, tmp_path / "c", relabel=RelabelConfig(steps=1), **kw)
    again, _ = load_constructed(tmp_path / "c", classes=train.classes)
    assert m["config"]["relabel"]["steps"] == 1 and torch.equal(again.images, first.images)


def test_export_never_overwrites_what_it_exports(models, tmp_path):
    """`export --constructed c --out c --overwrite` replaced the construction by its export."""
    res = _cli("construct", "--kind", "d_rand", "--model", models / "mlp.safetensors", "--n", 4, "--steps", 1,
               "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    for out in (tmp_path / "c", tmp_path):
        res = _cli("export", "--constructed", tmp_path / "c", "--format", "npy", "--out", out, "--overwrite")
        assert res.exit_code == 2 and "would replace --constructed" in res.output, res.output
    assert (tmp_path / "c" / "manifest.json").is_file()
