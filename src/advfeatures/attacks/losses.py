"""Per-example attack losses (summed, never averaged, by the loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``max_{i≠y} z_i − z_y``: positive exactly when the example is misclassified (CW's f₆)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], -torch.inf).amax(1)
    return other - true


def dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), untargeted: scale-invariant margin."""
    srt, _ = logits.sort(dim=1)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    top_is_true = (srt[:, -1] == true).to(logits.dtype)
    best_other = srt[:, -2] * top_is_true + srt[:, -1] * (1 - top_is_true)
    return -(true - best_other) / (srt[:, -1] - srt[:, -3] + 1e-12)


def dlr_targeted(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    srt, _ = logits.sort(dim=1)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


LOSSES = {"ce": cross_entropy, "margin": margin, "dlr": dlr}
