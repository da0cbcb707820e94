"""Issue 13, part 4: one runtime, thin commands.

Every command applies the one runtime configuration through ``options.start_runtime`` (and nothing
else sets threads, the allocator or the device); the representation studies are library calls that
read images by index; reproduce's ``threads=None`` has one meaning, resolved in one place."""

from __future__ import annotations

import importlib
import inspect
import json
import re

import pytest
import torch
from click.testing import CliRunner

from advfeatures.cli import COMMANDS, main
from advfeatures.data import load_digits
from advfeatures.data.dataset import ImageDataset
from advfeatures.errors import ConfigError
from advfeatures.models import build_model, save_model

# what a command must not do itself: the runtime package does it, once, in apply_runtime
_BYPASSES = re.compile(r"\b(resolve_device|set_threads|set_num_threads|tune_allocator|init_distributed)\(")


def _callback(name: str):
    module = importlib.import_module(f"advfeatures.cli.{COMMANDS[name][0]}")
    command = main.get_command(None, name)  # type: ignore[arg-type]
    assert command is not None, f"{name} is not registered by {module.__name__}"
    return inspect.unwrap(command.callback)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_starts_the_one_runtime(name):
    source = inspect.getsource(_callback(name))
    assert source.count("start_runtime(") == 1, f"{name} must call options.start_runtime exactly once"
    assert not _BYPASSES.search(source), f"{name} sets the device/threads/allocator itself instead of through start_runtime"


def test_no_command_module_sets_the_runtime_itself():
    for module_name in sorted({m for m, _ in COMMANDS.values()} | {"__init__"}):
        path = importlib.import_module(f"advfeatures.cli.{module_name}" if module_name != "__init__" else "advfeatures.cli").__file__
        text = open(path, encoding="utf-8").read()
        assert not _BYPASSES.search(text), f"cli/{module_name}.py bypasses start_runtime"


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_global_threads_reach_apply_runtime_once_and_are_given_back(monkeypatch, tmp_path, two_threads):
    import advfeatures.runtime.config as config

    calls, during = [], []
    real = config.apply_runtime

    def spy(cfg=None):
        rt = real(cfg)
        calls.append(cfg)
        during.append(torch.get_num_threads())
        return rt

    monkeypatch.setattr(config, "apply_runtime", spy)
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", "export", "--dataset", "digits", "--format", "npz",
                                    "--split", "test", "--out", str(tmp_path / "d.npz")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert len(calls) == 1 and calls[0].threads == 1 and calls[0].device == "cpu" and calls[0].distributed is False
    assert during == [1]
    assert torch.get_num_threads() == 2  # restored when the command ended


def test_reproduce_threads_none_is_the_runtime_default(monkeypatch, two_threads):
    from advfeatures.experiments.config import ReproduceConfig
    from advfeatures.runtime import runtime_applied

    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the runtime default: OMP_NUM_THREADS when set, else the free cores
    cfg = ReproduceConfig(device="cpu", threads=None)
    assert cfg.runtime.threads is None and cfg.runtime.device == "cpu"
    with runtime_applied(cfg.runtime) as rt:
        assert rt.threads == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == 2
    with runtime_applied(ReproduceConfig(device="cpu", threads=1).runtime) as rt:
        assert rt.threads == 1


@pytest.fixture(scope="module")
def small():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("mlp", (1, 8, 8), 10, hidden=[32, 16]).eval()
    return model, load_digits()[1].head(60)


@pytest.fixture
def no_whole_set(monkeypatch):
    def refuse(self):
        raise AssertionError("read the whole set (.images) instead of by index")

    monkeypatch.setattr(ImageDataset, "images", property(refuse))


def test_representation_studies_read_images_by_index(small, no_whole_set, tmp_path):
    from advfeatures.represent import compare_inversions
    from advfeatures.represent.studies import feature_visualization, saliency_study

    model, test = small
    inv = compare_inversions({"model": model}, test, tmp_path, n=4, steps=3, interpolation=3)
    assert len(inv["interpolation"]["model"]["alphas"]) == 3 and (tmp_path / "interpolation-model.png").is_file()
    vis = feature_visualization(model, test, tmp_path, num=3, steps=3, units=True, top_k=4)
    assert len(vis["coordinates"]) == 3 and len(vis["units_vs_directions"]["units"]) == 3
    sal = saliency_study(model, test, tmp_path, n=2, methods=["gradient"])
    assert len(sal["indices"]) == 2 and (tmp_path / "cascade.png").is_file()


def test_interpolation_needs_enough_images(small, tmp_path):
    from advfeatures.represent import interpolate_pairs

    model, test = small
    with pytest.raises(ConfigError, match="interpolation pairs need 8 images"):
        interpolate_pairs({"m": model}, test.head(7), num=2, steps=1)


def test_invert_writes_the_envelope_without_interpolation(small, tmp_path):
    model, _ = small
    save_model(model, tmp_path / "m.safetensors")
    res = CliRunner().invoke(main, ["--quiet", "--threads", "1", "invert", "--model", str(tmp_path / "m.safetensors"),
                                    "--out", str(tmp_path / "o"), "--n", "3", "--steps", "2", "--seed", "5"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "o" / "inversion.json").read_text())
    assert saved["format"] == "advfeatures-result/1" and saved["command"] == "invert" and saved["seed"] == 5
    assert saved["model"]["pixel_l2"] > 0


def test_construct_folder_holds_one_construction(small, tmp_path):
    from advfeatures.construct import RelabelConfig, construct_folder

    model, test = small
    data = test.head(6)
    kw = {"relabel": RelabelConfig(steps=2), "seed": 0, "batch_size": 6, "shard_size": 6}
    status, manifest = construct_folder("d_rand", model, data, tmp_path, settings={"n": 6}, **kw)
    assert status == "built" and manifest["count"] == 6
    assert construct_folder("d_rand", model, data, tmp_path, settings={"n": 6}, **kw) == ("finished", None)
    with pytest.raises(ConfigError, match="different construction"):
        construct_folder("d_rand", model, data, tmp_path, settings={"n": 5}, **kw)


def test_defence_table_config_resolves_overrides():
    from advfeatures.experiments.defence_table import DefenceTableConfig

    cfg = DefenceTableConfig.resolve(["epochs=3", "defence.beta=1"], dataset="digits")
    assert cfg.epochs == 3 and cfg.defence.beta == 1 and cfg.dataset == "digits"
    with pytest.raises(ConfigError):
        DefenceTableConfig.resolve(["epochs"])


def test_physical_report_table():
    from advfeatures.physical import destruction_table, physical_markdown

    res = {"eps": 0.1, "n": 4, "clean_accuracy": 0.5, "attacks": {
        "fgsm": {"adversarial_rate": 0.5, "rates": {"jpeg": {"destruction_rate": 0.25}}},
        "bim": {"adversarial_rate": 1.0, "rates": {"jpeg": {"destruction_rate": 0.0}}}}}
    title, head, rows = destruction_table(res)
    assert head == ["transform", "fgsm", "bim"] and rows == [["jpeg", "25.0%", "0.0%"], ["(adversarial rate)", "50.0%", "100.0%"]]
    assert "eps 0.1 on 4 images" in title
    md = physical_markdown(res, dataset="digits", model_name="m.safetensors", eot_samples=2)
    assert "| jpeg | 25.0% | 0.0% |" in md and "|---|---|---|" in md
