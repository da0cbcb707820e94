"""benchmarks/ensemble_speed.py's ``ours``: the standard ensemble, with APGD-T's and FAB-T's
``batch_rows`` set when asked (the GPU check's wide-batch row) and the members' own default when not."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from advfeatures.models import build_model

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def speed():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("ensemble_speed")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("rows", [None, 3])
def test_ours_sets_batch_rows_only_when_asked(speed, monkeypatch, rows):
    seen = {}
    real = speed.worst_case_evaluation

    def spy(model, x, y, **kwargs):
        seen.update(kwargs)
        return real(model, x, y, **kwargs)

    monkeypatch.setattr(speed, "worst_case_evaluation", spy)
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=4, hidden=8).eval()
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    x_adv = speed.ours(True, steps=2, queries=5, batch_rows=rows)(model, x, y, 0.5, 0)
    assert x_adv.shape == x.shape and ((x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()
    if rows is None:
        assert seen["version"] == "standard" and seen["members"] is None
    else:
        assert seen["version"] == "custom"
        widths = {m.name: getattr(m.attack, "batch_rows", None) for m in seen["members"]}
        assert widths == {"apgd-ce": 3, "apgd-t": 3, "fab-t": 3, "square": None}
