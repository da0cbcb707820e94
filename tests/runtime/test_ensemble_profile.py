"""benchmarks/ensemble_profile.py's pieces: the pricing of counted calls as bare passes, and the
BatchNorm-folded copy of a model that ``--fast-layout`` prices them on (same logits, no BatchNorm)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from advfeatures.models import build_model

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def profile():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("ensemble_profile")
    finally:
        sys.path.remove(str(BENCH))


def test_model_seconds_interpolates_in_the_batch_size(profile):
    table = {(1, False): 1.0, (11, False): 3.0, (1, True): 10.0, (11, True): 30.0}
    # 6 rows: halfway between 1 and 11 rows; grad and no-grad calls priced from their own rows
    assert profile.model_seconds([(6, False), (6, True), (1, False)], table) == pytest.approx(2.0 + 20.0 + 1.0)


def test_fast_layout_folds_every_batchnorm_and_keeps_the_logits(profile):
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=8, hidden=16)
    for m in model.modules():  # running statistics far from the identity, so a wrong fold shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.2, 3)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    model.eval()
    fast = profile.fast_layout(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), atol=1e-5, rtol=1e-5)
