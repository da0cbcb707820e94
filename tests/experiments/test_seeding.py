"""One seed rule: the old per-module formulas it replaced give the same numbers (so a seed-0 run is
bit-identical), and the pipeline's named seeds follow it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from advfeatures.construct import shard_generator
from advfeatures.errors import ConfigError
from advfeatures.experiments.state import STREAMS, named_seeds
from advfeatures.science.common import stream_generator
from advfeatures.seeding import MODULUS, derive_seed, generator, global_seed, parse_seeds


def _first_draws(g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2**31, (4,), generator=g)


@given(st.integers(0, 10**6), st.integers(0, 10**5))
def test_the_replaced_formulas_give_the_same_seeds(seed, stream):
    assert derive_seed(seed, stream) == (seed * 1_000_003 + stream) % (2**63 - 1)
    # construct.shard_generator and science.common.stream_generator kept their numbers for every seed
    old_shard = torch.Generator().manual_seed((seed * 1_000_003 + 7919 * (stream + 1)) % (2**63 - 1))
    assert torch.equal(_first_draws(shard_generator(seed, stream)), _first_draws(old_shard))
    old_stream = torch.Generator().manual_seed((seed * 1_000_003 + 104_729 * (stream + 1)) % (2**63 - 1))
    assert torch.equal(_first_draws(stream_generator(seed, stream)), _first_draws(old_stream))


def test_seed_zero_maps_every_stream_to_itself():
    # the pipeline's old rule was run seed × 1000 + offset, the science modules' seed × 7919 + k: at seed 0
    # both are the offset itself, so a seed-0 run draws exactly what it drew before the change
    assert all(derive_seed(0, s) == s for s in range(2000))
    assert named_seeds(0) == STREAMS


def test_streams_do_not_collide_and_seeds_differ():
    seeds = named_seeds(3)
    assert len(set(seeds.values())) == len(seeds)
    assert not set(named_seeds(1).values()) & set(named_seeds(2).values())
    assert 0 <= derive_seed(10**30, 5) < MODULUS
    assert torch.equal(_first_draws(generator(7, 3)), _first_draws(torch.Generator().manual_seed(derive_seed(7, 3))))


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds(" 5, 1-2 ") == [5, 1, 2]
    for bad, match in (("a,b", "whole numbers"), ("1,1", "distinct"), ("", "whole numbers"), ("-1", "whole numbers")):
        with pytest.raises(ConfigError, match=match):
            parse_seeds(bad)


def test_derive_seed_refuses_fractions():
    with pytest.raises(ConfigError, match="whole numbers"):
        derive_seed(0.5, 1)


def test_global_seed_draws_from_the_seed_and_restores_the_callers_state():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with global_seed(7):
        inside = torch.rand(3)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(7)
    assert torch.equal(inside, torch.rand(3))
    before = torch.random.get_rng_state()
    with pytest.raises(RuntimeError):  # restored even when the block fails
        with global_seed(8):
            torch.rand(2)
            raise RuntimeError("boom")
    assert torch.equal(torch.random.get_rng_state(), before)
