"""Shared by the tests and the worker scripts they start under torchrun: the same tiny data, model
and training configuration on every side."""

from __future__ import annotations

import torch

from advfeatures.data.loaders import load_digits
from advfeatures.models import build_model
from advfeatures.train import AdversaryConfig, TrainConfig

N_TRAIN = 100  # 4 batches of 25: every batch splits 13 / 12 between two ranks (an uneven split on purpose)


def tiny_digits():
    train, _ = load_digits()
    return train.head(N_TRAIN)


def tiny_mlp(seed: int = 0):
    """An MLP without BatchNorm, so that data-parallel training can match one process exactly."""
    with torch.random.fork_rng():  # the initialisation, without touching the caller's RNG
        torch.manual_seed(seed)
        return build_model("mlp", (1, 8, 8), 10, hidden=(16,))


def adversarial_config() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=25, lr=0.1, crop_padding=1, flip=True, seed=3,
                       adversary=AdversaryConfig(norm="L2", eps=0.5, steps=2))
