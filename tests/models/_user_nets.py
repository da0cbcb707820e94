"""A user's own classifiers, as a factory module named by ``arch="_user_nets:make_net"``: no
``features`` / ``head``, a functional forward, and its last ``nn.Linear`` at the end."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UserNet(nn.Module):
    def __init__(self, in_channels: int = 1, width: int = 4, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.fc1 = nn.Linear(width * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4).flatten(1)
        return self.fc2(torch.tanh(self.fc1(z)))  # tanh: no ReLU right before the last Linear


def make_net(**kwargs) -> UserNet:
    with torch.random.fork_rng():
        torch.manual_seed(int(kwargs.pop("seed", 0)))
        return UserNet(**kwargs)


NOT_A_FACTORY = 3


def returns_a_number() -> int:
    return 3


class TupleNet(UserNet):
    """Returns (logits, features), as many research models do."""

    def forward(self, x: torch.Tensor):
        z = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4).flatten(1)
        h = torch.tanh(self.fc1(z))
        return self.fc2(h), h


class DictNet(UserNet):
    """Returns {"logits": …}, as Hugging Face style models do."""

    def forward(self, x: torch.Tensor):
        return {"logits": super().forward(x)}
