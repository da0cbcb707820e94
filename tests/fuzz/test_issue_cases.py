"""The families of issue 15 as explicit cases (the fuzz tests draw from the same families; these
pin the ones the issue names, so each stays fixed whatever hypothesis happens to draw)."""

from __future__ import annotations

import json
import math

import pytest

from .conftest import check_promise


@pytest.mark.parametrize("attack,norm", [("cw-l2", "L2"), ("deepfool", "L2"), ("lbfgs", "L2"), ("pgd", "L2"), ("fgsm", "Linf")])
@pytest.mark.parametrize("eps", ["nan", "-1", "-0.5", "inf", "1e308", "0"])
def test_bad_budgets_are_refused(files, attack, norm, eps, tmp_path):
    out = tmp_path
    res = check_promise(["attack", "--model", str(files["model"]), "--attack", attack, "--norm", norm, "--eps", eps,
                         "--steps", "2", "--n", "4", "--out", str(out / "a.json")], folder=out)
    assert res.exit_code == 2, res.output
    assert not (out / "a.json").exists()


@pytest.mark.parametrize("seed", ["-1", "18446744073709551616", "9223372036854775808"])
def test_bad_seeds_are_refused(files, seed, tmp_path):
    for cmd in (["attack", "--model", str(files["model"]), "--eps", "0.1", "--n", "4"],
                ["train", "--arch", "mlp:hidden=8", "--n", "32", "--epochs", "1", "--out", str(tmp_path / "m.safetensors")],
                ["reproduce", "--out", str(tmp_path / "run")]):
        assert check_promise([*cmd, "--seed", seed]).exit_code == 2


@pytest.mark.parametrize("arch", ["mlp:hidden=0", "mlp:hidden=-3", "cnn:width=0", "cnn:width=-1", "mlp:bogus=3", "mlp:hidden=nan"])
def test_bad_widths_and_unknown_arguments_are_refused(arch, tmp_path):
    out = tmp_path
    res = check_promise(["train", "--arch", arch, "--n", "32", "--epochs", "1", "--out", str(out / "m.safetensors")])
    assert res.exit_code == 2 and not (out / "m.safetensors").exists()


@pytest.mark.parametrize("setting", ["lr=1e308", "lr=1e300", "weight_decay=NaN", "weight_decay=Infinity", "epochs=NaN",
                                     "batch_size=Infinity", "crop_padding=NaN", "crop_padding=-1"])
def test_divergence_and_non_finite_settings_are_loud(setting, tmp_path):
    out = tmp_path
    direct = {"epochs": ["--epochs", "2"], "batch_size": ["--batch-size", "16"]}  # (a direct option beats --set)
    direct.pop(setting.split("=")[0], None)
    res = check_promise(["train", "--arch", "mlp:hidden=8", "--n", "64", *sum(direct.values(), []),
                         "--set", setting, "--out", str(out / "m.safetensors")], folder=out)
    assert res.exit_code == 2, res.output
    assert not (out / "m.safetensors").exists() and not (out / "m.json").exists()


@pytest.mark.parametrize("text", ['{"epochs": NaN}', '{"lr": Infinity}', "epochs = nan", "lr = inf", b"\xff\xfe{}",
                                  '{"a": ' * 5000 + "1" + "}" * 5000, "a = " + "[" * 5000 + "]" * 5000])
def test_bad_config_files_are_one_line(text, tmp_path):
    out = tmp_path
    suffix = ".toml" if isinstance(text, str) and (" = " in text[:8]) else ".json"
    cfg = out / f"c{suffix}"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    res = check_promise(["train", "--arch", "mlp:hidden=8", "--n", "32", "--epochs", "1", "--config", str(cfg),
                         "--out", str(out / "m.safetensors")])
    assert res.exit_code == 2


def test_shard_size_zero_leaves_nothing_and_the_corrected_run_works(files, tmp_path):
    out = tmp_path / "c"
    cmd = ["construct", "--kind", "d_rand", "--model", str(files["model"]), "--n", "4", "--steps", "1", "--out", str(out)]
    assert check_promise([*cmd, "--shard-size", "0"]).exit_code == 2
    assert not (out / "construct.json").exists()
    assert check_promise([*cmd, "--shard-size", "2"]).exit_code == 0
    assert (out / "manifest.json").is_file()


def test_a_foreign_shard_is_refused_on_resume(files, tmp_path):
    """A shard of another construction (another seed) dropped into a folder being resumed is
    refused, not mixed in."""
    import shutil

    base = tmp_path
    cmd = ["construct", "--kind", "d_rand", "--model", str(files["model"]), "--n", "8", "--steps", "1", "--shard-size", "4"]
    assert check_promise([*cmd, "--seed", "1", "--out", str(base / "other")]).exit_code == 0
    (base / "mine").mkdir()
    shutil.copy(base / "other" / "shard-00000.safetensors", base / "mine" / "shard-00000.safetensors")
    res = check_promise([*cmd, "--seed", "2", "--out", str(base / "mine")])
    assert res.exit_code == 2 and "another construction" in res.output


def test_non_finite_results_are_never_written(tmp_path):
    from advfeatures.errors import DataError
    from advfeatures.storage import write_json_atomic

    for bad in ({"a": math.inf}, {"a": [1, {"b": math.nan}]}):
        with pytest.raises(DataError, match="not a finite number"):
            write_json_atomic(tmp_path / "r.json", bad)
        assert not (tmp_path / "r.json").exists()
    write_json_atomic(tmp_path / "r.json", {"a": 1.5})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1.5}


def test_empty_set_has_no_accuracy(digits_split):
    from advfeatures.errors import DataError
    from advfeatures.evaluate import accuracy
    from advfeatures.models import build_model

    train, _ = digits_split
    with pytest.raises(DataError, match="empty"):
        accuracy(build_model("mlp", train.image_shape, 10, hidden=[4]), train.subset(slice(0, 0)))
