"""The statistics behind the report's intervals and verdicts.

* :func:`wilson_interval` — the Wilson score interval of a binomial proportion (k correct of n
  test images). Chosen over the normal ("Wald") interval because it stays inside [0, 1] and keeps
  close to its nominal coverage at the 0% and 100% accuracies our tables are full of; chosen over
  Clopper–Pearson because that one is conservative (wider than needed) at these sample sizes.
* :func:`mean_std` — mean and sample standard deviation (n − 1) over seeds.
* :func:`judge` — the verdict on a finding written as a linear combination of accuracies,
  ``difference = Σ cᵢ·accᵢ + constant > 0``. Its standard error is the larger of

  - the binomial one, ``√(Σ cᵢ² · pᵢ(1 − pᵢ) / N)`` with pᵢ pooled over seeds and N the test
    images of all seeds together (the accuracies are treated as independent; for two numbers of
    one model, which are positively correlated, this overstates the error, so errs towards
    "not shown"), and
  - with two or more seeds, the spread of the per-seed differences, ``std / √seeds``.

  The finding is *shown* when the mean difference exceeds ``margin`` standard errors (2 by
  default), *contradicted* when it is below −``margin`` standard errors, and *not shown* otherwise:
  a difference inside the noise is never reported as holding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals


def wilson_interval(k: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials (95% by default)."""
    if n <= 0 or k < 0 or k > n:
        raise ConfigError(f"a binomial interval needs 0 ≤ k ≤ n and n > 0, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # the bounds are exact at the ends (0 and 1); clamp away float noise there
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def count_of(accuracy: float, n: int) -> int:
    """The number of correct images behind an accuracy measured on ``n`` images."""
    return int(round(accuracy * n))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ConfigError("mean_std needs at least one value")
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def summary(values: Sequence[float], counts: Sequence[int]) -> dict[str, Any]:
    """Mean ± std over seeds and the Wilson interval of the pooled counts of one accuracy."""
    m, s = mean_std(values)
    pooled_k = sum(count_of(v, n) for v, n in zip(values, counts))
    lo, hi = wilson_interval(pooled_k, sum(counts))
    return {"mean": m, "std": s, "per_seed": list(values), "pooled_interval": [lo, hi], "images": sum(counts)}


MARGIN_TEXT = ("a finding is shown when its difference exceeds {margin:g} standard errors; the standard error is the "
               "larger of the binomial one (Σ cᵢ²·p(1−p)/N over the test images of all seeds) and, with two or more "
               "seeds, the spread of the per-seed differences (std/√seeds); one that does not clear the margin is "
               "'not shown', one below −{margin:g} standard errors 'contradicted'")


def judge(terms: Sequence[tuple[float, str]], per_seed: Sequence[Mapping[str, float]], counts: Sequence[int], *,
          constant: float = 0.0, margin: float = 2.0) -> dict[str, Any]:
    """The verdict on ``Σ c·metrics[name] + constant > 0`` measured once per seed (see the module)."""
    if not per_seed or len(per_seed) != len(counts):
        raise ConfigError("judge needs one metrics table and one image count per seed")
    if margin <= 0:
        raise ConfigError(f"the margin must be a positive number of standard errors, got {margin}")
    diffs = [sum(c * m[name] for c, name in terms) + constant for m in per_seed]
    mean, std = mean_std(diffs)
    total = sum(counts)
    pooled = {name: sum(m[name] * n for m, n in zip(per_seed, counts)) / total for _, name in terms}
    se_binomial = math.sqrt(sum(c * c * pooled[name] * (1 - pooled[name]) for c, name in terms) / total)
    se_seeds = std / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    se = max(se_binomial, se_seeds)
    if mean > margin * se:
        verdict = "shown"
    elif mean < -margin * se:
        verdict = "contradicted"
    else:
        verdict = "not shown"
    return {"verdict": verdict, "holds": verdict == "shown", "difference": mean, "per_seed_difference": diffs,
            "standard_error": se, "se_binomial": se_binomial, "se_seeds": se_seeds, "margin_se": margin}
