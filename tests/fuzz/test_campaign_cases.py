"""Cases from the bad-input campaign (benchmarks/bad_inputs.py) that failed before their fix, pinned."""

from __future__ import annotations

import pytest

from .conftest import check_promise

TRAIN = ["train", "--arch", "mlp:hidden=8", "--dataset", "digits", "--n", "32", "--epochs", "1", "--out"]


@pytest.mark.parametrize("threads", ["0", "99999999999999", "abc"])
def test_the_groups_own_threads_option_is_refused_in_one_line(tmp_path, threads):
    from click.testing import CliRunner

    from advfeatures.cli import main

    res = CliRunner().invoke(main, ["--threads", threads, *TRAIN, str(tmp_path / "m.safetensors")])
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert res.output.strip().startswith("error: --threads") and res.output.strip().count("\n") == 0, res.output


@pytest.mark.parametrize("setting", ["epochs=nan", "epochs=-1", "seed=nan", "seed=\"abc\"", "epochs=[]"])
def test_a_bad_set_value_is_refused_even_when_an_option_overrides_it(tmp_path, setting):
    res = check_promise([*TRAIN, str(tmp_path / "m.safetensors"), "--set", setting])
    assert res.exit_code == 2 and setting.split("=")[0] in res.output, res.output
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("setting", ["batch_size=1e308", "crop_padding=1e308", "adversary.steps=1e30"])
def test_whole_numbers_past_int64_are_refused(tmp_path, setting):
    res = check_promise([*TRAIN, str(tmp_path / "m.safetensors"), "--adversarial", "--set", setting])
    assert res.exit_code == 2 and setting.split("=")[0].split(".")[-1] in res.output, res.output


@pytest.mark.parametrize("out", ["", "   ", "a\x00b"])
def test_an_empty_or_nul_path_is_refused_before_anything_is_written(tmp_path, out, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `--out ''` used to write into the current folder
    res = check_promise([*TRAIN, out])
    assert res.exit_code == 2 and "--out" in res.output, res.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("arch", ["mlp:num_classes=3", "cnn:image_shape=1"])
def test_architecture_options_the_data_decides_are_refused(tmp_path, arch):
    res = check_promise([*TRAIN, str(tmp_path / "m.safetensors"), "--arch", arch])
    assert res.exit_code == 2 and "come from the data" in res.output, res.output


def test_a_seed_range_of_a_hundred_million_runs_is_refused():
    from advfeatures.errors import ConfigError
    from advfeatures.seeding import parse_seeds

    with pytest.raises(ConfigError, match="at most 1000 seeds"):
        parse_seeds("0-99999999")


@pytest.mark.parametrize("name", ["zero-images", "huge-labels"])
def test_empty_arrays_and_labels_far_past_any_class_count_end_in_one_line(tmp_path, name):
    """An empty array file crashed the streamed reader (IndexError); labels of 10^12 made the reader
    build a class list of that length (24 GB, then the kernel's OOM kill)."""
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    labels = np.arange(40) % 4
    if name == "zero-images":
        images, labels = images[:0], labels[:0]
    else:
        labels = labels * 10**12
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    res = check_promise(["export", "--data", str(tmp_path / "d.npz"), "--format", "npz", "--out", str(tmp_path / "x.npz")],
                        folder=tmp_path)
    assert res.exit_code == 2 and ("no images" in res.output or "class indices" in res.output), res.output
    assert not (tmp_path / "x.npz").exists()
