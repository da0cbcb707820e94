"""Every bad input is refused with a one-line DataError that names the problem, and writes nothing."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from advfeatures.data import from_torch_dataset, load_data
from advfeatures.errors import DataError


def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def no_images(root):
    (root / "a").mkdir()
    (root / "a" / "notes.txt").write_text("x")


def empty_class(root):
    _png(root / "a" / "1.png", np.zeros((4, 4), np.uint8))
    (root / "b").mkdir()


def no_class_folders(root):
    (root / "readme.txt").write_text("x")


def mixed_sizes(root):
    _png(root / "a" / "1.png", np.zeros((4, 4), np.uint8))
    _png(root / "b" / "1.png", np.zeros((5, 4), np.uint8))


def unreadable_image(root):
    _png(root / "a" / "1.png", np.zeros((4, 4), np.uint8))
    (root / "a" / "2.png").write_bytes(b"not a png at all")


def truncated_image(root):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(buf, format="PNG")
    (root / "a").mkdir()
    (root / "a" / "1.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def sixteen_bit_image(root):
    _png(root / "a" / "1.png", np.zeros((4, 4), np.uint16) + 300)


def test_folders_differ(tmp_path):
    _png(tmp_path / "train" / "a" / "1.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "test" / "zzz" / "1.png", np.zeros((4, 4), np.uint8))
    _refused(tmp_path, "train/ lacks")


def npz(**arrays):
    def write(root):
        np.savez(root / "d.npz", **arrays)
    return write


def npy(images, labels):
    def write(root):
        np.save(root / "images.npy", images)
        np.save(root / "labels.npy", labels)
    return write


def madry_not_tensors(root):
    (root / "m").mkdir()
    torch.save({"a": 1}, root / "m" / "CIFAR_ims")
    torch.save(torch.zeros(2, dtype=torch.int64), root / "m" / "CIFAR_lab")


def madry_pickled_object(root):
    (root / "m").mkdir()
    torch.save(torch.zeros(2, 3, 4, 4), root / "m" / "CIFAR_ims")
    import pickle
    (root / "m" / "CIFAR_lab").write_bytes(pickle.dumps(io.BytesIO(b"code")))


X = np.zeros((4, 1, 3, 3), np.uint8)
Y = np.arange(4)
CASES = {
    "no images": (no_images, "holds no .png/.jpg"),
    "empty class folder": (empty_class, "holds no .png/.jpg"),
    "no class folders": (no_class_folders, "holds no data"),
    "mixed sizes": (mixed_sizes, "mixes image sizes"),
    "unreadable image": (unreadable_image, "not a readable image"),
    "truncated image": (truncated_image, "could not be decoded"),
    "16-bit image": (sixteen_bit_image, "8-bit"),
    "npz missing keys": (npz(pixels=X, y=Y), "expected x_train"),
    "npz wrong shape": (npz(x=np.zeros((4, 5, 5, 5), np.uint8), y=Y), "neither axis 1 nor axis 3"),
    "npz wrong rank": (npz(x=np.zeros((4, 9), np.uint8), y=Y), r"\(N, H, W\)"),
    "npz int images": (npz(x=X.astype(np.int32), y=Y), "uint8 .0..255. or float"),
    "npz float out of range": (npz(x=X.astype(np.float32) + 3, y=Y), r"\[0, 1\]"),
    "npz negative labels": (npz(x=X, y=Y - 1), "negative labels"),
    "npz labels out of range": (npz(x=X, y=Y, classes=np.array(["a", "b"])), "out of range"),
    "npz float labels": (npz(x=X, y=Y.astype(np.float32)), "must be integers"),
    "npz too few labels": (npz(x=X, y=Y[:3]), "one integer label per image"),
    "npz train/test shapes differ": (npz(x_train=X, y_train=Y, x_test=np.zeros((2, 1, 4, 4), np.uint8), y_test=Y[:2]), "different shapes"),
    "npy fortran order": (npy(np.asfortranarray(np.zeros((4, 1, 3, 3), np.uint8)), Y), "Fortran order"),
    "npy int images": (npy(X.astype(np.int64), Y), "uint8"),
    "npy big-endian": (npy(X.astype(">f4"), Y), "big-endian"),
    "madrylab not tensors": (madry_not_tensors, "not a tensor"),
    "madrylab pickled object": (madry_pickled_object, "not a file of plain tensors"),
}


def _refused(root, pattern, target=None):
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(DataError, match=pattern) as info:
        load_data(data=target or _target(root))
    assert "\n" not in str(info.value)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written, not even a temp file


def _target(root):
    files = [p for p in root.iterdir()]
    return files[0] if len(files) == 1 and files[0].suffix == ".npz" else (root / "m" if (root / "m").is_dir() else root)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_data_error(tmp_path, case):
    make, pattern = CASES[case]
    make(tmp_path)
    _refused(tmp_path, pattern)


def test_missing_path_names_the_accepted_formats(tmp_path):
    _refused(tmp_path, "does not exist; pass an image folder", target=tmp_path / "nowhere")


class _Bad(torch.utils.data.Dataset):
    def __init__(self, item):
        self.item = item

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return self.item


@pytest.mark.parametrize("item, pattern", [
    ((torch.zeros(1, 2, 2), 0.5), "labels must be integers"),
    ((torch.zeros(1, 2, 2), torch.tensor(1.0)), "not one integer"),
    ((torch.full((1, 2, 2), 2.0), 1), "drop normalisation"),
    ((torch.zeros(1, 2, 2, dtype=torch.int32), 1), "uint8 or float"),
    ((torch.zeros(1, 2, 2),), r"\(image, label\) pairs"),
    (("an image", 1), "tensor or PIL image"),
])
def test_bad_torch_dataset_items(item, pattern):
    with pytest.raises(DataError, match=pattern) as info:
        from_torch_dataset(_Bad(item))
    assert "\n" not in str(info.value)
