"""Labels with gaps in user arrays are renumbered to 0..K-1 (one mapping over both splits), with a warning."""
import numpy as np
import pytest

from advfeatures.data.external import read_npy, read_npz


def test_npz_gaps_renumbered_with_warning(tmp_path):
    p = tmp_path / "g.npz"
    np.savez(p, x=np.zeros((6, 3, 8, 8), np.uint8), y=np.array([0, 2, 5, 0, 2, 5]))
    with pytest.warns(UserWarning, match=r"0->0, 2->1, 5->2"):
        train, test = read_npz(p)
    assert test is None
    assert train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert len(train.classes) == 3
    assert train.info["label_values"] == [0, 2, 5]


def test_npz_splits_share_one_mapping(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, x_train=np.zeros((3, 3, 8, 8), np.uint8), y_train=np.array([1, 3, 3]),
             x_test=np.zeros((2, 3, 8, 8), np.uint8), y_test=np.array([10, 1]))
    with pytest.warns(UserWarning, match="renumbered"):
        train, test = read_npz(p)
    assert train.labels.tolist() == [0, 1, 1]
    assert test.labels.tolist() == [2, 0]
    assert train.classes == test.classes and len(train.classes) == 3


def test_npy_gaps_renumbered(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, 8, 8, 3), np.uint8))
    np.save(tmp_path / "labels.npy", np.array([1, 2, 3, 4]))
    with pytest.warns(UserWarning, match="renumbered"):
        train, _ = read_npy(tmp_path)
    assert train.labels.tolist() == [0, 1, 2, 3]
    assert train.info["label_values"] == [1, 2, 3, 4]


def test_contiguous_labels_untouched(tmp_path, recwarn):
    p = tmp_path / "c.npz"
    np.savez(p, x=np.zeros((3, 3, 8, 8), np.uint8), y=np.array([0, 1, 2]))
    train, _ = read_npz(p)
    assert train.labels.tolist() == [0, 1, 2] and "label_values" not in train.info
    assert not [w for w in recwarn if "renumbered" in str(w.message)]


def test_class_list_keeps_numbers(tmp_path):
    p = tmp_path / "n.npz"
    np.savez(p, x=np.zeros((2, 3, 8, 8), np.uint8), y=np.array([0, 2]), classes=np.array(["a", "b", "c"]))
    train, _ = read_npz(p)
    assert train.labels.tolist() == [0, 2] and train.classes == ["a", "b", "c"]
