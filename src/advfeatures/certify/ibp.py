"""IBP verified accuracy: the share of points whose whole Linf ε-ball (inside [0, 1]) provably keeps
the label. A lower bound on robust accuracy against every attack."""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.loop import eval_mode
from ..data.dataset import check_images
from ..errors import DataError
from ..storage import iter_chunks
from ..threats import check_positive, check_steps
from .bounds import layers_of, verified


def ibp_verified_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                          batch_size: int = 500) -> dict:
    """``{"eps", "n", "verified_accuracy", "verified": (N,) bool}`` for ``model`` in eval mode."""
    check_images(x, what="certification images")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not x.shape[0]:
        raise DataError(f"need one label per image and at least one image, got {tuple(y.shape)} labels for {x.shape[0]} images")
    eps = check_positive("eps", eps)
    batch_size = check_steps(batch_size, "batch_size")
    layers_of(model)
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else x.device
    out = []
    with torch.no_grad(), eval_mode(model):
        for a, b in iter_chunks(x.shape[0], batch_size):
            out.append(verified(model, x[a:b].to(device), y[a:b].to(device), eps).cpu())
    ok = torch.cat(out)
    return {"eps": eps, "n": int(ok.numel()), "verified_accuracy": float(ok.float().mean()), "verified": ok}
