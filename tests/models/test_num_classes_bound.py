"""A model file's metadata naming an enormous num_classes (crafted or corrupt) is refused with a
one-line ModelError before any layer is allocated."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from advfeatures.errors import ModelError
from advfeatures.models import build_model, load_model, save_model
from advfeatures.models.registry import MAX_CLASSES


def _with_classes(tmp_path, num_classes):
    good = tmp_path / "good.safetensors"
    save_model(build_model("cnn", (1, 8, 8), 10, width=4, hidden=16), good)
    from safetensors import safe_open

    with safe_open(str(good), framework="pt") as f:
        meta = dict(f.metadata())
    arch = json.loads(meta["arch"])
    arch["num_classes"] = num_classes
    meta["arch"] = json.dumps(arch)
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(good)), str(bad), metadata=meta)
    return bad


@pytest.mark.parametrize("num_classes", [10**12, MAX_CLASSES + 1])
def test_huge_num_classes_in_metadata_is_refused(tmp_path, num_classes):
    with pytest.raises(ModelError) as exc:
        load_model(_with_classes(tmp_path, num_classes))
    message = str(exc.value)
    assert str(num_classes) in message and "\n" not in message


def test_num_classes_not_matching_the_stored_head_is_refused(tmp_path):
    with pytest.raises(ModelError, match="num_classes=7"):
        load_model(_with_classes(tmp_path, 7))


def test_build_model_bounds_num_classes():
    with pytest.raises(ModelError, match=f"num_classes={10**12}.*{MAX_CLASSES}"):
        build_model("cnn", (1, 8, 8), 10**12, width=4, hidden=16)


def test_ordinary_file_still_loads(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(build_model("cnn", (1, 8, 8), 10, width=4, hidden=16), path)
    assert load_model(path).arch["num_classes"] == 10
