"""Tiny data and models for the defence tests: a few hundred 8×8 digits and models of a few
thousand parameters, so that every training run takes well under a second or two."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advfeatures.data import load_digits
from advfeatures.models import build_model


@pytest.fixture(scope="session")
def digits_small():
    train, test = load_digits()
    return train.head(256), test.head(64)


def tiny_mlp(seed: int = 0, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", (1, 8, 8), num_classes, hidden=(32,))


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", (1, 8, 8), 10, width=4, hidden=16)
