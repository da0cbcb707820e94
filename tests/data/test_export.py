"""Export: every format reads back to the same tensors, and nothing half-written is ever left."""

import numpy as np
import pytest
import torch

import advfeatures.data.export as export
from advfeatures.data import ImageDataset, export_dataset, load_data, read_data, save_adversarial
from advfeatures.errors import ConfigError

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]  # a "/" and an order sorting would change


def _sets(dtype, channels=1, n=15):
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (n, channels, 4, 3), generator=g, dtype=torch.uint8)
    x = u8 if dtype == "uint8" else torch.rand(n, channels, 4, 3, generator=g)
    y = torch.arange(n) % len(FASHION)
    return ImageDataset(x[:10], y[:10], FASHION, "train"), ImageDataset(x[10:], y[10:], FASHION, "test")


def _by_file(ds):
    """The reader lists an image folder class by class; its info["files"] (named by position) restores the order."""
    order = torch.tensor(np.argsort([int(f.split("/")[-1][:-4]) for f in ds.info["files"]]))
    return ds.images[order], ds.labels[order]


@pytest.mark.parametrize("fmt", ["npz", "npy", "madrylab", "imagefolder"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip(tmp_path, fmt, dtype, channels):
    train, test = _sets(dtype, channels)
    out = export_dataset(train, tmp_path / "out", format=fmt, test=test)
    got_train, got_test = read_data(out)
    for want, got in ((train, got_train), (test, got_test)):
        x, y = _by_file(got) if fmt == "imagefolder" else (got.images, got.labels)
        if fmt == "imagefolder" and dtype == "float32":  # PNG holds 8 bits: round(255·x)
            assert torch.equal(x, want.images.mul(255).round().div(255))
        else:
            assert torch.equal(x, want.images)
        assert torch.equal(y, want.labels)
        if fmt != "madrylab":
            assert got.classes == FASHION
        if dtype == "uint8" and fmt != "madrylab":
            assert got.storage_dtype == torch.uint8
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left beside it


def test_single_split_and_streamed_npy_export(tmp_path):
    train, _ = _sets("uint8")
    export_dataset(train, tmp_path / "a", format="npy")
    streamed, _ = load_data(data=tmp_path / "a", stream=True, test_fraction=0.5)
    export_dataset(streamed, tmp_path / "b", format="npz")  # a streamed uint8 set exports as uint8
    with np.load(tmp_path / "b") as z:
        assert z["images"].dtype == np.uint8 and z["images"].shape == (5, 1, 4, 3)


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    train, test = _sets("uint8")
    export_dataset(train, tmp_path / "out", format="imagefolder")
    with pytest.raises(ConfigError, match="already exists.*overwrite"):
        export_dataset(test, tmp_path / "out", format="imagefolder")
    export_dataset(train, tmp_path / "out", format="npz", overwrite=True)
    assert (tmp_path / "out").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("fmt", ["imagefolder", "npz", "madrylab"])
def test_failure_part_way_leaves_nothing(tmp_path, monkeypatch, fmt):
    train, test = _sets("float32")
    export_dataset(train, tmp_path / "out", format="npz")
    before = (tmp_path / "out").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    if fmt == "npz":
        monkeypatch.setattr(export.np, "savez", lambda f, **a: (f.write(b"partial"), boom()))
    else:
        real = export._uint8_batches if fmt == "imagefolder" else None

        def half(ds):  # the first batch is written, then the disk fills
            yield from real(ds)
            boom()

        monkeypatch.setattr(export, "_uint8_batches" if fmt == "imagefolder" else "_write_madrylab", half if real else boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_dataset(train, tmp_path / "out", format=fmt, test=test, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (tmp_path / "out").read_bytes() == before


def test_save_adversarial_writes_a_dataset(tmp_path):
    g = torch.Generator().manual_seed(1)
    x_adv = torch.rand(6, 1, 4, 4, generator=g)
    target, orig = torch.tensor([1, 2, 0, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 2, 2])
    out = save_adversarial(x_adv, target, tmp_path / "adv.npz", classes=["a", "b", "c"], original_labels=orig)
    ds, none = read_data(out)
    assert none is None and torch.equal(ds.images, x_adv) and torch.equal(ds.labels, target)
    with np.load(out) as z:
        assert z["original_labels"].tolist() == orig.tolist()
    folder = save_adversarial(x_adv, target, tmp_path / "adv", classes=["a", "b", "c"], format="imagefolder")
    assert len(read_data(folder)[0]) == 6


def test_unknown_format_and_mismatched_splits(tmp_path):
    train, test = _sets("uint8")
    with pytest.raises(ConfigError, match="choose one of"):
        export_dataset(train, tmp_path / "o", format="tfrecord")
    other = ImageDataset(torch.zeros(2, 1, 5, 5), torch.zeros(2, dtype=torch.int64), FASHION)
    with pytest.raises(Exception, match="does not match"):
        export_dataset(train, tmp_path / "o", format="npz", test=other)
    assert not any(tmp_path.iterdir())
