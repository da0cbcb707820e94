"""uint8-held and streamed data give the same numbers as the float32 tensors of the same images."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advfeatures.construct import MatchingConfig, RelabelConfig, build_dataset, load_constructed
from advfeatures.data import ImageDataset, load_digits, read_npy, to_float
from advfeatures.models import build_model
from advfeatures.storage import RowFile, safetensors_layout, save_safetensors_atomic
from advfeatures.train import TrainConfig, train_model


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=30))
def test_row_reads_match_indexing(index):
    import tempfile
    from pathlib import Path

    x = torch.arange(10 * 6, dtype=torch.float32).view(10, 2, 3)
    with tempfile.TemporaryDirectory() as d:
        save_safetensors_atomic({"a": torch.zeros(3), "images": x}, Path(d) / "s.safetensors")
        rows = safetensors_layout(Path(d) / "s.safetensors")["images"]
        assert isinstance(rows, RowFile) and rows.shape == (10, 2, 3)
        idx = torch.tensor(index, dtype=torch.int64)
        assert torch.equal(rows.read_rows(idx), x[idx])


def test_uint8_to_float_is_exact_and_the_same_off_the_cpu_table():
    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_float(u), u.float() / 255)
    from advfeatures.data.dataset import _UINT8_TO_FLOAT
    assert torch.equal(_UINT8_TO_FLOAT[u.long()], to_float(u))


@pytest.fixture(scope="module")
def digits_u8():
    """Digits quantised to uint8, held three ways: uint8 in memory, float32 in memory, an .npy file on disk."""
    train, _ = load_digits()
    sub = train.head(240)
    u8 = sub.images.mul(255).round().to(torch.uint8)
    return u8, sub.labels, sub.classes


def _three_ways(digits_u8, tmp_path):
    u8, y, classes = digits_u8
    held = ImageDataset(u8, y, classes, "u8")
    floats = ImageDataset(u8.float() / 255, y, classes, "f32")
    np.save(tmp_path / "images.npy", u8.numpy())
    np.save(tmp_path / "labels.npy", y.numpy())
    streamed, _ = read_npy(tmp_path, stream=True)
    assert held.storage_dtype == torch.uint8 and floats.storage_dtype == torch.float32 and not streamed.in_memory
    return held, floats, streamed


def test_dataset_api_keeps_working_on_uint8(digits_u8, tmp_path):
    held, floats, streamed = _three_ways(digits_u8, tmp_path)
    for ds in (held, streamed):
        assert ds.images.dtype == torch.float32 and torch.equal(ds.images, floats.images)
        assert torch.equal(ds.head(7).images, floats.images[:7]) and ds.head(7).storage_dtype == torch.uint8
        sub = ds.subset(torch.tensor([5, 2, 9]))
        assert torch.equal(sub.images, floats.images[[5, 2, 9]]) and torch.equal(sub.labels, floats.labels[[5, 2, 9]])
        assert ds.image_shape == (1, 8, 8) and ds.num_classes == 10 and len(ds) == 240
    assert held.storage.element_size() * 4 == floats.storage.element_size()


def _model():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model("mlp", (1, 8, 8), 10, hidden=(32,))


def test_training_is_identical_on_uint8_float32_and_streamed(digits_u8, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=50, lr=0.1, crop_padding=1, flip=True, seed=3)
    runs = []
    for ds in _three_ways(digits_u8, tmp_path):
        model = _model()
        runs.append((train_model(model, ds, cfg), model.state_dict()))
    (h0, s0), *rest = runs
    for h, s in rest:
        assert h == h0
        assert all(torch.equal(s0[k], s[k]) for k in s0)


@pytest.mark.parametrize("kind", ["d_rand", "d_nr"])
def test_construction_is_identical_on_uint8_float32_and_streamed(digits_u8, tmp_path, kind):
    model = _model()
    kw = dict(seed=1, batch_size=40, shard_size=100, relabel=RelabelConfig(eps=0.5, steps=2, step_size=0.2),
              matching=MatchingConfig(steps=2, step_size=0.1))
    outs = []
    for i, ds in enumerate(_three_ways(digits_u8, tmp_path)):
        build_dataset(kind, model, ds.head(150), tmp_path / f"c{i}", **kw)
        outs.append(load_constructed(tmp_path / f"c{i}", classes=ds.classes)[0])
    for o in outs[1:]:
        assert torch.equal(o.images, outs[0].images) and torch.equal(o.labels, outs[0].labels)


def test_a_constructed_set_streams_back(digits_u8, tmp_path):
    held, _, _ = _three_ways(digits_u8, tmp_path)
    build_dataset("d_det", _model(), held, tmp_path / "c", batch_size=64, shard_size=70, relabel=RelabelConfig(steps=1))
    whole, manifest = load_constructed(tmp_path / "c", classes=held.classes)
    lazy, _ = load_constructed(tmp_path / "c", classes=held.classes, stream=True)
    assert len(manifest["shards"]) == 4 and not lazy.in_memory
    order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(0))
    for (a, ya), (b, yb) in zip(whole.iter_batches(64, order=order), lazy.iter_batches(64, order=order)):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    assert torch.equal(lazy.info["source_labels"], whole.info["source_labels"])
    cfg = TrainConfig(epochs=1, batch_size=32, crop_padding=0, flip=False)
    m1, m2 = _model(), _model()
    assert train_model(m1, whole, cfg) == train_model(m2, lazy, cfg)


def test_the_data_digest_is_the_same_held_any_way_and_read_by_batch(digits_u8, tmp_path):
    from advfeatures.experiments.pipeline import data_digest
    from advfeatures.storage import tensor_digest

    held, floats, streamed = _three_ways(digits_u8, tmp_path)
    want = tensor_digest(floats.images, floats.labels)  # what every earlier run cache is keyed by
    assert {held.digest(), streamed.digest(), streamed.digest(batch_size=7), floats.digest()} == {want}
    assert streamed._float is None and held._float is None  # hashed batch by batch: no float32 copy was built
    assert data_digest(streamed, held.head(9)) == data_digest(floats, floats.head(9))
    flipped = ImageDataset(digits_u8[0].flip(0), digits_u8[1], digits_u8[2])
    assert flipped.digest() != want  # the digest sees the pixels


def test_evaluation_reads_a_streamed_set_by_batch_with_the_same_numbers(digits_u8, tmp_path):
    from advfeatures.evaluate import accuracy, sanity_checks, worst_case_evaluation

    held, floats, streamed = _three_ways(digits_u8, tmp_path)
    model = _model()
    train_model(model, floats, TrainConfig(epochs=2, batch_size=50, lr=0.1, crop_padding=0, flip=False))
    kw = dict(norm="L2", eps=0.5, batch_size=64, steps=3, n_target_classes=2, square_queries=20, seed=1)
    ref = worst_case_evaluation(model, floats.images, floats.labels, **kw)
    sane = dict(norm="L2", eps=0.5, steps=3, square_queries=20, batch_size=64, seed=1)
    ref_meas: dict = {}
    ref_found = sanity_checks(model, floats.images[:100], floats.labels[:100], measurements=ref_meas, **sane)
    for ds in (held, streamed):
        got = worst_case_evaluation(model, ds, **kw)
        assert got["x_adv"] is None and torch.equal(got["robust"], ref["robust"])
        assert [m["newly_broken"] for m in got["members"]] == [m["newly_broken"] for m in ref["members"]]
        assert got["clean_accuracy"] == ref["clean_accuracy"] == accuracy(model, ds) and got["robust_accuracy"] == ref["robust_accuracy"]
        meas: dict = {}
        assert sanity_checks(model, ds.head(100), measurements=meas, **sane) == ref_found and meas == ref_meas
    assert streamed._float is None
    with pytest.raises(Exception, match="own labels"):
        worst_case_evaluation(model, streamed, streamed.labels, **kw)


def test_an_uncompressed_npz_streams_and_a_compressed_one_is_read_whole(digits_u8, tmp_path, caplog):
    import logging

    from advfeatures.data import read_npz
    from advfeatures.errors import DataError

    u8, y, _ = digits_u8
    xt = (u8[:30].float() / 255).numpy()
    np.savez(tmp_path / "plain.npz", x_train=u8.permute(0, 2, 3, 1).numpy(), y_train=y.numpy().astype(np.int16), x_test=xt,
             y_test=y[:30].numpy())
    np.savez_compressed(tmp_path / "packed.npz", x_train=u8.numpy(), y_train=y.numpy(), x_test=xt, y_test=y[:30].numpy())
    plain, plain_test = read_npz(tmp_path / "plain.npz", stream=True)
    assert not plain.in_memory and not plain_test.in_memory and plain.storage_dtype == torch.uint8
    with caplog.at_level(logging.WARNING):
        packed, packed_test = read_npz(tmp_path / "packed.npz", stream=True)
    assert packed.in_memory and "savez_compressed" in caplog.text and "numpy.savez" in caplog.text
    order = torch.randperm(len(plain), generator=torch.Generator().manual_seed(0))
    for (a, ya), (b, yb) in zip(plain.iter_batches(50, order=order), packed.iter_batches(50, order=order)):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    assert torch.equal(plain_test.batch(slice(0, 30))[0], torch.from_numpy(xt)) and plain.digest() == packed.digest()
    bad = xt.copy()
    bad[3, 0, 0, 0] = 1.5
    np.savez(tmp_path / "bad.npz", x=bad, y=y[:30].numpy())
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        read_npz(tmp_path / "bad.npz", stream=True)  # refused at load, before any work, though streamed


def test_madrylab_tensors_are_read_at_offsets_and_the_legacy_format_whole(digits_u8, tmp_path, caplog):
    import logging

    from advfeatures.data import read_madrylab

    u8, y, _ = digits_u8
    x = u8.float() / 255
    layouts = {"one": (x, {}), "parts": ([x[:100], x[100:170], x[170:]], {}),
               "legacy": (x, {"_use_new_zipfile_serialization": False}), "u8": (u8, {})}
    ref = None
    for name, (ims, kw) in layouts.items():
        (tmp_path / name).mkdir()
        torch.save(ims, tmp_path / name / "CIFAR_ims", **kw)
        torch.save(y.int(), tmp_path / name / "CIFAR_lab")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            ds, _ = read_madrylab(tmp_path / name, stream=True)
        assert ds.in_memory == (name == "legacy") and ("read whole" in caplog.text) == (name == "legacy")
        got = [ds.batch(torch.tensor([0, 150, 239, 99, 100]))[0], ds.labels]
        ref = ref or got
        assert all(torch.equal(a, b) for a, b in zip(got, ref)) and ds.digest() == ImageDataset(x, y, ds.classes).digest()
        assert torch.equal(read_madrylab(tmp_path / name, stream=False)[0].images, x)


def test_a_streamed_image_folder_decoded_by_workers_trains_and_constructs_the_same(digits_u8, tmp_path):
    from PIL import Image

    from advfeatures.data import read_image_folder

    u8, y, _ = digits_u8
    for i in range(160):
        folder = tmp_path / "pngs" / f"c{int(y[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(u8[i, 0].numpy(), mode="L").save(folder / f"{i:04d}.png")
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.1, crop_padding=1, flip=True, seed=2)
    runs = []
    for workers in (0, 2):
        ds, _ = read_image_folder(tmp_path / "pngs", stream=True, workers=workers)
        assert not ds.in_memory and ds.source.workers == workers
        model = _model()
        history = train_model(model, ds, cfg)
        build_dataset("d_rand", model, ds, tmp_path / f"w{workers}", seed=1, batch_size=30, shard_size=80,
                      relabel=RelabelConfig(eps=0.5, steps=1, step_size=0.2))
        runs.append((history, model.state_dict(), load_constructed(tmp_path / f"w{workers}", classes=ds.classes)[0]))
    (h0, s0, c0), (h1, s1, c1) = runs
    assert h0 == h1 and all(torch.equal(s0[k], s1[k]) for k in s0)
    assert torch.equal(c0.images, c1.images) and torch.equal(c0.labels, c1.labels)


def test_a_forged_construction_outside_the_box_is_refused_streamed_or_whole(tmp_path):
    """A shard whose manifest agrees with it (so its sha256 passes) but whose images lie outside
    [0, 1] is refused both ways, not clipped into a valid-looking set."""
    from safetensors.torch import save_file

    from advfeatures.errors import DataError
    from advfeatures.storage import shard_path, write_manifest

    folder = tmp_path / "forged"
    folder.mkdir()
    images = torch.rand(6, 1, 4, 4)
    images[2, 0, 1, 1] = 2.0
    save_file({"images": images, "labels": torch.zeros(6, dtype=torch.int64), "source_labels": torch.zeros(6, dtype=torch.int64),
               "stat": torch.zeros(6)}, str(shard_path(folder, 0)))
    write_manifest(folder, num_shards=1, config={})
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_constructed(folder, classes=["a", "b"])
    lazy, _ = load_constructed(folder, classes=["a", "b"], stream=True)
    assert torch.equal(lazy.batch(torch.tensor([0, 1]))[0], images[:2])  # in-range rows read as they are
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        lazy.batch(torch.tensor([2]))
