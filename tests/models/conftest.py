"""Helpers for the model-loading tests: batch-norm layers with non-trivial statistics, so that a
wrongly mapped or skipped BN layer changes the logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


@pytest.fixture
def user_nets(monkeypatch):
    """The helper module ``_user_nets`` importable by name, as a user's own code would be."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _user_nets

    return _user_nets
