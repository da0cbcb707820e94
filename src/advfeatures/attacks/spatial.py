"""Spatial attacks: no pixel budget, only small geometric changes.

* :class:`SpatialGrid` — Engstrom, Tran, Tsipras, Schmidt & Madry 2019 ("Exploring the Landscape
  of Spatial Robustness"): try every rotation/translation on a grid (±30°, ±3 px; 31 angles × 5 × 5
  shifts = 775 transforms) and keep each example's worst one (an adversarial one first, then the
  highest loss). The transforms are applied batched with ``F.affine_grid``/``F.grid_sample``
  (bilinear, zero padding, i.e. black borders), ``grid_batch`` transforms at a time. The ±3 px
  were set for 32×32 CIFAR images; by default they scale with the image width (``width/32``,
  ±0.75 px on 8×8 digits), and ``translation_scale`` fixes the factor instead (1.0: ±3 px).
  On the tiny digits MLP of the tests (96% clean) the full grid fools every image.
* :class:`StAdv` — Xiao, Zhu, Li, He, Liu & Song 2018 ("Spatially Transformed Adversarial
  Examples"): optimise a per-pixel flow field f (in pixels) that moves where each output pixel
  samples the input, minimising ``L_adv + τ · L_flow`` where ``L_adv`` is the CW margin
  ``max(z_y − max_{i≠y} z_i, −κ)`` (targeted: ``max(max_{i≠t} z_i − z_t, −κ)``) and ``L_flow`` is
  the total variation ``Σ_p Σ_{q∈N(p)} √(‖f_p − f_q‖² + 1e-8)``. The paper uses τ = 0.05 and
  L-BFGS; we use Adam (lr in pixels) and keep, per example, the adversarial iterate with the
  smoothest flow (or the last one when none succeeded).

Usage::

    x_adv = SpatialGrid(translation_scale=8 / 32)(model, x, y)
    x_adv = StAdv(tau=0.05, steps=100)(model, x, y)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Attack, between, count, hyper, hyperparameters, optional, positive
from .losses import cross_entropy


def affine_matrices(angles_deg: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(G, 2, 3) ``affine_grid`` matrices rotating by ``angles_deg`` about the centre and shifting by
    (``tx``, ``ty``) pixels (x to the right, y down), in pixel geometry (also for non-square images)."""
    h, w = size
    a = angles_deg * (math.pi / 180.0)
    c, s = torch.cos(a), torch.sin(a)
    txn, tyn = tx * (2.0 / w), ty * (2.0 / h)  # shifts in grid units (align_corners=False)
    # grid_sample maps output to input coordinates: p_in = Rᵀ (p_out − t), rescaled to grid units
    row0 = torch.stack([c, s * (h / w), -(c * txn + s * (h / w) * tyn)], -1)
    row1 = torch.stack([-s * (w / h), c, -(-s * (w / h) * txn + c * tyn)], -1)
    return torch.stack([row0, row1], -2)


Scalar = float | torch.Tensor


def rotate_translate(x: torch.Tensor, angle_deg: Scalar, tx: Scalar = 0.0, ty: Scalar = 0.0) -> torch.Tensor:
    """Rotate every image of ``x`` by ``angle_deg`` and shift it by (``tx``, ``ty``) pixels; scalars
    apply to the whole batch, (N,) tensors per example. Bilinear, black borders, stays in [0, 1]."""
    n = x.shape[0]
    as_vec = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device).expand(n)  # noqa: E731
    theta = affine_matrices(as_vec(angle_deg), as_vec(tx), as_vec(ty), x.shape[-2:])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0.0, 1.0)


def _scale_shown(scale):
    return "width/32" if scale is None else scale


@hyperparameters
class SpatialGrid(Attack):
    name = "spatial"
    norm = "spatial"

    max_rotation: float = hyper(30.0, check=between(0.0))
    max_translation: float = hyper(3.0, check=between(0.0))
    translation_scale: float | None = hyper(None, check=optional(positive), shown=_scale_shown)  # None: width / 32
    n_rotations: int = hyper(31, check=count)
    n_translations: int = hyper(5, check=count)
    grid_batch: int = hyper(64, check=count, record=False)

    def grid(self, width: int = 32, device=None) -> torch.Tensor:
        """The (G, 3) list of (angle in degrees, tx, ty in pixels) tried for images ``width`` pixels
        wide; the identity is always in it."""
        rot = torch.linspace(-self.max_rotation, self.max_rotation, self.n_rotations, device=device)
        scale = width / 32 if self.translation_scale is None else self.translation_scale
        shift = self.max_translation * scale
        tr = torch.linspace(-shift, shift, self.n_translations, device=device)
        if self.n_rotations == 1:
            rot = torch.zeros(1, device=device)
        if self.n_translations == 1:
            tr = torch.zeros(1, device=device)
        a, u, v = torch.meshgrid(rot, tr, tr, indexing="ij")
        g = torch.stack([a.flatten(), u.flatten(), v.flatten()], 1)
        return torch.cat([torch.zeros(1, 3, device=device), g])

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        n = x.shape[0]
        ref = y if target is None else target
        grid = self.grid(x.shape[-1], x.device).to(x.dtype)
        best_x, best_key = x, torch.full((n,), -torch.inf, device=x.device)
        best_t = torch.zeros(n, 3, device=x.device, dtype=x.dtype)
        with torch.no_grad():
            for a in range(0, grid.shape[0], self.grid_batch):
                g = grid[a : a + self.grid_batch]  # (G, 3)
                k = g.shape[0]
                theta = affine_matrices(g[:, 0], g[:, 1], g[:, 2], x.shape[-2:]).repeat_interleave(n, 0)  # (G·N, 2, 3)
                xs = x.repeat(k, 1, 1, 1)
                sampling = F.affine_grid(theta, list(xs.shape), align_corners=False)
                xt = F.grid_sample(xs, sampling, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0.0, 1.0)
                logits = model(xt)
                labels = ref.repeat(k)
                success = logits.argmax(1) != labels if target is None else logits.argmax(1) == labels
                loss = cross_entropy(logits, labels) * (1.0 if target is None else -1.0)
                key = (success.float() * 1e6 + loss.float().clamp(-1e5, 1e5)).view(k, n)
                top, which = key.max(0)
                better = top > best_key
                chosen = xt.view(k, n, *x.shape[1:])[which, torch.arange(n, device=x.device)]
                best_x = torch.where(better.view(-1, 1, 1, 1), chosen, best_x)
                best_t = torch.where(better.view(-1, 1), g[which], best_t)
                best_key = torch.where(better, top, best_key)
        return best_x, {"transform": best_t}


def _identity_grid(n: int, h: int, w: int, device, dtype) -> torch.Tensor:
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device, dtype=dtype).expand(n, 2, 3)
    return F.affine_grid(theta, [n, 1, h, w], align_corners=False)  # (N, H, W, 2) as (x, y)


def apply_flow(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Warp ``x`` by a flow field (N, 2, H, W) in pixels: output pixel p samples the input at p + f_p."""
    n, _, h, w = x.shape
    scale = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=x.dtype)
    grid = _identity_grid(n, h, w, x.device, x.dtype) + flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0.0, 1.0)


def flow_smoothness(flow: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """stAdv's L_flow per example: Σ over pixels and their 4-neighbours of √(‖f_p − f_q‖² + eps)."""
    pad = F.pad(flow, (1, 1, 1, 1), mode="replicate")
    center = pad[:, :, 1:-1, 1:-1]
    total = torch.zeros(flow.shape[0], device=flow.device, dtype=flow.dtype)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[:, :, dy : dy + flow.shape[2], dx : dx + flow.shape[3]]
        total = total + ((center - nb).pow(2).sum(1) + eps).sqrt().flatten(1).sum(1)
    return total


@hyperparameters
class StAdv(Attack):
    name = "stadv"
    norm = "flow"

    tau: float = hyper(0.05, check=between(0.0, allow_inf=True))
    steps: int = hyper(100, check=count)
    lr: float = hyper(0.01, check=positive)
    kappa: float = hyper(0.0, check=between(0.0, allow_inf=True))
    max_flow: float | None = hyper(None, check=optional(positive))

    @torch.enable_grad()  # also when called inside a no_grad block (the flow's gradient and Adam's step)
    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None):
        n, _, h, w = x.shape
        ref = y if target is None else target
        flow = torch.zeros(n, 2, h, w, device=x.device, dtype=x.dtype, requires_grad=True)
        opt = torch.optim.Adam([flow], lr=self.lr)  # optimises the flow only, never model parameters
        best_x = x.clone()
        best_smooth = torch.full((n,), torch.inf, device=x.device)
        for t in range(self.steps + 1):  # the last pass only scores the final flow
            x_adv = apply_flow(x, flow)
            logits = model(x_adv)
            own = logits.gather(1, ref[:, None]).squeeze(1)
            other = logits.scatter(1, ref[:, None], -torch.inf).amax(1)
            margin = own - other if target is None else other - own
            smooth = flow_smoothness(flow)
            loss = margin.clamp_min(-self.kappa) + self.tau * smooth
            with torch.no_grad():
                success = logits.argmax(1) != ref if target is None else logits.argmax(1) == ref
                better = success & (smooth < best_smooth)
                best_x = torch.where(better.view(-1, 1, 1, 1), x_adv.detach(), best_x)
                best_smooth = torch.where(better, smooth.detach(), best_smooth)
                last = x_adv.detach()
            if t == self.steps:
                break
            (grad,) = torch.autograd.grad(loss.sum(), flow)
            flow.grad = grad
            opt.step()
            if self.max_flow is not None:
                with torch.no_grad():
                    flow.clamp_(-self.max_flow, self.max_flow)
        found = torch.isfinite(best_smooth)
        return torch.where(found.view(-1, 1, 1, 1), best_x, last), {"flow_smoothness": best_smooth}
