"""Users' own files as they come: mixed image modes, stray files, odd folder layouts, arrays with
the label and layout conventions other libraries use. Each either reads exactly or is refused in
one line that names the problem and the fix."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advfeatures.data import load_data, read_image_folder, read_madrylab, read_npy, read_npz
from advfeatures.errors import DataError
from test_readers import _Items  # a torch Dataset of given items, as the readers' other tests use

GRAD = (np.arange(16, dtype=np.uint8).reshape(4, 4) * 16)


def _save(root, files):
    for rel, img in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(img) if isinstance(img, bytes) else img.save(p)


def _one_line(exc_info, pattern):
    assert "\n" not in str(exc_info.value)
    assert re.search(pattern, str(exc_info.value)), str(exc_info.value)


# ---- image folders ------------------------------------------------------------------------------

def test_every_8bit_mode_in_one_folder_reads_as_the_same_rgb_pixels(tmp_path):
    gray = Image.fromarray(GRAD, "L")
    pal = gray.convert("P")
    pal_t = gray.convert("P")
    pal_t.info["transparency"] = 0
    _save(tmp_path, {"a/1_l.png": gray, "a/2_la.png": gray.convert("LA"), "b/1_rgb.png": gray.convert("RGB"),
                     "b/2_rgba.png": gray.convert("RGBA"), "b/3_p.png": pal, "b/4_pt.png": pal_t})
    ds, _ = read_image_folder(tmp_path)
    want = torch.from_numpy(GRAD).expand(3, 4, 4)
    assert ds.image_shape == (3, 4, 4) and len(ds) == 6
    for i in range(6):  # transparency and alpha are dropped, the colour kept
        assert torch.equal(ds.storage[i], want), ds.info["files"][i]


def test_one_bit_and_cmyk_jpeg_are_read(tmp_path):
    bw = np.zeros((4, 4), np.uint8)
    bw[:, 2:] = 255
    _save(tmp_path, {"a/bw.png": Image.fromarray(bw).convert("1"),
                     "b/c.jpg": Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).convert("CMYK")})
    ds, _ = read_image_folder(tmp_path)
    assert ds.image_shape == (3, 4, 4)
    assert torch.equal(ds.storage[0], torch.from_numpy(bw).expand(3, 4, 4))
    assert (ds.storage[1].int() - 200).abs().max() <= 3  # CMYK → RGB, JPEG rounding


def test_sixteen_bit_png_is_refused_not_clipped(tmp_path):
    _save(tmp_path, {"a/x.png": Image.fromarray((np.arange(16).reshape(4, 4) * 4000).astype(np.uint16))})
    with pytest.raises(DataError) as info:
        read_image_folder(tmp_path)
    _one_line(info, "I;16.*8-bit")


def test_stray_files_hidden_files_and_upper_case_suffixes(tmp_path):
    gray = Image.fromarray(GRAD, "L")
    _save(tmp_path, {"a/x.png": gray, "a/.DS_Store": b"\0\0\0\1Bud1", "a/Thumbs.db": b"\xd0\xcf", "a/README.txt": b"hi",
                     ".DS_Store": b"x", "README.md": b"hi", ".hidden/y.png": gray, "b/Y.PNG": gray, "b/Z.JPEG": gray.convert("RGB"),
                     "b/._Y.PNG": b"AppleDouble"})
    ds, _ = read_image_folder(tmp_path)
    assert ds.classes == ["a", "b"] and ds.info["files"] == ["a/x.png", "b/Y.PNG", "b/Z.JPEG"]


@pytest.mark.parametrize("content", [b"", b"this is text, not a JPEG"], ids=["zero bytes", "text"])
def test_a_jpg_that_is_not_an_image_is_named(tmp_path, content):
    _save(tmp_path, {"a/x.png": Image.fromarray(GRAD), "a/y.jpg": content})
    with pytest.raises(DataError) as info:
        read_image_folder(tmp_path)
    _one_line(info, r"y\.jpg is not a readable image.*remove or replace it")


def test_class_order_is_sorted_and_symlinks_are_followed(tmp_path):
    gray = Image.fromarray(GRAD, "L")
    _save(tmp_path, {"src/x.png": gray, "t/zebra/z.png": gray, "t/Ant/a.png": gray, "t/chat/c.png": gray, "t/犬/d.png": gray})
    (tmp_path / "t" / "bee").symlink_to(tmp_path / "src")
    (tmp_path / "t" / "chat" / "link.png").symlink_to(tmp_path / "src" / "x.png")
    ds, _ = read_image_folder(tmp_path / "t")
    assert ds.classes == ["Ant", "bee", "chat", "zebra", "犬"]  # code-point order, upper case first
    assert ds.labels.tolist() == [0, 1, 2, 2, 3, 4]


@pytest.mark.parametrize("only", ["train", "test"])
def test_a_train_folder_without_test_is_named(tmp_path, only):
    gray = Image.fromarray(GRAD, "L")
    _save(tmp_path, {f"{only}/a/x.png": gray, f"{only}/b/y.png": gray})
    with pytest.raises(DataError) as info:
        load_data(data=tmp_path)
    other = "test" if only == "train" else "train"
    _one_line(info, f"has {only}/ but no {other}/")


def test_test_split_may_lack_classes_but_not_add_them(tmp_path):
    gray = Image.fromarray(GRAD, "L")
    _save(tmp_path, {"train/a/x.png": gray, "train/b/y.png": gray, "test/b/z.png": gray})
    train, test = load_data(data=tmp_path)
    assert test.classes == train.classes == ["a", "b"] and test.labels.tolist() == [1]


# ---- arrays -------------------------------------------------------------------------------------

X = np.random.default_rng(0).integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)
Y = np.arange(6) % 3


def _npz(tmp_path, **arrays):
    np.savez(tmp_path / "d.npz", **arrays)
    return read_npz(tmp_path / "d.npz")[0]


def test_float_images_in_0_255_are_refused_not_clipped(tmp_path):
    with pytest.raises(DataError) as info:
        _npz(tmp_path, x=X.astype(np.float32), y=Y)
    _one_line(info, r"\[0, 255\].*rescale")


def test_one_based_labels_are_renumbered_from_0(tmp_path):
    with pytest.warns(UserWarning, match="renumbered"):  # no unused class 0: a K-class model, not K+1
        ds = _npz(tmp_path, x=X, y=Y + 1)
    assert len(ds.classes) == len(np.unique(Y)) and ds.labels.tolist() == Y.tolist()
    assert ds.info["label_values"] == sorted(set((Y + 1).tolist()))


def test_labels_of_shape_n_by_1_are_flattened(tmp_path):
    assert _npz(tmp_path, x=X, y=Y[:, None].astype(np.int64)).labels.tolist() == Y.tolist()


def test_an_ambiguous_shape_follows_the_documented_rule(tmp_path):
    assert _npz(tmp_path, x=np.zeros((6, 3, 8, 3), np.uint8), y=Y).image_shape == (3, 8, 3)  # axis 1 wins


class _Touch:
    """Unpickling this creates ``marker``: a stand-in for code in a crafted file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("member", ["x", "y"])
def test_object_arrays_are_never_unpickled(tmp_path, member):
    marker = tmp_path / "ran"
    evil = np.array([_Touch(marker)] * 6, dtype=object)
    np.savez(tmp_path / "d.npz", **{"x": X, "y": Y, member: evil})
    assert not marker.exists()
    with pytest.raises(DataError) as info:
        read_npz(tmp_path / "d.npz")
    _one_line(info, "allow_pickle=False")
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["npz", "npy"])
@pytest.mark.parametrize("shape", [(6, 3, 0, 4), (6, 0, 4), (6, 4, 4, 0)])
def test_images_with_an_empty_axis_are_refused(tmp_path, fmt, shape):
    x = np.zeros(shape, np.uint8)
    if fmt == "npz":
        np.savez(tmp_path / "d.npz", x=x, y=Y)
        path = tmp_path / "d.npz"
    else:
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", Y)
        path = tmp_path
    with pytest.raises(DataError) as info:
        load_data(data=path, test_fraction=0.5)
    _one_line(info, "no pixels")


def test_class_names_saved_as_bytes_are_decoded(tmp_path):
    ds = _npz(tmp_path, x=X, y=Y, classes=np.array([b"cat", b"dog", "\u00e9l\u00e9phant".encode()]))
    assert ds.classes == ["cat", "dog", "\u00e9l\u00e9phant"]


def test_class_names_not_one_row_are_refused(tmp_path):
    with pytest.raises(DataError) as info:
        _npz(tmp_path, x=X, y=Y, classes=np.array([["a", "b", "c"]]))
    _one_line(info, r"classes has shape \(1, 3\).*one name per class")


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_one_hot_labels_are_refused_with_the_fix(tmp_path, dtype):
    with pytest.raises(DataError) as info:
        _npz(tmp_path, x=X, y=np.eye(3, dtype=dtype)[Y])
    _one_line(info, r"one-hot.*argmax\(1\)")


def test_string_labels_are_refused_with_the_fix(tmp_path):
    with pytest.raises(DataError) as info:
        _npz(tmp_path, x=X, y=np.array(["cat", "dog", "emu"] * 2))
    _one_line(info, r"names, not class indices.*np\.unique\(y, return_inverse=True\)")


def test_unsigned_labels_past_int64_are_not_called_negative(tmp_path):
    with pytest.raises(DataError) as info:
        _npz(tmp_path, x=X, y=np.array([0, 1, 2, 0, 1, 2**63 + 5], np.uint64))
    assert "negative" not in str(info.value)
    _one_line(info, "class indices 0..K-1")


def test_images_the_reader_skips_are_named_in_a_warning(tmp_path, caplog):
    gray = Image.fromarray(GRAD, "L")
    _save(tmp_path, {"a/x.png": gray, "a/extra/y.png": gray, "b/z.png": gray, "b/w.bmp": gray, "b/v.webp": gray,
                     "b/notes.txt": b"x", "b/.cache/q.png": gray})
    with caplog.at_level("WARNING", logger="advfeatures.data.external"):
        ds, _ = read_image_folder(tmp_path)
    assert ds.info["files"] == ["a/x.png", "b/z.png"]  # documented: only .png/.jpg/.jpeg directly in a class folder
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 subfolder(s) and 2 image file(s)" in text and "extra" in text and "w.bmp" in text


def test_a_clean_folder_warns_nothing(tmp_path, caplog):
    gray = Image.fromarray(GRAD, "L")
    _save(tmp_path, {"a/x.png": gray, "a/Thumbs.db": b"x", "a/.DS_Store": b"x", "b/z.png": gray, "b/.ipynb_checkpoints/q.png": gray})
    with caplog.at_level("WARNING", logger="advfeatures.data.external"):
        read_image_folder(tmp_path)
    assert not caplog.records


def test_exif_rotated_jpeg_is_read_the_way_it_is_shown(tmp_path):
    a = np.zeros((8, 12, 3), np.uint8)  # stored landscape, 8×12, a bright block at the top left
    a[:4, :4] = 255
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display" (how a phone held upright saves it)
    (tmp_path / "a").mkdir()
    img.save(tmp_path / "a" / "phone.jpg", exif=exif, quality=100)
    Image.fromarray(np.rot90(a, k=-1).copy()).save(tmp_path / "a" / "upright.png")  # the same picture, stored upright
    ds, _ = read_image_folder(tmp_path)  # one size once both are upright: no "mixes image sizes"
    assert ds.image_shape == (3, 12, 8)
    assert (ds.storage[0].int() - ds.storage[1].int()).abs().max() <= 8  # JPEG rounding only
    streamed, _ = read_image_folder(tmp_path, stream=True)
    assert torch.equal(streamed.images, ds.images)


# ---- MadryLab tensors ---------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["zip", "legacy", "non-contiguous"])
def test_madrylab_uint8_nhwc_gets_the_same_layout_however_it_was_saved(tmp_path, how):
    nchw = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    nhwc = nchw.permute(0, 2, 3, 1)  # a view: not contiguous
    torch.save(nhwc if how == "non-contiguous" else nhwc.contiguous(), tmp_path / "CIFAR_ims",
               _use_new_zipfile_serialization=how != "legacy")
    torch.save(torch.arange(4), tmp_path / "CIFAR_lab")
    ds, _ = read_madrylab(tmp_path)
    assert ds.image_shape == (3, 8, 8) and torch.equal(ds.storage, nchw)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_madrylab_integer_images_are_refused_not_read_as_floats(tmp_path, dtype):
    torch.save(torch.ones(4, 3, 8, 8, dtype=dtype), tmp_path / "CIFAR_ims")  # ones: inside [0, 1] once made float
    torch.save(torch.arange(4), tmp_path / "CIFAR_lab")
    with pytest.raises(DataError) as info:
        read_madrylab(tmp_path)
    _one_line(info, "uint8 .0..255. or float")


@pytest.mark.parametrize("fmt", ["npz", "npy"])
@pytest.mark.parametrize("arrays", [("x_train", "y_train", "x_test"), ("x_train", "y_train", "y_test"),
                                    ("images", "labels", "x_test", "y_test")])
def test_test_arrays_that_would_be_ignored_are_refused(tmp_path, fmt, arrays):
    values = {"x_train": X, "images": X, "x_test": X, "y_train": Y, "labels": Y, "y_test": Y}
    if fmt == "npz":
        np.savez(tmp_path / "d.npz", **{k: values[k] for k in arrays})
        path = tmp_path / "d.npz"
    else:
        for k in arrays:
            np.save(tmp_path / f"{k}.npy", values[k])
        path = tmp_path
    with pytest.raises(DataError) as info:
        load_data(data=path, test_fraction=0.5)
    _one_line(info, r"(x_test|y_test).* would not be read.*x_test and y_test beside x_train and y_train")


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_class_order_does_not_depend_on_unicode_normalisation(tmp_path, form):
    """macOS (HFS+) stores names decomposed (NFD), Linux as typed (mostly NFC): one dataset copied
    between them must give the same labels."""
    import unicodedata

    gray = Image.fromarray(GRAD, "L")
    names = ["Zebra", unicodedata.normalize(form, "Éléphant"), "ant"]
    _save(tmp_path, {f"{n}/x.png": gray for n in names})
    ds, _ = read_image_folder(tmp_path)
    assert [unicodedata.normalize("NFC", c) for c in ds.classes] == ["Zebra", "ant", "Éléphant"]


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_file_order_does_not_depend_on_unicode_normalisation(tmp_path, form):
    import unicodedata

    _save(tmp_path, {f"a/{unicodedata.normalize(form, n)}.png": Image.fromarray(np.full((2, 2), v, np.uint8))
                     for v, n in ((1, "Zoo"), (2, "École"), (3, "abc"))})
    ds, _ = read_image_folder(tmp_path)
    assert ds.storage[:, 0, 0, 0].tolist() == [1, 3, 2]  # Zoo < abc < École, on every machine


# ---- torch Datasets of PIL images -----------------------------------------------------------------


@pytest.mark.parametrize("img", [Image.fromarray((np.arange(16).reshape(4, 4) * 4000).astype(np.uint16)),
                                 Image.fromarray(np.full((4, 4), 0.5, np.float32)),
                                 Image.fromarray(np.full((4, 4), 70000, np.int32))], ids=["I;16", "F", "I"])
def test_pil_images_of_more_than_8_bits_are_refused_not_clipped(img):
    from advfeatures.data import from_torch_dataset

    with pytest.raises(DataError) as info:
        from_torch_dataset(_Items([(img, 0), (img, 1)]))
    _one_line(info, rf"item 0 .*mode {re.escape(img.mode)}.*8-bit")


def test_pil_images_mixing_grey_and_colour_name_the_mode_not_the_size():
    from advfeatures.data import from_torch_dataset

    gray = Image.fromarray(GRAD, "L")
    with pytest.raises(DataError) as info:
        from_torch_dataset(_Items([(gray, 0), (gray.convert("RGB"), 1)]))
    _one_line(info, r"item 1 .*3 channels, item 0 1.*convert\('RGB'\)")


def test_an_image_past_pillows_decompression_bomb_limit_is_one_line(tmp_path, monkeypatch):
    _save(tmp_path, {"a/x.png": Image.fromarray(np.zeros((16, 16), np.uint8)), "a/y.png": Image.fromarray(GRAD)})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 16×16 is past twice the limit: Pillow refuses it
    with pytest.raises(DataError) as info:
        read_image_folder(tmp_path)
    _one_line(info, r"x\.png has 256 pixels, more than .*MAX_IMAGE_PIXELS")


def test_mixed_sizes_name_both_files_with_their_class_folders(tmp_path):
    _save(tmp_path, {"cat/0001.png": Image.fromarray(GRAD), "dog/0001.png": Image.fromarray(np.zeros((5, 4), np.uint8))})
    with pytest.raises(DataError) as info:
        read_image_folder(tmp_path)
    _one_line(info, r"cat/0001\.png is 4×4, dog/0001\.png is 5×4.*size=")
