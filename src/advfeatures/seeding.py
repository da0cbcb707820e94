"""One rule for every seed the library derives from another.

An experiment has one seed; each use of randomness inside it (a model's initialisation, an
attack's random start, one shard of a construction) gets its own *stream*, a fixed integer, and
draws from ``derive_seed(seed, stream)``::

    derive_seed(seed, stream) = (seed · 1 000 003 + stream) mod (2⁶³ − 1)

Why this shape: 1 000 003 is a prime larger than any stream number we use, so two (seed, stream)
pairs with streams below it never collide, and seed 0 maps every stream to itself (so the numbers
of a seed-0 run do not depend on the multiplier). The modulus keeps the result a valid argument
of ``torch.Generator.manual_seed``. Streams are named where they are used (e.g. the pipeline's
``STREAMS`` table), so a reader can follow a seed from the command line to the draw it feeds.

Nothing here leaves the global random state changed: callers get an integer, a fresh generator, or
(``global_seed``) a block that runs on a forked, seeded copy of it, for code such as a module's
constructor that can only draw from the global state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import ConfigError

MULTIPLIER = 1_000_003
MODULUS = 2**63 - 1


def derive_seed(seed: int, stream: int) -> int:
    """The seed of use ``stream`` of an experiment seeded with ``seed``."""
    if isinstance(seed, bool) or isinstance(stream, bool) or int(seed) != seed or int(stream) != stream:
        raise ConfigError(f"seeds and streams are whole numbers, got seed={seed!r}, stream={stream!r}")
    return (int(seed) * MULTIPLIER + int(stream)) % MODULUS


def generator(seed: int, stream: int = 0, *, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, stream)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream))


@contextlib.contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Run the block with the global (CPU) random state forked and set to ``seed``; the caller's
    state is restored afterwards, whatever the block drew."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


MAX_SEEDS = 1000  # each seed is a whole reproduction


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` → a list of distinct seeds, in the order given."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                if int(hi) - int(lo) >= MAX_SEEDS:
                    raise ConfigError(f"at most {MAX_SEEDS} seeds in one run, got the range {part!r}")
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
        except ConfigError:
            raise
        except ValueError:
            raise ConfigError(f"seeds must look like 0,1,2 or 0-4 (whole numbers), got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"seeds must be non-negative whole numbers such as 0,1,2, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct, got {text!r}")
    return seeds
