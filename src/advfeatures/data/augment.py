"""Standard augmentation on whole batches (no per-example Python loops, no torchvision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def augment_batch(x: torch.Tensor, *, crop_padding: int = 0, flip: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding by ``crop_padding`` pixels, and random horizontal flips.

    Every example gets its own offset and flip, drawn from ``generator``.
    """
    if crop_padding < 0:
        raise ConfigError(f"crop_padding must be ≥ 0, got {crop_padding}")
    n, _, h, w = x.shape
    if crop_padding:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device="cpu").to(x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device="cpu").to(x.device)
        rows = (torch.arange(h, device=x.device).view(1, h) + dy.view(n, 1)).view(n, 1, h, 1)
        cols = (torch.arange(w, device=x.device).view(1, w) + dx.view(n, 1)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator, device="cpu").to(x.device) < 0.5
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    return x
