"""Running a model with its test-time randomness: stochastic layers on, everything else in eval mode.

Attacks run the model in eval mode (:func:`~.loop.eval_mode`), which turns Dropout off. A model
whose randomness *is* its Dropout (Monte-Carlo dropout, "random" defences built from it) is then
evaluated as a deterministic one. :func:`model_mode` with ``stochastic=True`` puts every module in
eval mode, then the :data:`STOCHASTIC_LAYERS` (Dropout of every kind, RReLU) back in train mode:

* BatchNorm (and every other layer) stays in eval mode: it normalises with its running statistics
  and never updates them, so the model's buffers are the same after the block;
* the global RNG those layers draw from is forked (:func:`torch.random.fork_rng`: the CPU's and,
  for a CUDA ``device``, that GPU's) and seeded from ``seed`` (an int, or a generator a seed is drawn from), so a run is
  reproducible and the caller's RNG state is the same after the block as before it;
* every module's own mode is restored afterwards (per module, as the user had set it).

Randomness a model draws in ``forward`` whatever its mode (``torch.randn_like``) is seen in both
cases; in the stochastic one it is seeded too. With ``stochastic=False`` this is exactly
:func:`~.loop.eval_mode` (no fork, no extra cost)::

    with model_mode(model, stochastic=True, seed=0):
        logits = model(x)  # Dropout active, BatchNorm on its running statistics
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

from .loop import eval_mode

# the layers torch makes random in train mode only (Dropout, Dropout1d/2d/3d, AlphaDropout,
# FeatureAlphaDropout are all _DropoutNd); BatchNorm is not among them: in train mode it would use
# the batch's statistics and update its running ones
STOCHASTIC_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd, nn.RReLU)

_SEED_RANGE = 2**63 - 1


def stochastic_layers(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that draw randomness in train mode only (:data:`STOCHASTIC_LAYERS`)."""
    return [m for m in model.modules() if isinstance(m, STOCHASTIC_LAYERS)]


def draw_seed(generator: torch.Generator) -> int:
    """A seed drawn from ``generator`` (on its own device): successive blocks seeded this way get
    different, reproducible draws."""
    return int(torch.randint(_SEED_RANGE, (), generator=generator, device=generator.device))


def model_mode(model: nn.Module, *, stochastic: bool = False, seed: int | torch.Generator = 0,
               device: torch.device | str | None = None) -> AbstractContextManager[nn.Module]:
    """Eval mode for the block; with ``stochastic`` its stochastic layers in train mode and the
    global RNG (the CPU's and a CUDA ``device``'s) forked and seeded from ``seed``. Restores every
    module's mode. Without ``stochastic`` it is :func:`~.loop.eval_mode` itself."""
    if not stochastic:
        return eval_mode(model)
    return _stochastic_mode(model, draw_seed(seed) if isinstance(seed, torch.Generator) else int(seed), device)


@contextmanager
def _stochastic_mode(model: nn.Module, seed: int, device: torch.device | str | None) -> Iterator[nn.Module]:
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if cuda else None
    with eval_mode(model), torch.random.fork_rng(devices=[index] if cuda else []):
        for m in stochastic_layers(model):
            m.train()
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)  # this device only (manual_seed_all would move the others' RNG)
        yield model


def evaluation_draws(seed: int) -> torch.Generator:
    """The generator an evaluation's own stochastic passes draw their seeds from (the clean check,
    the judging of each attack's output): seeded by ``seed``, but a stream apart from that of an
    attack seeded by the same ``seed``, so the clean pass does not reuse the attack's first draw."""
    return torch.Generator().manual_seed((int(seed) + 0x9E3779B97F4A7C15) % _SEED_RANGE)
