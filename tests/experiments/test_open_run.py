"""``open_run`` reopens a run directory's configuration, data, models and results in Python."""

from __future__ import annotations

import pytest
import torch

from advfeatures.errors import DataError
from advfeatures.experiments import RunState, open_run
from advfeatures.experiments.config import resolve_config, to_dict
from advfeatures.experiments.pipeline import data_digest, load_data
from advfeatures.models import build_model, save_model
from advfeatures.storage import write_json_atomic


def fake_run(root, *, digest: str | None = None):
    """A run directory as the pipeline leaves it after its first step (config, one model, results)."""
    cfg, given = resolve_config("digits", overrides=["evaluation.test_limit=50"], device="cpu")
    write_json_atomic(root / "config.json", {"given": given, "resolved": to_dict(cfg)})
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=4, hidden=8)
    save_model(model, root / "models" / "standard.safetensors")
    train, test = load_data(cfg)
    write_json_atomic(root / "results.json", {"dataset": {"digest": digest or data_digest(train, test)},
                                              "models": {"standard": {"clean_accuracy": 0.5, "robust_accuracy": []}}})
    return cfg, model


def test_open_run_gives_back_config_data_models_and_results(tmp_path):
    cfg, model = fake_run(tmp_path)
    state = open_run(tmp_path)
    assert isinstance(state, RunState)
    assert state.config == cfg and len(state.test) == 50
    assert set(state.models) == {"standard"}  # only what the run finished
    for (k, a), (_, b) in zip(model.state_dict().items(), state.models["standard"].state_dict().items()):
        assert torch.equal(a, b), k
    assert state.evaluations["standard"]["clean_accuracy"] == 0.5
    assert state.seeds["train_standard"] == 1  # seed 0: each stream's number itself


def test_open_run_refuses_other_data(tmp_path):
    fake_run(tmp_path, digest="0" * 16)
    with pytest.raises(DataError, match="differs from the data the run used"):
        open_run(tmp_path)


def test_open_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(DataError, match="not a reproduce run directory"):
        open_run(tmp_path / "nothing")
