"""Adversarial examples in the physical world (Kurakin, Goodfellow & Bengio 2017), simulated.

Printing an adversarial image and photographing it blurs, shifts, rotates, re-exposes, adds sensor
noise and JPEG-compresses it. Here a set of image transformations stands in for that (JPEG via
Pillow at several qualities, Gaussian blur, Gaussian noise, brightness and contrast changes, small
rotations and shifts, and a "photo" composition of all of them), and the paper's *destruction
rate* measures how many adversarial examples the transformation turns back into correctly
classified ones:

    d = Σ C(x, y) · ¬C(x_adv, y) · C(T(x_adv), y)  /  Σ C(x, y) · ¬C(x_adv, y)

(C(x, y): the model classifies x as y). For the identity it is 0 by construction.

Examples made to survive (Athalye et al. 2018's robust physical examples) average the gradient over
random transformations: :class:`RandomPhoto` draws a fresh random composition on every call
(differentiable, with JPEG passed straight through by BPDA), and an attack on
``EOT(nn.Sequential(RandomPhoto(...), model))`` yields EOT-hardened examples.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attacks.base import Attack
from .attacks.bim import BIM, IterativeLeastLikely
from .attacks.loop import eval_mode
from .attacks.masking import BPDA, EOT
from .attacks.pgd import FGSM
from .data.dataset import check_images
from .errors import ConfigError, DataError

TransformFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# -------------------------------------------------------------------------------------------------
# the transformations (each maps a [0, 1] batch to a [0, 1] batch)

def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress and decode every image with Pillow at ``quality`` (1–95)."""
    from PIL import Image

    if not 1 <= int(quality) <= 95:
        raise ConfigError(f"JPEG quality must lie in 1..95, got {quality}")
    if x.shape[1] not in (1, 3):
        raise DataError(f"JPEG needs 1 or 3 channels, got {x.shape[1]}")
    arr = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for img in arr:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)  # mode L or RGB from the shape
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert(pil.mode), dtype=np.uint8)
        out.append(dec[..., None] if dec.ndim == 2 else dec)
    back = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255
    return back.to(device=x.device, dtype=x.dtype)


def _gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    r = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - (size - 1) / 2
    k1 = torch.exp(-(r.view(1, -1) ** 2) / (2 * sigma.clamp_min(1e-3).view(-1, 1) ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    return k1.unsqueeze(2) * k1.unsqueeze(1)  # (N, size, size)


def blur(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (a float or one per image), reflect-padded."""
    n, c, h, w = x.shape
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(n)
    size = max(3, 2 * math.ceil(2 * float(sigma.max())) + 1)
    pad = min(size // 2, h - 1, w - 1)
    size = 2 * pad + 1
    kernels = _gaussian_kernels(sigma, size).repeat_interleave(c, 0).unsqueeze(1)  # (N*C, 1, k, k)
    padded = F.pad(x.reshape(1, n * c, h, w), (pad,) * 4, mode="reflect")
    return F.conv2d(padded, kernels, groups=n * c).view(n, c, h, w)


def brightness_contrast(x: torch.Tensor, brightness: float | torch.Tensor = 0.0, contrast: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``(x − m)·contrast + m + brightness`` (m the image's mean), clipped to [0, 1]."""
    view = (-1, 1, 1, 1)
    b = torch.as_tensor(brightness, dtype=x.dtype, device=x.device).expand(x.shape[0]).reshape(view)
    k = torch.as_tensor(contrast, dtype=x.dtype, device=x.device).expand(x.shape[0]).reshape(view)
    m = x.mean((1, 2, 3), keepdim=True)
    return ((x - m) * k + m + b).clamp(0, 1)


def affine(x: torch.Tensor, degrees: float | torch.Tensor = 0.0, shift: tuple | torch.Tensor = (0.0, 0.0)) -> torch.Tensor:
    """Rotate by ``degrees`` and shift by ``shift`` = (dx, dy) pixels (per image or shared), bilinear,
    zero fill outside the image."""
    n, _, h, w = x.shape
    theta = torch.as_tensor(degrees, dtype=x.dtype, device=x.device).expand(n) * math.pi / 180
    s = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    s = s.expand(n, 2) if s.ndim <= 1 else s
    cos, sin = torch.cos(theta), torch.sin(theta)
    mat = torch.stack([torch.stack([cos, -sin, -2 * s[:, 0] / w], 1), torch.stack([sin, cos, -2 * s[:, 1] / h], 1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0, 1)


@dataclass
class Transform:
    """A named, fixed transformation; ``fn(x, generator)`` (the generator for noise)."""

    name: str
    fn: TransformFn

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.fn(x, generator)


def photo(x: torch.Tensor, generator: torch.Generator | None = None, *, degrees: float = 3.0, shift: float = 0.5,
          blur_sigma: float = 0.5, brightness: float = 0.05, contrast: float = 0.9, noise: float = 0.02,
          quality: int = 75) -> torch.Tensor:
    """The composition standing in for print-and-photograph: a small rotation and shift, blur,
    exposure (brightness and contrast), sensor noise, then JPEG."""
    x = affine(x, degrees, (shift, shift))
    x = blur(x, blur_sigma)
    x = brightness_contrast(x, brightness, contrast)
    x = gaussian_noise(x, noise, generator)
    return jpeg(x, quality)


def standard_transforms() -> list[Transform]:
    """The transformations of Kurakin et al.'s artificial-transformation study, plus the composition."""
    out = [Transform("identity", lambda x, g: x)]
    out += [Transform(f"jpeg{q}", lambda x, g, q=q: jpeg(x, q)) for q in (75, 50, 25, 10)]
    out += [Transform(f"blur{s:g}", lambda x, g, s=s: blur(x, s)) for s in (0.5, 1.0)]
    out += [Transform(f"noise{s:g}", lambda x, g, s=s: gaussian_noise(x, s, g)) for s in (0.05, 0.1)]
    out += [Transform("brightness+0.1", lambda x, g: brightness_contrast(x, 0.1, 1.0)),
            Transform("contrast0.8", lambda x, g: brightness_contrast(x, 0.0, 0.8)),
            Transform("rotate5", lambda x, g: affine(x, 5.0)),
            Transform("shift1", lambda x, g: affine(x, 0.0, (1.0, 0.0))),
            Transform("photo", lambda x, g: photo(x, g))]
    return out


# -------------------------------------------------------------------------------------------------
# destruction rate

def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return model(x).argmax(1) == y


def destruction_rate(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                     transform: Transform | TransformFn, *, generator: torch.Generator | None = None) -> dict:
    """Kurakin et al.'s destruction rate of ``transform`` on the adversarial examples ``x_adv`` of
    ``x``: ``{"destruction_rate", "counted"}`` (counted: clean-correct and adversarial points; the
    rate is 0 when there are none)."""
    check_images(x_adv, what="adversarial images")
    counted = _correct(model, x, y) & ~_correct(model, x_adv, y)
    restored = _correct(model, transform(x_adv, generator), y)
    n = int(counted.sum())
    return {"destruction_rate": float((counted & restored).sum()) / n if n else 0.0, "counted": n}


class RandomPhoto(nn.Module):
    """A random print-and-photograph transformation drawn anew for every image on every call:
    rotation in ±``degrees``, shift in ±``shift`` pixels, blur σ in [0, ``blur_sigma``], brightness
    in ±``brightness``, contrast in [1 − ``contrast``, 1 + ``contrast``], noise of std ``noise`` and,
    with ``jpeg_quality``, JPEG whose gradient is the identity (BPDA). Differentiable, for EOT."""

    def __init__(self, *, degrees: float = 5.0, shift: float = 1.0, blur_sigma: float = 1.0, brightness: float = 0.1,
                 contrast: float = 0.2, noise: float = 0.05, jpeg_qualities: Sequence[int] = (75, 50, 25), seed: int = 0) -> None:
        super().__init__()
        self.degrees, self.shift, self.blur_sigma = float(degrees), float(shift), float(blur_sigma)
        self.brightness, self.contrast, self.noise = float(brightness), float(contrast), float(noise)
        self.jpeg_qualities = tuple(int(q) for q in jpeg_qualities)
        self.seed = int(seed)
        self._gen: dict[torch.device, torch.Generator] = {}

    def _u(self, n: int, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        g = self._gen.setdefault(x.device, torch.Generator(device=x.device).manual_seed(self.seed))
        return lo + (hi - lo) * torch.rand(n, generator=g, device=x.device, dtype=x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = affine(x, self._u(n, x, -self.degrees, self.degrees),
                   torch.stack([self._u(n, x, -self.shift, self.shift), self._u(n, x, -self.shift, self.shift)], 1))
        if self.blur_sigma > 0:
            x = blur(x, self._u(n, x, 0.0, self.blur_sigma))
        x = brightness_contrast(x, self._u(n, x, -self.brightness, self.brightness),
                                self._u(n, x, 1 - self.contrast, 1 + self.contrast))
        if self.noise > 0:
            x = gaussian_noise(x, self.noise, self._gen[x.device])
        if self.jpeg_qualities:
            q = self.jpeg_qualities[int(self._u(1, x, 0, len(self.jpeg_qualities)).floor().clamp(max=len(self.jpeg_qualities) - 1))]
            x = BPDA(lambda z, q=q: jpeg(z, q))(x)
        return x


def physical_study(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, eot_samples: int = 16,
                   transforms: Sequence[Transform] | None = None, attacks: dict[str, Attack] | None = None,
                   seed: int = 0) -> dict:
    """Destruction rates of every transformation for FGSM, BIM, iterative least-likely and EOT-BIM
    (BIM on the average over ``eot_samples`` random photos) examples at Linf ``eps``.

    Returns ``{"eps", "n", "clean_accuracy", "attacks": {name: {"adversarial_rate", "rates":
    {transform: {"destruction_rate", "counted"}}}}}``.
    """
    check_images(x, what="images")
    transforms = list(transforms) if transforms is not None else standard_transforms()
    if attacks is None:
        attacks = {"fgsm": FGSM(eps=eps), "bim": BIM(eps=eps), "iter_ll": IterativeLeastLikely(eps=eps)}
    made = {name: atk(model, x, y) for name, atk in attacks.items()}
    hardened = EOT(nn.Sequential(RandomPhoto(seed=seed), model), n_samples=eot_samples)
    made["eot_bim"] = BIM(eps=eps, steps=max(BIM(eps=eps).steps, 20), step_size=max(1 / 255, eps / 8))(hardened, x, y)
    clean = _correct(model, x, y)
    out = {"eps": eps, "n": int(x.shape[0]), "clean_accuracy": float(clean.float().mean()), "attacks": {}}
    for name, x_adv in made.items():
        rates = {}
        for t in transforms:
            g = torch.Generator(device=x.device).manual_seed(seed + 1)
            rates[t.name] = destruction_rate(model, x, x_adv, y, t, generator=g)
        adv_rate = float((clean & ~_correct(model, x_adv, y)).float().sum() / max(1, int(clean.sum())))
        out["attacks"][name] = {"adversarial_rate": adv_rate, "rates": rates}
    return out


def destruction_table(res: dict) -> tuple[str, list[str], list[list[str]]]:
    """:func:`physical_study`'s result as a table: its title, the column heads (the transform, then
    one column per attack) and one row per transformation, then the attacks' adversarial rates."""
    names = list(res["attacks"])
    transforms = list(res["attacks"][names[0]]["rates"])
    rows = [[t] + [f"{100 * res['attacks'][a]['rates'][t]['destruction_rate']:.1f}%" for a in names] for t in transforms]
    rows.append(["(adversarial rate)"] + [f"{100 * res['attacks'][a]['adversarial_rate']:.1f}%" for a in names])
    title = f"destruction rate at Linf eps {res['eps']:g} on {res['n']} images (clean accuracy {100 * res['clean_accuracy']:.1f}%)"
    return title, ["transform", *names], rows


def physical_markdown(res: dict, *, dataset: str, model_name: str, eot_samples: int) -> str:
    """The report of :func:`physical_study`'s result as Markdown (the table of :func:`destruction_table`)."""
    title, head, rows = destruction_table(res)
    md = [f"# Physical-world destruction rates ({dataset}, model {model_name})", "", title + ", "
          f"EOT-BIM averaging {eot_samples} random photos per step.", "",
          "| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", "Destruction rate (Kurakin et al. 2017): the share of clean-correct, adversarially misclassified images that "
           "the transformation returns to the right class. Last row: share of clean-correct images the attack fools."]
    return "\n".join(md) + "\n"
